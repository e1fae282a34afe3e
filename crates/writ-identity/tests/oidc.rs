//! External users through OIDC: a local issuer (keys generated here, JWKS served on loopback),
//! ID tokens verified against it, keys rotated, and the usual attacks refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_identity::oidc::{OidcClient, OidcError, OidcIssuerConfig};

const ISS: &str = "https://login.example.com";
const CLIENT: &str = "writ-prod";

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

struct Issuer {
    keys: Vec<(String, rsa::RsaPrivateKey)>,
}

impl Issuer {
    fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|(kid, k)| {
            let p = k.to_public_key();
            json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                   "n": b64(&p.n().to_bytes_be()), "e": b64(&p.e().to_bytes_be())})
        }).collect::<Vec<_>>()})
    }

    fn sign(&self, kid: &str, alg: &str, claims: &Value) -> String {
        let key = &self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .unwrap_or(&self.keys[0])
            .1;
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg, "kid": kid, "typ": "JWT"})
                .to_string()
                .as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = SigningKey::<sha2::Sha256>::new(key.clone()).sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
}

/// A one-route HTTP server on loopback that answers every request with the current JWKS.
fn serve(jwks: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            hits.fetch_add(1, Ordering::SeqCst);
            let body = jwks.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/jwks.json")
}

fn claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": [CLIENT, "other"], "sub": "00u1abc", "email": "alice@example.com",
           "groups": ["eng", "payments"], "iat": now, "exp": now + 600})
}

#[tokio::test]
async fn id_tokens_verify_against_a_loopback_jwks_with_rotation_and_attacks() {
    let mut rng = rsa::rand_core::OsRng;
    let mut issuer = Issuer {
        keys: vec![(
            "k1".into(),
            rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
        )],
    };
    let jwks = Arc::new(Mutex::new(issuer.jwks().to_string()));
    let hits = Arc::new(AtomicUsize::new(0));
    let uri = serve(jwks.clone(), hits.clone());
    let config: OidcIssuerConfig = serde_json::from_value(json!({
        "issuer": ISS, "audience": CLIENT, "jwks_uri": uri, "user_claim": "email", "user_prefix": "okta:"
    }))
    .unwrap();
    let mut client = OidcClient::new(config).unwrap();
    client.min_refresh = std::time::Duration::ZERO;
    let now = Timestamp::now();
    let t = now.as_micros() / 1_000_000;

    let user = client
        .verify(&issuer.sign("k1", "RS256", &claims(t)), now)
        .await
        .unwrap();
    assert_eq!(user.id.as_str(), "okta:alice@example.com");
    assert_eq!(user.groups, ["eng", "payments"]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Cached: no second fetch.
    client
        .verify(&issuer.sign("k1", "RS256", &claims(t)), now)
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The issuer rotates to k2: a token with the new kid triggers one refetch and verifies.
    issuer.keys.push((
        "k2".into(),
        rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
    ));
    *jwks.lock().unwrap() = issuer.jwks().to_string();
    client
        .verify(&issuer.sign("k2", "RS256", &claims(t)), now)
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let with = |k: &str, v: Value| {
        let mut c = claims(t);
        c[k] = v;
        c
    };
    let forged_key = Issuer {
        keys: vec![(
            "k1".into(),
            rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
        )],
    };
    let hs256 = {
        use hmac::{Hmac, Mac};
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "kid": "k1"}).to_string().as_bytes()),
            b64(claims(t).to_string().as_bytes())
        );
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(jwks.lock().unwrap().as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let cases = [
        (
            "wrong audience",
            issuer.sign("k1", "RS256", &with("aud", json!("someone-else"))),
        ),
        (
            "wrong issuer",
            issuer.sign("k1", "RS256", &with("iss", json!("https://evil.example"))),
        ),
        (
            "expired",
            issuer.sign("k1", "RS256", &with("exp", json!(t - 120))),
        ),
        (
            "not yet valid",
            issuer.sign("k1", "RS256", &with("iat", json!(t + 600))),
        ),
        (
            "no user claim",
            issuer.sign("k1", "RS256", &with("email", Value::Null)),
        ),
        (
            "signed by another key with the same kid",
            forged_key.sign("k1", "RS256", &claims(t)),
        ),
        ("alg none", issuer.sign("k1", "none", &claims(t))),
        ("HS256 with public material", hs256),
    ];
    for (name, token) in cases {
        let err = client.verify(&token, now).await.unwrap_err();
        assert!(matches!(err, OidcError::Token(_)), "{name}: {err:?}");
    }
    // An unknown kid is refused; with a refresh interval it does not refetch each time.
    client.min_refresh = std::time::Duration::from_secs(3600);
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        let err = client
            .verify(&issuer.sign("k9", "RS256", &claims(t)), now)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::UnknownKey(_)), "{err:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[test]
fn only_https_jwks_uris_except_loopback() {
    let config = |uri: &str| -> OidcIssuerConfig {
        serde_json::from_value(json!({"issuer": ISS, "audience": CLIENT, "jwks_uri": uri})).unwrap()
    };
    assert!(OidcClient::new(config("http://login.example.com/jwks")).is_err());
    assert!(OidcClient::new(config("https://login.example.com/jwks")).is_ok());
    assert!(OidcClient::new(config("http://127.0.0.1:9/jwks")).is_ok());
}
