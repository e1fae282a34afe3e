//! The token endpoint: `writ_gateway::auth::exchange_token` over a real store.

use std::sync::Arc;

use serde_json::json;
use writ_gateway::auth::exchange_token;
use writ_identity::{AgentId, UserId};
use writ_store::identity::{ApiKeyRecord, KeySubject};

use crate::{Db, alice, alice_and_bot, b64, grant_spec, identity, now, sign};

/// The whole token endpoint: subject = a user API key or an OIDC ID token, actor = an agent API
/// key or an RFC 7523 client assertion; revoked keys and foreign issuers are refused.
async fn token_exchange_end_to_end(db: Db) {
    use writ_identity::apikey::{self, KeyKind};
    use writ_identity::exchange::{
        GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY,
        TokenExchangeRequest,
    };
    use writ_identity::oidc::{OidcIssuerConfig, OidcVerifier};

    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let endpoint = "https://writ.example/oauth/token";
    let issuer = writ_identity::TokenIssuer::new(
        "https://writ.example",
        "writ",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    );
    let user_key = apikey::generate(KeyKind::User).unwrap();
    let agent_key = apikey::generate(KeyKind::Agent).unwrap();
    let rec = |subject| ApiKeyRecord {
        key_id: "k".into(),
        subject,
        created_at: now(),
        revoked_at: None,
    };
    s.add_api_key(
        &user_key.hash,
        &ApiKeyRecord {
            key_id: user_key.key_id.clone(),
            ..rec(KeySubject::User(UserId::new("alice").unwrap()))
        },
    )
    .await
    .unwrap();
    s.add_api_key(
        &agent_key.hash,
        &ApiKeyRecord {
            key_id: agent_key.key_id.clone(),
            ..rec(KeySubject::Agent(AgentId::new("bot").unwrap()))
        },
    )
    .await
    .unwrap();
    let grant = grant_spec(None, None).authorize(&alice(), now()).unwrap();
    s.add_grant(&grant).await.unwrap();

    let form = |subject: &str, subject_type: &str, actor: &str, actor_type: &str| {
        let details = json!([{"type": "writ_grant", "grant_id": grant.id}]).to_string();
        let pairs: Vec<(String, String)> = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
            ("actor_token", actor),
            ("actor_token_type", actor_type),
            ("authorization_details", &details),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        TokenExchangeRequest::from_form(&pairs).unwrap()
    };

    // API key + API key.
    let req = form(
        &user_key.key,
        TOKEN_TYPE_WRIT_API_KEY,
        &agent_key.key,
        TOKEN_TYPE_WRIT_API_KEY,
    );
    let resp = exchange_token(s.as_ref(), &issuer, &req, &[], endpoint, now())
        .await
        .unwrap();
    let claims = issuer
        .verifier()
        .verify(&resp.access_token, &AgentId::new("bot").unwrap(), now())
        .unwrap();
    assert_eq!(claims.sub.as_str(), "alice");

    // OIDC ID token (EdDSA issuer) + client assertion signed with the agent's registered key.
    let idp_key = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "idp1", "x": b64(idp_key.verifying_key().as_bytes())}]});
    let config: OidcIssuerConfig = serde_json::from_value(json!({"issuer": "https://idp.example", "audience": "writ", "jwks_uri": "https://idp.example/jwks"})).unwrap();
    let oidc = vec![OidcVerifier::new(config, &jwks).unwrap()];
    let t = now().as_micros() / 1_000_000;
    let id_token = sign(
        &idp_key,
        json!({"alg": "EdDSA", "kid": "idp1"}),
        json!({"iss": "https://idp.example", "aud": "writ", "sub": "alice", "exp": t + 300, "iat": t}),
    );
    let agent_key_pair = ed25519_dalek::SigningKey::from_bytes(&[12; 32]);
    let jwk = writ_identity::assertion::AgentPublicKey::Ed25519(agent_key_pair.verifying_key())
        .to_jwk()
        .to_string();
    s.set_agent_public_key(&AgentId::new("bot").unwrap(), Some(&jwk))
        .await
        .unwrap();
    let assertion = sign(
        &agent_key_pair,
        json!({"alg": "EdDSA"}),
        json!({"iss": "bot", "sub": "bot", "aud": endpoint, "exp": t + 60, "jti": "a1"}),
    );
    let req = form(&id_token, TOKEN_TYPE_ID_TOKEN, &assertion, TOKEN_TYPE_JWT);
    exchange_token(s.as_ref(), &issuer, &req, &oidc, endpoint, now())
        .await
        .unwrap();

    // An ID token from an issuer that is not configured, or signed by another key.
    let foreign = sign(
        &idp_key,
        json!({"alg": "EdDSA", "kid": "idp1"}),
        json!({"iss": "https://evil.example", "aud": "writ", "sub": "alice", "exp": t + 300}),
    );
    let err = exchange_token(
        s.as_ref(),
        &issuer,
        &form(&foreign, TOKEN_TYPE_ID_TOKEN, &assertion, TOKEN_TYPE_JWT),
        &oidc,
        endpoint,
        now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error, "invalid_grant");
    let forged = sign(
        &ed25519_dalek::SigningKey::from_bytes(&[13; 32]),
        json!({"alg": "EdDSA", "kid": "idp1"}),
        json!({"iss": "https://idp.example", "aud": "writ", "sub": "alice", "exp": t + 300}),
    );
    let err = exchange_token(
        s.as_ref(),
        &issuer,
        &form(&forged, TOKEN_TYPE_ID_TOKEN, &assertion, TOKEN_TYPE_JWT),
        &oidc,
        endpoint,
        now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error, "invalid_grant");
    // The agent's key as the subject, and a revoked agent key as the actor.
    let err = exchange_token(
        s.as_ref(),
        &issuer,
        &form(
            &agent_key.key,
            TOKEN_TYPE_WRIT_API_KEY,
            &agent_key.key,
            TOKEN_TYPE_WRIT_API_KEY,
        ),
        &[],
        endpoint,
        now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error, "invalid_grant");
    s.revoke_api_keys(&KeySubject::Agent(AgentId::new("bot").unwrap()), now())
        .await
        .unwrap();
    let err = exchange_token(
        s.as_ref(),
        &issuer,
        &form(
            &user_key.key,
            TOKEN_TYPE_WRIT_API_KEY,
            &agent_key.key,
            TOKEN_TYPE_WRIT_API_KEY,
        ),
        &[],
        endpoint,
        now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error, "invalid_client");
    assert!(!err.to_string().contains(&agent_key.key[8..]), "{err}");
    db.cleanup().await;
}
on_both_backends!(token_exchange_end_to_end);

/// RFC 7523 replay protection: an assertion's `jti` is accepted once while the assertion lives,
/// also across two store instances on one database (the store's side, rows that expire, is
/// `writ-store`'s `assertion_jtis_expire`).
async fn assertion_replay_is_refused(db: Db) {
    use writ_identity::apikey::{self, KeyKind};
    use writ_identity::exchange::{
        GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY, TokenExchangeRequest,
    };

    let s = identity(&db).await;
    let other = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let bot = AgentId::new("bot").unwrap();
    let endpoint = "https://writ.example/oauth/token";
    let issuer = writ_identity::TokenIssuer::new(
        "https://writ.example",
        "writ",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    );
    let user_key = apikey::generate(KeyKind::User).unwrap();
    s.add_api_key(
        &user_key.hash,
        &ApiKeyRecord {
            key_id: user_key.key_id.clone(),
            subject: KeySubject::User(UserId::new("alice").unwrap()),
            created_at: now(),
            revoked_at: None,
        },
    )
    .await
    .unwrap();
    let grant = grant_spec(None, None).authorize(&alice(), now()).unwrap();
    s.add_grant(&grant).await.unwrap();
    let agent_key = ed25519_dalek::SigningKey::from_bytes(&[12; 32]);
    let jwk = writ_identity::assertion::AgentPublicKey::Ed25519(agent_key.verifying_key())
        .to_jwk()
        .to_string();
    s.set_agent_public_key(&bot, Some(&jwk)).await.unwrap();
    let t = now().as_micros() / 1_000_000;
    let assertion = |jti: &str| {
        sign(
            &agent_key,
            json!({"alg": "EdDSA"}),
            json!({"iss": "bot", "sub": "bot", "aud": endpoint, "exp": t + 60, "jti": jti}),
        )
    };
    let form = |actor: &str| {
        let details = json!([{"type": "writ_grant", "grant_id": grant.id}]).to_string();
        let pairs: Vec<(String, String)> = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", user_key.key.as_str()),
            ("subject_token_type", TOKEN_TYPE_WRIT_API_KEY),
            ("actor_token", actor),
            ("actor_token_type", TOKEN_TYPE_JWT),
            ("authorization_details", &details),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        TokenExchangeRequest::from_form(&pairs).unwrap()
    };

    // First use succeeds; the same assertion again is refused, on this instance and another.
    let first = form(&assertion("once"));
    exchange_token(s.as_ref(), &issuer, &first, &[], endpoint, now())
        .await
        .unwrap();
    for store in [&s, &other] {
        let err = exchange_token(store.as_ref(), &issuer, &first, &[], endpoint, now())
            .await
            .unwrap_err();
        assert_eq!(err.error, "invalid_client");
        assert!(err.to_string().contains("already used"), "{err}");
    }
    // A fresh jti is fine, first presented on the other instance, then refused on the first.
    let second = form(&assertion("twice"));
    exchange_token(other.as_ref(), &issuer, &second, &[], endpoint, now())
        .await
        .unwrap();
    let err = exchange_token(s.as_ref(), &issuer, &second, &[], endpoint, now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    // Racing presentations of one jti over both instances: exactly one wins.
    let racing = Arc::new(form(&assertion("race")));
    let issuer = Arc::new(issuer);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let (issuer, req) = (Arc::clone(&issuer), Arc::clone(&racing));
        tasks.push(tokio::spawn(async move {
            exchange_token(store.as_ref(), &issuer, &req, &[], endpoint, now())
                .await
                .is_ok()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one racing presentation may win");

    db.cleanup().await;
}
on_both_backends!(assertion_replay_is_refused);
