//! Agent client assertions (RFC 7523): EdDSA and ES256, and the ways they are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_identity::assertion::{AgentPublicKey, claimed_agent, verify_client_assertion};
use writ_identity::{AgentId, TokenError};

const ENDPOINT: &str = "https://writ.example/oauth/token";
const NOW: i64 = 1_800_000_000;

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_micros(s * 1_000_000).unwrap()
}

enum Key {
    Ed(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl Key {
    fn public(&self) -> AgentPublicKey {
        match self {
            Key::Ed(k) => AgentPublicKey::Ed25519(k.verifying_key()),
            Key::P256(k) => AgentPublicKey::P256(*k.verifying_key()),
        }
    }
    fn sign(&self, alg: &str, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match self {
            Key::Ed(k) => {
                use ed25519_dalek::Signer;
                k.sign(input.as_bytes()).to_bytes().to_vec()
            }
            Key::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn claims() -> Value {
    json!({"iss": "bot", "sub": "bot", "aud": ENDPOINT, "exp": NOW + 60, "jti": "j1"})
}

#[test]
fn eddsa_and_es256_assertions_verify() {
    let bot = AgentId::new("bot").unwrap();
    for (key, alg) in [
        (
            Key::Ed(ed25519_dalek::SigningKey::from_bytes(&[3; 32])),
            "EdDSA",
        ),
        (
            Key::P256(p256::ecdsa::SigningKey::from_bytes(&[4u8; 32].into()).unwrap()),
            "ES256",
        ),
    ] {
        let public = key.public();
        // The stored JWK form round-trips.
        assert_eq!(AgentPublicKey::from_jwk(&public.to_jwk()).unwrap(), public);
        let a = key.sign(alg, &claims());
        assert_eq!(claimed_agent(&a).unwrap(), bot);
        let v = verify_client_assertion(&a, &bot, &public, ENDPOINT, at(NOW)).unwrap();
        assert_eq!(v.jti, "j1");
    }
}

#[test]
fn bad_assertions_are_refused() {
    let bot = AgentId::new("bot").unwrap();
    let ed = Key::Ed(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
    let other = Key::Ed(ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
    let ec = Key::P256(p256::ecdsa::SigningKey::from_bytes(&[4u8; 32].into()).unwrap());
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let cases: Vec<(&str, String, &Key)> = vec![
        ("signed by another key", other.sign("EdDSA", &claims()), &ed),
        (
            "ES256 claimed for an Ed25519 key",
            ec.sign("ES256", &claims()),
            &ed,
        ),
        (
            "EdDSA claimed for a P-256 key",
            ed.sign("EdDSA", &claims()),
            &ec,
        ),
        ("none", ed.sign("none", &claims()), &ed),
        (
            "another agent's iss",
            ed.sign("EdDSA", &with("iss", json!("other"))),
            &ed,
        ),
        (
            "sub differs",
            ed.sign("EdDSA", &with("sub", json!("other"))),
            &ed,
        ),
        (
            "wrong audience",
            ed.sign("EdDSA", &with("aud", json!("https://evil.example/token"))),
            &ed,
        ),
        (
            "expired",
            ed.sign("EdDSA", &with("exp", json!(NOW - 31))),
            &ed,
        ),
        (
            "too long-lived",
            ed.sign("EdDSA", &with("exp", json!(NOW + 3600))),
            &ed,
        ),
        ("no jti", ed.sign("EdDSA", &with("jti", json!(""))), &ed),
        (
            "not yet valid",
            ed.sign("EdDSA", &with("nbf", json!(NOW + 120))),
            &ed,
        ),
    ];
    for (name, assertion, key) in cases {
        let err = verify_client_assertion(&assertion, &bot, &key.public(), ENDPOINT, at(NOW));
        assert!(err.is_err(), "{name} was accepted");
    }
    let a = ed.sign("EdDSA", &with("aud", json!(["x", ENDPOINT])));
    assert!(verify_client_assertion(&a, &bot, &ed.public(), ENDPOINT, at(NOW)).is_ok());
    let err = verify_client_assertion(
        &ed.sign("none", &claims()),
        &bot,
        &ed.public(),
        ENDPOINT,
        at(NOW),
    )
    .unwrap_err();
    assert!(matches!(err, TokenError::Algorithm(_)));
}

#[test]
fn private_or_odd_jwks_are_refused() {
    for jwk in [
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32]), "d": b64(&[1; 32])}),
        json!({"kty": "RSA", "n": "x", "e": "AQAB"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 31])}),
        json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[1; 32])}),
        json!("not an object"),
    ] {
        assert!(AgentPublicKey::from_jwk(&jwk).is_err(), "{jwk}");
    }
}
