//! For operators and tools: liveness, readiness (the store reachable, the policy loaded, each
//! upstream's state), Prometheus metrics and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use writ_gateway::Gateway;

use super::OPENAPI;
use crate::error::ApiError;

pub(super) async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

pub(super) async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let store = gw.reads().ping().await;
    let version = gw.policy().version().to_string();
    let ready = store.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": if store.is_ok() { "ok" } else { "unreachable" },
        "policy": version,
        // An upstream that is down fails only its own calls; Writ itself stays ready.
        "connectors": gw.connector_status(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub(super) async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, writ_gateway::metrics::CONTENT_TYPE)],
        gw.metrics().encode(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}
