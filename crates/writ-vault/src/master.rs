//! The master key: where it comes from and how it is identified.

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::VaultError;

/// The environment variable that can hold the master key (64 hex digits or base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "WRIT_MASTER_KEY";
/// The file name of a generated master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the master key comes from, in the order Writ looks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// The key text itself (as read from `WRIT_MASTER_KEY`).
    Env(String),
    /// A file holding the key text.
    File(PathBuf),
    /// `master.key` in the data directory, generated (mode 0600) if absent.
    DataDir(PathBuf),
}

impl MasterKeySource {
    /// `WRIT_MASTER_KEY` if set, else `key_file` if given, else the data directory.
    pub fn resolve(key_file: Option<&Path>, data_dir: &Path) -> Self {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) if !text.is_empty() => MasterKeySource::Env(text),
            _ => match key_file {
                Some(path) => MasterKeySource::File(path.to_path_buf()),
                None => MasterKeySource::DataDir(data_dir.to_path_buf()),
            },
        }
    }
}

/// The 256-bit key that wraps every data key. Zeroized on drop; never printed.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let key = Zeroizing::new(bytes);
        // The id lets Writ say "wrong master key" instead of "corrupt ciphertext". It is a hash
        // of a 256-bit random key, so it reveals nothing usable about the key.
        let mut h = Sha256::new();
        h.update(b"writ-vault master key id\0");
        h.update(&key[..]);
        let id = hex::encode(&h.finalize()[..8]);
        MasterKey { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, VaultError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        crate::random(&mut bytes[..])?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Parses key text: 64 hex digits, or standard/URL-safe base64 of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let text = text.trim();
        let decoded: Zeroizing<Vec<u8>> =
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(text).map_err(|_| bad_key_text())?)
            } else {
                let engines = [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &base64::engine::general_purpose::URL_SAFE,
                    &base64::engine::general_purpose::STANDARD_NO_PAD,
                ];
                Zeroizing::new(
                    engines
                        .iter()
                        .find_map(|e| e.decode(text).ok())
                        .ok_or_else(bad_key_text)?,
                )
            };
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            VaultError::InvalidMasterKey(format!(
                "it decodes to {} bytes; a master key is exactly 32 bytes",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Loads the key from `source`, generating the data-directory file on first use.
    pub fn load(source: &MasterKeySource) -> Result<Self, VaultError> {
        match source {
            MasterKeySource::Env(text) => Self::parse(text).map_err(|e| match e {
                VaultError::InvalidMasterKey(m) => {
                    VaultError::InvalidMasterKey(format!("{MASTER_KEY_ENV}: {m}"))
                }
                other => other,
            }),
            MasterKeySource::File(path) => Self::read_file(path),
            MasterKeySource::DataDir(dir) => {
                let path = dir.join(MASTER_KEY_FILE);
                if path.exists() {
                    Self::read_file(&path)
                } else {
                    Self::generate_into(&path)
                }
            }
        }
    }

    fn read_file(path: &Path) -> Result<Self, VaultError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| file_err(path, e))?);
        Self::parse(&text).map_err(|e| match e {
            VaultError::InvalidMasterKey(m) => {
                VaultError::InvalidMasterKey(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Writes a new key to `path` with mode 0600, refusing to overwrite an existing file.
    pub fn generate_into(path: &Path) -> Result<Self, VaultError> {
        use std::io::Write;
        let key = Self::generate()?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(&key.key[..])));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| file_err(path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| file_err(path, e))?;
        Ok(key)
    }

    /// A short public identifier of this key (a hash prefix), stored beside each sealed
    /// credential.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

fn bad_key_text() -> VaultError {
    VaultError::InvalidMasterKey(
        "it is neither 64 hex digits nor base64 of 32 bytes (generate one with `openssl rand -hex 32`)"
            .to_owned(),
    )
}

fn file_err(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::MasterKeyFile {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base64_and_refuses_wrong_lengths() {
        let hex_text = "00".repeat(32);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(MasterKey::parse(&hex_text).unwrap().bytes(), &[0u8; 32]);
        assert_eq!(MasterKey::parse(&b64).unwrap().bytes(), &[7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = MasterKey::parse(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(MasterKey::parse("not a key!").is_err());
        assert!(MasterKey::parse("").is_err());
    }

    #[test]
    fn generated_in_data_dir_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let source = MasterKeySource::DataDir(dir.path().to_path_buf());
        let first = MasterKey::load(&source).unwrap();
        let second = MasterKey::load(&source).unwrap();
        assert_eq!(first.bytes(), second.bytes());
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let from_file =
            MasterKey::load(&MasterKeySource::File(dir.path().join(MASTER_KEY_FILE))).unwrap();
        assert_eq!(from_file.id(), first.id());
    }

    #[test]
    fn errors_and_debug_never_contain_the_key() {
        let key = MasterKey::generate().unwrap();
        let hex_key = hex::encode(&key.bytes()[..]);
        assert!(!format!("{key:?}").contains(&hex_key));
        let almost = &hex_key[..63];
        let err = MasterKey::parse(almost).unwrap_err().to_string();
        assert!(!err.contains(almost), "{err}");
    }
}
