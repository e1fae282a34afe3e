//! External users through OpenID Connect: an issuer's ID tokens verified against its JWKS, with
//! claim mapping to a Writ user id and groups.
//!
//! Pure logic: [`OidcVerifier::verify`] checks a token against the JWKS it holds and says
//! [`OidcError::UnknownKey`] when the token's `kid` is not in it, so that the caller refetches
//! the JWKS (the issuer rotated its keys) and retries once. [`OidcVerifier::refresh`] swaps in a
//! new JWKS document; fetching it (HTTP GET of `jwks_uri`) is the caller's job.
//! Accepted algorithms: RS256, ES256, EdDSA, each only with a key of its own type.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use writ_core::Timestamp;

use crate::UserId;
use crate::base64url::b64_decode;
use crate::jws;

/// One configured issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The `iss` the tokens must carry, exactly.
    pub issuer: String,
    /// Writ's client id at the issuer: the token's `aud` must include it.
    pub audience: String,
    pub jwks_uri: String,
    /// The claim holding the user id (default `sub`; `email` is common).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding the group list (default `groups`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Prefix for mapped user ids, to keep issuers apart (e.g. `okta:`).
    #[serde(default)]
    pub user_prefix: String,
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// A user authenticated by an external issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    pub id: UserId,
    pub groups: Vec<String>,
    pub issuer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("invalid JWKS document: {0}")]
    Jwks(String),
    #[error("ID token signed with key {0:?}, which the issuer's JWKS does not hold")]
    UnknownKey(String),
    #[error("ID token rejected: {0}")]
    Token(String),
}

#[derive(Debug, Clone)]
enum Key {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Key {
    fn alg(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "RS256",
            Key::P256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Rsa(k) => {
                use rsa::signature::Verifier;
                let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(input, &s).is_ok())
            }
            Key::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            Key::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
        }
    }
}

fn parse_key(jwk: &serde_json::Map<String, Value>) -> Result<Option<Key>, String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let bytes = |k: &str| {
        s(k).and_then(b64_decode)
            .ok_or_else(|| format!("member {k} is not base64url"))
    };
    match (s("kty"), s("crv")) {
        (Some("RSA"), _) => {
            let n = rsa::BigUint::from_bytes_be(&bytes("n")?);
            let e = rsa::BigUint::from_bytes_be(&bytes("e")?);
            let key = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("RSA key: {e}"))?;
            use rsa::traits::PublicKeyParts;
            if key.size() < 256 {
                return Err("RSA keys under 2048 bits are refused".into());
            }
            Ok(Some(Key::Rsa(key)))
        }
        (Some("EC"), Some("P-256")) => {
            let mut sec1 = vec![4u8];
            sec1.extend(bytes("x")?);
            sec1.extend(bytes("y")?);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(|k| Some(Key::P256(k)))
                .map_err(|_| "EC key is not on P-256".into())
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x: [u8; 32] = bytes("x")?
                .try_into()
                .map_err(|_| "Ed25519 x must be 32 bytes".to_owned())?;
            ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map(|k| Some(Key::Ed25519(k)))
                .map_err(|_| "Ed25519 x is not a valid point".into())
        }
        // Keys of other types are skipped, not fatal: issuers publish encryption keys too.
        _ => Ok(None),
    }
}

/// Verifies one issuer's ID tokens against the JWKS it was last given.
#[derive(Debug, Clone)]
pub struct OidcVerifier {
    pub config: OidcIssuerConfig,
    keys: HashMap<String, Key>,
    leeway_secs: i64,
}

#[derive(Deserialize)]
struct StdClaims {
    iss: String,
    aud: Value,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

impl OidcVerifier {
    pub fn new(config: OidcIssuerConfig, jwks: &Value) -> Result<Self, OidcError> {
        let mut v = OidcVerifier {
            config,
            keys: HashMap::new(),
            leeway_secs: 60,
        };
        v.refresh(jwks)?;
        Ok(v)
    }

    /// Replaces the keys with those of a freshly fetched JWKS document.
    pub fn refresh(&mut self, jwks: &Value) -> Result<(), OidcError> {
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| OidcError::Jwks("no \"keys\" array".into()))?;
        let mut keys = HashMap::new();
        for (i, jwk) in list.iter().enumerate() {
            let obj = jwk
                .as_object()
                .ok_or_else(|| OidcError::Jwks(format!("key {i} is not an object")))?;
            let Some(kid) = obj.get("kid").and_then(Value::as_str) else {
                continue;
            };
            if let Some(key) =
                parse_key(obj).map_err(|m| OidcError::Jwks(format!("key {kid:?}: {m}")))?
            {
                keys.insert(kid.to_owned(), key);
            }
        }
        if keys.is_empty() {
            return Err(OidcError::Jwks("no usable signing keys".into()));
        }
        self.keys = keys;
        Ok(())
    }

    /// Verifies `token` and maps it to a user.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<ExternalUser, OidcError> {
        self.verify_with_claims(token, now).map(|(user, _)| user)
    }

    /// [`OidcVerifier::verify`], also giving the token's verified claims (for checks only the
    /// caller can make, such as the `nonce` of a sign-in it started).
    pub fn verify_with_claims(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<(ExternalUser, serde_json::Map<String, Value>), OidcError> {
        let bad = |m: &str| OidcError::Token(m.to_owned());
        let parts = jws::split(token).map_err(bad)?;
        let alg = parts
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kid = parts
            .header
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if parts.header.contains_key("crit") {
            return Err(bad("critical header extensions are not supported"));
        }
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| OidcError::UnknownKey(kid.chars().take(64).collect()))?;
        if alg != key.alg() {
            return Err(OidcError::Token(format!(
                "algorithm {:?} does not match the key's {}",
                alg.chars().take(16).collect::<String>(),
                key.alg()
            )));
        }
        if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
            return Err(bad("the signature is invalid"));
        }
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(&parts.payload)
            .map_err(|_| bad("the payload is not a JSON object"))?;
        let std: StdClaims = serde_json::from_value(Value::Object(claims.clone()))
            .map_err(|e| OidcError::Token(format!("claims: {e}")))?;
        if std.iss != self.config.issuer {
            return Err(bad("the issuer does not match"));
        }
        let aud_ok = match &std.aud {
            Value::String(a) => *a == self.config.audience,
            Value::Array(l) => l.iter().any(|a| a.as_str() == Some(&self.config.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad("the audience does not include Writ's client id"));
        }
        let t = now.as_micros().div_euclid(1_000_000);
        if t >= std.exp + self.leeway_secs {
            return Err(bad("the token has expired"));
        }
        if std
            .nbf
            .or(std.iat)
            .is_some_and(|nbf| t + self.leeway_secs < nbf)
        {
            return Err(bad("the token is not valid yet"));
        }
        let raw_id = claims
            .get(&self.config.user_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcError::Token(format!(
                    "claim {} is missing or not text",
                    self.config.user_claim
                ))
            })?;
        let id = UserId::new(format!("{}{raw_id}", self.config.user_prefix))
            .map_err(|e| OidcError::Token(format!("claim {}: {e}", self.config.user_claim)))?;
        let groups = match claims.get(&self.config.groups_claim) {
            None => Vec::new(),
            Some(Value::Array(l)) => l
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                return Err(OidcError::Token(format!(
                    "claim {} is not a list",
                    self.config.groups_claim
                )));
            }
        };
        Ok((
            ExternalUser {
                id,
                groups,
                issuer: self.config.issuer.clone(),
            },
            claims,
        ))
    }
}

/// Fetches and caches an issuer's JWKS, refetching when a token names an unknown `kid` (at most
/// once per `min_refresh`, so that tokens with made-up key ids cannot make Writ hammer the
/// issuer). Only `https://` URIs are fetched, except loopback `http://` (tests, sidecars).
#[cfg(feature = "fetch")]
pub struct OidcClient {
    config: OidcIssuerConfig,
    http: reqwest::Client,
    state: std::sync::RwLock<(Option<OidcVerifier>, Option<std::time::Instant>)>,
    pub min_refresh: std::time::Duration,
}

#[cfg(feature = "fetch")]
impl OidcClient {
    pub fn new(config: OidcIssuerConfig) -> Result<Self, OidcError> {
        let uri = &config.jwks_uri;
        let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
            .iter()
            .any(|p| uri.starts_with(p));
        if !uri.starts_with("https://") && !loopback {
            return Err(OidcError::Jwks(format!("jwks_uri {uri} must be https://")));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Jwks(format!("HTTP client: {e}")))?;
        Ok(OidcClient {
            config,
            http,
            state: std::sync::RwLock::new((None, None)),
            min_refresh: std::time::Duration::from_secs(10),
        })
    }

    async fn fetch(&self) -> Result<(), OidcError> {
        let uri = &self.config.jwks_uri;
        let err = |m: String| OidcError::Jwks(format!("{uri}: {m}"));
        let resp = self
            .http
            .get(uri)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        if body.len() > 256 * 1024 {
            return Err(err("the JWKS document is larger than 256 KiB".into()));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        let mut state = self
            .state
            .write()
            .map_err(|_| err("cache lock poisoned".into()))?;
        match &mut state.0 {
            Some(v) => v.refresh(&doc)?,
            None => state.0 = Some(OidcVerifier::new(self.config.clone(), &doc)?),
        }
        state.1 = Some(std::time::Instant::now());
        Ok(())
    }

    fn try_verify(&self, token: &str, now: Timestamp) -> Option<Result<ExternalUser, OidcError>> {
        let state = self.state.read().ok()?;
        state.0.as_ref().map(|v| v.verify(token, now))
    }

    /// A verifier holding the issuer's current JWKS, fetched now if none is cached (for callers
    /// such as the CLI's `token exchange` that pass verifiers to `exchange_token`).
    pub async fn verifier(&self) -> Result<OidcVerifier, OidcError> {
        let cached = self.state.read().ok().and_then(|s| s.0.clone());
        if let Some(v) = cached {
            return Ok(v);
        }
        self.fetch().await?;
        self.state
            .read()
            .ok()
            .and_then(|s| s.0.clone())
            .ok_or_else(|| OidcError::Jwks("no keys loaded".into()))
    }

    /// Verifies an ID token, fetching the JWKS on first use and again on an unknown key.
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<ExternalUser, OidcError> {
        match self.try_verify(token, now) {
            Some(Err(OidcError::UnknownKey(kid))) => {
                let recently = self
                    .state
                    .read()
                    .ok()
                    .and_then(|s| s.1)
                    .is_some_and(|t| t.elapsed() < self.min_refresh);
                if recently {
                    return Err(OidcError::UnknownKey(kid));
                }
            }
            Some(other) => return other,
            None => {}
        }
        self.fetch().await?;
        self.try_verify(token, now)
            .unwrap_or_else(|| Err(OidcError::Jwks("no keys loaded".into())))
    }
}

/// The `iss` a token claims, read before verification to pick the issuer's verifier. Trust
/// nothing from it until [`OidcVerifier::verify`] passes.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let parts = jws::split(token).ok()?;
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(&parts.payload).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
