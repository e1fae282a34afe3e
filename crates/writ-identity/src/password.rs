//! Passwords of local users, for the console's sign-in: what a new password must be, and
//! Argon2id hashing into PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! The parameters are OWASP's minimum for Argon2id (19 MiB, two passes, one lane). They travel
//! inside each PHC string, so raising them later leaves existing hashes verifiable. Hashing is
//! deliberately slow (tens of milliseconds): callers on an async runtime run these functions on
//! a blocking thread. [`verify_dummy`] costs the same as a real verification, so that a sign-in
//! for a user without a password takes as long as one with a wrong password.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::UserId;

/// The fewest characters a password may have.
pub const MIN_CHARS: usize = 12;
/// The most bytes a password may have (UTF-8).
pub const MAX_BYTES: usize = 256;
/// Argon2id memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Argon2id passes.
pub const T_COST: u32 = 2;
/// Argon2id lanes.
pub const P_COST: u32 = 1;

/// Why a password was not accepted or could not be hashed. Never holds the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error(
        "the password is too short: use at least {MIN_CHARS} characters (a few unrelated words make a good one)"
    )]
    TooShort,
    #[error("the password is too long: use at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("the password must not be the user id")]
    SameAsUserId,
    #[error("the stored password hash is unreadable: {0}")]
    BadHash(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// A password as typed. No `Display` or `Serialize`; `Debug` shows nothing of it; the bytes
/// are zeroed when it is dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(text: impl Into<String>) -> Self {
        Password(Zeroizing::new(text.into()))
    }

    /// The password's text, to hash or verify.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(redacted)")
    }
}

/// Checks that `password` may become `user`'s password: at least [`MIN_CHARS`] characters, at
/// most [`MAX_BYTES`] bytes, and not the user id itself (in any case).
pub fn check_new(user: &UserId, password: &Password) -> Result<(), PasswordError> {
    let text = password.expose();
    if text.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if text.chars().count() < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    if text.trim().eq_ignore_ascii_case(user.as_str()) {
        return Err(PasswordError::SameAsUserId);
    }
    Ok(())
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with Argon2id and a fresh 128-bit salt; returns the PHC string. Slow: run
/// it on a blocking thread.
pub fn hash(password: &Password) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| PasswordError::Hashing(format!("the system random source failed: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hashing(e.to_string()))?;
    let phc = hasher()?
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (compared in constant time). Only Argon2id
/// hashes are accepted; the cost parameters are the ones the string carries. Slow: run it on a
/// blocking thread.
pub fn verify(phc: &str, password: &Password) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(PasswordError::BadHash(format!(
            "algorithm {} is not argon2id",
            parsed.algorithm
        )));
    }
    match hasher()?.verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::BadHash(e.to_string())),
    }
}

/// A hash of nothing anyone knows, made once per process with the same parameters.
static DUMMY: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret[..]).ok()?;
    hash(&Password::new(hex::encode(&secret[..]))).ok()
});

/// Spends the time of one verification and always fails: for a user who does not exist or has
/// no password, so that the answer does not come sooner than for a wrong password.
pub fn verify_dummy(password: &Password) {
    match DUMMY.as_deref() {
        Some(phc) => {
            let _ = verify(phc, password);
        }
        None => {
            let _ = hash(password);
        }
    }
}

/// The Argon2 cost parameters `(m KiB, t, p)` that a PHC string carries.
pub fn params_of(phc: &str) -> Result<(u32, u32, u32), PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    let params = Params::try_from(&parsed).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    Ok((params.m_cost(), params.t_cost(), params.p_cost()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let pw = Password::new("correct horse battery");
        let phc = hash(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(&phc, &pw).unwrap());
        assert!(!verify(&phc, &Password::new("correct horse batterz")).unwrap());
        assert!(!verify(&phc, &Password::new("")).unwrap());
        // A fresh salt each time: the same password never hashes to the same string.
        assert_ne!(hash(&pw).unwrap(), phc);
    }

    #[test]
    fn parameters_are_read_back_from_the_phc_string() {
        let phc = hash(&Password::new("twelve chars ok")).unwrap();
        assert_eq!(params_of(&phc).unwrap(), (19_456, 2, 1));
        assert!(phc.contains("$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn limits() {
        let cases: &[(&str, Result<(), PasswordError>)] = &[
            ("", Err(PasswordError::TooShort)),
            ("elevenchars", Err(PasswordError::TooShort)),
            ("twelve chars", Ok(())),
            // Characters, not bytes: twelve two-byte letters are enough.
            ("éééééééééééé", Ok(())),
            ("ééééééééééé", Err(PasswordError::TooShort)),
            ("alicealicealice", Ok(())),
        ];
        for (text, expected) in cases {
            assert_eq!(
                &check_new(&alice(), &Password::new(*text)),
                expected,
                "{text:?}"
            );
        }
        let long_user = UserId::new("alice-the-approver").unwrap();
        assert_eq!(
            check_new(&long_user, &Password::new("Alice-The-Approver")),
            Err(PasswordError::SameAsUserId)
        );
        assert_eq!(check_new(&alice(), &Password::new("a".repeat(256))), Ok(()));
        assert_eq!(
            check_new(&alice(), &Password::new("a".repeat(257))),
            Err(PasswordError::TooLong)
        );
        // 129 two-byte characters are 258 bytes.
        assert_eq!(
            check_new(&alice(), &Password::new("é".repeat(129))),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn unreadable_or_foreign_hashes_are_errors_not_matches() {
        let pw = Password::new("correct horse battery");
        assert!(matches!(
            verify("not a phc string", &pw),
            Err(PasswordError::BadHash(_))
        ));
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA";
        assert!(matches!(
            verify(argon2i, &pw),
            Err(PasswordError::BadHash(_))
        ));
        verify_dummy(&pw);
    }

    #[test]
    fn debug_shows_nothing() {
        let pw = Password::new("correct horse battery");
        assert_eq!(format!("{pw:?}"), "Password(redacted)");
    }
}
