//! The HTTP connector against a real loopback upstream that echoes every header it receives, in
//! every form an echo takes, with success and error statuses: for every injection mode and every
//! awkward secret, the agent gets the answer (JSON still JSON) and never the credential.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod echo;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use echo::{ECHOED, FORMS, MARKER, SECRETS, assert_no_leak, echo, is_json, leak};
use serde_json::{Value, json};
use writ_connectors::{Call, Connector, ConnectorError, HttpConnector, HttpConnectorConfig};
use writ_vault::Secret;

/// The values of the last request's credential headers, as the upstream saw them.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Echoes the headers (every one but the transport's), the query and the body in `form`, with
/// `status`.
async fn echoing(
    State(seen): State<Seen>,
    Path((form, status)): Path<(String, u16)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut received: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "accept" | "content-length"))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    *seen.lock().unwrap() = received.clone();
    received.push(("query".into(), query.unwrap_or_default()));
    received.push(("body".into(), body));
    let (content_type, text) = echo(&form, &received);
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        text,
    )
}

async fn upstream() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/echo/{form}/{status}", any(echoing))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn connector(base_url: &str, credential: Value) -> HttpConnector {
    let config: HttpConnectorConfig = serde_json::from_value(json!({
        "base_url": base_url,
        "timeout_ms": 5000,
        "operations": {
            "echo": {
                "method": "POST",
                "path": "/echo/{form}/{status}",
                "query": ["q"],
                "credential": credential,
            }
        }
    }))
    .unwrap();
    HttpConnector::new("upstream", config).unwrap()
}

/// Every secret × echo form × status through one injection mode; fails listing every
/// combination that leaked. `wire` is the header value Writ must have sent for a secret (`None`:
/// the secret cannot go in a header).
async fn every_echo_is_scrubbed(
    mode: &str,
    credential: Value,
    header: &str,
    wire: impl Fn(&str) -> Option<String>,
) {
    let (url, seen) = upstream().await;
    let c = connector(&url, credential);
    let mut calls = 0;
    let mut leaks = Vec::new();
    for secret_text in SECRETS {
        let secret = Secret::new(secret_text.as_bytes().to_vec());
        for form in FORMS {
            for status in [200u16, 401, 500] {
                let context = format!("{mode}, secret {secret_text:?}, form {form}, {status}");
                let args = json!({"form": form, "status": status, "q": "a b", "note": "x"});
                let result = c
                    .execute(Call {
                        operation: "echo",
                        args: &args,
                        credential: Some(&secret),
                    })
                    .await;
                let Some(expected) = wire(secret_text) else {
                    // A secret a header cannot carry is refused before anything is sent, and the
                    // refusal does not quote it.
                    let err = result.unwrap_err();
                    assert!(matches!(err, ConnectorError::Config(_)), "{context}: {err}");
                    assert_no_leak(&json!(err.to_string()), secret_text, &context);
                    continue;
                };
                let out = result.unwrap_or_else(|e| panic!("{context}: {e}"));
                calls += 1;
                // The upstream did get the credential, so its answer did echo it.
                let sent = seen.lock().unwrap().clone();
                assert!(
                    sent.iter().any(|(k, v)| k == header && *v == expected),
                    "{context}: the upstream saw {sent:?}"
                );
                assert_eq!(out.status, Some(status), "{context}");
                assert_eq!(out.success, status == 200, "{context}");
                if is_json(form) {
                    assert!(out.body.is_object(), "{context}: not JSON: {}", out.body);
                } else {
                    assert!(out.body.is_string(), "{context}");
                }
                let found = leak(&out.body, secret_text)
                    .and_then(|()| leak(&json!(format!("{out:?}")), secret_text))
                    .and_then(|()| {
                        (out.body.to_string().contains(MARKER) && out.redacted == [ECHOED])
                            .then_some(())
                            .ok_or_else(|| "the echo was not noticed".to_owned())
                    });
                if let Err(e) = found {
                    leaks.push(format!("{context}: {e}"));
                }
            }
        }
    }
    assert!(calls >= 4 * FORMS.len() * 3, "{mode}: only {calls} calls");
    assert!(
        leaks.is_empty(),
        "{} of {calls} echoes leaked:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

fn header_safe(secret: &str) -> bool {
    !secret.contains('\n')
}

#[tokio::test]
async fn bearer_echoes_are_scrubbed() {
    every_echo_is_scrubbed(
        "bearer",
        json!({"name": "k", "inject": "bearer"}),
        "authorization",
        |s| header_safe(s).then(|| format!("Bearer {s}")),
    )
    .await;
}

#[tokio::test]
async fn header_echoes_are_scrubbed() {
    every_echo_is_scrubbed(
        "header",
        json!({"name": "k", "inject": "header", "header": "x-api-key"}),
        "x-api-key",
        |s| header_safe(s).then(|| s.to_owned()),
    )
    .await;
}

#[tokio::test]
async fn header_with_prefix_echoes_are_scrubbed() {
    every_echo_is_scrubbed(
        "header with prefix",
        json!({"name": "k", "inject": "header", "header": "x-api-key", "prefix": "token "}),
        "x-api-key",
        |s| header_safe(s).then(|| format!("token {s}")),
    )
    .await;
}

#[tokio::test]
async fn basic_echoes_are_scrubbed() {
    use base64::Engine as _;
    every_echo_is_scrubbed(
        "basic",
        json!({"name": "k", "inject": "basic", "username": "writ-svc"}),
        "authorization",
        |s| {
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("writ-svc:{s}"))
            ))
        },
    )
    .await;
}

/// Only the credential is replaced: the rest of the echo, a look-alike included, stays.
#[tokio::test]
async fn only_the_credential_is_replaced() {
    let (url, _) = upstream().await;
    let c = connector(&url, json!({"name": "k", "inject": "bearer"}));
    let secret = Secret::new(b"the-real-token".to_vec());
    let out = c
        .execute(Call {
            operation: "echo",
            args: &json!({"form": "double", "status": 200, "q": "Bearer the-other-token"}),
            credential: Some(&secret),
        })
        .await
        .unwrap();
    assert_eq!(out.redacted, [ECHOED]);
    let log = out.body["log"].as_str().unwrap();
    let echoed: Value = serde_json::from_str(log).unwrap();
    assert_eq!(echoed["query"], "q=Bearer+the-other-token");
    assert_eq!(echoed["authorization"], "Bearer [redacted]");
    assert_eq!(echoed["x-fixed"], Value::Null);
}
