//! The OAuth token endpoint (RFC 8693 token exchange): the subject token authenticates a user
//! (a user API key, or an ID token of a configured OIDC issuer), the actor token an enabled agent
//! (an agent API key, or an RFC 7523 client assertion), the grant is loaded, and
//! `writ_identity::exchange::complete_exchange` decides and mints. Errors are OAuth errors that
//! never repeat a token.

use writ_core::Timestamp;
use writ_identity::apikey::{KeyKind, parse_presented};
use writ_identity::assertion::{AgentPublicKey, claimed_agent, verify_client_assertion};
use writ_identity::exchange::{
    OAuthError, PresentedToken, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY,
    TokenExchangeRequest, TokenResponse, complete_exchange,
};
use writ_identity::oidc::{OidcVerifier, claimed_issuer};
use writ_identity::{AgentId, TokenIssuer, UserId};
use writ_store::StoreError;
use writ_store::identity::{AgentRecord, ApiKeyRecord, IdentityStore, KeySubject};

/// Authenticates a subject token to a user: a user API key, or an ID token of one of the
/// configured OIDC issuers (verified against its JWKS; the mapped user id must exist locally).
/// Errors are OAuth errors that never repeat the token.
pub async fn authenticate_user(
    store: &dyn IdentityStore,
    token: &PresentedToken,
    oidc: &[OidcVerifier],
    now: Timestamp,
) -> Result<UserId, OAuthError> {
    if token.token_type == TOKEN_TYPE_ID_TOKEN || token.token_type == TOKEN_TYPE_JWT {
        let issuer = claimed_issuer(&token.value);
        let verifier = oidc
            .iter()
            .find(|v| Some(&v.config.issuer) == issuer.as_ref())
            .ok_or_else(|| {
                OAuthError::invalid_grant("the subject token's issuer is not trusted")
            })?;
        let user = verifier
            .verify(&token.value, now)
            .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
        // No provisioning on first use: the mapped user must already exist locally (created by
        // an admin with `writ users add`), so an issuer cannot mint Writ users by itself.
        return match store.user(&user.id).await {
            Ok(Some(_)) => Ok(user.id),
            Ok(None) => Err(OAuthError::invalid_grant(format!(
                "the ID token's user {} is not a Writ user; an admin must add it first",
                user.id
            ))),
            Err(e) => Err(unavailable("authenticating a subject token", e)),
        };
    }
    if token.token_type != TOKEN_TYPE_WRIT_API_KEY {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type {} is not accepted here; present a user API key ({TOKEN_TYPE_WRIT_API_KEY})",
            token.token_type
        )));
    }
    let invalid = || OAuthError::invalid_grant("the subject token is not a valid user API key");
    let (kind, hash) = parse_presented(&token.value).map_err(|_| invalid())?;
    if kind != KeyKind::User {
        return Err(invalid());
    }
    match store.api_key(&hash).await {
        Ok(Some(ApiKeyRecord {
            subject: KeySubject::User(user),
            ..
        })) => Ok(user),
        Ok(_) => Err(invalid()),
        Err(e) => Err(unavailable("authenticating a subject token", e)),
    }
}

/// Authenticates an actor token to an enabled agent: an agent API key, or a client assertion
/// (RFC 7523) signed with the agent's registered key for `token_endpoint`. Returns the agent
/// with its key generation, read so that a rotation racing this call cannot lend the new
/// generation to the old credential: the generation is read after the key was found live and
/// the key is checked again afterwards (API key), or read with the public key it verifies
/// against (assertion).
pub async fn authenticate_agent(
    store: &dyn IdentityStore,
    token: &PresentedToken,
    token_endpoint: &str,
    now: Timestamp,
) -> Result<(AgentId, u64), OAuthError> {
    let store_down = |e| unavailable("authenticating an actor token", e);
    let invalid =
        |why: &str| OAuthError::invalid_client(format!("the actor token is not valid: {why}"));
    match token.token_type.as_str() {
        TOKEN_TYPE_WRIT_API_KEY => {
            let (kind, hash) =
                parse_presented(&token.value).map_err(|_| invalid("malformed API key"))?;
            if kind != KeyKind::Agent {
                return Err(invalid("not an agent API key"));
            }
            let live = |record: Option<ApiKeyRecord>| match record {
                Some(ApiKeyRecord {
                    subject: KeySubject::Agent(agent),
                    ..
                }) => Ok(agent),
                _ => Err(invalid("unknown or revoked API key")),
            };
            let agent = live(store.api_key(&hash).await.map_err(store_down)?)?;
            let record = enabled(store.agent(&agent).await.map_err(store_down)?, &agent)?;
            live(store.api_key(&hash).await.map_err(store_down)?)?;
            Ok((agent, record.key_generation))
        }
        TOKEN_TYPE_JWT => {
            let agent = claimed_agent(&token.value).map_err(|e| invalid(&e.to_string()))?;
            let record = enabled(store.agent(&agent).await.map_err(store_down)?, &agent)?;
            let generation = record.key_generation;
            let jwk = record
                .public_key
                .ok_or_else(|| invalid("the agent has no registered public key"))?;
            let jwk: serde_json::Value = serde_json::from_str(&jwk)
                .map_err(|_| invalid("the agent's stored key is unreadable"))?;
            let key = AgentPublicKey::from_jwk(&jwk).map_err(|e| invalid(&e.to_string()))?;
            let verified = verify_client_assertion(&token.value, &agent, &key, token_endpoint, now)
                .map_err(|e| invalid(&e.to_string()))?;
            // Replay protection (RFC 7523 §3): a jti is accepted once while the assertion lives.
            let until = Timestamp::from_micros(verified.replay_until_micros())
                .map_err(|_| invalid("the assertion's exp is out of range"))?;
            let fresh = store
                .record_assertion_jti(&verified.agent, &verified.jti, until, now)
                .await
                .map_err(store_down)?;
            if !fresh {
                return Err(invalid(
                    "this assertion's jti was already used; sign a new assertion with a fresh jti",
                ));
            }
            Ok((verified.agent, generation))
        }
        other => Err(OAuthError::invalid_request(format!(
            "actor_token_type {other} is not accepted"
        ))),
    }
}

/// The whole token endpoint: authenticate both tokens, load the grant, decide, mint.
pub async fn exchange_token(
    store: &dyn IdentityStore,
    issuer: &TokenIssuer,
    request: &TokenExchangeRequest,
    oidc: &[OidcVerifier],
    token_endpoint: &str,
    now: Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let user = authenticate_user(store, &request.subject, oidc, now).await?;
    let (agent, generation) =
        authenticate_agent(store, &request.actor, token_endpoint, now).await?;
    let grant = match store.grant(&request.requested.grant_id).await {
        Ok(Some(g)) => g.grant,
        Ok(None) => {
            return Err(OAuthError::invalid_grant(format!(
                "grant {} was not found",
                request.requested.grant_id
            )));
        }
        Err(e) => return Err(unavailable("loading a grant", e)),
    };
    complete_exchange(issuer, request, &user, &agent, generation, &grant, now)
}

/// The agent's record if it exists and is enabled; otherwise the OAuth refusal.
fn enabled(record: Option<AgentRecord>, agent: &AgentId) -> Result<AgentRecord, OAuthError> {
    match record {
        Some(r) if r.disabled_at.is_none() => Ok(r),
        Some(_) => Err(OAuthError::invalid_client(format!(
            "agent {agent} is disabled; its owner or an admin can enable it again"
        ))),
        None => Err(OAuthError::invalid_client(format!(
            "the actor token is not valid: agent {agent} does not exist"
        ))),
    }
}

/// The OAuth answer when the store fails: `server_error`, with the cause in the log only.
fn unavailable(during: &str, e: StoreError) -> OAuthError {
    tracing::error!(error = %e, "store error while {during}");
    OAuthError {
        error: "server_error",
        error_description: "the store is unavailable; retry later".into(),
    }
}
