//! The `Secret` type: bytes that cannot be printed, logged or serialized by accident.

use zeroize::Zeroizing;

/// Secret bytes (a password, an API token, a private key). It implements no `Display`,
/// `Serialize` or `Clone`; its `Debug` prints only `Secret(redacted)`; its memory is zeroized when
/// it is dropped. Read the bytes with [`Secret::expose`] at the point of use and nowhere else.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes. Call this only where the secret is handed to the system it is for.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s.into_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Constant-time equality, so that comparing a presented secret leaks no timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::from("hunter2-very-secret".to_owned());
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(s.expose(), b"hunter2-very-secret");
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(Secret::new(b"a".to_vec()), Secret::new(b"a".to_vec()));
        assert_ne!(Secret::new(b"a".to_vec()), Secret::new(b"b".to_vec()));
        assert_ne!(Secret::new(b"a".to_vec()), Secret::new(b"ab".to_vec()));
    }
}
