//! API keys: 256-bit random tokens with a recognisable prefix (so that secret scanners find a
//! leaked one), stored only as SHA-256 hashes. A key has enough entropy that a fast hash is
//! safe; passwords, which do not, use Argon2id (`password.rs`).

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::IdentityError;
use crate::base64url::{b64, b64_decode};

/// Prefix of a user's API key.
pub const USER_KEY_PREFIX: &str = "writ_uk_";
/// Prefix of an agent's API key.
pub const AGENT_KEY_PREFIX: &str = "writ_ak_";

/// Whose key it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    User,
    Agent,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            KeyKind::User => USER_KEY_PREFIX,
            KeyKind::Agent => AGENT_KEY_PREFIX,
        }
    }
}

/// A freshly generated key: show `key` to its owner once, store only `hash` and `key_id`.
pub struct NewApiKey {
    pub key: Zeroizing<String>,
    pub key_id: String,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewApiKey({}, redacted)", self.key_id)
    }
}

pub fn generate(kind: KeyKind) -> Result<NewApiKey, IdentityError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut bytes[..]).map_err(|e| {
        IdentityError::InvalidInput(format!("the system random generator failed: {e}"))
    })?;
    let key = Zeroizing::new(format!("{}{}", kind.prefix(), b64(&bytes[..])));
    let hash = hash(&key);
    Ok(NewApiKey {
        key_id: key_id(kind, &hash),
        key,
        hash,
    })
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The public id of a key: its kind and a prefix of its hash (never of the key itself).
fn key_id(kind: KeyKind, hash: &[u8; 32]) -> String {
    format!("{}{}", kind.prefix(), hex::encode(&hash[..6]))
}

/// Checks the shape of a presented key and returns its kind and hash for lookup. The error
/// never repeats the key.
pub fn parse_presented(key: &str) -> Result<(KeyKind, [u8; 32]), IdentityError> {
    let bad = || {
        IdentityError::InvalidInput(
            "the API key is malformed (expected writ_uk_… or writ_ak_…)".into(),
        )
    };
    let (kind, rest) = if let Some(rest) = key.strip_prefix(USER_KEY_PREFIX) {
        (KeyKind::User, rest)
    } else if let Some(rest) = key.strip_prefix(AGENT_KEY_PREFIX) {
        (KeyKind::Agent, rest)
    } else {
        return Err(bad());
    };
    if rest.len() != 43 || b64_decode(rest).is_none_or(|b| b.len() != 32) {
        return Err(bad());
    }
    Ok((kind, hash(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_the_hash_identifies_them() {
        let k = generate(KeyKind::Agent).unwrap();
        assert!(k.key.starts_with("writ_ak_"));
        assert_eq!(k.key.len(), 8 + 43);
        let (kind, hash) = parse_presented(&k.key).unwrap();
        assert_eq!(kind, KeyKind::Agent);
        assert_eq!(hash, k.hash);
        assert!(!k.key_id.contains(&k.key[8..14]));
        assert!(!format!("{k:?}").contains(&k.key[8..]));
        let other = generate(KeyKind::User).unwrap();
        assert_ne!(other.hash, k.hash);
        for bad in [
            "",
            "writ_ak_",
            "writ_xx_AAAA",
            &format!("{}x", &*k.key),
            &k.key[..50],
        ] {
            let err = parse_presented(bad).unwrap_err().to_string();
            assert!(bad.len() < 9 || !err.contains(&bad[8..]), "{err}");
        }
    }
}
