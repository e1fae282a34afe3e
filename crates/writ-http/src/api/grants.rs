//! Grants: a user lends part of their authority to one of their agents (`POST /v1/grants`),
//! lists (`GET /v1/grants`) and revokes them (`POST /v1/grants/{id}/revoke`).

use std::sync::Arc;

use axum::extract::{Path, State};
use serde_json::json;
use writ_core::Timestamp;
use writ_gateway::admin::{Actor, GrantRequest};
use writ_gateway::{Gateway, views};
use writ_identity::GrantId;
use writ_store::identity::StoredGrant;

use super::extract::{JsonBody, SignedUser, parse};
use super::{ApiResult, ok};
use crate::error::ApiError;

pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    SignedUser(user): SignedUser,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let req: GrantRequest = parse(&body)?;
    let spec = req.into_spec(&user.id, Timestamp::now())?;
    let grant = gw.admin().issue_grant(&Actor::User(user), spec).await?;
    ok(
        201,
        views::grant_json(&StoredGrant {
            grant,
            usage: Default::default(),
        }),
    )
}

pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    let grants = views::visible_grants(&gw, &user).await?;
    ok(
        200,
        json!({"grants": grants.iter().map(views::grant_json).collect::<Vec<_>>()}),
    )
}

pub(super) async fn revoke(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    let id = GrantId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let revoked = gw.admin().revoke_grant(&Actor::User(user), &id).await?;
    ok(200, json!({"grant": id.as_str(), "revoked": revoked}))
}
