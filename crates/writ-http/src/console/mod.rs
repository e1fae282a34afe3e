//! The web console at `/console`: server-rendered pages (maud) for people at a desk or on a
//! phone — the approvals inbox, which updates live over server-sent events; the record of one
//! action, whose inclusion proofs and signed checkpoint the browser verifies itself; the audit
//! explorer (search, chart, JSON Lines and OCSF export); agents and grants; the policy bundle;
//! the user's own account (their password, and signing out everywhere).
//!
//! The console is a thin layer over the same functions as the HTTP API: it reads through
//! `views::visible_approvals`, `views::action_record`, `views::action_filter` and the like,
//! and its pages take those typed read models (`ApprovalView`, `ActionRecord`, …) as they are,
//! so a renamed field is a compile error rather than a dash on a page; it decides through
//! `pipeline::decide` and grants through the core's admin service, so quorum, self-approval,
//! one decision per approver and who may see or change what hold exactly as in the API.
//!
//! One file per feature, each with its handlers and its page:
//!
//! - `mod.rs`: the router, the console's state, the headers layer, the assets, and the answers
//!   every handler shares (a page, the error page, the way to the sign-in page);
//! - `session.rs`: sessions, cookies and CSRF, and `Console::posted`, which every form goes
//!   through; `sign_in.rs`: the sign-in page (password or API key) and signing out; `oidc.rs`:
//!   sign-in with an OpenID Connect issuer;
//! - `approvals.rs`: the inbox, its live updates and the decision; `actions.rs`: the record of
//!   one action; `audit.rs`: the explorer, its export and the log's verification, with its
//!   chart (`chart.rs`); `identity.rs`: agents and grants; `policy.rs`: the policy view;
//!   `account.rs`: the user's own account;
//! - `layout.rs`: the frame every page shares, and the error page.
//!
//! What the console adds to the API is the browser's side of security:
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

mod account;
mod actions;
mod approvals;
mod audit;
mod chart;
mod identity;
mod layout;
mod oidc;
mod policy;
mod session;
mod sign_in;

pub use session::SESSION_LIFETIME;
pub use writ_gateway::oidc_sign_in::OidcSignIn;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use writ_gateway::Gateway;

use crate::error::ApiError;
use session::SignedIn;

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

/// Every route of the console, to be merged into the API's router.
pub fn router(gw: Arc<Gateway>) -> Router {
    let console = Arc::new(Console { gw });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route(
            "/console/login",
            get(sign_in::login_page).post(sign_in::login),
        )
        .route("/console/logout", post(sign_in::logout))
        .route("/console/oidc/{n}/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/approvals", get(approvals::approvals_page))
        .route("/console/approvals/{id}/decision", post(approvals::decide))
        .route("/console/events", get(approvals::events))
        .route("/console/actions/{id}", get(actions::action_page))
        .route("/console/audit", get(audit::audit_page))
        .route("/console/audit/verify", post(audit::verify_log))
        .route("/console/identity", get(identity::identity_page))
        .route("/console/grants", post(identity::create_grant))
        .route("/console/grants/{id}/revoke", post(identity::revoke_grant))
        .route(
            "/console/agents/{id}/disable",
            post(identity::disable_agent),
        )
        .route("/console/agents/{id}/enable", post(identity::enable_agent))
        .route("/console/policy", get(policy::policy_page))
        .route("/console/account", get(account::account_page))
        .route("/console/account/password", post(account::change_password))
        .route(
            "/console/account/sign-out-everywhere",
            post(account::sign_out_everywhere),
        )
        .route("/console/audit/export.jsonl", get(audit::audit_export))
        .route(
            "/console/audit/export.ocsf.jsonl",
            get(audit::audit_export_ocsf),
        )
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
// Responses

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn error_page(user: Option<&SignedIn>, e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    html(status, layout::error(user, status, &e.message))
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// A form body, parsed strictly enough: unknown fields are ignored, missing ones are empty.
fn form<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("the form could not be read: {e}")))
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn home(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.signed_in(&headers).await {
        Ok(Some(_)) => Redirect::to("/console/approvals").into_response(),
        Ok(None) => to_login(),
        Err(e) => error_page(None, &e),
    }
}

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
