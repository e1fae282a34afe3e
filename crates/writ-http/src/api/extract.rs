//! What a handler takes from a request before it runs: the bearer credential's principal (as
//! an extractor, so no handler authenticates by hand) and a JSON body within the limits.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use writ_gateway::Gateway;
use writ_gateway::auth::{self, Who};
use writ_store::identity::UserRecord;

use crate::error::ApiError;

/// The bearer token of `Authorization: Bearer <token>`, or why there is none.
pub fn bearer<'h>(gw: &Gateway, headers: &'h HeaderMap) -> Result<&'h str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            gw.metrics().refused("unauthenticated");
            ApiError::unauthenticated(
                "this endpoint needs `Authorization: Bearer <token>`: a delegated token, an agent API key or a user API key",
            )
        })?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must use the Bearer scheme")
        })
}

/// Who presented the request's bearer credential.
pub async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Who, ApiError> {
    Ok(auth::authenticate(gw, bearer(gw, headers)?).await?)
}

/// Any authenticated principal: an agent (key or delegated token) or a user.
pub struct Authenticated(pub Who);

impl FromRequestParts<Arc<Gateway>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        Ok(Authenticated(authenticate(gw, &parts.headers).await?))
    }
}

/// A user, by their API key.
pub struct SignedUser(pub UserRecord);

impl FromRequestParts<Arc<Gateway>> for SignedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        match authenticate(gw, &parts.headers).await? {
            Who::User(u) => Ok(SignedUser(u)),
            _ => Err(ApiError::forbidden(
                "this endpoint is for users: present a user API key",
            )),
        }
    }
}

/// An admin, by their API key.
pub struct AdminUser(pub UserRecord);

impl FromRequestParts<Arc<Gateway>> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let SignedUser(user) = SignedUser::from_request_parts(parts, gw).await?;
        if !user.admin {
            return Err(ApiError::forbidden(format!(
                "user {} is not an admin",
                user.id
            )));
        }
        Ok(AdminUser(user))
    }
}

/// A request body within `[limits] max_body_bytes`. Over the limit the request is refused with
/// the API's JSON error (`413 body_too_large`) rather than axum's plain-text rejection; a body
/// that does not arrive within `[server] body_timeout_ms` gets `408 request_timeout`.
pub struct RawBody(pub Bytes);

impl FromRequest<Arc<Gateway>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        match Bytes::from_request(req, gw).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                gw.metrics().refused("body_too_large");
                Err(ApiError::new(
                    413,
                    "body_too_large",
                    format!(
                        "the request body is too large; the limit is {} bytes",
                        gw.limits().max_body_bytes
                    ),
                ))
            }
            Err(e) if crate::server::body_timed_out(&e) => {
                gw.metrics().refused("body_timeout");
                Err(ApiError::new(
                    408,
                    "request_timeout",
                    "the request body did not arrive in time; send it at once",
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body could not be read: {}",
                e.body_text()
            ))),
        }
    }
}

/// A `/v1` request body: [`RawBody`] sent as `application/json` (UTF-8). Any other content type,
/// or a body without one, is refused with `415 unsupported_media_type` before it is read, so
/// that a browser's form or a `text/plain` "simple request" can never reach the API.
pub struct JsonBody(pub Bytes);

impl FromRequest<Arc<Gateway>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        if let Some(value) = &content_type
            && !is_json(value)
        {
            gw.metrics().refused("unsupported_media_type");
            return Err(unsupported_media_type(
                value.to_str().unwrap_or("(not text)"),
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, gw).await?;
        if content_type.is_none() && !bytes.is_empty() {
            gw.metrics().refused("unsupported_media_type");
            return Err(unsupported_media_type("none"));
        }
        Ok(JsonBody(bytes))
    }
}

fn unsupported_media_type(got: &str) -> ApiError {
    let got: String = got.chars().take(100).collect();
    ApiError::new(
        415,
        "unsupported_media_type",
        format!(
            "the request body must be sent as `Content-Type: application/json` (UTF-8), not {got:?}"
        ),
    )
}

/// `application/json`, with at most a `charset=utf-8` parameter (any case, optionally quoted).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.trim().split_once('=') {
        Some((name, v)) => {
            name.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        None => p.trim().is_empty(),
    })
}

/// Parses a JSON body strictly, with an error that says what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_json_is_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)), "{ok}");
        }
        for refused in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=utf-16",
            "application/jsonx",
            "application/json; boundary=x",
        ] {
            assert!(!is_json(&HeaderValue::from_static(refused)), "{refused}");
        }
    }
}
