//! The logic of Writ's token endpoint: OAuth 2.0 Token Exchange (RFC 8693) with RFC 9396
//! authorization details naming a grant.
//!
//! The HTTP layer parses the form, authenticates the `subject_token` to a user and the
//! `actor_token` to an agent (API key, client assertion or OIDC; see [`crate::apikey`] and
//! [`crate::assertion`]), loads the grant, and calls [`complete_exchange`], which decides and
//! mints. Errors are RFC 6749 §5.2 error responses.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use writ_core::Timestamp;
use zeroize::Zeroizing;

use crate::grant::action_matches;
use crate::token::{TokenIssuer, WRIT_GRANT_TYPE};
use crate::{AgentId, Grant, GrantId, UserId};

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// A Writ API key used as a subject or actor token.
pub const TOKEN_TYPE_WRIT_API_KEY: &str = "urn:writ:params:oauth:token-type:api-key";

/// An RFC 6749 §5.2 error response. The description never repeats a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
}

impl OAuthError {
    pub fn invalid_request(d: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_request",
            error_description: d.into(),
        }
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_grant",
            error_description: d.into(),
        }
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_client",
            error_description: d.into(),
        }
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_target",
            error_description: d.into(),
        }
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        OAuthError {
            error: "unsupported_grant_type",
            error_description: d.into(),
        }
    }
    pub fn invalid_authorization_details(d: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_authorization_details",
            error_description: d.into(),
        }
    }
}

/// A presented token (subject or actor): zeroized on drop, never printed.
pub struct PresentedToken {
    pub value: Zeroizing<String>,
    pub token_type: String,
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PresentedToken({}, redacted)", self.token_type)
    }
}

/// The authorization detail a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedGrant {
    #[serde(rename = "type")]
    pub kind: String,
    pub grant_id: GrantId,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A parsed token-exchange request.
#[derive(Debug)]
pub struct TokenExchangeRequest {
    pub subject: PresentedToken,
    pub actor: PresentedToken,
    pub requested: RequestedGrant,
    pub audience: Option<String>,
}

const KNOWN_TOKEN_TYPES: &[&str] = &[
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_WRIT_API_KEY,
];

impl TokenExchangeRequest {
    /// Parses `application/x-www-form-urlencoded` pairs (already decoded). A repeated parameter
    /// is refused (RFC 6749 §3.2).
    pub fn from_form(pairs: &[(String, String)]) -> Result<Self, OAuthError> {
        let mut seen = std::collections::HashSet::new();
        for (k, _) in pairs {
            if !seen.insert(k.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
            }
        }
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| OAuthError::invalid_request(format!("parameter {k} is required")))
        };
        let grant_type = need("grant_type")?;
        if grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}"
            )));
        }
        let token = |name: &str, type_name: &str| -> Result<PresentedToken, OAuthError> {
            let value = need(name)?;
            let token_type = need(type_name)?;
            if !KNOWN_TOKEN_TYPES.contains(&token_type) {
                return Err(OAuthError::invalid_request(format!(
                    "{type_name} {token_type:?} is not supported"
                )));
            }
            Ok(PresentedToken {
                value: Zeroizing::new(value.to_owned()),
                token_type: token_type.to_owned(),
            })
        };
        let subject = token("subject_token", "subject_token_type")?;
        let actor = token("actor_token", "actor_token_type")?;
        let details: Vec<RequestedGrant> = serde_json::from_str(need("authorization_details")?)
            .map_err(|e| {
                OAuthError::invalid_authorization_details(format!("authorization_details: {e}"))
            })?;
        let requested = match <[RequestedGrant; 1]>::try_from(details) {
            Ok([d]) if d.kind == WRIT_GRANT_TYPE => d,
            Ok([d]) => {
                return Err(OAuthError::invalid_authorization_details(format!(
                    "authorization detail type {:?} is not supported; use {WRIT_GRANT_TYPE}",
                    d.kind
                )));
            }
            Err(_) => {
                return Err(OAuthError::invalid_authorization_details(
                    "authorization_details must hold exactly one writ_grant",
                ));
            }
        };
        if get("scope").is_some() || get("resource").is_some() {
            return Err(OAuthError::invalid_request(
                "scope and resource are not used; name a grant in authorization_details",
            ));
        }
        Ok(TokenExchangeRequest {
            subject,
            actor,
            requested,
            audience: get("audience").map(str::to_owned),
        })
    }
}

/// The successful response (RFC 8693 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub issued_token_type: &'static str,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub authorization_details: Value,
}

/// Decides and mints: `user` is who the subject token authenticated, `agent` who the actor token
/// authenticated (with its credential generation, which the token will carry),
/// `grant` the grant the request names (loaded by the caller).
pub fn complete_exchange(
    issuer: &TokenIssuer,
    request: &TokenExchangeRequest,
    user: &UserId,
    agent: &AgentId,
    key_generation: u64,
    grant: &Grant,
    now: Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let req = &request.requested;
    if req.grant_id != grant.id {
        return Err(OAuthError::invalid_grant(format!(
            "grant {} was not found",
            req.grant_id
        )));
    }
    // Say nothing about a grant to someone it does not belong to.
    if grant.spec.user != *user || grant.spec.agent != *agent {
        return Err(OAuthError::invalid_grant(format!(
            "grant {} was not issued by user {user} to agent {agent}",
            grant.id
        )));
    }
    if let Some(aud) = &request.audience
        && *aud != issuer.audience
    {
        return Err(OAuthError::invalid_target(format!(
            "audience {aud:?} is not served here; use {:?}",
            issuer.audience
        )));
    }
    grant
        .is_live(now)
        .map_err(|d| OAuthError::invalid_grant(d.to_string()))?;
    let actions = if req.actions.is_empty() {
        grant.spec.actions.clone()
    } else {
        for a in &req.actions {
            if !grant
                .spec
                .actions
                .iter()
                .any(|p| p == a || action_matches(p, a))
            {
                return Err(OAuthError::invalid_authorization_details(format!(
                    "grant {} does not allow {a}; a token cannot widen its grant",
                    grant.id
                )));
            }
        }
        req.actions.clone()
    };
    let (access_token, claims) = issuer
        .mint(grant, &actions, key_generation, now)
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    Ok(TokenResponse {
        access_token,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        authorization_details: serde_json::to_value(&claims.authorization_details)
            .unwrap_or(Value::Null),
    })
}
