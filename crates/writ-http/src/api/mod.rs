//! The HTTP API: one file per resource, each handler small — its caller comes from an extractor
//! ([`extract`]), it calls the core, and it answers with the core's read models as JSON. Every
//! error is JSON `{"error": code, "message": text}` with the right status; messages never hold a
//! token, key or credential. [`router`] also mounts `/mcp` and `/console`.

mod actions;
mod admin;
mod agents;
mod approvals;
mod audit;
pub mod extract;
mod grants;
mod oauth;
mod ops;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use serde_json::Value;
use writ_gateway::Gateway;

pub(crate) use users::password_refusal;

use crate::error::ApiError;

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route of the API, then `/console` and `/mcp`.
pub fn router(gw: Arc<Gateway>) -> Router {
    let body_limit = gw.limits().max_body_bytes;
    Router::new()
        .route("/v1/actions", post(actions::create).get(actions::list))
        .route("/v1/actions/{id}", get(actions::show))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/decision", post(approvals::decide))
        .route("/v1/grants", post(grants::create).get(grants::list))
        .route("/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/v1/admin/users", post(users::create).get(users::list))
        .route("/v1/users/me/password", post(users::set_own_password))
        .route(
            "/v1/admin/users/{id}/password",
            delete(users::clear_password),
        )
        .route("/v1/admin/agents", post(agents::create).get(agents::list))
        .route("/v1/admin/agents/{id}/disable", post(agents::disable))
        .route("/v1/admin/agents/{id}/enable", post(agents::enable))
        .route("/v1/admin/agents/{id}/keys", post(agents::rotate_key))
        .route("/v1/admin/vault", get(admin::list_vault))
        .route("/v1/admin/policy", get(admin::policy_status))
        .route("/v1/admin/policy/reload", post(admin::policy_reload))
        .route(
            "/v1/audit/checkpoint",
            get(audit::latest_checkpoint).post(audit::make_checkpoint),
        )
        .route("/v1/audit/entries/{seq}", get(audit::entry))
        .route("/oauth/token", post(oauth::token))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(gw.clone())
        .merge(crate::console::router(gw.clone()))
        .merge(crate::mcp::router(gw))
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: u16, body: Value) -> ApiResult {
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response())
}

/// A read model as the API's JSON (members sorted, as every answer has them).
fn to_json<T: Serialize>(view: &T) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}
