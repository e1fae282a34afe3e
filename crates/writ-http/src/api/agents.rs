//! Agents: a user registers their own (`POST /v1/admin/agents`; an admin for anyone), lists
//! them, disables or enables them, and rotates their API key.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;
use writ_gateway::admin::Actor;
use writ_gateway::{Gateway, views};
use writ_identity::{AgentId, UserId};

use super::extract::{JsonBody, SignedUser, parse};
use super::{ApiResult, ok};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentRequest {
    id: String,
    #[serde(default)]
    owner: Option<String>,
}

pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    SignedUser(user): SignedUser,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let req: AgentRequest = parse(&body)?;
    let id = AgentId::new(req.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let owner = req
        .owner
        .map(UserId::new)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (record, key) = gw
        .admin()
        .create_agent(&Actor::User(user), id, owner, None)
        .await?;
    let key = key.ok_or_else(|| ApiError::internal("the agent's API key was not issued"))?;
    ok(
        201,
        json!({"agent": record, "api_key": *key.key, "key_id": key.key_id, "note": "the API key is shown once"}),
    )
}

pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    ok(
        200,
        json!({"agents": views::visible_agents(&gw, &user).await?}),
    )
}

fn agent_id(id: &str) -> Result<AgentId, ApiError> {
    AgentId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(super) async fn disable(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    gw.admin()
        .set_agent_enabled(&Actor::User(user), &agent_id(&id)?, false)
        .await?;
    ok(200, json!({"agent": id, "enabled": false}))
}

pub(super) async fn enable(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    gw.admin()
        .set_agent_enabled(&Actor::User(user), &agent_id(&id)?, true)
        .await?;
    ok(200, json!({"agent": id, "enabled": true}))
}

/// Every API key of the agent is revoked and one new key issued; tokens minted with the old
/// ones are refused from the next request on. An agent that authenticates with a public key is
/// given a new one on the server's host, not over the API.
pub(super) async fn rotate_key(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    let admin = gw.admin();
    let actor = Actor::User(user);
    let agent = admin.own_agent(&actor, &agent_id(&id)?).await?;
    if agent.public_key.is_some() {
        return Err(ApiError::conflict(format!(
            "agent {} authenticates with a public key; register a new one with `writ agents rotate-key --public-key` on the server's host",
            agent.id
        )));
    }
    let (revoked, key) = admin.rotate_agent_key(&actor, &agent.id, None).await?;
    let key = key.ok_or_else(|| ApiError::internal("the agent's API key was not issued"))?;
    ok(
        201,
        json!({"agent": agent.id.as_str(), "revoked_api_keys": revoked, "api_key": *key.key, "key_id": key.key_id, "note": "the API key is shown once"}),
    )
}
