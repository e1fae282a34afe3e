//! The user's own account: who they are, how this session was opened, setting or changing their
//! password, and signing out everywhere.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use writ_core::Timestamp;
use writ_gateway::admin::{Actor, AdminEvent};

use super::layout::layout;
use super::session::{SESSION_COOKIE, SignInWith, SignedIn, csrf_token, set_cookie};
use super::{Console, CsrfForm, error_page, html, to_login};
use crate::api;
use crate::error::ApiError;

/// How soon after signing in a session may set a user's first password.
const FIRST_PASSWORD_WITHIN: Duration = Duration::from_secs(600);

/// What the account page says about the last form sent from it.
struct Outcome {
    status: StatusCode,
    message: String,
}

/// The account page for `who`, with the password's state read now.
async fn account_response(c: &Console, who: &SignedIn, outcome: Option<&Outcome>) -> Response {
    match c.gw.reads().password(&who.user.id).await {
        Ok(password) => {
            let status = outcome.map_or(StatusCode::OK, |o| o.status);
            let account = account(who, password.as_ref(), outcome, c.gw.passwords_enabled());
            html(status, account)
        }
        Err(e) => error_page(Some(who), &e.into()),
    }
}

/// The account page with a refusal in words, under the API's status (and `Retry-After`).
async fn account_refusal(c: &Console, who: &SignedIn, e: ApiError) -> Response {
    let outcome = Outcome {
        status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message: e.message,
    };
    let mut response = account_response(c, who, Some(&outcome)).await;
    if let Some(v) = e
        .retry_after
        .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// `GET /console/account`: who the user is, how this session was opened, their password.
pub(super) async fn account_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.page_user(&headers).await {
        Ok(who) => account_response(&c, &who, None).await,
        Err(response) => response,
    }
}

#[derive(Deserialize)]
/// Its CSRF token is read and checked by [`Console::posted`].
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    repeat_password: String,
}

/// The user sets or changes their own password, as `POST /v1/users/me/password` does (same
/// checks, same refusals, same audit entry). A session opened with the old password would end
/// with the change; this one is replaced by a fresh session, so the user stays signed in here
/// while their other password sessions end.
pub(super) async fn change_password(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use writ_gateway::auth::passwords::{Authority, PasswordChangeError};
    use writ_identity::password::Password;
    let (who, f): (SignedIn, PasswordForm) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    if !c.gw.passwords_enabled() {
        let e = ApiError::forbidden("password sign-in is switched off here (identity.passwords)");
        return account_refusal(&c, &who, e).await;
    }
    if f.new_password != f.repeat_password {
        let e = ApiError::bad_request(
            "the new password and its repetition differ; nothing was changed; type the same new password in both fields",
        );
        return account_refusal(&c, &who, e).await;
    }
    // A first password needs no current one, so it is set only from a recent sign-in: a session
    // cookie copied hours ago cannot add a password that outlives the session.
    let fresh = Timestamp::now()
        .as_micros()
        .saturating_sub(who.created_at.as_micros())
        < i64::try_from(FIRST_PASSWORD_WITHIN.as_micros()).unwrap_or(i64::MAX);
    match c.gw.reads().password(&who.user.id).await {
        Ok(None) if !fresh => {
            let e = ApiError::forbidden(format!(
                "a first password is set only within {} minutes of signing in: sign out, sign in again, then set it",
                FIRST_PASSWORD_WITHIN.as_secs() / 60
            ));
            return account_refusal(&c, &who, e).await;
        }
        Ok(_) => {}
        Err(e) => return error_page(Some(&who), &e.into()),
    }
    let current = (!f.current_password.is_empty()).then(|| Password::new(f.current_password));
    let new = Password::new(f.new_password);
    let changed =
        c.gw.admin()
            .set_password(
                &Actor::User(who.user.clone()),
                &who.user.id,
                &new,
                Authority::User { current },
            )
            .await;
    let set_at = match changed {
        Ok(set_at) => set_at,
        Err(PasswordChangeError::CurrentRequired(_)) => {
            let e = ApiError::bad_request(
                "you already have a password: type the current one to change it",
            );
            return account_refusal(&c, &who, e).await;
        }
        Err(e) => return account_refusal(&c, &who, api::password_refusal(e)).await,
    };
    tracing::info!(user = %who.user.id, "password set from the console");
    if !matches!(who.with, SignInWith::Password { .. }) {
        let outcome = Outcome {
            status: StatusCode::OK,
            message: "Your password is set. You can sign in with your user id and it; sessions opened with an earlier password have ended.".to_owned(),
        };
        return account_response(&c, &who, Some(&outcome)).await;
    }
    // This session was opened with the old password: open a fresh one with the new, ending when
    // this one would have, and end this one.
    let left = who
        .expires_at
        .as_micros()
        .saturating_sub(Timestamp::now().as_micros());
    let lifetime = Duration::from_micros(u64::try_from(left).unwrap_or(0));
    let with = SignInWith::Password {
        set_at_us: set_at.as_micros(),
    };
    let id = match c.start_session(&who.user, with, lifetime).await {
        Ok(id) => id,
        Err(e) => {
            let e = ApiError::internal(format!(
                "your password was changed, but a new session could not be opened ({}); sign in again with the new password",
                e.message
            ));
            return error_page(None, &e);
        }
    };
    // The old session already ended with the old password; its row goes too.
    if let Err(e) = c.end_session(&headers).await {
        tracing::error!(error = %e.message, "removing a session ended by a password change failed");
    }
    let renewed = SignedIn {
        csrf: csrf_token(&id),
        with: SignInWith::Password {
            set_at_us: set_at.as_micros(),
        },
        created_at: Timestamp::now(),
        expires_at: who.expires_at,
        user: who.user,
    };
    let outcome = Outcome {
        status: StatusCode::OK,
        message: "Your password is changed. You stay signed in here; your other sessions opened with a password have ended.".to_owned(),
    };
    let mut response = account_response(&c, &renewed, Some(&outcome)).await;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &id, lifetime.as_secs()),
    );
    response
}

/// Ends every session of the user, this one included, wherever it was opened.
pub(super) async fn sign_out_everywhere(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        let ended = c.gw.sessions().remove_user_sessions(&who.user.id).await?;
        let event = AdminEvent::SessionsEnded {
            user: who.user.id.to_string(),
            count: ended,
        };
        c.gw.admin()
            .record(&Actor::User(who.user.clone()), event)
            .await?;
        tracing::info!(user = %who.user.id, ended, "console sessions ended everywhere");
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut response = to_login();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&headers, SESSION_COOKIE, "", 0),
            );
            response
        }
        Err(e) => error_page(Some(&who), &e),
    }
}

/// The signed-in user's account: who they are, this session, their password (its state, never
/// its hash), the form to set or change it, and the button that ends every session.
fn account(
    who: &SignedIn,
    password: Option<&writ_store::identity::PasswordRecord>,
    outcome: Option<&Outcome>,
    passwords: bool,
) -> Markup {
    let now = writ_core::Timestamp::now();
    let (method, how) = match &who.with {
        SignInWith::ApiKey { .. } => ("api_key", "your user API key".to_owned()),
        SignInWith::Password { .. } => ("password", "your password".to_owned()),
        SignInWith::Oidc { issuer } => ("oidc", format!("OpenID Connect, issuer {issuer}")),
    };
    layout(
        "Account",
        Some(who),
        html! {
            h1 { "Your account" }
            @if let Some(o) = outcome {
                @if o.status.is_success() {
                    p.notice #account-outcome role="status" data-status=(o.status.as_u16()) { (o.message) }
                } @else {
                    p.problem #account-outcome role="alert" data-status=(o.status.as_u16()) { (o.message) }
                }
            }
            dl.facts #account {
                dt { "User id" } dd.mono #account-id { (who.user.id.as_str()) }
                dt { "Name" } dd { (who.user.display_name) }
                dt { "Groups" } dd { (if who.user.groups.is_empty() { "none".to_owned() } else { who.user.groups.join(", ") }) }
                dt { "Admin" } dd #account-admin { @if who.user.admin { "yes" } @else { "no" } }
                dt { "This session" } dd #signed-in-with data-method=(method) { "signed in with " (how) }
                dt { "Session ends" } dd #session-ends { (who.expires_at.to_string()) }
                @if passwords {
                    dt { "Password" } dd #password-state data-password=(if password.is_some() { "set" } else { "none" }) {
                        @match password {
                            Some(p) => {
                                "set " (p.set_at.to_string())
                                @if let Some(until) = p.locked_until.filter(|u| *u > now) {
                                    span.problem { " (locked until " (until.to_string()) " after repeated wrong passwords)" }
                                }
                            }
                            None => { "none yet: you sign in with your API key" @if matches!(who.with, SignInWith::Oidc { .. }) { " or your identity provider" } }
                        }
                    }
                }
            }
            @if passwords {
                section.account {
                    h2 { @if password.is_some() { "Change your password" } @else { "Set a password" } }
                    form #password-form method="post" action="/console/account/password" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        @if password.is_some() {
                            label for="current_password" { "Current password" }
                            input #current_password type="password" name="current_password"
                                autocomplete="current-password" required;
                        }
                        label for="new_password" { "New password" }
                        input #new_password type="password" name="new_password"
                            autocomplete="new-password" required;
                        label for="repeat_password" { "New password again" }
                        input #repeat_password type="password" name="repeat_password"
                            autocomplete="new-password" required;
                        button type="submit" { @if password.is_some() { "Change the password" } @else { "Set the password" } }
                    }
                    p.hint {
                        "At least " (writ_identity::password::MIN_CHARS) " characters; a few unrelated words make a good one. "
                        "Changing it ends your other sessions opened with a password; those opened with an API key or an identity provider go on."
                    }
                }
            }
            section.account {
                h2 { "Sign out everywhere" }
                p.hint { "Ends every session of yours, in every browser, this one included. Do it if you left a session open on a device you no longer hold." }
                form #sign-out-everywhere method="post" action="/console/account/sign-out-everywhere" {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.deny type="submit" { "Sign out everywhere" }
                }
            }
        },
    )
}
