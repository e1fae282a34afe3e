//! An upstream that answers every request with everything it received: method, path and query
//! as sent, every header (its raw bytes), the body. It stands for a careless or compromised API
//! that echoes credentials back, so that a test can check that none of them reaches an agent,
//! an action's record or the log. The path chooses how it echoes:
//!
//! | path | answer |
//! |---|---|
//! | `/echo/json`, anything else | 200, JSON; header values as text (so `"` and `\` come back JSON-escaped) |
//! | `/echo/text` | 200, `text/plain`: the request as it came, header bytes unchanged |
//! | `/echo/pct` | 200, JSON; header values percent-encoded (`%22`, `%2B`, …) |
//! | `/echo/uesc` | 200, JSON written by hand with every character of a header value as `\uXXXX` |
//! | `/echo/basic` | 200, JSON; an `Authorization: Basic` header decoded back to `user:password` |
//! | `/echo/error` | 500, the JSON echo |
//! | `/echo/redirect` | 302 to `/echo/json` carrying the Authorization header in the query, no body |
//! | `/echo/huge` | 200, 3 MiB of text |
//! | `/echo/slow` | the JSON echo after 10 s |
//!
//! Merges (`PUT …/pulls/N/merge`) answer `{"merged": true, …}` besides the echo.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as sent.
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The raw bytes of header `name` (lowercase), if it was sent.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The echoing upstream, on loopback, on the current Tokio runtime.
pub struct EchoUpstream {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move { answer(&record, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        EchoUpstream {
            url: format!("http://{addr}"),
            seen,
        }
    }

    /// How many requests reached the upstream so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Percent-encodes every byte but RFC 3986 unreserved characters, with uppercase hex.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON string literal with every character written as `\uXXXX` (surrogate pairs beyond the
/// BMP).
fn unicode_escaped(text: &str) -> String {
    let mut out = String::from("\"");
    for unit in text.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

async fn answer(
    record: &Mutex<Vec<Received>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let received = Received {
        method: method.as_str().to_owned(),
        target: target.clone(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    };
    record.lock().unwrap().push(received.clone());
    let path = uri.path();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let echo = |encode: &dyn Fn(&[u8]) -> String| {
        let mut all = serde_json::Map::new();
        for (name, value) in &received.headers {
            all.insert(name.clone(), Value::String(encode(value)));
        }
        json!({
            "method": received.method,
            "path": path,
            "target": target,
            "headers": all,
            "body": text(&received.body),
        })
    };
    let json_answer = |status: StatusCode, mut v: Value| {
        if path.ends_with("/merge") {
            v["merged"] = json!(true);
        }
        (status, axum::Json(v)).into_response()
    };
    match path {
        "/echo/text" => {
            let mut dump = format!("{} {target}\n", received.method).into_bytes();
            for (name, value) in &received.headers {
                dump.extend_from_slice(name.as_bytes());
                dump.extend_from_slice(b": ");
                dump.extend_from_slice(value);
                dump.push(b'\n');
            }
            dump.push(b'\n');
            dump.extend_from_slice(&received.body);
            ([(header::CONTENT_TYPE, "text/plain")], dump).into_response()
        }
        "/echo/pct" => json_answer(StatusCode::OK, echo(&|v| percent_encode(v))),
        "/echo/uesc" => {
            let mut doc = String::from("{\"headers\": {");
            for (i, (name, value)) in received.headers.iter().enumerate() {
                if i > 0 {
                    doc.push_str(", ");
                }
                doc.push_str(&format!("\"{name}\": {}", unicode_escaped(&text(value))));
            }
            doc.push_str("}}");
            ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
        }
        "/echo/basic" => {
            let decoded = received
                .header("authorization")
                .and_then(|v| v.strip_prefix(b"Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| text(&b));
            json_answer(
                StatusCode::OK,
                json!({"basic_decoded": decoded, "echo": echo(&|v| text(v))}),
            )
        }
        "/echo/error" => json_answer(StatusCode::INTERNAL_SERVER_ERROR, echo(&|v| text(v))),
        "/echo/redirect" => {
            let carried = received
                .header("authorization")
                .map(percent_encode)
                .unwrap_or_default();
            (
                StatusCode::FOUND,
                [(header::LOCATION, format!("/echo/json?stolen={carried}"))],
            )
                .into_response()
        }
        "/echo/huge" => "x".repeat(3 * 1024 * 1024).into_response(),
        "/echo/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            json_answer(StatusCode::OK, echo(&|v| text(v)))
        }
        _ => json_answer(StatusCode::OK, echo(&|v| text(v))),
    }
}
