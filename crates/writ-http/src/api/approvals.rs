//! The approver's side: `GET /v1/approvals` (the inbox), `GET /v1/approvals/{id}`, and `POST
//! /v1/approvals/{id}/decision`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use writ_gateway::Gateway;
use writ_gateway::pipeline::{self, DecisionRequest};
use writ_gateway::views;
use writ_store::ApprovalState;

use super::extract::{JsonBody, SignedUser, parse};
use super::{ApiResult, ok, to_json};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalQuery {
    state: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ApprovalQuery>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(ApprovalState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state={s:?}: one of pending, approved, denied, expired, all"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = views::visible_approvals(&gw, &user, state, limit).await?;
    ok(200, json!({"approvals": to_json(&items)}))
}

pub(super) async fn show(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
) -> ApiResult {
    let not_found = || ApiError::not_found(format!("approval {id} does not exist"));
    let a = gw.reads().approval(&id).await?.ok_or_else(not_found)?;
    if !views::may_see_approval(&user, &a) {
        return Err(not_found());
    }
    ok(200, to_json(&views::approval_view(&gw, &a).await?))
}

pub(super) async fn decide(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    SignedUser(user): SignedUser,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let req: DecisionRequest = parse(&body)?;
    let outcome = pipeline::decide(&gw, &user.id, &id, req).await?;
    let mut view = to_json(&views::action_view(&gw, &outcome));
    if let Some(a) = &outcome.approval {
        view["approval"] = to_json(&views::approval_view(&gw, a).await?);
    }
    ok(200, view)
}
