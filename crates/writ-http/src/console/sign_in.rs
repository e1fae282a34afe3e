//! Signing in and out: the sign-in page, a user id and password or a user API key, and the
//! sign-out form. (OpenID Connect sign-in is in `oidc.rs`.)

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use writ_identity::apikey::{KeyKind, parse_presented};
use writ_store::identity::{ApiKeyRecord, KeySubject, UserRecord};

use super::layout::layout;
use super::session::{
    SESSION_COOKIE, SESSION_LIFETIME, SignInWith, check_post, cookie, random_token, same_origin,
    same_secret, set_cookie,
};
use super::{Console, CsrfForm, OidcSignIn, error_page, form, html, to_login};

/// How long the sign-in form's token is good for.
const LOGIN_TOKEN_LIFETIME_SECS: u64 = 600;
const LOGIN_COOKIE: &str = "writ_login";

pub(super) async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.signed_in(&headers).await {
        Ok(Some(_)) => Redirect::to("/console/approvals").into_response(),
        Ok(None) => login_form(&c, &headers, StatusCode::OK, None),
        Err(e) => error_page(None, &e),
    }
}

/// The sign-in form with a fresh token, bound to the `writ_login` cookie.
fn login_form(
    c: &Console,
    headers: &HeaderMap,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return error_page(None, &e),
    };
    let mut response = html(
        status,
        sign_in_page(
            &token,
            problem,
            c.gw.oidc_sign_in(),
            c.gw.passwords_enabled(),
        ),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &token, LOGIN_TOKEN_LIFETIME_SECS),
    );
    response
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: LoginForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(None, &e),
    };
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_origin(c.gw.public_url(), &headers)
        || f.csrf.is_empty()
        || !same_secret(&f.csrf, bound)
    {
        return login_form(
            &c,
            &headers,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or was sent from another site. Try again."),
        );
    }
    if !f.user.is_empty() || !f.password.is_empty() {
        if !c.gw.passwords_enabled() {
            return login_form(
                &c,
                &headers,
                StatusCode::FORBIDDEN,
                Some(
                    "Password sign-in is switched off here. Sign in with your API key or your identity provider.",
                ),
            );
        }
        let password = writ_identity::password::Password::new(f.password);
        return password_login(&c, &headers, &f.user, &password).await;
    }
    let refused = || {
        c.gw.metrics().refused("unauthenticated");
        login_form(
            &c,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That key was not accepted. Sign in with a live user API key (writ_uk_…)."),
        )
    };
    let Ok((KeyKind::User, key_hash)) = parse_presented(f.api_key.trim()) else {
        return refused();
    };
    let user = match c.gw.reads().api_key(&key_hash).await {
        Ok(Some(ApiKeyRecord {
            subject: KeySubject::User(id),
            revoked_at: None,
            ..
        })) => match c.gw.reads().user(&id).await {
            Ok(Some(user)) => user,
            Ok(None) => return refused(),
            Err(e) => return error_page(None, &e.into()),
        },
        Ok(_) => return refused(),
        Err(e) => return error_page(None, &e.into()),
    };
    let with = SignInWith::ApiKey {
        key_sha256: hex::encode(key_hash),
    };
    open_session(&c, &headers, &user, with).await
}

/// Sign-in with a user id and password. An unknown user, a user without a password, a wrong
/// password and a locked one get the same answer (and take as long: see
/// `writ_gateway::auth::passwords::sign_in`), so the form tells nobody which users exist.
async fn password_login(
    c: &Console,
    headers: &HeaderMap,
    user: &str,
    password: &writ_identity::password::Password,
) -> Response {
    use writ_gateway::auth::passwords::SignIn;
    let now = writ_core::Timestamp::now();
    match c.gw.password_sign_in(user, password, now).await {
        Ok(SignIn::Accepted { user, set_at }) => {
            let with = SignInWith::Password {
                set_at_us: set_at.as_micros(),
            };
            open_session(c, headers, &user, with).await
        }
        Ok(SignIn::Busy) => {
            let mut response = login_form(
                c,
                headers,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Too many sign-ins at this moment. Try again in a few seconds."),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(refusal) => {
            if let SignIn::Locked { user, .. } = &refusal {
                tracing::warn!(user = %user, "console password sign-in refused: locked after repeated failures");
            }
            c.gw.metrics().refused("unauthenticated");
            login_form(
                c,
                headers,
                StatusCode::UNAUTHORIZED,
                Some("That user id and password were not accepted."),
            )
        }
        Err(e) => error_page(None, &e.into()),
    }
}

/// Opens a session for `user` and sends the browser to the inbox with its cookie.
async fn open_session(
    c: &Console,
    headers: &HeaderMap,
    user: &UserRecord,
    with: SignInWith,
) -> Response {
    let id = match c.start_session(user, with, SESSION_LIFETIME).await {
        Ok(id) => id,
        Err(e) => return error_page(None, &e),
    };
    tracing::info!(user = %user.id, "console sign-in");
    let mut response = Redirect::to("/console/approvals").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(headers, SESSION_COOKIE, &id, SESSION_LIFETIME.as_secs()),
    );
    h.append(header::SET_COOKIE, set_cookie(headers, LOGIN_COOKIE, "", 0));
    response
}

pub(super) async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let f: CsrfForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&who), &e),
    };
    if let Err(e) = check_post(&c.gw, &headers, &who, &f.csrf) {
        return error_page(Some(&who), &e);
    }
    if let Err(e) = c.end_session(&headers).await {
        // Not signed out: say so rather than pretend (the session, and any copy of its cookie,
        // would still work).
        return error_page(Some(&who), &e);
    }
    let mut response = to_login();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    response
}

fn sign_in_page(
    token: &str,
    problem: Option<&str>,
    providers: &[OidcSignIn],
    passwords: bool,
) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.login {
                h1 { "Sign in to Writ" }
                @if let Some(p) = problem {
                    p.problem role="alert" { (p) }
                }
                @if passwords {
                    form #password-sign-in method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(token);
                        label for="user" { "User id" }
                        input #user type="text" name="user" autocomplete="username"
                            autocapitalize="none" spellcheck="false" required;
                        label for="password" { "Password" }
                        input #password type="password" name="password"
                            autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "No password yet? Set one with " code { "writ users set-password YOUR_ID" } " (or ask an operator), or sign in with your API key below." }
                    h2 { "Or with your user API key" }
                } @else {
                    h2 { "With your user API key" }
                }
                form #key-sign-in method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(token);
                    label for="api_key" { "Your user API key" }
                    input #api_key type="password" name="api_key" autocomplete="off"
                        placeholder="writ_uk_…" required;
                    button type="submit" { "Sign in with the key" }
                }
                p.hint { "A key or password is checked and forgotten: the session is a separate random token, and neither is ever shown." }
                @if !providers.is_empty() {
                    div.oidc {
                        @for (n, p) in providers.iter().enumerate() {
                            p { a.oidc-start href=(format!("/console/oidc/{n}/start")) { "Sign in with " (p.name) } }
                        }
                    }
                }
            }
        },
    )
}
