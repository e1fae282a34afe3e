//! Users: an admin adds them (`POST /v1/admin/users`, with an API key shown once) and lists
//! them; a user sets their own console password (`POST /v1/users/me/password`); an admin clears
//! a forgotten one (`DELETE /v1/admin/users/{id}/password`). No password ever reaches a log, an
//! entry or an answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;
use writ_core::Timestamp;
use writ_gateway::Gateway;
use writ_gateway::admin::Actor;
use writ_gateway::auth::passwords::{Authority, PasswordChangeError};
use writ_identity::UserId;
use writ_identity::password::Password;
use writ_store::identity::UserRecord;

use super::extract::{AdminUser, JsonBody, SignedUser, parse};
use super::{ApiResult, ok};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserRequest {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    groups: Vec<String>,
}

pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let req: UserRequest = parse(&body)?;
    let id = UserId::new(req.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = UserRecord {
        display_name: req.display_name.unwrap_or_else(|| id.as_str().to_owned()),
        id,
        admin: req.admin,
        groups: req.groups,
        created_at: Timestamp::now(),
    };
    let key = gw
        .admin()
        .create_user(&Actor::User(admin), &record, true)
        .await?
        .ok_or_else(|| ApiError::internal("the user's API key was not issued"))?;
    ok(
        201,
        json!({"user": record, "api_key": *key.key, "key_id": key.key_id, "note": "the API key is shown once"}),
    )
}

pub(super) async fn list(State(gw): State<Arc<Gateway>>, AdminUser(_): AdminUser) -> ApiResult {
    ok(200, json!({"users": gw.reads().users().await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordRequest {
    password: String,
    #[serde(default)]
    current_password: Option<String>,
    /// If given, must be the key's user: a guard against the wrong key.
    #[serde(default)]
    user: Option<String>,
}

/// `POST /v1/users/me/password`: a user sets their own console password (the current one is
/// needed once one is set).
pub(super) async fn set_own_password(
    State(gw): State<Arc<Gateway>>,
    SignedUser(user): SignedUser,
    JsonBody(body): JsonBody,
) -> ApiResult {
    if !gw.passwords_enabled() {
        return Err(ApiError::forbidden(
            "password sign-in is switched off on this server (identity.passwords = false); sign in to the console with an API key or an identity provider",
        ));
    }
    let req: PasswordRequest = parse(&body)?;
    if let Some(claimed) = req.user.as_deref()
        && claimed != user.id.as_str()
    {
        return Err(ApiError::forbidden(format!(
            "this API key is user {}'s, not {claimed}'s: users set only their own password (an admin can clear another user's)",
            user.id
        )));
    }
    let authority = Authority::User {
        current: req.current_password.map(Password::new),
    };
    let new = Password::new(req.password);
    let id = user.id.clone();
    let set_at = gw
        .admin()
        .set_password(&Actor::User(user), &id, &new, authority)
        .await
        .map_err(password_refusal)?;
    ok(200, json!({"user": id.as_str(), "password_set_at": set_at}))
}

/// A refused password change in the API's words and statuses (the console shows the same).
pub(crate) fn password_refusal(e: PasswordChangeError) -> ApiError {
    match e {
        PasswordChangeError::Invalid(_) | PasswordChangeError::CurrentRequired(_) => {
            ApiError::bad_request(e.to_string())
        }
        PasswordChangeError::CurrentWrong => ApiError::forbidden(e.to_string()),
        PasswordChangeError::Locked(until) => {
            let secs = (until.as_micros() - Timestamp::now().as_micros()).max(0) / 1_000_000 + 1;
            let mut refusal = ApiError::new(429, "password_locked", e.to_string());
            refusal.retry_after = u64::try_from(secs).ok();
            refusal
        }
        PasswordChangeError::Hashing(why) => {
            tracing::error!(error = %why, "password hashing failed");
            ApiError::internal("the password could not be hashed; nothing was changed; retry")
        }
        PasswordChangeError::Busy => {
            let mut refusal = ApiError::unavailable(e.to_string());
            refusal.retry_after = Some(1);
            refusal
        }
        PasswordChangeError::Store(e) => e.into(),
        PasswordChangeError::Record(e) => e.into(),
    }
}

/// `DELETE /v1/admin/users/{id}/password`: an admin clears a user's password (forgotten
/// password); the user signs in with their API key until they set a new one.
pub(super) async fn clear_password(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    AdminUser(admin): AdminUser,
) -> ApiResult {
    let id = UserId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cleared = gw.admin().clear_password(&Actor::User(admin), &id).await?;
    ok(200, json!({"user": id.as_str(), "cleared": cleared}))
}
