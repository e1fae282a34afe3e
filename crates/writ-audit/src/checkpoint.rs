//! Checkpoints in the C2SP `tlog-checkpoint` format (https://c2sp.org/tlog-checkpoint): the
//! origin line, the tree size in decimal, the base64 root hash, then optional extension lines,
//! signed as a C2SP signed note.

use crate::note::{open_note, sign_note};
use crate::{AuditError, Hash, NoteSigner, NoteVerifier};

/// What a log commits to at one moment: its size and root, under its origin name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

fn valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c.is_control())
}

impl Checkpoint {
    /// The checkpoint body, the text that is signed.
    pub fn to_body(&self) -> Result<String, AuditError> {
        if !valid_line(&self.origin) {
            return Err(AuditError::Checkpoint(
                "the origin must be one non-empty line without control characters".into(),
            ));
        }
        if let Some(bad) = self.extensions.iter().position(|e| !valid_line(e)) {
            return Err(AuditError::Checkpoint(format!(
                "extension line {} is empty or has control characters",
                bad + 1
            )));
        }
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a checkpoint body (not a signed note: see [`open_checkpoint`]).
    pub fn parse(body: &str) -> Result<Checkpoint, AuditError> {
        let bad = |why: &str| AuditError::Checkpoint(why.to_owned());
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("the body must end with a newline"))?;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|l| valid_line(l))
            .ok_or_else(|| bad("the origin line is empty"))?;
        let size_text = lines
            .next()
            .ok_or_else(|| bad("the tree size line is missing"))?;
        let canonical = !size_text.is_empty()
            && size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        if !canonical {
            return Err(bad(
                "the tree size must be a decimal number without leading zeros",
            ));
        }
        let size: u64 = size_text
            .parse()
            .map_err(|_| bad("the tree size does not fit in 64 bits"))?;
        let root_text = lines
            .next()
            .ok_or_else(|| bad("the root hash line is missing"))?;
        let root = Hash::from_base64(root_text)
            .map_err(|e| AuditError::Checkpoint(format!("the root hash line: {e}")))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(|e| !valid_line(e)) {
            return Err(bad("an extension line is empty or has control characters"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Signs a checkpoint, returning the signed note.
pub fn sign_checkpoint(checkpoint: &Checkpoint, signer: &NoteSigner) -> Result<String, AuditError> {
    sign_note(&checkpoint.to_body()?, &[signer])
}

/// Verifies a signed checkpoint against `verifier` and parses it; with `origin`, also checks that
/// the checkpoint is for that log.
pub fn open_checkpoint(
    note: &str,
    verifier: &NoteVerifier,
    origin: Option<&str>,
) -> Result<Checkpoint, AuditError> {
    let body = open_note(note, verifier)?;
    let checkpoint = Checkpoint::parse(body)?;
    if let Some(expected) = origin
        && checkpoint.origin != expected
    {
        return Err(AuditError::Checkpoint(format!(
            "the checkpoint is for log {:?}, not {expected:?}",
            checkpoint.origin
        )));
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;

    #[test]
    fn body_round_trips_and_is_the_c2sp_form() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 12345,
            root: Hash([0xab; 32]),
            extensions: vec!["ext one".into()],
        };
        let body = cp.to_body().unwrap();
        assert_eq!(
            body,
            "example.com/log\n12345\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\next one\n"
        );
        assert_eq!(Checkpoint::parse(&body).unwrap(), cp);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let root = Hash([1; 32]).to_base64();
        for bad in [
            String::new(),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            "o\n1\nAAAA\n".to_owned(),
            "o\n1\n".to_owned(),
            format!("o\n1\n{root}\n\n"),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::parse(&format!("o\n0\n{root}\n")).is_ok());
    }

    #[test]
    fn signed_checkpoints_open_only_with_the_right_key_and_origin() {
        let signer = NoteSigner::generate("writ.test/log").unwrap();
        let cp = Checkpoint {
            origin: "writ.test/log".into(),
            size: 3,
            root: leaf_hash(b"x"),
            extensions: vec![],
        };
        let note = sign_checkpoint(&cp, &signer).unwrap();
        assert_eq!(
            open_checkpoint(&note, &signer.verifier(), Some("writ.test/log")).unwrap(),
            cp
        );
        assert!(open_checkpoint(&note, &signer.verifier(), Some("other")).is_err());
        let other = NoteSigner::generate("writ.test/log").unwrap();
        assert!(open_checkpoint(&note, &other.verifier(), None).is_err());
        let forged = note.replacen("\n3\n", "\n4\n", 1);
        assert!(open_checkpoint(&forged, &signer.verifier(), None).is_err());
    }
}
