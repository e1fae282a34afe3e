//! Writ as an OAuth authorization server for agents: the token endpoint (RFC 8693 token
//! exchange: a user's authority and an agent's credential become a delegated token for one
//! grant), the token keys (JWKS) and the RFC 8414 metadata.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use writ_core::Timestamp;
use writ_gateway::Gateway;

use super::extract::RawBody;

pub(super) async fn token(State(gw): State<Arc<Gateway>>, RawBody(body): RawBody) -> Response {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(p) => p,
        Err(_) => {
            return oauth_error(writ_identity::exchange::OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
    };
    let request = match writ_identity::exchange::TokenExchangeRequest::from_form(&pairs) {
        Ok(r) => r,
        Err(e) => return oauth_error(e),
    };
    match gw.exchange_token(&request, Timestamp::now()).await {
        Ok(response) => {
            let mut r = axum::Json(response).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => oauth_error(e),
    }
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(e: writ_identity::exchange::OAuthError) -> Response {
    let status = match e.error {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        axum::Json(json!({"error": e.error, "error_description": e.error_description})),
    )
        .into_response()
}

pub(super) async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(gw.issuer().jwks()).into_response()
}

pub(super) async fn metadata(State(gw): State<Arc<Gateway>>) -> Response {
    let mut v = writ_identity::token::authorization_server_metadata(gw.public_url());
    v["token_endpoint"] = json!(gw.token_endpoint());
    v["jwks_uri"] = json!(format!("{}/.well-known/jwks.json", gw.public_url()));
    axum::Json(v).into_response()
}
