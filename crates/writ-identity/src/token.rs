//! Delegated access tokens: the JWT Writ mints at its token endpoint (RFC 8693 token exchange)
//! and verifies on every request.
//!
//! Shape (RFC 8693 §4.1, RFC 9396, RFC 9068): `iss`, `aud`, `sub` = the user, `act.sub` = the
//! agent, `client_id` = the agent, `authorization_details` = one `writ_grant` naming the grant and
//! its actions, `jti`, `iat`, `nbf`, `exp` ≤ the grant's expiry. Header `alg` is `EdDSA`, `typ`
//! is `at+jwt`, `kid` the RFC 7638 thumbprint of the signing key.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use writ_core::Timestamp;

use crate::base64url::b64;
use crate::grant::action_matches;
use crate::jws::{self, ed25519_thumbprint};
use crate::{AgentId, Grant, GrantId, UserId};

/// The `type` of Writ's RFC 9396 authorization detail.
pub const WRIT_GRANT_TYPE: &str = "writ_grant";
/// The JOSE `typ` of Writ access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The most clock skew a verifier tolerates.
pub const MAX_LEEWAY_SECS: i64 = 300;

/// The agent acting for the user (RFC 8693 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: AgentId,
}

/// One RFC 9396 authorization detail of type `writ_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub grant_id: GrantId,
    pub actions: Vec<String>,
}

/// The claims of a delegated access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub act: Actor,
    pub client_id: AgentId,
    pub authorization_details: Vec<GrantDetail>,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The agent's credential generation when the token was minted; a rotation of the agent's
    /// keys moves the generation on, and the gateway refuses tokens of an earlier one.
    #[serde(rename = "writ_key_gen", default)]
    pub key_generation: u64,
}

impl DelegatedClaims {
    /// The one grant the token carries.
    pub fn grant(&self) -> Result<&GrantDetail, TokenError> {
        match self.authorization_details.as_slice() {
            [d] if d.kind == WRIT_GRANT_TYPE => Ok(d),
            _ => Err(TokenError::Claims(
                "authorization_details must hold exactly one writ_grant".into(),
            )),
        }
    }
}

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted; Writ tokens are signed with EdDSA")]
    Algorithm(String),
    #[error("token type {0:?} is not accepted; expected at+jwt")]
    Type(String),
    #[error("token signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("token issuer {0:?} is not trusted")]
    Issuer(String),
    #[error("token audience does not include {0:?}")]
    Audience(String),
    #[error("token expired at {0} (Unix time)")]
    Expired(i64),
    #[error("token is not valid before {0} (Unix time)")]
    NotYetValid(i64),
    #[error("token was issued to agent {holder}, but agent {presenter} presented it")]
    WrongAgent { holder: String, presenter: String },
    #[error("invalid token claims: {0}")]
    Claims(String),
    #[error("the token's grant is no longer valid: {0}")]
    Grant(String),
}

/// Mints delegated tokens with one Ed25519 key.
pub struct TokenIssuer {
    pub issuer: String,
    pub audience: String,
    key: SigningKey,
    kid: String,
    /// Lifetime of a minted token, in seconds (it is shortened to the grant's expiry).
    pub ttl_secs: i64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenIssuer({} kid {})", self.issuer, self.kid)
    }
}

fn unix(t: Timestamp) -> i64 {
    t.as_micros().div_euclid(1_000_000)
}

impl TokenIssuer {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, key: SigningKey) -> Self {
        let kid = ed25519_thumbprint(&key.verifying_key());
        TokenIssuer {
            issuer: issuer.into(),
            audience: audience.into(),
            key,
            kid,
            ttl_secs: 300,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A verifier that trusts this issuer's key.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(
            self.issuer.clone(),
            self.audience.clone(),
            vec![self.verifying_key()],
        )
    }

    /// Mints a token for `grant`, carrying `actions` (a subset of what the grant allows; the
    /// caller checked it). Fails if the grant is not live.
    pub fn mint(
        &self,
        grant: &Grant,
        actions: &[String],
        key_generation: u64,
        now: Timestamp,
    ) -> Result<(String, DelegatedClaims), TokenError> {
        grant
            .is_live(now)
            .map_err(|d| TokenError::Grant(d.to_string()))?;
        let iat = unix(now);
        let exp = (iat + self.ttl_secs).min(unix(grant.spec.expires_at));
        if exp <= iat {
            return Err(TokenError::Grant(format!(
                "grant {} expires within a second",
                grant.id
            )));
        }
        let claims = DelegatedClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.spec.user.clone(),
            act: Actor {
                sub: grant.spec.agent.clone(),
            },
            client_id: grant.spec.agent.clone(),
            authorization_details: vec![GrantDetail {
                kind: WRIT_GRANT_TYPE.into(),
                grant_id: grant.id.clone(),
                actions: actions.to_vec(),
            }],
            jti: format!("tok_{}", uuid::Uuid::now_v7().simple()),
            iat,
            nbf: iat,
            exp,
            key_generation,
        };
        let header = json!({"alg": "EdDSA", "typ": ACCESS_TOKEN_TYP, "kid": self.kid});
        let body = serde_json::to_value(&claims)
            .map_err(|e| TokenError::Claims(format!("cannot encode claims: {e}")))?;
        Ok((jws::sign_eddsa(&header, &body, &self.key), claims))
    }

    /// The JWKS document (RFC 7517) for this issuer's key.
    pub fn jwks(&self) -> Value {
        jwks(&[self.verifying_key()])
    }
}

/// A JWKS document for Ed25519 keys.
pub fn jwks(keys: &[VerifyingKey]) -> Value {
    json!({
        "keys": keys.iter().map(|k| json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(k.as_bytes()),
            "kid": ed25519_thumbprint(k),
            "use": "sig",
            "alg": "EdDSA",
        })).collect::<Vec<_>>()
    })
}

/// RFC 8414 authorization server metadata for Writ's token endpoint.
pub fn authorization_server_metadata(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": [crate::exchange::GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
        "authorization_details_types_supported": [WRIT_GRANT_TYPE],
        "response_types_supported": [],
    })
}

/// Verifies delegated tokens: signature, algorithm, type, issuer, audience, time, and that the
/// presenting agent is the token's actor.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Vec<(String, VerifyingKey)>,
    leeway_secs: i64,
}

impl TokenVerifier {
    pub fn new(issuer: String, audience: String, keys: Vec<VerifyingKey>) -> Self {
        TokenVerifier {
            issuer,
            audience,
            keys: keys
                .into_iter()
                .map(|k| (ed25519_thumbprint(&k), k))
                .collect(),
            leeway_secs: 30,
        }
    }

    /// Sets the clock-skew leeway, capped at five minutes.
    pub fn with_leeway(mut self, secs: i64) -> Self {
        self.leeway_secs = secs.clamp(0, MAX_LEEWAY_SECS);
        self
    }

    /// Verifies `token` as presented by `agent` at `now`.
    pub fn verify(
        &self,
        token: &str,
        agent: &AgentId,
        now: Timestamp,
    ) -> Result<DelegatedClaims, TokenError> {
        let parts = jws::split(token).map_err(|m| TokenError::Malformed(m.into()))?;
        let alg = parts
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("");
        if alg != "EdDSA" {
            return Err(TokenError::Algorithm(alg.chars().take(32).collect()));
        }
        let typ = parts
            .header
            .get("typ")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
            && !typ.eq_ignore_ascii_case("application/at+jwt")
        {
            return Err(TokenError::Type(typ.chars().take(32).collect()));
        }
        if parts.header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "the token header has critical extensions Writ does not understand".into(),
            ));
        }
        let kid = parts
            .header
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        let sig = ed25519_dalek::Signature::from_slice(&parts.signature)
            .map_err(|_| TokenError::Signature)?;
        key.verify_strict(parts.signing_input.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: DelegatedClaims = serde_json::from_slice(&parts.payload)
            .map_err(|e| TokenError::Claims(e.to_string()))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience(self.audience.clone()));
        }
        claims.grant()?;
        self.check_presentation(&claims, agent, now)?;
        Ok(claims)
    }

    /// The checks that depend on the moment and the presenter, not on the token's bytes.
    fn check_presentation(
        &self,
        claims: &DelegatedClaims,
        agent: &AgentId,
        now: Timestamp,
    ) -> Result<(), TokenError> {
        let t = unix(now);
        if t >= claims.exp + self.leeway_secs {
            return Err(TokenError::Expired(claims.exp));
        }
        if t + self.leeway_secs < claims.nbf || t + self.leeway_secs < claims.iat {
            return Err(TokenError::NotYetValid(claims.nbf.max(claims.iat)));
        }
        if claims.act.sub != *agent {
            return Err(TokenError::WrongAgent {
                holder: claims.act.sub.to_string(),
                presenter: agent.to_string(),
            });
        }
        if claims.client_id != claims.act.sub {
            return Err(TokenError::Claims(format!(
                "client_id {} differs from the actor act.sub {}",
                claims.client_id, claims.act.sub
            )));
        }
        Ok(())
    }
}

/// A [`TokenVerifier`] that remembers tokens it has verified, keyed by the SHA-256 of the exact
/// token bytes, so that an agent presenting the same token again skips the signature and the
/// parsing. The checks that depend on the moment and on the presenter (expiry, not-before, the
/// presenting agent) run on every call; the grant check is the caller's on every call as before.
/// Build a new cache when the verifier's keys change.
pub struct CachingVerifier {
    verifier: TokenVerifier,
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<DelegatedClaims>>>,
    capacity: usize,
}

impl CachingVerifier {
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        CachingVerifier {
            verifier,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn verify(
        &self,
        token: &str,
        agent: &AgentId,
        now: Timestamp,
    ) -> Result<std::sync::Arc<DelegatedClaims>, TokenError> {
        use sha2::Digest;
        if token.len() > jws::MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("the token is too long".into()));
        }
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let cached = self.entries.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(claims) = cached {
            self.verifier.check_presentation(&claims, agent, now)?;
            return Ok(claims);
        }
        let claims = std::sync::Arc::new(self.verifier.verify(token, agent, now)?);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.capacity {
                let t = unix(now);
                map.retain(|_, c| c.exp + MAX_LEEWAY_SECS > t);
                if map.len() >= self.capacity {
                    map.clear();
                }
            }
            map.insert(key, claims.clone());
        }
        Ok(claims)
    }
}

/// Checks that the grant a verified token names is still live and still the one the token
/// describes (same user, same agent, actions still covered). Call it on every request:
/// revocation takes effect on the next request.
pub fn check_grant(
    claims: &DelegatedClaims,
    grant: &Grant,
    now: Timestamp,
) -> Result<(), TokenError> {
    let detail = claims.grant()?;
    if detail.grant_id != grant.id {
        return Err(TokenError::Grant(format!(
            "the token names grant {}, not {}",
            detail.grant_id, grant.id
        )));
    }
    if grant.spec.user != claims.sub || grant.spec.agent != claims.act.sub {
        return Err(TokenError::Grant(format!(
            "grant {} is not from user {} to agent {}",
            grant.id, claims.sub, claims.act.sub
        )));
    }
    grant
        .is_live(now)
        .map_err(|d| TokenError::Grant(d.to_string()))?;
    if let Some(a) = detail.actions.iter().find(|a| {
        !grant
            .spec
            .actions
            .iter()
            .any(|p| p == *a || action_matches(p, a))
    }) {
        return Err(TokenError::Grant(format!(
            "grant {} no longer allows {a}",
            grant.id
        )));
    }
    Ok(())
}
