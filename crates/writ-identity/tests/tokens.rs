//! Attacks on delegated tokens and on the token exchange, and an independent check of a minted
//! token with PyJWT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_identity::exchange::{
    GRANT_TYPE_TOKEN_EXCHANGE, OAuthError, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY,
    TokenExchangeRequest, complete_exchange,
};
use writ_identity::token::{authorization_server_metadata, check_grant};
use writ_identity::{AgentId, Grant, GrantSpec, Principal, TokenError, TokenIssuer, UserId};

const ISS: &str = "https://writ.example";
const AUD: &str = "https://writ.example/v1";

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000).unwrap()
}

const NOW: i64 = 1_800_000_000;

fn issuer() -> TokenIssuer {
    TokenIssuer::new(ISS, AUD, SigningKey::from_bytes(&[1; 32]))
}

fn grant() -> Grant {
    let spec: GrantSpec = serde_json::from_value(json!({
        "user": "alice", "agent": "agent-a", "actions": ["github.*", "email.send"],
        "expires_at": "2030-01-01T00:00:00Z"
    }))
    .unwrap();
    spec.authorize(
        &Principal::User {
            id: UserId::new("alice").unwrap(),
            admin: false,
        },
        at(NOW - 10),
    )
    .unwrap()
}

fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// A token with any header and claims, signed by `key`.
fn forge(header: Value, claims: Value, key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn good() -> (String, Value, Value) {
    let iss = issuer();
    let (token, _) = iss
        .mint(&grant(), &["github.*".to_owned()], 0, at(NOW))
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    (token, header, claims)
}

#[test]
fn a_minted_token_verifies_with_rfc_8693_shape() {
    let iss = issuer();
    let g = grant();
    let (token, claims) = iss.mint(&g, &g.spec.actions, 0, at(NOW)).unwrap();
    let verified = iss
        .verifier()
        .verify(&token, &agent("agent-a"), at(NOW + 1))
        .unwrap();
    assert_eq!(verified, claims);
    assert_eq!(verified.sub.as_str(), "alice");
    assert_eq!(verified.act.sub.as_str(), "agent-a");
    assert_eq!(verified.exp - verified.iat, 300);
    check_grant(&verified, &g, at(NOW + 1)).unwrap();
    let (_, header, raw) = good();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(raw["authorization_details"][0]["type"], "writ_grant");
    assert_eq!(raw["act"], json!({"sub": "agent-a"}));
}

#[test]
fn token_expiry_never_exceeds_the_grant() {
    let iss = issuer();
    let g = grant();
    let near_end = unix(g.spec.expires_at) - 60;
    let (_, claims) = iss.mint(&g, &g.spec.actions, 0, at(near_end)).unwrap();
    assert_eq!(claims.exp, unix(g.spec.expires_at));
    assert!(
        iss.mint(&g, &g.spec.actions, 0, at(unix(g.spec.expires_at)))
            .is_err()
    );
}

fn unix(t: Timestamp) -> i64 {
    t.as_micros() / 1_000_000
}

type Expect = fn(&TokenError) -> bool;

/// Each row: a token and the error expected when agent-a presents it at NOW.
#[test]
fn attacks_are_refused() {
    let verifier = issuer().verifier();
    let (token, header, claims) = good();
    let other_key = SigningKey::from_bytes(&[2; 32]);
    let real_key = SigningKey::from_bytes(&[1; 32]);
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        forge(header.clone(), c, &real_key)
    };
    let with_header = |k: &str, v: Value| {
        let mut h = header.clone();
        h[k] = v;
        forge(h, claims.clone(), &real_key)
    };
    // alg none: no signature at all.
    let none = {
        let mut h = header.clone();
        h["alg"] = json!("none");
        format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    };
    // HS256 with the public key as the HMAC secret (algorithm confusion).
    let hs256 = {
        use hmac::{Hmac, Mac};
        let mut h = header.clone();
        h["alg"] = json!("HS256");
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let public = real_key.verifying_key().to_bytes();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let tampered = {
        let mut c = claims.clone();
        c["sub"] = json!("mallory");
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        )
    };
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "signed by another key, same kid",
            forge(header.clone(), claims.clone(), &other_key),
            |e| matches!(e, TokenError::Signature),
        ),
        (
            "alg none",
            none,
            |e| matches!(e, TokenError::Algorithm(a) if a == "none"),
        ),
        (
            "HS256 with the public key",
            hs256,
            |e| matches!(e, TokenError::Algorithm(a) if a == "HS256"),
        ),
        ("RS256 claimed", with_header("alg", json!("RS256")), |e| {
            matches!(e, TokenError::Algorithm(_))
        }),
        ("missing alg", with_header("alg", Value::Null), |e| {
            matches!(e, TokenError::Algorithm(_))
        }),
        ("ID token typ", with_header("typ", json!("JWT")), |e| {
            matches!(e, TokenError::Type(_))
        }),
        ("unknown kid", with_header("kid", json!("nope")), |e| {
            matches!(e, TokenError::UnknownKey(_))
        }),
        ("crit header", with_header("crit", json!(["exp"])), |e| {
            matches!(e, TokenError::Malformed(_))
        }),
        ("payload changed after signing", tampered, |e| {
            matches!(e, TokenError::Signature)
        }),
        ("expired", with("exp", json!(NOW - 31)), |e| {
            matches!(e, TokenError::Expired(_))
        }),
        ("not yet valid", with("nbf", json!(NOW + 31)), |e| {
            matches!(e, TokenError::NotYetValid(_))
        }),
        ("issued in the future", with("iat", json!(NOW + 600)), |e| {
            matches!(e, TokenError::NotYetValid(_))
        }),
        (
            "wrong audience",
            with("aud", json!("https://other.example")),
            |e| matches!(e, TokenError::Audience(_)),
        ),
        ("audience list", with("aud", json!([AUD])), |e| {
            matches!(e, TokenError::Claims(_))
        }),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            |e| matches!(e, TokenError::Issuer(_)),
        ),
        ("no grant", with("authorization_details", json!([])), |e| {
            matches!(e, TokenError::Claims(_))
        }),
        (
            "two grants",
            with(
                "authorization_details",
                json!([
                    claims["authorization_details"][0],
                    claims["authorization_details"][0]
                ]),
            ),
            |e| matches!(e, TokenError::Claims(_)),
        ),
        (
            "missing exp",
            {
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                forge(header.clone(), c, &real_key)
            },
            |e| matches!(e, TokenError::Claims(_)),
        ),
        ("string exp", with("exp", json!("9999999999")), |e| {
            matches!(e, TokenError::Claims(_))
        }),
        (
            "two parts",
            token.rsplit_once('.').unwrap().0.to_owned(),
            |e| matches!(e, TokenError::Malformed(_)),
        ),
        ("four parts", format!("{token}.x"), |e| {
            matches!(e, TokenError::Malformed(_))
        }),
        ("huge", "a".repeat(20_000), |e| {
            matches!(e, TokenError::Malformed(_))
        }),
        ("garbage", "!!!.???.***".into(), |e| {
            matches!(e, TokenError::Malformed(_))
        }),
    ];
    for (name, t, expected) in cases {
        let err = verifier
            .verify(&t, &agent("agent-a"), at(NOW))
            .expect_err(name);
        assert!(expected(&err), "{name}: got {err:?}");
        // No error message repeats the token.
        assert!(
            !err.to_string().contains(&t[..t.len().min(40)]) || t.len() < 12,
            "{name}: {err}"
        );
    }
    // Within the leeway, the same clock skews are accepted.
    verifier
        .verify(&with("nbf", json!(NOW + 29)), &agent("agent-a"), at(NOW))
        .unwrap();
}

#[test]
fn agent_b_cannot_present_agent_a_token() {
    let (token, _, _) = good();
    let err = issuer()
        .verifier()
        .verify(&token, &agent("agent-b"), at(NOW))
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongAgent { .. }), "{err}");
    assert!(err.to_string().contains("agent-b"));
}

#[test]
fn a_revoked_or_expired_grant_kills_its_tokens_at_once() {
    let iss = issuer();
    let g = grant();
    let (token, _) = iss.mint(&g, &g.spec.actions, 0, at(NOW)).unwrap();
    let claims = iss
        .verifier()
        .verify(&token, &agent("agent-a"), at(NOW))
        .unwrap();
    let mut revoked = g.clone();
    revoked.revoked_at = Some(at(NOW));
    assert!(
        matches!(check_grant(&claims, &revoked, at(NOW)), Err(TokenError::Grant(m)) if m.contains("revoked"))
    );
    let other = grant();
    assert!(
        check_grant(&claims, &other, at(NOW)).is_err(),
        "a token for one grant cannot use another"
    );
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn request(g: &Grant, actions: Value) -> Vec<(String, String)> {
    let details = json!([{"type": "writ_grant", "grant_id": g.id, "actions": actions}]).to_string();
    form(&[
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", "writ_uk_secret-subject"),
        ("subject_token_type", TOKEN_TYPE_WRIT_API_KEY),
        ("actor_token", "eyJ.actor.assertion"),
        ("actor_token_type", TOKEN_TYPE_JWT),
        ("authorization_details", &details),
    ])
}

#[test]
fn token_exchange_decides_and_never_widens() {
    let iss = issuer();
    let g = grant();
    let alice = UserId::new("alice").unwrap();
    let req =
        TokenExchangeRequest::from_form(&request(&g, json!(["github.create_issue"]))).unwrap();
    assert!(!format!("{req:?}").contains("secret-subject"), "{req:?}");
    let resp = complete_exchange(&iss, &req, &alice, &agent("agent-a"), 0, &g, at(NOW)).unwrap();
    assert_eq!(
        resp.issued_token_type,
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(resp.token_type, "Bearer");
    let claims = iss
        .verifier()
        .verify(&resp.access_token, &agent("agent-a"), at(NOW))
        .unwrap();
    assert_eq!(
        claims.authorization_details[0].actions,
        ["github.create_issue"]
    );

    let code = |r: Result<_, OAuthError>| r.map(|_| ()).unwrap_err().error;
    // Widening: an action the grant does not allow.
    let wide = TokenExchangeRequest::from_form(&request(&g, json!(["payments.send"]))).unwrap();
    assert_eq!(
        code(complete_exchange(
            &iss,
            &wide,
            &alice,
            &agent("agent-a"),
            0,
            &g,
            at(NOW)
        )),
        "invalid_authorization_details"
    );
    // Another agent, another user, a revoked grant, an expired one.
    assert_eq!(
        code(complete_exchange(
            &iss,
            &req,
            &alice,
            &agent("agent-b"),
            0,
            &g,
            at(NOW)
        )),
        "invalid_grant"
    );
    assert_eq!(
        code(complete_exchange(
            &iss,
            &req,
            &UserId::new("bob").unwrap(),
            &agent("agent-a"),
            0,
            &g,
            at(NOW)
        )),
        "invalid_grant"
    );
    let mut revoked = g.clone();
    revoked.revoked_at = Some(at(NOW));
    assert_eq!(
        code(complete_exchange(
            &iss,
            &req,
            &alice,
            &agent("agent-a"),
            0,
            &revoked,
            at(NOW)
        )),
        "invalid_grant"
    );
    assert_eq!(
        code(complete_exchange(
            &iss,
            &req,
            &alice,
            &agent("agent-a"),
            0,
            &g,
            at(1_900_000_000)
        )),
        "invalid_grant"
    );

    // Malformed requests.
    let mut bad = request(&g, json!([]));
    bad[0].1 = "client_credentials".into();
    assert_eq!(
        TokenExchangeRequest::from_form(&bad).unwrap_err().error,
        "unsupported_grant_type"
    );
    let mut repeated = request(&g, json!([]));
    repeated.push(("subject_token".into(), "x".into()));
    assert_eq!(
        TokenExchangeRequest::from_form(&repeated)
            .unwrap_err()
            .error,
        "invalid_request"
    );
    let mut no_actor = request(&g, json!([]));
    no_actor.retain(|(k, _)| k != "actor_token");
    assert_eq!(
        TokenExchangeRequest::from_form(&no_actor)
            .unwrap_err()
            .error,
        "invalid_request"
    );
    let mut wrong_type = request(&g, json!([]));
    wrong_type[5].1 = json!([{"type": "payment_initiation", "grant_id": "x"}]).to_string();
    assert_eq!(
        TokenExchangeRequest::from_form(&wrong_type)
            .unwrap_err()
            .error,
        "invalid_authorization_details"
    );
    for r in [&bad, &repeated, &no_actor, &wrong_type] {
        let msg = TokenExchangeRequest::from_form(r).unwrap_err().to_string();
        assert!(!msg.contains("secret-subject"), "{msg}");
    }
}

#[test]
fn metadata_and_jwks_documents() {
    let iss = issuer();
    let meta = authorization_server_metadata(ISS);
    assert_eq!(meta["issuer"], ISS);
    assert_eq!(meta["token_endpoint"], "https://writ.example/oauth/token");
    assert_eq!(
        meta["grant_types_supported"],
        json!([GRANT_TYPE_TOKEN_EXCHANGE])
    );
    assert_eq!(
        meta["authorization_details_types_supported"],
        json!(["writ_grant"])
    );
    let jwks = iss.jwks();
    assert_eq!(jwks["keys"][0]["kid"], iss.kid());
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private key material in the JWKS"
    );
}

/// A token Writ mints verifies with PyJWT, an implementation that shares no code with Writ.
#[test]
fn pyjwt_verifies_a_minted_token() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the Python `pyjwt` and `cryptography` packages"
        );
        eprintln!("skipping the PyJWT check: python3 with pyjwt is not available");
        return;
    }
    let iss = issuer();
    let g = grant();
    let (token, _) = iss.mint(&g, &g.spec.actions, 0, Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), &token).unwrap();
    std::fs::write(dir.path().join("jwks.json"), iss.jwks().to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_jwt.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path().join("token"))
        .arg(dir.path().join("jwks.json"))
        .args([ISS, AUD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused Writ's token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"ok": true, "sub": "alice", "act": "agent-a"})
    );
}

#[test]
fn the_caching_verifier_still_checks_time_and_presenter() {
    use writ_identity::CachingVerifier;
    let iss = issuer();
    let g = grant();
    let (token, claims) = iss.mint(&g, &g.spec.actions, 0, at(NOW)).unwrap();
    let cache = CachingVerifier::new(iss.verifier(), 2);
    assert_eq!(
        *cache.verify(&token, &agent("agent-a"), at(NOW)).unwrap(),
        claims
    );
    // Cached now; the presenter and the clock are still checked.
    assert_eq!(
        *cache
            .verify(&token, &agent("agent-a"), at(NOW + 1))
            .unwrap(),
        claims
    );
    assert!(matches!(
        cache.verify(&token, &agent("agent-b"), at(NOW)),
        Err(TokenError::WrongAgent { .. })
    ));
    assert!(matches!(
        cache.verify(&token, &agent("agent-a"), at(NOW + 400)),
        Err(TokenError::Expired(_))
    ));
    // A different token (one byte changed) is not served from the cache.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let flipped = format!(
        "{head}.{}{}",
        if sig.starts_with('A') { "B" } else { "A" },
        &sig[1..]
    );
    assert!(cache.verify(&flipped, &agent("agent-a"), at(NOW)).is_err());
    // Beyond capacity it still works.
    for i in 0..5 {
        let (t, _) = iss.mint(&g, &g.spec.actions, 0, at(NOW + i)).unwrap();
        cache.verify(&t, &agent("agent-a"), at(NOW + i)).unwrap();
    }
}
