//! The gateway's key files in the data directory: the log's Ed25519 signing key (`log.key`, mode
//! 0600, in the private-key text form of Go's `note` package) with its verifier key beside it
//! (`log.pub`, safe to publish), and the token signing key (`token.key`, mode 0600, hex of 32
//! bytes). Anyone holding `log.pub` can check Writ's checkpoints with any C2SP signed-note
//! implementation. Key material is never put into an error.

use std::io::Write;
use std::path::{Path, PathBuf};

use writ_audit::{NoteSigner, NoteVerifier};
use zeroize::Zeroizing;

pub const SIGNING_KEY_FILE: &str = "log.key";
pub const VERIFIER_KEY_FILE: &str = "log.pub";
/// The token signing key file (hex of 32 bytes, mode 0600).
pub const TOKEN_KEY_FILE: &str = "token.key";
/// The default log origin (the first line of every checkpoint, and the key name).
pub const DEFAULT_ORIGIN: &str = "writ.local/audit";

/// A key file that could not be made, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "{} already exists; the log keeps its key. Use --force to replace it (old checkpoints then need the old verifier key)",
        path.display()
    )]
    AlreadyExists { path: PathBuf },
    #[error("cannot make a key named {origin:?}")]
    Origin {
        origin: String,
        #[source]
        source: writ_audit::AuditError,
    },
    #[error(
        "cannot read the log's signing key {}; create it with `writ keys generate`",
        path.display()
    )]
    MissingSigningKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read the verifier key {}; create keys with `writ keys generate`",
        path.display()
    )]
    MissingVerifierKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is readable by others (mode {:o}); run `chmod 600 {}`",
        path.display(),
        mode,
        path.display()
    )]
    ReadableByOthers { path: PathBuf, mode: u32 },
    #[error("{} is not a valid signing key: {reason}", path.display())]
    InvalidSigningKey { path: PathBuf, reason: String },
    #[error("invalid verifier key: {reason}")]
    InvalidVerifierKey { reason: String },
    #[error("{} is not 64 hex digits", path.display())]
    InvalidTokenKey { path: PathBuf },
    #[error("random generator failed: {0}")]
    Random(String),
    /// Reading, creating or writing a file failed (`what` is the verb).
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DataDir(#[from] writ_store::StoreError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_path_buf();
    move |source| KeyFileError::Io { what, path, source }
}

pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

pub fn verifier_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VERIFIER_KEY_FILE)
}

pub fn token_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_KEY_FILE)
}

/// Creates the log's key pair; refuses to replace an existing key unless `force`.
pub fn generate(data_dir: &Path, origin: &str, force: bool) -> Result<NoteVerifier, KeyFileError> {
    writ_store::ensure_data_dir(data_dir)?;
    let key_path = signing_key_path(data_dir);
    if key_path.exists() && !force {
        return Err(KeyFileError::AlreadyExists { path: key_path });
    }
    let signer = NoteSigner::generate(origin).map_err(|source| KeyFileError::Origin {
        origin: origin.to_owned(),
        source,
    })?;
    let verifier = signer.verifier();
    write_secret_file(&key_path, signer.to_key_text().as_bytes())?;
    let pub_path = verifier_key_path(data_dir);
    std::fs::write(&pub_path, format!("{verifier}\n")).map_err(io("writing", &pub_path))?;
    Ok(verifier)
}

/// Writes a file only its owner can read (mode 0600 from creation, never briefly wider).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = create_secret(&tmp)?;
    file.write_all(contents)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("writing", path))
}

/// Creates a new file with mode 0600 (on Unix); fails if it exists.
fn create_secret(path: &Path) -> Result<std::fs::File, KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io("creating", path))
}

/// Loads the log's signing key from the data directory, refusing a file others can read.
pub fn load_signer(data_dir: &Path) -> Result<NoteSigner, KeyFileError> {
    let path = signing_key_path(data_dir);
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|source| {
        KeyFileError::MissingSigningKey {
            path: path.clone(),
            source,
        }
    })?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(io("reading", &path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::ReadableByOthers {
                path,
                mode: mode & 0o777,
            });
        }
    }
    // The key text is never echoed in an error.
    NoteSigner::from_key_text(text.trim()).map_err(|e| KeyFileError::InvalidSigningKey {
        path,
        reason: e.to_string(),
    })
}

/// Loads a verifier key from `explicit` (a file or the key text itself) or the data directory.
pub fn load_verifier(
    data_dir: &Path,
    explicit: Option<&str>,
) -> Result<NoteVerifier, KeyFileError> {
    let text = match explicit {
        Some(value) if Path::new(value).is_file() => {
            let path = PathBuf::from(value);
            std::fs::read_to_string(&path).map_err(io("reading verifier key", &path))?
        }
        Some(value) => value.to_owned(),
        None => {
            let path = verifier_key_path(data_dir);
            std::fs::read_to_string(&path)
                .map_err(|source| KeyFileError::MissingVerifierKey { path, source })?
        }
    };
    NoteVerifier::parse(text.trim()).map_err(|e| KeyFileError::InvalidVerifierKey {
        reason: e.to_string(),
    })
}

/// Loads the token signing key, generating it (mode 0600) on first use.
pub fn token_signing_key(data_dir: &Path) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    let path = token_key_path(data_dir);
    if path.exists() {
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io("reading", &path))?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| KeyFileError::InvalidTokenKey { path: path.clone() })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        return Ok(ed25519_dalek::SigningKey::from_bytes(&key));
    }
    writ_store::ensure_data_dir(data_dir)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let mut file = create_secret(&path)?;
    let line = Zeroizing::new(format!("{}\n", hex::encode(&seed[..])));
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &path))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_generated_log_key_loads_and_is_not_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = generate(dir.path(), DEFAULT_ORIGIN, false).unwrap();
        assert_eq!(
            load_signer(dir.path()).unwrap().verifier().to_string(),
            verifier.to_string()
        );
        assert_eq!(
            load_verifier(dir.path(), None).unwrap().to_string(),
            verifier.to_string()
        );
        let again = generate(dir.path(), DEFAULT_ORIGIN, false).unwrap_err();
        assert!(
            matches!(again, KeyFileError::AlreadyExists { .. }),
            "{again}"
        );
        generate(dir.path(), DEFAULT_ORIGIN, true).unwrap();
    }

    #[test]
    fn the_token_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = token_signing_key(dir.path()).unwrap();
        let second = token_signing_key(dir.path()).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::write(token_key_path(dir.path()), "not hex\n").unwrap();
        let err = token_signing_key(dir.path()).unwrap_err();
        assert!(matches!(err, KeyFileError::InvalidTokenKey { .. }), "{err}");
    }
}
