//! C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, in the key text forms of
//! the Go `golang.org/x/mod/sumdb/note` package, so that the transparency ecosystem's tools can
//! verify what Writ signs.
//!
//! A verifier key reads `<name>+<hex key id>+<base64(0x01 ‖ public key)>`; a signer key reads
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>`. The key id is the first four bytes of
//! SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key). A signed note is the text, a blank line, and one line
//! `— <name> <base64(key id ‖ signature)>` per signature.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::AuditError;

/// The algorithm byte of Ed25519 keys and signatures.
const ALG_ED25519: u8 = 0x01;

/// The most signature lines a note may carry (as in the Go package).
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// A key name: non-empty, no whitespace, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_name(name: &str) -> Result<(), AuditError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(AuditError::Key(format!(
            "invalid key name {name:?}: it must be non-empty, without spaces or '+'"
        )))
    }
}

fn parse_id(text: &str) -> Result<u32, AuditError> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuditError::Key("the key id must be 8 hex digits".into()));
    }
    u32::from_str_radix(text, 16)
        .map_err(|_| AuditError::Key("the key id must be 8 hex digits".into()))
}

fn decode_key(text: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, AuditError> {
    let raw = Zeroizing::new(
        STANDARD
            .decode(text)
            .map_err(|_| AuditError::Key(format!("the {what} is not base64")))?,
    );
    if raw.len() != 33 || raw[0] != ALG_ED25519 {
        return Err(AuditError::Key(format!(
            "the {what} is not an Ed25519 key (0x01 ‖ 32 bytes)"
        )));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&raw[1..]);
    Ok(out)
}

/// A note signer: a named Ed25519 signing key. Its `Debug` never shows the key.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id)
    }
}

impl NoteSigner {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<NoteSigner, AuditError> {
        check_name(name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())
            .map_err(|e| AuditError::Key(format!("the system random source failed: {e}")))?;
        Ok(NoteSigner::from_seed(name, &seed))
    }

    fn from_seed(name: &str, seed: &[u8; 32]) -> NoteSigner {
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        NoteSigner {
            name: name.to_owned(),
            id,
            key,
        }
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64 key>`. Errors never echo the key.
    pub fn from_key_text(text: &str) -> Result<NoteSigner, AuditError> {
        let mut parts = text.trim_end_matches('\n').splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(key)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuditError::Key(
                "a signing key reads PRIVATE+KEY+<name>+<key id>+<base64 key>".into(),
            ));
        };
        check_name(name)?;
        let id = parse_id(id)?;
        let seed = decode_key(key, "signing key")?;
        let signer = NoteSigner::from_seed(name, &seed);
        if signer.id != id {
            return Err(AuditError::Key(
                "the signing key does not match its key id".into(),
            ));
        }
        Ok(signer)
    }

    /// The Go note package's private key text. A secret: store it with mode 0600.
    pub fn to_key_text(&self) -> String {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(raw.as_slice())
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A note verifier: a named Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

/// The verifier key text `<name>+<id>+<base64(0x01 ‖ key)>`.
impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }
}

impl NoteVerifier {
    /// Parses a verifier key, checking that its id matches its name and key.
    pub fn parse(text: &str) -> Result<NoteVerifier, AuditError> {
        let mut parts = text.trim_end_matches('\n').splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuditError::Key(
                "a verifier key reads <name>+<key id>+<base64 key>".into(),
            ));
        };
        check_name(name)?;
        let id = parse_id(id)?;
        let raw = decode_key(key, "verifier key")?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| AuditError::Key("the verifier key is not a valid Ed25519 point".into()))?;
        if key_id(name, key.as_bytes()) != id {
            return Err(AuditError::Key(
                "the verifier key does not match its key id".into(),
            ));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }
}

fn check_text(text: &str) -> Result<(), AuditError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(AuditError::Note(
            "the note text must end with a newline".into(),
        ));
    }
    if text.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(AuditError::Note(
            "the note contains a control character".into(),
        ));
    }
    Ok(())
}

/// Signs `text` (which must end with a newline) with every signer.
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, AuditError> {
    check_text(text)?;
    if text.contains("\n\n") {
        return Err(AuditError::Note(
            "the note text must not contain a blank line".into(),
        ));
    }
    let mut out = String::with_capacity(text.len() + 1 + signers.len() * 110);
    out.push_str(text);
    out.push('\n');
    for signer in signers {
        out.push_str(&signer.signature_line(text));
    }
    Ok(out)
}

/// Opens a signed note: checks its form and that it carries a valid signature by `verifier`.
/// Signatures by other keys are ignored, as the signed-note spec asks; a signature that claims to
/// be by `verifier` and does not verify is an error. Returns the note's text.
pub fn open_note<'a>(note: &'a str, verifier: &NoteVerifier) -> Result<&'a str, AuditError> {
    if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(AuditError::Note(
            "the note contains a control character".into(),
        ));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| AuditError::Note("the note has no signature block".into()))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(AuditError::Note(
            "the signature block must end with a newline".into(),
        ));
    }
    let mut verified = false;
    for (n, line) in sigs.trim_end_matches('\n').split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(AuditError::Note(format!(
                "the note has more than {MAX_SIGNATURES} signatures"
            )));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            AuditError::Note(format!(
                "signature line {} does not start with \"— \"",
                n + 1
            ))
        })?;
        let (name, blob) = rest.split_once(' ').ok_or_else(|| {
            AuditError::Note(format!("signature line {} has no signature", n + 1))
        })?;
        if !is_valid_key_name(name) || blob.is_empty() || blob.contains(' ') {
            return Err(AuditError::Note(format!(
                "signature line {} is malformed",
                n + 1
            )));
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| AuditError::Note(format!("signature line {} is not base64", n + 1)))?;
        if blob.len() < 5 {
            return Err(AuditError::Note(format!(
                "signature line {} is too short",
                n + 1
            )));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        if name != verifier.name || id != verifier.id {
            continue;
        }
        let sig = Signature::from_slice(&blob[4..]).map_err(|_| {
            AuditError::Signature(format!(
                "the signature by {name} is not an Ed25519 signature"
            ))
        })?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| {
                AuditError::Signature(format!("the signature by {name} does not verify"))
            })?;
        verified = true;
    }
    if !verified {
        return Err(AuditError::Signature(format!(
            "the note carries no signature by {}+{:08x}",
            verifier.name, verifier.id
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Go note package's documentation (golang.org/x/mod/sumdb/note), used as
    // data: Ed25519 is deterministic, so the same key and text must give the same bytes.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    // The example of the C2SP signed-note specification.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn go_known_answer() {
        let signer = NoteSigner::from_key_text(GO_SKEY).unwrap();
        assert_eq!(signer.name(), "PeterNeumann");
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.to_key_text(), GO_SKEY);
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        let note = sign_note(GO_TEXT, &[&signer]).unwrap();
        assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
        let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
        assert_eq!(open_note(&note, &verifier).unwrap(), GO_TEXT);
    }

    #[test]
    fn spec_example_opens() {
        let verifier = NoteVerifier::parse(SPEC_VKEY).unwrap();
        assert_eq!(verifier.key_id(), 0x530d903a);
        assert_eq!(
            open_note(SPEC_NOTE, &verifier).unwrap(),
            "This is an example message.\n"
        );
    }

    #[test]
    fn tampered_notes_fail() {
        let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
        let good = format!("{GO_TEXT}\n{GO_SIG}");
        // A changed text.
        let bad = good.replacen("cryptography", "Cryptography", 1);
        assert!(matches!(
            open_note(&bad, &verifier),
            Err(AuditError::Signature(_))
        ));
        // A signature by another key only.
        let other = NoteSigner::generate("PeterNeumann").unwrap();
        let foreign = sign_note(GO_TEXT, &[&other]).unwrap();
        assert!(matches!(
            open_note(&foreign, &verifier),
            Err(AuditError::Signature(_))
        ));
        // Both: the good one suffices, the foreign one is ignored.
        let both = format!("{good}{}", foreign.rsplit_once("\n\n").unwrap().1);
        assert!(open_note(&both, &verifier).is_ok());
        // Malformed notes.
        for bad in [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", GO_SIG.trim_end()),
            format!("{GO_TEXT}\n- PeterNeumann AAAA\n"),
            format!("{GO_TEXT}\n— PeterNeumann !!!!\n"),
            format!("a\tb\n\n{GO_SIG}"),
        ] {
            assert!(open_note(&bad, &verifier).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_refuse_bad_text_without_echoing_it() {
        for bad in [
            "",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ApRc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
        let wrong_id = GO_SKEY.replace("c74f20a3", "c74f20a4");
        let err = NoteSigner::from_key_text(&wrong_id)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("AYEKFALV"), "{err}");
        assert!(NoteSigner::from_key_text(GO_VKEY).is_err());
        assert!(NoteSigner::generate("bad name").is_err());
        assert!(NoteSigner::generate("a+b").is_err());
        assert!(!format!("{:?}", NoteSigner::from_key_text(GO_SKEY).unwrap()).contains("AYEKFALV"));
    }

    #[test]
    fn text_rules() {
        let signer = NoteSigner::generate("writ.test/log").unwrap();
        assert!(sign_note("no newline", &[&signer]).is_err());
        assert!(sign_note("a\n\nb\n", &[&signer]).is_err());
        assert!(sign_note("a\rb\n", &[&signer]).is_err());
        let note = sign_note("ok\n", &[&signer]).unwrap();
        assert_eq!(open_note(&note, &signer.verifier()).unwrap(), "ok\n");
    }
}
