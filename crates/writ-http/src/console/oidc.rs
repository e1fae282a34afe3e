//! Sign-in to the console with an OpenID Connect issuer: the authorization code flow with PKCE
//! (RFC 7636, `S256`), for each `[[identity.oidc]]` issuer that has a `console` table.
//!
//! `GET /console/oidc/{n}/start` keeps a pending sign-in (`state`, `nonce`, PKCE verifier) in
//! the store for ten minutes, sealed with a key derived from a random id in the `writ_oidc`
//! cookie, and redirects to the issuer. The issuer sends the browser back to `GET /console/oidc/callback`; the pending entry is
//! taken out (so it serves once, whatever happens next), `state` is compared in constant time,
//! the code is exchanged at the token endpoint with the verifier, and the ID token is verified by
//! the issuer's [`OidcVerifier`] (signature, issuer, `aud` = the client id, expiry) and its
//! `nonce` checked. Its user is mapped exactly as in the token exchange (`user_claim`; the user
//! must already exist in Writ), and the normal console session starts.
//!
//! The start is a link, not a form: the console's CSP has `form-action 'self'`, which browsers
//! also apply to the redirect that follows a form, so a form could not lead to the issuer. A
//! forged start does no harm: it only creates a pending sign-in bound to a cookie of the browser
//! that follows it, and only that browser's callback with that `state` can complete it.
//!
//! Nothing secret is logged or shown: not the code, the tokens, the verifier nor the client
//! secret. Failures are logged with the issuer and a reason.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use writ_core::Timestamp;

use super::layout::continue_to;
use super::session::{
    SESSION_COOKIE, SESSION_LIFETIME, SignInWith, cookie, is_loopback, random_token, same_secret,
    set_cookie,
};
use super::{Console, error_page, html};
use crate::error::ApiError;

/// How long a started sign-in may take at the issuer.
const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// The most sign-ins pending at once; beyond it the oldest are dropped.
const MAX_PENDING: u32 = 10_000;
const PENDING_COOKIE: &str = "writ_oidc";
const PENDING_PATH: &str = "/console/oidc";

/// A sign-in started and not yet finished, kept in the store until the issuer sends the browser
/// back (to any replica) or it expires.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PendingSignIn {
    provider: usize,
    /// The provider's issuer when the sign-in started: a replica configured otherwise refuses.
    issuer: String,
    state: String,
    nonce: String,
    code_verifier: String,
}

/// `BASE64URL(SHA256(verifier))`, the `S256` code challenge.
fn code_challenge(code_verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()))
}

fn pending_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The key that seals a pending sign-in: derived from the browser's cookie id, which the store
/// never sees (it keys the row by [`pending_key`], another digest), so the state, nonce and PKCE
/// verifier in the database are of no use without the browser's cookie.
fn pending_seal_key(id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"writ console oidc pending seal\0");
    h.update(id.as_bytes());
    h.finalize().into()
}

/// `{"sealed": base64url(nonce || AES-256-GCM(json))}`.
fn seal_pending(id: &str, pending: &PendingSignIn) -> Result<Value, String> {
    use aes_gcm::aead::{Aead, KeyInit};
    let plain = serde_json::to_vec(pending).map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let cipher = aes_gcm::Aes256Gcm::new(&pending_seal_key(id).into());
    let sealed = cipher
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), plain.as_slice())
        .map_err(|e| e.to_string())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(serde_json::json!({"sealed": URL_SAFE_NO_PAD.encode(out)}))
}

/// The pending sign-in sealed by [`seal_pending`] for this cookie id; `None` if it does not open.
fn open_pending(id: &str, data: &Value) -> Option<PendingSignIn> {
    use aes_gcm::aead::{Aead, KeyInit};
    let bytes = URL_SAFE_NO_PAD.decode(data.get("sealed")?.as_str()?).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(12);
    let cipher = aes_gcm::Aes256Gcm::new(&pending_seal_key(id).into());
    let plain = cipher
        .decrypt(aes_gcm::Nonce::from_slice(nonce), sealed)
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

/// The `writ_oidc` cookie: `SameSite=Lax`, since the issuer sends the browser back with a
/// top-level navigation from its own site, and only to `/console/oidc`.
fn pending_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
    let secure = if is_loopback(headers) { "" } else { "; Secure" };
    let text = format!(
        "{PENDING_COOKIE}={value}; Path={PENDING_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn sign_in_error(status: StatusCode, message: &str) -> Response {
    error_page(
        None,
        &ApiError::new(status.as_u16(), "sign_in_failed", message),
    )
}

/// `GET /console/oidc/{n}/start`: a pending sign-in and the redirect to the issuer.
pub(super) async fn start(
    State(c): State<Arc<Console>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> Response {
    let Some(provider) = c.gw.oidc_sign_in().get(n) else {
        return sign_in_error(StatusCode::NOT_FOUND, "there is no such identity provider");
    };
    let made = (|| {
        Ok::<_, ApiError>((
            random_token()?,
            random_token()?,
            random_token()?,
            random_token()?,
        ))
    })();
    // Four 256-bit values, base64url: the verifier is 43 characters, as RFC 7636 allows.
    let (id, state, nonce, code_verifier) = match made {
        Ok(m) => m,
        Err(e) => return error_page(None, &e),
    };
    let mut query = url_encode(&[
        ("response_type", "code"),
        ("client_id", provider.client_id()),
        ("redirect_uri", &c.callback_url()),
        ("scope", provider.scope()),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &code_challenge(&code_verifier)),
        ("code_challenge_method", "S256"),
    ]);
    let separator = if provider.authorization_endpoint().contains('?') {
        '&'
    } else {
        '?'
    };
    query.insert(0, separator);
    let pending = PendingSignIn {
        provider: n,
        issuer: provider.issuer().to_owned(),
        state,
        nonce,
        code_verifier,
    };
    let now = Timestamp::now();
    let stored = match (
        seal_pending(&id, &pending),
        Timestamp::from_micros(
            now.as_micros()
                .saturating_add(PENDING_LIFETIME.as_micros() as i64),
        ),
    ) {
        (Ok(data), Ok(expires)) => {
            c.gw.sessions()
                .add_pending_sign_in(&pending_key(&id), &data, expires, now, MAX_PENDING)
                .await
                .map_err(ApiError::from)
        }
        _ => Err(ApiError::internal(
            "the pending sign-in could not be recorded",
        )),
    };
    if let Err(e) = stored {
        return error_page(None, &e);
    }
    let mut response =
        Redirect::to(&format!("{}{query}", provider.authorization_endpoint())).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        pending_cookie(&headers, &id, PENDING_LIFETIME.as_secs()),
    );
    response
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    iss: Option<String>,
}

/// `GET /console/oidc/callback`: where the issuer sends the browser back.
pub(super) async fn callback(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    // Whatever happens, the pending sign-in is used up and its cookie cleared.
    let pending = match cookie(&headers, PENDING_COOKIE) {
        Some(id) => match c
            .gw
            .sessions()
            .take_pending_sign_in(&pending_key(id), Timestamp::now())
            .await
        {
            Ok(found) => found.and_then(|data| open_pending(id, &data)),
            Err(e) => return error_page(None, &e.into()),
        },
        None => None,
    };
    let mut response = finish(&c, raw.as_deref(), &headers, pending).await;
    response
        .headers_mut()
        .append(header::SET_COOKIE, pending_cookie(&headers, "", 0));
    response
}

async fn finish(
    c: &Console,
    raw: Option<&str>,
    headers: &HeaderMap,
    pending: Option<PendingSignIn>,
) -> Response {
    let refuse = |status: StatusCode, issuer: Option<&str>, reason: &str, shown: &str| {
        c.gw.metrics().refused("unauthenticated");
        tracing::warn!(
            issuer = issuer.unwrap_or("-"),
            reason,
            "console OIDC sign-in refused"
        );
        sign_in_error(status, shown)
    };
    let query: CallbackQuery =
        serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default();
    let Some(pending) = pending else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            "no pending sign-in for this browser",
            "This sign-in is unknown, expired or already used. Start again from the sign-in page.",
        );
    };
    let Some(provider) = c.gw.oidc_sign_in().get(pending.provider) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            "unknown provider",
            "This sign-in is unknown. Start again from the sign-in page.",
        );
    };
    let issuer = provider.issuer();
    if pending.issuer != issuer {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(issuer),
            "the sign-in was started for another issuer (replicas configured differently?)",
            "This sign-in is unknown. Start again from the sign-in page.",
        );
    }
    let state_ok = query
        .state
        .as_deref()
        .is_some_and(|s| same_secret(s, &pending.state));
    if !state_ok {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(issuer),
            "state mismatch",
            "The answer from the identity provider does not belong to the sign-in this browser started. Start again from the sign-in page.",
        );
    }
    if query.iss.as_deref().is_some_and(|i| i != issuer) {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(issuer),
            "iss mismatch",
            "The answer came from another identity provider than the one this sign-in started with.",
        );
    }
    if let Some(error) = &query.error {
        let code = writ_gateway::oidc_sign_in::oauth_code(error);
        return refuse(
            StatusCode::FORBIDDEN,
            Some(issuer),
            "the provider answered with an error",
            &format!(
                "{} did not sign you in ({code}). Start again from the sign-in page.",
                provider.name
            ),
        );
    }
    let Some(code) = query.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(issuer),
            "no code",
            "The identity provider sent no authorization code.",
        );
    };
    let id_token = match provider
        .redeem(&c.gw, &c.callback_url(), &code, &pending.code_verifier)
        .await
    {
        Ok(t) => t,
        Err(reason) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                Some(issuer),
                &reason,
                &format!(
                    "The code from {} could not be exchanged for an ID token. Try again; if it persists, an admin should look at the server's log.",
                    provider.name
                ),
            );
        }
    };
    let (external, claims) = match provider
        .verifier()
        .verify_with_claims(&id_token, Timestamp::now())
    {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                StatusCode::FORBIDDEN,
                Some(issuer),
                &e.to_string(),
                &format!("The ID token from {} was not accepted: {e}", provider.name),
            );
        }
    };
    let nonce_ok = claims
        .get("nonce")
        .and_then(Value::as_str)
        .is_some_and(|n| same_secret(n, &pending.nonce));
    if !nonce_ok {
        return refuse(
            StatusCode::FORBIDDEN,
            Some(issuer),
            "nonce mismatch",
            "The ID token was not issued for this sign-in (its nonce differs).",
        );
    }
    // As in the token exchange: no provisioning, the mapped user must exist.
    let user = match c.gw.reads().user(&external.id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return refuse(
                StatusCode::FORBIDDEN,
                Some(issuer),
                "not a Writ user",
                &format!(
                    "{} signed you in as {}, who is not a Writ user. An admin must add the user first (writ users add {}).",
                    provider.name, external.id, external.id
                ),
            );
        }
        Err(e) => return error_page(None, &e.into()),
    };
    // The session lasts as a key-based one, but not beyond the ID token.
    let now_secs = Timestamp::now().as_micros().div_euclid(1_000_000);
    let left = claims
        .get("exp")
        .and_then(Value::as_i64)
        .map(|exp| exp.saturating_sub(now_secs))
        .unwrap_or(0);
    let lifetime = SESSION_LIFETIME.min(Duration::from_secs(u64::try_from(left).unwrap_or(0)));
    if lifetime.is_zero() {
        return refuse(
            StatusCode::FORBIDDEN,
            Some(issuer),
            "expired ID token",
            "The ID token has expired. Start again from the sign-in page.",
        );
    }
    let with = SignInWith::Oidc {
        issuer: issuer.to_owned(),
    };
    let id = match c.start_session(&user, with, lifetime).await {
        Ok(id) => id,
        Err(e) => return error_page(None, &e),
    };
    tracing::info!(user = %user.id, issuer, "console sign-in with OIDC");
    // A page that moves on by itself rather than a redirect: the session cookie is
    // `SameSite=Strict`, and browsers do not send it on a navigation whose chain began on the
    // issuer's site; the page's own navigation is same-site.
    let mut response = html(StatusCode::OK, continue_to("/console/approvals"));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, SESSION_COOKIE, &id, lifetime.as_secs()),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_challenge_is_rfc_7636_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_pending_sign_in_opens_only_with_its_cookie() {
        let pending = PendingSignIn {
            provider: 0,
            issuer: "https://idp.example".into(),
            state: "s".into(),
            nonce: "n".into(),
            code_verifier: "verifier-value".into(),
        };
        let sealed = seal_pending("cookie-id", &pending).unwrap();
        assert!(!sealed.to_string().contains("verifier-value"));
        let opened = open_pending("cookie-id", &sealed).unwrap();
        assert_eq!(opened.code_verifier, "verifier-value");
        assert!(open_pending("another-cookie", &sealed).is_none());
        assert!(open_pending("cookie-id", &serde_json::json!({"sealed": "AAAA"})).is_none());
    }
}
