//! Agent client assertions (RFC 7523 §2.2, `private_key_jwt`): an agent proves who it is by
//! signing a short-lived JWT with its own key, whose public JWK Writ stores at registration.
//! EdDSA (Ed25519) and ES256 (P-256) are accepted, each only with a key of its own type.

use ed25519_dalek::VerifyingKey as EdKey;
use p256::ecdsa::VerifyingKey as P256Key;
use serde::Deserialize;
use serde_json::{Value, json};
use writ_core::Timestamp;

use crate::base64url::{b64, b64_decode};
use crate::jws;
use crate::token::{MAX_LEEWAY_SECS, TokenError};
use crate::{AgentId, IdentityError};

/// An assertion may live at most this long (exp − now), so that a stolen one is soon useless.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
const LEEWAY_SECS: i64 = 30;

/// An agent's registered public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPublicKey {
    Ed25519(EdKey),
    P256(P256Key),
}

impl AgentPublicKey {
    /// Parses a public JWK (`OKP`/`Ed25519` or `EC`/`P-256`). A JWK with private members is
    /// refused: an agent's private key must never be sent to Writ.
    pub fn from_jwk(jwk: &Value) -> Result<Self, IdentityError> {
        let bad = |m: &str| IdentityError::InvalidInput(format!("agent public key: {m}"));
        let obj = jwk
            .as_object()
            .ok_or_else(|| bad("not a JSON object (JWK)"))?;
        if obj.contains_key("d") {
            return Err(bad(
                "it contains a private key (member \"d\"); register the public key only",
            ));
        }
        let s = |k: &str| obj.get(k).and_then(Value::as_str);
        let coord = |k: &str, len: usize| -> Result<Vec<u8>, IdentityError> {
            s(k).and_then(b64_decode)
                .filter(|b| b.len() == len)
                .ok_or_else(|| bad(&format!("member {k:?} is not {len} base64url bytes")))
        };
        match (s("kty"), s("crv")) {
            (Some("OKP"), Some("Ed25519")) => {
                let x: [u8; 32] = coord("x", 32)?.try_into().map_err(|_| bad("x"))?;
                EdKey::from_bytes(&x)
                    .map(AgentPublicKey::Ed25519)
                    .map_err(|_| bad("x is not a valid Ed25519 point"))
            }
            (Some("EC"), Some("P-256")) => {
                let mut sec1 = vec![4u8];
                sec1.extend(coord("x", 32)?);
                sec1.extend(coord("y", 32)?);
                P256Key::from_sec1_bytes(&sec1)
                    .map(AgentPublicKey::P256)
                    .map_err(|_| bad("x, y are not a point on P-256"))
            }
            _ => Err(bad("only OKP/Ed25519 and EC/P-256 keys are supported")),
        }
    }

    pub fn to_jwk(&self) -> Value {
        match self {
            AgentPublicKey::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.as_bytes())})
            }
            AgentPublicKey::P256(k) => {
                let point = k.to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": point.x().map(|x| b64(x)).unwrap_or_default(),
                    "y": point.y().map(|y| b64(y)).unwrap_or_default(),
                })
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            AgentPublicKey::Ed25519(_) => "EdDSA",
            AgentPublicKey::P256(_) => "ES256",
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match self {
            AgentPublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
            AgentPublicKey::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: Value,
    exp: i64,
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Which agent an assertion claims to be (`iss`), read *before* verification so that its key can
/// be looked up. Trust nothing else from it until [`verify_client_assertion`] passes.
pub fn claimed_agent(assertion: &str) -> Result<AgentId, TokenError> {
    let parts = jws::split(assertion).map_err(|m| TokenError::Malformed(m.into()))?;
    let claims: AssertionClaims =
        serde_json::from_slice(&parts.payload).map_err(|e| TokenError::Claims(e.to_string()))?;
    AgentId::new(claims.iss).map_err(|e| TokenError::Claims(e.to_string()))
}

/// A verified assertion: the agent, and the `jti` and `exp` for the caller's replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub agent: AgentId,
    pub jti: String,
    pub exp: i64,
}

impl VerifiedAssertion {
    /// The last instant (microseconds since the epoch) at which this assertion could still be
    /// accepted: its `exp` plus the leeway. A replay cache must remember the `jti` until then.
    pub fn replay_until_micros(&self) -> i64 {
        self.exp
            .saturating_add(LEEWAY_SECS)
            .saturating_mul(1_000_000)
    }
}

/// Verifies an agent's client assertion for `token_endpoint` with the agent's registered key.
pub fn verify_client_assertion(
    assertion: &str,
    agent: &AgentId,
    key: &AgentPublicKey,
    token_endpoint: &str,
    now: Timestamp,
) -> Result<VerifiedAssertion, TokenError> {
    let parts = jws::split(assertion).map_err(|m| TokenError::Malformed(m.into()))?;
    let alg = parts
        .header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("");
    if alg != key.alg() {
        return Err(TokenError::Algorithm(alg.chars().take(32).collect()));
    }
    if parts.header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "critical header extensions are not supported".into(),
        ));
    }
    if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
        return Err(TokenError::Signature);
    }
    let c: AssertionClaims =
        serde_json::from_slice(&parts.payload).map_err(|e| TokenError::Claims(e.to_string()))?;
    if c.iss != agent.as_str() || c.sub != agent.as_str() {
        return Err(TokenError::Claims(format!(
            "iss and sub must both be the agent id {agent}"
        )));
    }
    let aud_ok = match &c.aud {
        Value::String(a) => a == token_endpoint,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(token_endpoint)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience(token_endpoint.to_owned()));
    }
    let t = now.as_micros().div_euclid(1_000_000);
    if t >= c.exp + LEEWAY_SECS {
        return Err(TokenError::Expired(c.exp));
    }
    if c.exp - t > MAX_ASSERTION_LIFETIME_SECS + LEEWAY_SECS.min(MAX_LEEWAY_SECS) {
        return Err(TokenError::Claims(format!(
            "the assertion is valid for more than {MAX_ASSERTION_LIFETIME_SECS} seconds; sign a shorter-lived one"
        )));
    }
    if let Some(nbf) = c.nbf
        && t + LEEWAY_SECS < nbf
    {
        return Err(TokenError::NotYetValid(nbf));
    }
    if c.jti.is_empty() || c.jti.len() > 256 {
        return Err(TokenError::Claims("jti must be 1 to 256 characters".into()));
    }
    Ok(VerifiedAssertion {
        agent: agent.clone(),
        jti: c.jti,
        exp: c.exp,
    })
}
