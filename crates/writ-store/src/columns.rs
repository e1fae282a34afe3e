//! Conversions between Writ's values and the columns both backends keep them in: integers that
//! must not be negative, 32-byte hashes, microsecond timestamps, JSON text. A stored value that
//! does not convert is [`StoreError::Corrupt`]; a value too large to store is
//! [`StoreError::InvalidRequest`].

use writ_audit::Hash;
use writ_core::Timestamp;

use crate::StoreError;

/// Converts a stored integer to the u64 it must be, or says the row is corrupt.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// Converts a u64 to the i64 both databases store, refusing values that do not fit.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::InvalidRequest(format!("{what} {value} is too large")))
}

/// Reads a 32-byte hash column.
pub(crate) fn to_hash(bytes: &[u8], what: &str) -> Result<Hash, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))?;
    Ok(Hash(array))
}

/// Reads a microsecond timestamp column.
pub(crate) fn to_ts(us: i64, what: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(us).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Reads a nullable microsecond timestamp column.
pub(crate) fn opt_ts(us: Option<i64>, what: &str) -> Result<Option<Timestamp>, StoreError> {
    us.map(|u| to_ts(u, what)).transpose()
}

/// Writes a value as the JSON text both backends store.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    what: &str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidRequest(format!("{what}: {e}")))
}

/// Reads JSON text back into `T`.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A stored id that `writ-identity` no longer accepts.
pub(crate) fn corrupt(what: &str) -> impl Fn(writ_identity::IdentityError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored credential name or scope that `writ-vault` no longer accepts.
pub(crate) fn vault_corrupt(what: &str) -> impl Fn(writ_vault::VaultError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}
