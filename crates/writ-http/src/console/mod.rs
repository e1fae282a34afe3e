//! The web console at `/console`: server-rendered pages (maud) for people at a desk or on a
//! phone — the approvals inbox, which updates live over server-sent events; the record of one
//! action, whose inclusion proofs and signed checkpoint the browser verifies itself; the audit
//! explorer (search, chart, JSON Lines and OCSF export); agents and grants; the policy bundle;
//! the user's own account (their password, and signing out everywhere).
//!
//! The console is a thin layer over the same functions as the HTTP API: it reads through
//! [`views::visible_approvals`], [`views::action_record`], [`views::action_filter`] and the like,
//! decides through [`pipeline::decide`] and grants through the core's admin service, so quorum,
//! self-approval, one decision per approver and who may see or change what hold exactly as in
//! the API. What it adds is the browser's side of security:
//!
//! - **Sessions**: sign-in with a user id and password (Argon2id hashes, a lock after repeated
//!   failures: `writ_gateway::auth::passwords`) or with a user API key creates a server-side
//!   session, a random 256-bit id held by the browser in the `writ_session` cookie (`HttpOnly;
//!   SameSite=Strict; Path=/console`, `Secure` unless the request's host is loopback). The
//!   store keeps only the SHA-256 of the id (`writ_store::SessionStore`: a restart keeps the
//!   session and every replica shares it), for at most [`SESSION_LIFETIME`]. Every request
//!   re-reads the user and checks that the API key used to sign in is still live (or that the
//!   password has not been changed or cleared since), so revoking the key, changing the
//!   password or deleting the user ends the session at once. Sign-in with an OpenID Connect
//!   issuer ([`oidc`]) opens the same kind of session, which ends at the ID token's expiry at
//!   the latest.
//! - **CSRF**: every form carries the session's token (derived from the session id, so never
//!   stored) in a hidden field, checked on every POST; the sign-in form uses a short-lived token
//!   bound to a cookie. A POST that a browser marks as cross-site (`Sec-Fetch-Site`), or whose
//!   `Origin` (or `Referer`) is another site, is refused as well.
//! - **Headers** on every response: a Content-Security-Policy without `unsafe-inline` (the pages
//!   have no inline script or style; the data the script needs travels in `data-` attributes),
//!   `nosniff`, `no-referrer`, no framing, and `no-store` on pages.
//! - **Assets** (`console.css`, `console.js`) are compiled in and served under a content-hashed
//!   name with a one-year immutable cache; nothing is loaded from elsewhere.

mod oidc;
mod pages;

pub use writ_gateway::oidc_sign_in::OidcSignIn;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use writ_core::Timestamp;
use writ_identity::apikey::{KeyKind, parse_presented};
use writ_store::identity::{ApiKeyRecord, KeySubject, UserRecord};
use writ_store::{ActionRow, ActionState, ApprovalState, EntryFilter, SessionRecord};

use writ_gateway::admin::{Actor, AdminEvent};
use writ_gateway::auth::Who;
use writ_gateway::views;

use crate::api;
use writ_gateway::Gateway;
use writ_gateway::pipeline::{self, DecisionRequest};

use crate::error::ApiError;

/// How long a console session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long the sign-in form's token is good for.
const LOGIN_TOKEN_LIFETIME_SECS: u64 = 600;
/// How soon after signing in a session may set a user's first password.
const FIRST_PASSWORD_WITHIN: Duration = Duration::from_secs(600);
/// The most sessions one user holds at once; signing in again ends the oldest beyond it.
const MAX_SESSIONS_PER_USER: u32 = 20;
/// How often the live inbox looks at the store even when this process saw no change (another
/// replica may have made one).
const EVENTS_POLL: Duration = Duration::from_secs(2);
/// The least time between two looks of one live inbox, however many changes happen.
const EVENTS_MIN_INTERVAL: Duration = Duration::from_millis(250);

const SESSION_COOKIE: &str = "writ_session";
const LOGIN_COOKIE: &str = "writ_login";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// A compiled-in asset under its content-hashed name.
struct Asset {
    name: String,
    content_type: &'static str,
    body: &'static str,
}

fn hashed_name(stem: &str, ext: &str, body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("{stem}.{}.{ext}", &hex::encode(digest)[..12])
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset {
            name: hashed_name("console", "css", CSS),
            content_type: "text/css; charset=utf-8",
            body: CSS,
        },
        Asset {
            name: hashed_name("console", "js", JS),
            content_type: "text/javascript; charset=utf-8",
            body: JS,
        },
    ]
});

/// The URL of the stylesheet.
pub(crate) fn css_url() -> String {
    format!("/console/assets/{}", ASSETS[0].name)
}

/// The URL of the script.
pub(crate) fn js_url() -> String {
    format!("/console/assets/{}", ASSETS[1].name)
}

/// The console's state: the gateway. Sessions and OIDC sign-ins in progress are in the store,
/// so that they survive a restart and every replica shares them.
pub struct Console {
    gw: Arc<Gateway>,
}

/// What a session was opened with, and so what each request re-checks. Stored with the session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
enum SignInWith {
    /// The SHA-256 (hex) of the user API key; the session ends when the key is revoked.
    ApiKey { key_sha256: String },
    /// The user's password, set at `set_at_us` (µs since the epoch); the session ends when it is
    /// changed or cleared.
    Password { set_at_us: i64 },
    /// An ID token of an OIDC issuer; the session ends when the user is deleted, and at the
    /// token's expiry at the latest.
    Oidc { issuer: String },
}

/// A signed-in user, as one request sees them.
pub(crate) struct SignedIn {
    pub user: UserRecord,
    pub csrf: String,
    /// How this session was opened (the account page says so).
    with: SignInWith,
    /// When the session was opened: a first password is set only from a recent sign-in.
    created_at: Timestamp,
    expires_at: Timestamp,
}

/// Every route of the console, to be merged into the API's router.
pub fn router(gw: Arc<Gateway>) -> Router {
    let console = Arc::new(Console { gw });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/oidc/{n}/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/approvals", get(approvals_page))
        .route("/console/approvals/{id}/decision", post(decide))
        .route("/console/events", get(events))
        .route("/console/actions/{id}", get(action_page))
        .route("/console/audit", get(audit_page))
        .route("/console/audit/verify", post(verify_log))
        .route("/console/identity", get(identity_page))
        .route("/console/grants", post(create_grant))
        .route("/console/grants/{id}/revoke", post(revoke_grant))
        .route("/console/agents/{id}/disable", post(disable_agent))
        .route("/console/agents/{id}/enable", post(enable_agent))
        .route("/console/policy", get(policy_page))
        .route("/console/account", get(account_page))
        .route("/console/account/password", post(change_password))
        .route(
            "/console/account/sign-out-everywhere",
            post(sign_out_everywhere),
        )
        .route("/console/audit/export.jsonl", get(audit_export))
        .route("/console/audit/export.ocsf.jsonl", get(audit_export_ocsf))
        .route("/console/assets/{file}", get(asset))
        .route("/console/{*rest}", get(console_not_found))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Sessions, cookies, CSRF

/// 256 random bits, base64url without padding.
fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the system random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn session_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session's CSRF token: derived from the session cookie, which only the browser holds (the
/// store keeps the cookie's hash), so it is never stored and every replica computes the same.
fn csrf_token(session_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"writ console csrf\0");
    h.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares two secrets without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request's host without its port, lower-cased.
fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    host.split(':').next().unwrap_or_default().to_owned()
}

/// Whether the browser reached us on loopback, where a cookie cannot be `Secure` over plain
/// HTTP and needs not be.
fn is_loopback(headers: &HeaderMap) -> bool {
    let host = request_host(headers);
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if is_loopback(headers) { "" } else { "; Secure" };
    let text = format!(
        "{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a state-changing request comes from this site. A browser says so in
/// `Sec-Fetch-Site` (`same-origin`, or `none` for what the user did themselves); an `Origin`
/// (or, without one, a `Referer`) must name the host the request was sent to or the configured
/// public URL. Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` on our own
/// forms, which proves nothing either way; such a request, like one from a client that is not a
/// browser, is judged by its CSRF token alone.
fn same_origin(public_url: &str, headers: &HeaderMap) -> bool {
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = header_text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    let claimed = match header_text(header::ORIGIN.as_str()) {
        Some("null") => return true,
        Some(origin) => origin,
        None => match header_text(header::REFERER.as_str()) {
            Some(referer) => referer,
            None => return true,
        },
    };
    let Some((scheme, rest)) = claimed.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if format!("{scheme}://{authority}") == public_url {
        return true;
    }
    let host = header_text(header::HOST.as_str()).unwrap_or_default();
    (scheme == "http" || scheme == "https") && !host.is_empty() && authority == host
}

impl Console {
    /// The signed-in user of this request, or `None`. Fails closed: a store error is an error.
    async fn signed_in(&self, headers: &HeaderMap) -> Result<Option<SignedIn>, ApiError> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let Some(session) = self
            .gw
            .sessions()
            .session(&session_key(id), Timestamp::now())
            .await?
        else {
            return Ok(None);
        };
        let with: Option<SignInWith> = serde_json::from_value(session.sign_in).ok();
        let live = match &with {
            Some(SignInWith::ApiKey { key_sha256 }) => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(key_sha256, &mut hash).is_ok()
                    && matches!(
                        self.gw.reads().api_key(&hash).await?,
                        Some(ApiKeyRecord { subject: KeySubject::User(ref u), revoked_at: None, .. }) if *u == session.user
                    )
            }
            Some(SignInWith::Password { set_at_us }) => {
                self.gw.passwords_enabled()
                    && self
                        .gw
                        .reads()
                        .password(&session.user)
                        .await?
                        .is_some_and(|p| p.set_at.as_micros() == *set_at_us)
            }
            // The issuer is not asked again: the session lives at most until the ID token's
            // expiry, and deleting the user or removing the issuer from the configuration ends
            // it.
            Some(SignInWith::Oidc { issuer }) => {
                self.gw.oidc_sign_in().iter().any(|p| p.issuer() == issuer)
            }
            // Written by a newer Writ, or damaged: fail closed.
            None => false,
        };
        let user = match with {
            Some(with) if live => self.gw.reads().user(&session.user).await?.map(|u| (u, with)),
            _ => None,
        };
        match user {
            Some((user, with)) => Ok(Some(SignedIn {
                user,
                csrf: csrf_token(id),
                with,
                created_at: session.created_at,
                expires_at: session.expires_at,
            })),
            None => {
                if let Err(e) = self.end_session(headers).await {
                    tracing::error!(error = %e.message, "ending a dead console session failed");
                }
                Ok(None)
            }
        }
    }

    /// The user a page is for; signed out, the answer is the sign-in page instead.
    async fn page_user(&self, headers: &HeaderMap) -> Result<SignedIn, Response> {
        match self.signed_in(headers).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(to_login()),
            Err(e) => Err(error_page(None, &e)),
        }
    }

    /// A form post: its signed-in user and its fields, with the origin and the session's CSRF
    /// token checked; otherwise the page to answer with (403 signed out, the refusal's page).
    async fn posted<F: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(SignedIn, F), Response> {
        let who = self.form_user(headers).await?;
        let checked = form::<CsrfForm>(body)
            .and_then(|t| check_post(&self.gw, headers, &who, &t.csrf))
            .and_then(|()| form::<F>(body));
        match checked {
            Ok(f) => Ok((who, f)),
            Err(e) => Err(error_page(Some(&who), &e)),
        }
    }

    /// The user a form post is from; signed out, the answer is a 403 page instead.
    async fn form_user(&self, headers: &HeaderMap) -> Result<SignedIn, Response> {
        match self.signed_in(headers).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(error_page(None, &ApiError::forbidden("sign in first"))),
            Err(e) => Err(error_page(None, &e)),
        }
    }

    /// Ends this request's session in the store.
    async fn end_session(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.gw.sessions().remove_session(&session_key(id)).await?;
        }
        Ok(())
    }

    /// Where the issuer sends the browser back after an OIDC sign-in.
    fn callback_url(&self) -> String {
        format!("{}/console/oidc/callback", self.gw.public_url())
    }

    /// Opens a session for `user` lasting `lifetime` (at most [`SESSION_LIFETIME`]); the
    /// cookie value, which is stored only as its SHA-256.
    async fn start_session(
        &self,
        user: &UserRecord,
        with: SignInWith,
        lifetime: Duration,
    ) -> Result<String, ApiError> {
        let id = random_token()?;
        let now = Timestamp::now();
        let lifetime = i64::try_from(lifetime.min(SESSION_LIFETIME).as_micros()).unwrap_or(0);
        let expires_at = Timestamp::from_micros(now.as_micros().saturating_add(lifetime))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sign_in = serde_json::to_value(&with).map_err(|e| ApiError::internal(e.to_string()))?;
        self.gw
            .sessions()
            .add_session(
                &session_key(&id),
                &SessionRecord {
                    user: user.id.clone(),
                    sign_in,
                    created_at: now,
                    expires_at,
                },
                MAX_SESSIONS_PER_USER,
            )
            .await?;
        Ok(id)
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn error_page(user: Option<&SignedIn>, e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    html(status, pages::error(user, status, &e.message))
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// A form body, parsed strictly enough: unknown fields are ignored, missing ones are empty.
fn form<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("the form could not be read: {e}")))
}

/// The checks of every POST made by a signed-in user: same origin and the session's CSRF token.
fn check_post(
    gw: &Gateway,
    headers: &HeaderMap,
    who: &SignedIn,
    token: &str,
) -> Result<(), ApiError> {
    if !same_origin(gw.public_url(), headers) {
        return Err(ApiError::forbidden(
            "this form was sent from another site; it was refused",
        ));
    }
    if token.is_empty() || !same_secret(token, &who.csrf) {
        return Err(ApiError::forbidden(
            "the form's CSRF token is missing or wrong; reload the page and try again",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pages

async fn home(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.signed_in(&headers).await {
        Ok(Some(_)) => Redirect::to("/console/approvals").into_response(),
        Ok(None) => to_login(),
        Err(e) => error_page(None, &e),
    }
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
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
        pages::login(&token, problem, c.gw.oidc_sign_in(), c.gw.passwords_enabled()),
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

async fn login(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let f: LoginForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(None, &e),
    };
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_origin(c.gw.public_url(), &headers) || f.csrf.is_empty() || !same_secret(&f.csrf, bound)
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

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
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

async fn approvals_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    match views::visible_approvals(&c.gw, &who.user, Some(ApprovalState::Pending), 200).await {
        Ok(items) => {
            let items: Vec<Value> = items.iter().map(to_value).collect();
            html(StatusCode::OK, pages::approvals(&who, &items))
        }
        Err(e) => error_page(Some(&who), &e.into()),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    action_hash: String,
}

/// One approver's decision, through [`pipeline::decide`] exactly as `POST
/// /v1/approvals/{id}/decision`; bound to the action hash the approver saw.
async fn decide(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match c.signed_in(&headers).await {
        Ok(Some(who)) => who,
        Ok(None) => {
            return error_page(
                None,
                &ApiError::forbidden("you are not signed in; sign in and try again"),
            );
        }
        Err(e) => return error_page(None, &e),
    };
    let f: DecisionForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&who), &e),
    };
    if let Err(e) = check_post(&c.gw, &headers, &who, &f.csrf) {
        return error_page(Some(&who), &e);
    }
    // The same parsing as the API's JSON body.
    let comment = f.comment.trim();
    let request: DecisionRequest = match serde_json::from_value(json!({
        "decision": f.decision,
        "comment": (!comment.is_empty()).then_some(comment),
        "action_hash": (!f.action_hash.is_empty()).then_some(f.action_hash.as_str()),
    })) {
        Ok(r) => r,
        Err(_) => {
            return error_page(
                Some(&who),
                &ApiError::bad_request("the decision must be approve or deny"),
            );
        }
    };
    match pipeline::decide(&c.gw, &who.user.id, &id, request).await {
        Ok(outcome) => {
            Redirect::to(&format!("/console/actions/{}", outcome.action.id)).into_response()
        }
        Err(e) => error_page(Some(&who), &e.into()),
    }
}

async fn action_page(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let reader = Who::User(who.user.clone());
    match views::action_record(&c.gw, &reader, &id, Duration::ZERO).await {
        Ok((_, record)) => html(StatusCode::OK, pages::action(&who, &to_value(&record))),
        Err(e) => error_page(Some(&who), &e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Audit explorer

/// The explorer's search: the API's action query (empty fields left out), plus a grant.
#[derive(Default)]
pub(crate) struct AuditSearch {
    pub query: views::ActionQuery,
    pub grant: Option<String>,
    /// The fields as given, to fill the form again and to build the export link.
    pub fields: Vec<(String, String)>,
}

impl AuditSearch {
    fn parse(raw: Option<&str>) -> Result<AuditSearch, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("the search could not be read: {e}")))?;
        let mut search = AuditSearch::default();
        for (k, v) in pairs {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            // A browser's datetime-local field has no seconds and no zone: read it as UTC.
            let time = |v: &str| {
                if v.len() == 16 && v.as_bytes().get(10) == Some(&b'T') {
                    format!("{v}:00Z")
                } else {
                    v.to_owned()
                }
            };
            match k.as_str() {
                "user" => search.query.user = Some(v.clone()),
                "agent" => search.query.agent = Some(v.clone()),
                "connector" => search.query.connector = Some(v.clone()),
                "verdict" => search.query.verdict = Some(v.clone()),
                "since" => search.query.since = Some(time(&v)),
                "before" => search.query.before = Some(time(&v)),
                "grant" => search.grant = Some(v.clone()),
                _ => continue,
            }
            search.fields.push((k, v));
        }
        search.query.limit = Some(500);
        Ok(search)
    }

    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The search as a query string.
    pub fn query_string(&self) -> String {
        serde_urlencoded::to_string(&self.fields).unwrap_or_default()
    }
}

/// The actions `who` may search that match, newest first: the same filter as `GET /v1/actions`
/// (a user who is not an admin sees their own agents' actions).
async fn search_actions(
    gw: &Gateway,
    who: &SignedIn,
    search: &AuditSearch,
) -> Result<Vec<ActionRow>, ApiError> {
    let filter = views::action_filter(&search.query, &Who::User(who.user.clone()))?;
    let mut rows = gw.reads().actions(&filter).await?;
    if let Some(grant) = &search.grant {
        rows.retain(|a| a.grant.as_deref() == Some(grant.as_str()));
    }
    Ok(rows)
}

/// The verdict an action's state stands for, as the API's `verdict=` filter reads it.
pub(crate) fn verdict_of(state: ActionState) -> &'static str {
    match state {
        ActionState::Succeeded
        | ActionState::Failed
        | ActionState::Executing
        | ActionState::OutcomeUnknown => "allow",
        ActionState::Denied | ActionState::Rejected => "deny",
        ActionState::PendingApproval | ActionState::Expired => "approval",
    }
}

/// The log's state, for the explorer's header.
pub(crate) struct LogStatus {
    pub size: u64,
    pub checkpoint: Option<(u64, String)>,
    pub verifier_key: String,
    /// The latest verification of the whole log by this server (at start, or asked by an admin).
    pub verification: Option<writ_gateway::gateway::LastVerification>,
}

async fn audit_page(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let result = async {
        let search = AuditSearch::parse(raw.as_deref())?;
        let rows = search_actions(&c.gw, &who, &search).await?;
        let checkpoint = c.gw.reads().latest_checkpoint().await?;
        let status = LogStatus {
            size: c.gw.reads().size().await?,
            checkpoint: checkpoint.map(|cp| {
                let at = writ_core::Timestamp::from_micros(cp.created_us)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                (cp.tree_size, at)
            }),
            verifier_key: c.gw.verifier_key(),
            verification: c.gw.last_verification(),
        };
        Ok::<_, ApiError>(pages::audit(&who, &search, &rows, &status))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// Every audit entry of the matching actions, in log order, one canonical JSON entry (the exact
/// bytes of its Merkle leaf) per line.
async fn audit_export(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    export(&c, raw.as_deref(), &headers, false).await
}

/// The same entries as OCSF API Activity events, one per line (as `writ audit export --format
/// ocsf`).
async fn audit_export_ocsf(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    export(&c, raw.as_deref(), &headers, true).await
}

async fn export(c: &Console, raw: Option<&str>, headers: &HeaderMap, ocsf: bool) -> Response {
    let who = match c.signed_in(headers).await {
        Ok(Some(who)) => who,
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return error_page(None, &e),
    };
    let result = async {
        let search = AuditSearch::parse(raw)?;
        let rows = search_actions(&c.gw, &who, &search).await?;
        let mut entries = Vec::new();
        for a in &rows {
            entries.extend(
                c.gw.reads()
                    .query(&EntryFilter {
                        action_id: Some(a.id.as_str().to_owned()),
                        limit: 1000,
                        ..Default::default()
                    })
                    .await?,
            );
        }
        entries.sort_by_key(|e| e.seq);
        let mut body = Vec::new();
        for e in entries {
            if ocsf {
                let entry = e.decode().map_err(|err| {
                    ApiError::internal(format!("entry {} is unreadable: {err}", e.seq))
                })?;
                let event = writ_gateway::ocsf::api_activity(&entry, &e);
                serde_json::to_writer(&mut body, &event)
                    .map_err(|err| ApiError::internal(err.to_string()))?;
            } else {
                body.extend_from_slice(&e.entry);
            }
            body.push(b'\n');
        }
        Ok::<_, ApiError>(body)
    }
    .await;
    match result {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (
                    header::CONTENT_DISPOSITION,
                    if ocsf {
                        "attachment; filename=\"writ-audit.ocsf.jsonl\""
                    } else {
                        "attachment; filename=\"writ-audit.jsonl\""
                    },
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

// ---------------------------------------------------------------------------------------------
// Identity and policy

async fn identity_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let result = async {
        let agents = views::visible_agents(&c.gw, &who.user).await?;
        let grants = views::visible_grants(&c.gw, &who.user).await?;
        Ok::<_, ApiError>(pages::identity(&who, &agents, &grants))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

#[derive(Deserialize)]
/// Its CSRF token is read and checked by [`Console::posted`].
struct GrantForm {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    actions: String,
    #[serde(default)]
    resources: String,
    #[serde(default)]
    expires_hours: String,
    #[serde(default)]
    max_uses: String,
}

/// Words separated by commas or white space.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A new grant on the signed-in user's authority, through the core's admin service.
async fn create_grant(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, f): (SignedIn, GrantForm) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        let number = |text: &str, what: &str| {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{what} must be a whole number")))
        };
        let request = writ_gateway::admin::GrantRequest {
            agent: f.agent.trim().to_owned(),
            actions: words(&f.actions),
            resources: words(&f.resources),
            expires_in: number(&f.expires_hours, "the expiry in hours")?
                .map(|h| h.saturating_mul(3600)),
            max_uses: number(&f.max_uses, "the use limit")?,
            ..Default::default()
        };
        if request.actions.is_empty() {
            return Err(ApiError::bad_request(
                "name at least one action, such as github.create_issue or github.*",
            ));
        }
        let spec = request.into_spec(&who.user.id, writ_core::Timestamp::now())?;
        Ok(c.gw
            .admin()
            .issue_grant(&Actor::User(who.user.clone()), spec)
            .await?)
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// An admin asks for the whole log to be verified now; the audit page shows the outcome.
async fn verify_log(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        if !who.user.admin {
            return Err(ApiError::forbidden(format!(
                "user {} is not an admin; only admins verify the whole log from here",
                who.user.id
            )));
        }
        c.gw.verify_log(&format!("user:{}", who.user.id)).await;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/console/audit").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

async fn disable_agent(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_agent_enabled(c, id, headers, body, false).await
}

async fn enable_agent(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_agent_enabled(c, id, headers, body, true).await
}

/// Disables or enables one of the user's agents (any agent, for an admin) through the API's own
/// core's admin service.
async fn set_agent_enabled(
    c: Arc<Console>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
    enabled: bool,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = match writ_identity::AgentId::new(id) {
        Ok(id) => {
            c.gw.admin()
                .set_agent_enabled(&Actor::User(who.user.clone()), &id, enabled)
                .await
                .map_err(ApiError::from)
        }
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    };
    match result {
        Ok(()) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

async fn revoke_grant(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        let id =
            writ_identity::GrantId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let revoked =
            c.gw.admin()
                .revoke_grant(&Actor::User(who.user.clone()), &id)
                .await?;
        Ok::<_, ApiError>((id, revoked))
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// The serving policy bundle, its shadow candidate and the recent disagreements between them:
/// for admins, as `GET /v1/admin/policy`.
async fn policy_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    if !who.user.admin {
        let e = ApiError::forbidden(format!(
            "user {} is not an admin; the policy view is for admins",
            who.user.id
        ));
        return error_page(Some(&who), &e);
    }
    let result = async {
        let size = c.gw.reads().size().await?;
        let recent =
            c.gw.reads()
                .query(&EntryFilter {
                    kind: Some(writ_core::EntryKind::Evaluated),
                    after_seq: size.checked_sub(SHADOW_WINDOW + 1),
                    limit: u32::try_from(SHADOW_WINDOW).unwrap_or(u32::MAX),
                    ..Default::default()
                })
                .await?;
        let mut disagreements = Vec::new();
        for e in recent.iter().rev() {
            let entry = e.decode().map_err(|err| {
                ApiError::internal(format!("entry {} is unreadable: {err}", e.seq))
            })?;
            if entry.payload.pointer("/shadow/disagrees") == Some(&Value::Bool(true)) {
                disagreements.push(entry);
            }
        }
        Ok::<_, ApiError>(pages::policy(&who, c.gw.policy(), &disagreements))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// How many of the latest log entries the policy view searches for shadow disagreements.
const SHADOW_WINDOW: u64 = 5000;

async fn console_not_found(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = c.signed_in(&headers).await.ok().flatten();
    error_page(
        who.as_ref(),
        &ApiError::not_found("there is no such page in the console"),
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Account

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
            let account = pages::account(who, password.as_ref(), outcome, c.gw.passwords_enabled());
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
async fn account_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
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
async fn change_password(
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
    let changed = c
        .gw
        .admin()
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
async fn sign_out_everywhere(
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

// ---------------------------------------------------------------------------------------------
// Live updates

/// What the live inbox stream remembers between two looks at the store.
struct Watch {
    console: Arc<Console>,
    headers: HeaderMap,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Pending approvals already sent.
    known: HashSet<String>,
    queue: VecDeque<Event>,
    first: bool,
}

impl Watch {
    /// Looks at the store and queues an `approval` event for every pending approval the user
    /// may see that was not sent yet, and a `closed` event for every one sent that is no longer
    /// pending. Returns false when the session ended.
    async fn look(&mut self) -> Result<bool, ApiError> {
        let Some(who) = self.console.signed_in(&self.headers).await? else {
            return Ok(false);
        };
        let rows = views::visible_approval_rows(
            &self.console.gw,
            &who.user,
            Some(ApprovalState::Pending),
            200,
        )
        .await?;
        let mut now: HashSet<String> = HashSet::new();
        for row in &rows {
            now.insert(row.id.clone());
            if !self.known.contains(&row.id) {
                let item = views::approval_item(&self.console.gw, &who.user, row).await?;
                self.queue.push_back(
                    Event::default()
                        .event("approval")
                        .data(to_value(&item).to_string()),
                );
            }
        }
        for gone in self.known.difference(&now) {
            self.queue.push_back(
                Event::default()
                    .event("closed")
                    .data(json!({"id": gone}).to_string()),
            );
        }
        self.known = now;
        Ok(true)
    }
}

/// `GET /console/events`: the signed-in user's pending approvals as server-sent events. On
/// connecting, every pending approval is sent (the page ignores those it shows already, so
/// nothing created between the page and the stream is lost); then new ones as they arrive.
async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.signed_in(&headers).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return error_page(None, &e),
    }
    let state = Watch {
        changes: c.gw.subscribe_changes(),
        console: c,
        headers,
        known: HashSet::new(),
        queue: VecDeque::new(),
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut w| async move {
        loop {
            if let Some(event) = w.queue.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(event), w));
            }
            if !w.first {
                let shutdown = w.console.gw.shutdown().clone();
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = w.changes.changed() => {}
                    _ = tokio::time::sleep(EVENTS_POLL) => {}
                }
                // Under a burst of changes, one look per interval is enough.
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(EVENTS_MIN_INTERVAL) => {}
                }
                w.changes.mark_unchanged();
            }
            w.first = false;
            match w.look().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    tracing::warn!(error = %e.message, "the console's live inbox could not read the store");
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A read model as the JSON the pages read.
fn to_value<T: serde::Serialize>(view: &T) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn cookies_are_found_among_several() {
        let h = headers(&[("cookie", "a=1; writ_session=abc; b=2")]);
        assert_eq!(cookie(&h, "writ_session"), Some("abc"));
        assert_eq!(cookie(&h, "writ_login"), None);
    }

    #[test]
    fn loopback_hosts_get_cookies_without_secure() {
        for (host, local) in [
            ("127.0.0.1:8080", true),
            ("localhost", true),
            ("[::1]:80", true),
            ("writ.example.com", false),
            ("127.0.0.1.example.com", false),
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(is_loopback(&h), local, "{host}");
            let c = set_cookie(&h, "x", "y", 1);
            assert_eq!(
                c.to_str().is_ok_and(|s| s.contains("Secure")),
                !local,
                "{host}"
            );
        }
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let public = "https://writ.example.com";
        let host = ("host", "127.0.0.1:8080");
        for (pairs, allowed) in [
            (vec![host], true),
            (vec![host, ("origin", "http://127.0.0.1:8080")], true),
            (vec![host, ("origin", "https://writ.example.com")], true),
            (vec![host, ("origin", "null")], true),
            (vec![host, ("origin", "https://evil.example")], false),
            (vec![host, ("origin", "http://127.0.0.1:9999")], false),
            (
                vec![host, ("referer", "http://127.0.0.1:8080/console/approvals")],
                true,
            ),
            (vec![host, ("referer", "https://evil.example/x")], false),
            (
                vec![host, ("sec-fetch-site", "same-origin"), ("origin", "null")],
                true,
            ),
            (
                vec![host, ("sec-fetch-site", "cross-site"), ("origin", "null")],
                false,
            ),
            (vec![host, ("sec-fetch-site", "same-site")], false),
            (vec![host, ("origin", "file:///x")], false),
        ] {
            assert_eq!(same_origin(public, &headers(&pairs)), allowed, "{pairs:?}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
