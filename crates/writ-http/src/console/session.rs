//! Console sessions: what a session was opened with, the cookies that carry it, the CSRF token
//! derived from it, and [`Console::posted`], which every form handler goes through (its
//! signed-in user, the origin and the token checked before the fields are read).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use writ_core::Timestamp;
use writ_gateway::Gateway;
use writ_store::SessionRecord;
use writ_store::identity::{ApiKeyRecord, KeySubject, UserRecord};

use super::{Console, CsrfForm, error_page, form, to_login};
use crate::error::ApiError;

/// How long a console session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The most sessions one user holds at once; signing in again ends the oldest beyond it.
const MAX_SESSIONS_PER_USER: u32 = 20;

pub(super) const SESSION_COOKIE: &str = "writ_session";

/// What a session was opened with, and so what each request re-checks. Stored with the session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub(super) enum SignInWith {
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
    pub with: SignInWith,
    /// When the session was opened: a first password is set only from a recent sign-in.
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// 256 random bits, base64url without padding.
pub(super) fn random_token() -> Result<String, ApiError> {
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
pub(super) fn csrf_token(session_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"writ console csrf\0");
    h.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares two secrets without an early exit.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
pub(super) fn is_loopback(headers: &HeaderMap) -> bool {
    let host = request_host(headers);
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: u64,
) -> HeaderValue {
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
pub(super) fn same_origin(public_url: &str, headers: &HeaderMap) -> bool {
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
    pub(super) async fn signed_in(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<SignedIn>, ApiError> {
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
            Some(with) if live => self
                .gw
                .reads()
                .user(&session.user)
                .await?
                .map(|u| (u, with)),
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
    pub(super) async fn page_user(&self, headers: &HeaderMap) -> Result<SignedIn, Response> {
        match self.signed_in(headers).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(to_login()),
            Err(e) => Err(error_page(None, &e)),
        }
    }

    /// A form post: its signed-in user and its fields, with the origin and the session's CSRF
    /// token checked; otherwise the page to answer with (403 signed out, the refusal's page).
    pub(super) async fn posted<F: serde::de::DeserializeOwned>(
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
    pub(super) async fn form_user(&self, headers: &HeaderMap) -> Result<SignedIn, Response> {
        match self.signed_in(headers).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(error_page(None, &ApiError::forbidden("sign in first"))),
            Err(e) => Err(error_page(None, &e)),
        }
    }

    /// Ends this request's session in the store.
    pub(super) async fn end_session(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.gw.sessions().remove_session(&session_key(id)).await?;
        }
        Ok(())
    }

    /// Where the issuer sends the browser back after an OIDC sign-in.
    pub(super) fn callback_url(&self) -> String {
        format!("{}/console/oidc/callback", self.gw.public_url())
    }

    /// Opens a session for `user` lasting `lifetime` (at most [`SESSION_LIFETIME`]); the
    /// cookie value, which is stored only as its SHA-256.
    pub(super) async fn start_session(
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

/// The checks of every POST made by a signed-in user: same origin and the session's CSRF token.
pub(super) fn check_post(
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
