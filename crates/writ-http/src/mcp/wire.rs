//! The Streamable HTTP wire around rmcp, where rmcp answers differently from the specification:
//! a body that is not JSON is a JSON-RPC parse error (-32700, HTTP 400), a batch or a non-message
//! a JSON-RPC invalid request (-32600, HTTP 400), both as JSON; and SSE priming events (an event
//! id with empty data, defined by 2025-11-25) are not sent to sessions of earlier revisions, whose
//! clients read every event's data as a message.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The first revision that defines SSE priming events (SEP-1699).
const PRIMING_SINCE: &str = "2025-11-25";
/// The revision a request without `MCP-Protocol-Version` is read as (the specification's rule).
const DEFAULT_VERSION: &str = "2025-03-26";

/// A JSON-RPC error without an id, as the answer to a request that could not be read.
fn jsonrpc_error(status: StatusCode, code: i64, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"jsonrpc": "2.0", "id": Value::Null, "error": {"code": code, "message": message}})
            .to_string(),
    )
        .into_response()
}

/// What the guard needs to know of a message, read without building it.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<PeekParams<'a>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a POST's JSON body (up to `limit` bytes) and checks that it is one JSON-RPC message:
/// the request rebuilt for rmcp, and the protocol version an `initialize` asks for. A body that
/// is not declared JSON is left to rmcp (415).
pub(super) async fn read_message(
    req: Request,
    limit: usize,
) -> Result<(Request, Option<String>), Response> {
    if req.method() != axum::http::Method::POST || !is_json(req.headers()) {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        jsonrpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            format!("Invalid Request: the body is larger than {limit} bytes"),
        )
    })?;
    let peek: Peek<'_> = serde_json::from_slice(&bytes).map_err(|e| {
        let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if e.is_syntax() || e.is_eof() {
            jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                format!("Parse error: the body is not JSON ({e})"),
            )
        } else if batch {
            jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Invalid Request: JSON-RPC batches are not accepted (MCP 2025-06-18 and later send one message per POST)".into(),
            )
        } else {
            jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                format!("Invalid Request: the body is not a JSON-RPC message object ({e})"),
            )
        }
    })?;
    if peek.jsonrpc.as_deref() != Some("2.0")
        || (peek.method.is_none() && peek.result.is_none() && peek.error.is_none())
    {
        return Err(jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: a JSON-RPC 2.0 message has \"jsonrpc\": \"2.0\" and a method, a result or an error".into(),
        ));
    }
    let initialize = (peek.method.as_deref() == Some("initialize"))
        .then(|| {
            peek.params
                .and_then(|p| p.protocol_version)
                .map(Cow::into_owned)
        })
        .flatten();
    Ok((Request::from_parts(parts, Body::from(bytes)), initialize))
}

/// Whether the revision of this request (the version an `initialize` asks for, else the
/// `MCP-Protocol-Version` header) defines SSE priming events.
pub(super) fn primes(headers: &HeaderMap, initialize: Option<&str>) -> bool {
    let version = initialize.unwrap_or_else(|| {
        headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(DEFAULT_VERSION)
    });
    version >= PRIMING_SINCE
}

/// `response` without its SSE priming event (the first event, when its data is empty).
pub(super) fn without_priming(response: Response) -> Response {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut pending = Vec::new();
    let mut first_done = false;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        if first_done {
            return Ok::<_, axum::Error>(chunk);
        }
        pending.extend_from_slice(&chunk);
        let Some(end) = event_end(&pending) else {
            return Ok(Bytes::new());
        };
        first_done = true;
        let rest = Bytes::copy_from_slice(&pending[end..]);
        let first = &pending[..end];
        let out = if is_priming(first) {
            rest
        } else {
            Bytes::copy_from_slice(&pending)
        };
        pending = Vec::new();
        Ok(out)
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The end of the first SSE event in `buf` (after its blank line), if it is complete.
fn event_end(buf: &[u8]) -> Option<usize> {
    for (i, pair) in buf.windows(2).enumerate() {
        if pair == b"\n\n" {
            return Some(i + 2);
        }
        if i + 4 <= buf.len() && &buf[i..i + 4] == b"\r\n\r\n" {
            return Some(i + 4);
        }
    }
    None
}

/// An event that carries no message: no `event:` name and only empty `data:` lines.
fn is_priming(event: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(event) else {
        return false;
    };
    let mut has_id = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(data) = line.strip_prefix("data:") {
            if !data.trim().is_empty() {
                return false;
            }
        } else if line.starts_with("event:") {
            return false;
        } else if line.starts_with("id:") {
            has_id = true;
        }
    }
    has_id || text.contains("retry:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priming_events_are_told_from_messages() {
        for (event, priming) in [
            ("id: 0\nretry: 3000\ndata: \n\n", true),
            ("id: 0\nretry: 3000\ndata:\n\n", true),
            ("retry: 3000\ndata:\n\n", true),
            ("id: 0/1\ndata: {\"jsonrpc\":\"2.0\"}\n\n", false),
            ("data: {\"jsonrpc\":\"2.0\"}\n\n", false),
            (": keep-alive\n\n", false),
        ] {
            assert_eq!(is_priming(event.as_bytes()), priming, "{event:?}");
        }
        assert_eq!(event_end(b"id: 0\ndata:\n\nmore"), Some(13));
        assert_eq!(event_end(b"id: 0\ndata:\n"), None);
    }

    #[test]
    fn priming_follows_the_revision() {
        let mut headers = HeaderMap::new();
        assert!(!primes(&headers, None), "no header is 2025-03-26");
        assert!(primes(&headers, Some("2025-11-25")));
        assert!(!primes(&headers, Some("2025-06-18")));
        headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        assert!(!primes(&headers, None));
        headers.insert("mcp-protocol-version", "2025-11-25".parse().unwrap());
        assert!(primes(&headers, None));
        assert!(!primes(&headers, Some("2025-03-26")));
    }
}
