//! Envelope encryption: a fresh data key per credential version, wrapped by the master key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::{CredentialRef, MasterKey, Secret, VaultError};

const NONCE_LEN: usize = 12;
/// The largest secret the vault stores (a long PEM chain fits easily).
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// One sealed credential version as it is stored: nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCredential {
    pub reference: CredentialRef,
    /// The id of the master key that wrapped the data key.
    pub master_key_id: String,
    /// nonce ‖ AES-256-GCM(master key, data key).
    pub wrapped_key: Vec<u8>,
    /// nonce ‖ AES-256-GCM(data key, secret).
    pub ciphertext: Vec<u8>,
}

/// The associated data binding a ciphertext to its credential: scope, name and version.
fn associated_data(reference: &CredentialRef, layer: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"writ-vault/v1\0");
    aad.extend_from_slice(layer.as_bytes());
    aad.push(0);
    aad.extend_from_slice(reference.scope.owner_key().as_bytes());
    aad.push(0);
    aad.extend_from_slice(reference.name.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&reference.version.to_be_bytes());
    aad
}

fn encrypt(
    key: &[u8; 32],
    plaintext: &[u8],
    aad: &[u8],
    reference: &CredentialRef,
) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    crate::random(&mut nonce)?;
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::Encrypt(reference.to_string()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn decrypt(
    key: &[u8; 32],
    sealed: &[u8],
    aad: &[u8],
    reference: &CredentialRef,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let fail = || VaultError::Decrypt(reference.to_string());
    if sealed.len() < NONCE_LEN + 16 {
        return Err(fail());
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| fail())
}

/// Encrypts `secret` as the credential `reference`, under a fresh data key wrapped by `master`.
pub fn seal(
    master: &MasterKey,
    reference: CredentialRef,
    secret: &Secret,
) -> Result<SealedCredential, VaultError> {
    if secret.is_empty() {
        return Err(VaultError::EmptySecret(reference.to_string()));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(VaultError::TooLarge {
            reference: reference.to_string(),
            size: secret.len(),
            limit: MAX_SECRET_LEN,
        });
    }
    let mut data_key = Zeroizing::new([0u8; 32]);
    crate::random(&mut data_key[..])?;
    let ciphertext = encrypt(
        &data_key,
        secret.expose(),
        &associated_data(&reference, "secret"),
        &reference,
    )?;
    let wrapped_key = encrypt(
        master.bytes(),
        &data_key[..],
        &associated_data(&reference, "data-key"),
        &reference,
    )?;
    Ok(SealedCredential {
        reference,
        master_key_id: master.id().to_owned(),
        wrapped_key,
        ciphertext,
    })
}

/// Decrypts a sealed credential. Fails if anything about it (bytes, name, version, scope, master
/// key) differs from when it was sealed.
pub fn open(master: &MasterKey, sealed: &SealedCredential) -> Result<Secret, VaultError> {
    let reference = &sealed.reference;
    if sealed.master_key_id != master.id() {
        return Err(VaultError::WrongMasterKey {
            reference: reference.to_string(),
            sealed_with: sealed.master_key_id.clone(),
            loaded: master.id().to_owned(),
        });
    }
    let data_key = decrypt(
        master.bytes(),
        &sealed.wrapped_key,
        &associated_data(reference, "data-key"),
        reference,
    )?;
    let data_key: &[u8; 32] = data_key
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::Decrypt(reference.to_string()))?;
    let plain = decrypt(
        data_key,
        &sealed.ciphertext,
        &associated_data(reference, "secret"),
        reference,
    )?;
    Ok(Secret::new(plain.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CredentialName, CredentialScope};
    use proptest::prelude::*;

    fn r(name: &str, version: u32, scope: CredentialScope) -> CredentialRef {
        CredentialRef {
            name: CredentialName::new(name).unwrap(),
            version,
            scope,
        }
    }

    #[test]
    fn round_trip_and_no_plaintext_in_the_sealed_form() {
        let master = MasterKey::generate().unwrap();
        let secret = Secret::from("ghp_supersecrettoken123".to_owned());
        let sealed = seal(&master, r("github", 1, CredentialScope::Shared), &secret).unwrap();
        let debug = format!("{sealed:?}");
        assert!(!debug.contains("supersecret"));
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"supersecret"));
        assert_eq!(open(&master, &sealed).unwrap(), secret);
        // Two seals of the same secret differ (fresh data key and nonces).
        let again = seal(&master, r("github", 1, CredentialScope::Shared), &secret).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.wrapped_key, sealed.wrapped_key);
    }

    #[test]
    fn moved_or_altered_ciphertexts_do_not_open() {
        let master = MasterKey::generate().unwrap();
        let secret = Secret::from("s3cr3t".to_owned());
        let sealed = seal(&master, r("db", 2, CredentialScope::Shared), &secret).unwrap();
        let moved = |reference: CredentialRef| SealedCredential {
            reference,
            ..sealed.clone()
        };
        for other in [
            r("db", 1, CredentialScope::Shared),
            r("db2", 2, CredentialScope::Shared),
            r("db", 2, CredentialScope::user("alice").unwrap()),
        ] {
            let err = open(&master, &moved(other)).unwrap_err();
            assert!(matches!(err, VaultError::Decrypt(_)), "{err}");
        }
        let mut flipped = sealed.clone();
        let last = flipped.ciphertext.len() - 1;
        flipped.ciphertext[last] ^= 1;
        assert!(matches!(
            open(&master, &flipped),
            Err(VaultError::Decrypt(_))
        ));
        let mut flipped = sealed.clone();
        flipped.wrapped_key[NONCE_LEN] ^= 1;
        assert!(open(&master, &flipped).is_err());
        let mut short = sealed.clone();
        short.ciphertext.truncate(5);
        assert!(open(&master, &short).is_err());
    }

    #[test]
    fn wrong_master_key_is_named_as_such() {
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let sealed = seal(
            &master,
            r("db", 1, CredentialScope::Shared),
            &Secret::from("x".to_owned()),
        )
        .unwrap();
        let err = open(&other, &sealed).unwrap_err();
        assert!(matches!(err, VaultError::WrongMasterKey { .. }), "{err}");
        // Even with a forged id, the other key cannot unwrap the data key.
        let forged = SealedCredential {
            master_key_id: other.id().to_owned(),
            ..sealed
        };
        assert!(matches!(open(&other, &forged), Err(VaultError::Decrypt(_))));
    }

    #[test]
    fn empty_and_oversized_secrets_are_refused() {
        let master = MasterKey::generate().unwrap();
        let reference = r("db", 1, CredentialScope::Shared);
        assert!(matches!(
            seal(&master, reference.clone(), &Secret::new(Vec::new())),
            Err(VaultError::EmptySecret(_))
        ));
        assert!(matches!(
            seal(
                &master,
                reference,
                &Secret::new(vec![0; MAX_SECRET_LEN + 1])
            ),
            Err(VaultError::TooLarge { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_secret_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..2048), version in 1u32..1000) {
            let master = MasterKey::from_bytes([9; 32]);
            let secret = Secret::new(bytes.clone());
            let sealed = seal(&master, r("p", version, CredentialScope::Shared), &secret).unwrap();
            let opened = open(&master, &sealed).unwrap();
            prop_assert_eq!(opened.expose(), &bytes[..]);
        }
    }
}
