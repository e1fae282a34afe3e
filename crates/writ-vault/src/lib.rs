//! Writ's vault: the credentials Writ uses to act on other systems, encrypted at rest, versioned,
//! and referred to everywhere else only as `name@version`.
//!
//! Envelope encryption: one **master key** (from `WRIT_MASTER_KEY`, a key file, or generated into
//! the data directory on first start) wraps a fresh random **data key** per credential version;
//! the data key encrypts the secret. Both layers are AES-256-GCM with the credential's identity
//! (scope, name, version) as associated data, so a ciphertext moved to another row, name or
//! version fails to open instead of yielding the wrong secret.
//!
//! A [`Secret`] has no `Debug`, `Display` or `Serialize` that shows its bytes and is zeroized on
//! drop; the only way to its bytes is [`Secret::expose`], which is easy to find in review.
//!
//! This crate is pure: it does no database work (the rows live in `writ-store`) and touches the
//! file system only to read or create the master key file.
//!
//! Modules: `master` (the master key and where it comes from), `envelope` (sealing and opening
//! with a data key), `credential` (names, scopes, versions, references), `secret` (`Secret`).

mod credential;
mod envelope;
mod master;
mod secret;

pub use credential::{
    CredentialName, CredentialRef, CredentialScope, VersionState, check_retire, choose_version,
};
pub use envelope::{SealedCredential, open, seal};
pub use master::{MASTER_KEY_ENV, MASTER_KEY_FILE, MasterKey, MasterKeySource};
pub use secret::Secret;

/// What went wrong in the vault. No message ever contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "invalid credential name {0:?}: use 1–64 characters a–z, 0–9, '.', '_', '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("invalid user id {0:?} for a per-user credential")]
    InvalidOwner(String),
    #[error("the master key is invalid: {0}")]
    InvalidMasterKey(String),
    #[error("cannot read or create the master key file {path}: {message}")]
    MasterKeyFile { path: String, message: String },
    #[error(
        "credential {reference} was sealed under master key {sealed_with}, but the loaded master key is {loaded}; start Writ with the master key the vault was created with"
    )]
    WrongMasterKey {
        reference: String,
        sealed_with: String,
        loaded: String,
    },
    #[error(
        "credential {0} cannot be decrypted: its stored ciphertext was altered, moved from another credential, or the master key is wrong"
    )]
    Decrypt(String),
    #[error("credential {0} could not be encrypted")]
    Encrypt(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("credential {0} is empty: a secret must have at least one byte")]
    EmptySecret(String),
    #[error("credential {reference} is too large ({size} bytes; the limit is {limit})")]
    TooLarge {
        reference: String,
        size: usize,
        limit: usize,
    },
    #[error("{0}")]
    Lifecycle(String),
}

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|e| VaultError::Random(e.to_string()))
}
