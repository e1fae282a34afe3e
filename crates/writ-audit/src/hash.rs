//! RFC 9162 §2.1.1 hashing: leaves and interior nodes are hashed with distinct one-byte prefixes
//! so that a leaf can never be passed off as a node (second-preimage resistance).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::AuditError;

/// A SHA-256 hash: a leaf hash, a subtree hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Hash, AuditError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| {
            AuditError::BadHash(format!("expected 64 hex characters, got {:?}", clip(text)))
        })?;
        Ok(Hash(out))
    }

    /// Standard base64 with padding, as in checkpoints.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Hash, AuditError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| AuditError::BadHash(format!("not base64: {:?}", clip(text))))?;
        let array: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            AuditError::BadHash(format!("expected 32 bytes, got {}", b.len()))
        })?;
        Ok(Hash(array))
    }

    /// Parses a 32-byte slice, as read from a database column.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, AuditError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| AuditError::BadHash(format!("expected 32 bytes, got {}", bytes.len())))?;
        Ok(Hash(array))
    }
}

fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The leaf hash of `data`: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash(Sha256::digest(buf).into())
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_refuse_bad_input() {
        let h = leaf_hash(b"abc");
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(Hash::from_base64(&h.to_base64()).unwrap(), h);
        assert_eq!(Hash::from_slice(&h.0).unwrap(), h);
        assert!(Hash::from_hex("00").is_err());
        assert!(Hash::from_hex(&"g".repeat(64)).is_err());
        assert!(Hash::from_base64("AAAA").is_err());
        assert!(Hash::from_base64("!!!").is_err());
        assert!(Hash::from_slice(&[0u8; 31]).is_err());
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
