//! Who presents a bearer credential, and the caller of an action it makes. Faces extract the
//! credential from their protocol (an `Authorization: Bearer` header) and call [`authenticate`];
//! every rule of what a credential is worth lives here.
//!
//! A user API key (`writ_uk_…`) is its user; an agent API key (`writ_ak_…`) is its agent, which
//! must be enabled; a delegated token (EdDSA JWT minted by the token endpoint) is verified for
//! the agent it names as `act.sub`, which must be enabled and still hold the credential
//! generation the token was minted under. Every agent credential reads the agent's row on every
//! request, so a disabling or a rotation on any replica takes effect at the next request.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use writ_core::Timestamp;
use writ_identity::apikey::{KeyKind, parse_presented};
use writ_identity::{AgentId, DelegatedClaims, GrantId};
use writ_store::identity::{ApiKeyRecord, KeySubject, UserRecord};

use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::pipeline::Caller;

/// Who presented a request's bearer credential.
#[derive(Debug, Clone)]
pub enum Who {
    Agent(AgentId),
    User(UserRecord),
    Delegated(Arc<DelegatedClaims>),
}

impl Who {
    /// The agent behind an agent credential.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Who::Agent(a) => Some(a),
            Who::Delegated(c) => Some(&c.act.sub),
            Who::User(_) => None,
        }
    }
}

fn refused(gw: &Gateway, code: &'static str, why: String) -> Error {
    gw.metrics.refused("unauthenticated");
    Error::new(ErrorKind::Unauthenticated, code, why)
}

/// The principal a bearer `token` stands for.
pub async fn authenticate(gw: &Gateway, token: &str) -> Result<Who, Error> {
    let refused_because = |why: &str| {
        refused(
            gw,
            "unauthenticated",
            format!("the bearer token was refused: {why}"),
        )
    };
    if let Ok((kind, hash)) = parse_presented(token) {
        let record = gw.db.api_key(&hash).await?;
        return match (kind, record) {
            (
                KeyKind::Agent,
                Some(ApiKeyRecord {
                    subject: KeySubject::Agent(agent),
                    ..
                }),
            ) => {
                live_agent(gw, &agent, None).await?;
                Ok(Who::Agent(agent))
            }
            (
                KeyKind::User,
                Some(ApiKeyRecord {
                    subject: KeySubject::User(user),
                    ..
                }),
            ) => match gw.db.user(&user).await? {
                Some(record) => Ok(Who::User(record)),
                None => Err(refused_because("its user no longer exists")),
            },
            _ => Err(refused_because("unknown or revoked API key")),
        };
    }
    // A delegated token: the agent it names (`act.sub`) is the presenter.
    let agent = claimed_actor(token)
        .ok_or_else(|| refused_because("not an API key or a delegated token"))?;
    let claims = gw
        .verify_token(token, &agent, Timestamp::now())
        .map_err(|e| refused_because(&e.to_string()))?;
    live_agent(gw, &agent, Some(claims.key_generation)).await?;
    Ok(Who::Delegated(claims))
}

/// Refuses an agent that is disabled or gone, and a delegated token minted under an earlier
/// generation of the agent's credentials (its key was rotated since).
async fn live_agent(gw: &Gateway, agent: &AgentId, generation: Option<u64>) -> Result<(), Error> {
    match gw.db.agent(agent).await? {
        None => Err(refused(
            gw,
            "unauthenticated",
            format!("the bearer token was refused: agent {agent} does not exist"),
        )),
        Some(r) if r.disabled_at.is_some() => Err(refused(
            gw,
            "agent_disabled",
            format!("agent {agent} is disabled; its owner or an admin can enable it again"),
        )),
        Some(r) if generation.is_some_and(|g| g != r.key_generation) => Err(refused(
            gw,
            "unauthenticated",
            format!(
                "the bearer token was refused: it was minted with a credential agent {agent} no longer holds (its key was rotated); exchange a new token"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The `act.sub` a JWT claims, read before verification only to know whom to verify it for.
fn claimed_actor(token: &str) -> Option<AgentId> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    AgentId::new(claims.get("act")?.get("sub")?.as_str()?).ok()
}

/// The caller of an action: from a delegated token (which names its grant), or an agent key
/// plus the grant the request names.
pub async fn caller(gw: &Gateway, who: Who, grant_id: Option<&str>) -> Result<Caller, Error> {
    let now = Timestamp::now();
    match who {
        Who::Delegated(claims) => {
            let detail = claims
                .grant()
                .map_err(|e| Error::unauthenticated(e.to_string()))?;
            if let Some(g) = grant_id
                && g != detail.grant_id.as_str()
            {
                return Err(Error::forbidden(format!(
                    "the token carries grant {}, not {g}",
                    detail.grant_id
                )));
            }
            let grant = gw.db.grant(&detail.grant_id).await?.ok_or_else(|| {
                Error::forbidden(format!("grant {} does not exist", detail.grant_id))
            })?;
            writ_identity::token::check_grant(&claims, &grant.grant, now)
                .map_err(|e| Error::forbidden(e.to_string()))?;
            Ok(Caller {
                agent: claims.act.sub.clone(),
                user: claims.sub.clone(),
                grant: detail.grant_id.clone(),
                auth: "delegated_token",
                token_id: Some(claims.jti.clone()),
                token_actions: Some(detail.actions.clone()),
                stored_grant: Some(grant),
            })
        }
        Who::Agent(agent) => {
            let grant_id = grant_id.ok_or_else(|| {
                Error::invalid(
                    "with an agent API key, name the grant the action is made under: \"grant_id\"",
                )
            })?;
            let grant_id = GrantId::new(grant_id).map_err(|e| Error::invalid(e.to_string()))?;
            let grant = gw
                .db
                .grant(&grant_id)
                .await?
                .ok_or_else(|| Error::forbidden(format!("grant {grant_id} does not exist")))?;
            if grant.grant.spec.agent != agent {
                return Err(Error::forbidden(format!(
                    "grant {grant_id} was given to agent {}, not to agent {agent}",
                    grant.grant.spec.agent
                )));
            }
            Ok(Caller {
                agent,
                user: grant.grant.spec.user.clone(),
                grant: grant_id,
                auth: "agent_key",
                token_id: None,
                token_actions: None,
                stored_grant: Some(grant),
            })
        }
        Who::User(u) => Err(Error::forbidden(format!(
            "user {} cannot submit actions; agents do, with an agent API key or a delegated token",
            u.id
        ))),
    }
}
