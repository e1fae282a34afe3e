//! Before rmcp sees a request: the browser origin, the bearer credential, and the session's owner.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use writ_gateway::Gateway;
use writ_gateway::auth::{Who, caller};
use writ_gateway::pipeline::Caller;

use crate::api::extract::authenticate;
use crate::error::ApiError;

use super::{GRANT_HEADER, wire};

/// The host part of a URL (`https://writ.example:8443/x` → `writ.example`), lowercased.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `Host` values rmcp accepts: the public URL's host and loopback (a local reverse proxy).
pub(super) fn allowed_hosts(public_url: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if let Some(h) = url_host(public_url)
        && !hosts.contains(&h)
    {
        hosts.push(h);
    }
    hosts
}

/// A browser's `Origin` must be this server's own host or one of the configured
/// `allowed_origins` (compared as `scheme://host[:port]`, case-insensitively); clients that send
/// none are not browsers.
fn origin_allowed(public_url: &str, allowed: &[String], origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (url_host(origin), url_host(public_url)) {
        (Some(o), Some(own)) => o == own,
        _ => false,
    }
}

/// The header that carries a Streamable HTTP session's id.
const SESSION_HEADER: &str = "mcp-session-id";
/// At most this many sessions are remembered; beyond, the earliest opened are forgotten (their
/// requests are then refused as if the session were unknown).
const MAX_SESSIONS: usize = 100_000;

/// Who opened each MCP session: the agent, the user it acts for and the grant. A session id is a
/// bearer of nothing: a request with another principal's session id is answered as for an
/// unknown session, so a leaked id lets nobody else read its stream or end it.
#[derive(Default)]
pub(super) struct SessionOwners {
    owners: std::sync::Mutex<SessionMap>,
}

#[derive(Default)]
struct SessionMap {
    by_id: std::collections::HashMap<String, (u64, Principal)>,
    order: std::collections::BTreeMap<u64, String>,
    next: u64,
}

type Principal = (String, String, String);

impl SessionOwners {
    fn principal(caller: &Caller) -> Principal {
        (
            caller.agent.to_string(),
            caller.user.to_string(),
            caller.grant.to_string(),
        )
    }

    /// Whether `caller` may use session `id`: it opened it. Unknown ids pass, for rmcp to refuse.
    fn may_use(&self, id: &str, caller: &Caller) -> bool {
        let map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        map.by_id
            .get(id)
            .is_none_or(|(_, owner)| *owner == Self::principal(caller))
    }

    /// Whether session `id` was opened here and not closed since.
    fn knows(&self, id: &str) -> bool {
        let map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        map.by_id.contains_key(id)
    }

    fn opened(&self, id: String, caller: &Caller) {
        let mut map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.next;
        map.next += 1;
        if let Some((old, _)) = map.by_id.insert(id.clone(), (n, Self::principal(caller))) {
            map.order.remove(&old);
        }
        map.order.insert(n, id);
        while map.by_id.len() > MAX_SESSIONS {
            let Some((_, oldest)) = map.order.pop_first() else {
                break;
            };
            map.by_id.remove(&oldest);
        }
    }

    fn closed(&self, id: &str) {
        let mut map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = map.by_id.remove(id) {
            map.order.remove(&n);
        }
    }
}

/// What the guard needs: the gateway and the sessions' owners.
#[derive(Clone)]
pub(super) struct Guarded {
    pub gw: Arc<Gateway>,
    pub sessions: Arc<SessionOwners>,
}

/// Origin check, then authentication, then the session's owner; the caller goes into the
/// request for the MCP handler.
pub(super) async fn guard(State(guarded): State<Guarded>, req: Request, next: Next) -> Response {
    let gw = &guarded.gw;
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin_allowed(gw.public_url(), gw.allowed_origins(), origin)
    {
        gw.metrics().refused("origin");
        return ApiError::forbidden(format!(
            "requests from origin {:?} are refused: /mcp accepts browser requests only from {}",
            origin.to_str().unwrap_or("(not text)"),
            gw.public_url()
        ))
        .into_response();
    }
    match mcp_caller(gw, req.headers()).await {
        Ok(caller) => {
            let session = req
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = &session
                && !guarded.sessions.may_use(id, &caller)
            {
                gw.metrics().refused("mcp_session_owner");
                return ApiError::not_found(
                    "session not found: no MCP session with this id was opened by this agent for this grant",
                )
                .into_response();
            }
            let delete = req.method() == axum::http::Method::DELETE;
            if delete
                && let Some(id) = &session
                && !guarded.sessions.knows(id)
            {
                // rmcp answers 202 for any id; an unknown or ended session is 404, as for a POST.
                return ApiError::not_found("session not found: no open MCP session has this id")
                    .into_response();
            }
            let (mut req, initialize) =
                match wire::read_message(req, gw.limits().max_body_bytes).await {
                    Ok(r) => r,
                    Err(answer) => return answer,
                };
            let primes = wire::primes(req.headers(), initialize.as_deref());
            let opener = caller.clone();
            req.extensions_mut().insert(caller);
            let mut response = next.run(req).await;
            match (&session, response.headers().get(SESSION_HEADER)) {
                (Some(id), _) if delete && response.status().is_success() => {
                    guarded.sessions.closed(id);
                    // The session is gone; there is nothing to accept later (rmcp says 202).
                    *response.status_mut() = StatusCode::NO_CONTENT;
                }
                (None, Some(new)) => {
                    if let Ok(new) = new.to_str() {
                        guarded.sessions.opened(new.to_owned(), &opener);
                    }
                }
                _ => {}
            }
            if primes {
                response
            } else {
                wire::without_priming(response)
            }
        }
        Err(e) if e.status == 401 => {
            let mut response = e.into_response();
            let challenge = format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\"",
                gw.public_url()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// A delegated token names its grant; an agent API key needs the `Writ-Grant` header.
async fn mcp_caller(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let who = authenticate(gw, headers).await?;
    let grant = match headers.get(GRANT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("the Writ-Grant header is not text"))?,
        ),
    };
    if matches!(who, Who::Agent(_)) && grant.is_none() {
        return Err(ApiError::bad_request(
            "with an agent API key, name the grant the agent acts under: `Writ-Grant: <grant id>`",
        ));
    }
    Ok(caller(gw, who, grant).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        for (url, host) in [
            ("https://writ.example", Some("writ.example")),
            ("https://Writ.Example:8443/mcp", Some("writ.example")),
            ("http://127.0.0.1:9000", Some("127.0.0.1")),
            ("http://[::1]:9000", Some("::1")),
            ("https://user@evil.example/x", Some("evil.example")),
            ("null", Some("null")),
            ("https://", None),
        ] {
            assert_eq!(url_host(url).as_deref(), host, "{url}");
        }
    }

    #[test]
    fn only_the_own_origin_is_allowed() {
        let own = "https://writ.example";
        for (origin, allowed) in [
            ("https://writ.example", true),
            ("https://writ.example:443", true),
            ("https://evil.example", false),
            ("https://writ.example.evil.example", false),
            ("null", false),
        ] {
            assert_eq!(
                origin_allowed(own, &[], &HeaderValue::from_static(origin)),
                allowed,
                "{origin}"
            );
        }
    }

    #[test]
    fn configured_origins_are_allowed_exactly() {
        let own = "https://writ.example";
        let allowed = ["https://agents.example.com".to_owned()];
        for (origin, ok) in [
            ("https://agents.example.com", true),
            ("HTTPS://AGENTS.EXAMPLE.COM", true),
            ("http://agents.example.com", false),
            ("https://agents.example.com:8443", false),
            ("https://evil.example", false),
        ] {
            assert_eq!(
                origin_allowed(own, &allowed, &HeaderValue::from_static(origin)),
                ok,
                "{origin}"
            );
        }
    }
}
