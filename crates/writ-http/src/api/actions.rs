//! `POST /v1/actions` (an agent asks; the answer follows the action's state), `GET
//! /v1/actions/{id}` (the whole record, with proofs) and `GET /v1/actions` (search).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use writ_gateway::pipeline::{self, ActionRequest};
use writ_gateway::views::{self, ActionQuery};
use writ_gateway::{Gateway, auth};

use super::extract::{Authenticated, JsonBody, parse};
use super::{ApiResult, ok, to_json};
use crate::error::ApiError;

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    wait: Option<String>,
}

/// `wait=30s`: how long to wait for an action to become final, at most `[limits] max_wait_secs`.
fn parse_wait(gw: &Gateway, wait: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = wait else {
        return Ok(Duration::ZERO);
    };
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| ApiError::bad_request(format!("wait={text:?}: use seconds, like wait=30s")))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        _ => {
            return Err(ApiError::bad_request(format!(
                "wait={text:?}: use seconds, like wait=30s"
            )));
        }
    };
    Ok(Duration::from_secs(secs.min(gw.limits().max_wait_secs)))
}

pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<WaitQuery>,
    Authenticated(who): Authenticated,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let wait = parse_wait(&gw, q.wait.as_deref())?;
    let req: ActionRequest = parse(&body)?;
    let caller = auth::caller(&gw, who, req.grant_id.as_deref()).await?;
    let mut outcome = pipeline::submit(&gw, &caller, req).await?;
    if !outcome.action.state.is_final()
        && !wait.is_zero()
        && let Some(action) = pipeline::wait_for(&gw, &outcome.action.id, wait).await?
    {
        outcome.approval = gw.reads().approval_for_action(&action.id).await?;
        outcome.action = action;
    }
    ok(
        outcome.status(),
        to_json(&views::action_view(&gw, &outcome)),
    )
}

pub(super) async fn show(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    Authenticated(who): Authenticated,
) -> ApiResult {
    let wait = parse_wait(&gw, q.wait.as_deref())?;
    let (status, record) = views::action_record(&gw, &who, &id, wait).await?;
    ok(status, to_json(&record))
}

pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ActionQuery>,
    Authenticated(who): Authenticated,
) -> ApiResult {
    let items = views::search_actions(&gw, &who, &q).await?;
    ok(200, json!({"actions": to_json(&items)}))
}
