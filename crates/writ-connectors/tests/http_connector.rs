//! The HTTP connector against a real HTTP server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{any, get};
use serde_json::{Value, json};
use writ_connectors::{Call, Connector, ConnectorError, HttpConnector, HttpConnectorConfig};
use writ_vault::Secret;

const SECRET: &str = "ghp_s3cr3t-Token-for-tests";

/// What the upstream saw of each request.
#[derive(Clone, Debug, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn record(
    State(seen): State<Seen>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen_request = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "authorization": header("authorization"),
        "x-api-key": header("x-api-key"),
        "x-fixed": header("x-fixed"),
        "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
    });
    seen.requests.lock().unwrap().push(seen_request.clone());
    axum::Json(json!({"merged": true, "sha": "abc123", "account": {"email": "ops@acme.test"}}))
}

async fn upstream() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                axum::Json(json!({"you_sent": auth}))
            }),
        )
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://127.0.0.1:9/steal")],
                    "",
                )
            }),
        )
        .route(
            "/fail/{code}",
            get(|Path(code): Path<u16>| async move {
                (
                    axum::http::StatusCode::from_u16(code).unwrap(),
                    axum::Json(json!({"error": "nope"})),
                )
            }),
        )
        .fallback(any(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn connector(base_url: &str) -> HttpConnector {
    let config: HttpConnectorConfig = serde_json::from_value(json!({
        "base_url": base_url,
        "timeout_ms": 2000,
        "max_response_bytes": 4096,
        "headers": {"x-fixed": "writ"},
        "operations": {
            "merge_pull_request": {
                "description": "Merge a pull request",
                "method": "PUT",
                "path": "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
                "args_schema": {
                    "type": "object",
                    "required": ["owner", "repo", "pull_number"],
                    "properties": {
                        "owner": {"type": "string"},
                        "repo": {"type": "string"},
                        "pull_number": {"type": "integer", "minimum": 1},
                        "merge_method": {"enum": ["merge", "squash", "rebase"]}
                    },
                    "additionalProperties": false
                },
                "resource": {"type": "Repo", "id": "{owner}/{repo}"},
                "credential": {"name": "github-token", "inject": "bearer"},
                "redact": ["/account/email"]
            },
            "search": {
                "method": "GET",
                "path": "/search",
                "credential": {"name": "api-key", "inject": "header", "header": "x-api-key"}
            },
            "basic": {
                "method": "POST",
                "path": "/basic",
                "credential": {"name": "svc", "inject": "basic", "username": "writ"}
            },
            "echo": {"method": "GET", "path": "/echo", "credential": {"name": "t", "inject": "bearer"}},
            "big": {"method": "GET", "path": "/big"},
            "slow": {"method": "GET", "path": "/slow", "timeout_ms": 200},
            "redirect": {"method": "GET", "path": "/redirect", "credential": {"name": "t", "inject": "bearer"}},
            "fail": {"method": "GET", "path": "/fail/{code}"}
        }
    }))
    .unwrap();
    HttpConnector::new("github", config).unwrap()
}

fn secret() -> Secret {
    Secret::new(SECRET.as_bytes().to_vec())
}

#[tokio::test]
async fn an_allowed_call_reaches_the_upstream_with_the_credential_and_the_agent_never_sees_it() {
    let (url, seen) = upstream().await;
    let c = connector(&url);
    let args = json!({"owner": "acme", "repo": "api", "pull_number": 42, "merge_method": "squash"});
    c.validate("merge_pull_request", &args).unwrap();
    let resource = c.resource("merge_pull_request", &args).unwrap();
    assert_eq!(
        (resource.entity_type.as_str(), resource.id.as_str()),
        ("Repo", "acme/api")
    );
    let secret = secret();
    let out = c
        .execute(Call {
            operation: "merge_pull_request",
            args: &args,
            credential: Some(&secret),
        })
        .await
        .unwrap();
    assert!(out.success);
    assert_eq!(out.status, Some(200));
    assert_eq!(
        out.body,
        json!({"merged": true, "sha": "abc123", "account": {"email": "[redacted]"}})
    );
    assert_eq!(out.redacted, ["/account/email"]);
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["path"], "/repos/acme/api/pulls/42/merge");
    assert_eq!(r["authorization"], format!("Bearer {SECRET}"));
    assert_eq!(r["x-fixed"], "writ");
    assert_eq!(r["body"], json!({"merge_method": "squash"}));
    assert!(!format!("{out:?}").contains(SECRET));
}

#[tokio::test]
async fn header_and_basic_injection_and_query_arguments() {
    let (url, seen) = upstream().await;
    let c = connector(&url);
    let secret = secret();
    c.execute(Call {
        operation: "search",
        args: &json!({"q": "a b&c", "n": 5}),
        credential: Some(&secret),
    })
    .await
    .unwrap();
    c.execute(Call {
        operation: "basic",
        args: &json!({"x": 1}),
        credential: Some(&secret),
    })
    .await
    .unwrap();
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests[0]["x-api-key"], SECRET);
    assert_eq!(requests[0]["authorization"], Value::Null);
    let query = requests[0]["query"].as_str().unwrap();
    assert!(
        query.contains("q=a+b%26c") && query.contains("n=5"),
        "{query}"
    );
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("writ:{SECRET}"));
    assert_eq!(requests[1]["authorization"], format!("Basic {expected}"));
    assert_eq!(requests[1]["body"], json!({"x": 1}));
}

#[tokio::test]
async fn invalid_arguments_never_reach_the_upstream() {
    let (url, seen) = upstream().await;
    let c = connector(&url);
    let secret = secret();
    for args in [
        json!({"owner": "acme", "repo": "api"}),
        json!({"owner": "acme", "repo": "api", "pull_number": "42"}),
        json!({"owner": "acme", "repo": "api", "pull_number": 0}),
        json!({"owner": "acme", "repo": "api", "pull_number": 1, "extra": true}),
        json!({"owner": "acme", "repo": "api", "pull_number": 1, "merge_method": "force"}),
        json!(["not", "an", "object"]),
    ] {
        let err = c
            .execute(Call {
                operation: "merge_pull_request",
                args: &args,
                credential: Some(&secret),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectorError::InvalidArguments(_)),
            "{args}: {err}"
        );
    }
    let err = c
        .execute(Call {
            operation: "nope",
            args: &json!({}),
            credential: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::UnknownOperation(_)));
    let args = json!({"owner": "acme", "repo": "api", "pull_number": 1});
    let err = c
        .execute(Call {
            operation: "merge_pull_request",
            args: &args,
            credential: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::MissingCredential { .. }),
        "{err}"
    );
    assert!(seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn path_arguments_cannot_escape_their_segment() {
    let (url, seen) = upstream().await;
    let c = connector(&url);
    let secret = secret();
    let args = json!({"owner": "acme", "repo": "../admin?x=1#", "pull_number": 1});
    c.execute(Call {
        operation: "merge_pull_request",
        args: &args,
        credential: Some(&secret),
    })
    .await
    .unwrap();
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0]["path"],
        "/repos/acme/..%2Fadmin%3Fx%3D1%23/pulls/1/merge"
    );
    // A whole segment of "." or ".." would be normalised into a move up the path: refused,
    // already when the arguments are validated (before the grant is spent or policy asked).
    for owner in ["..", "."] {
        let args = json!({"owner": owner, "repo": "api", "pull_number": 1});
        let err = c.validate("merge_pull_request", &args).unwrap_err();
        assert!(err.to_string().contains("cannot be"), "{err}");
        let err = c
            .execute(Call {
                operation: "merge_pull_request",
                args: &args,
                credential: Some(&secret),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::InvalidArguments(_)), "{err}");
    }
    assert_eq!(seen.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_echoed_credential_is_scrubbed_and_redirects_are_not_followed() {
    let (url, _) = upstream().await;
    let c = connector(&url);
    let secret = secret();
    let out = c
        .execute(Call {
            operation: "echo",
            args: &json!({}),
            credential: Some(&secret),
        })
        .await
        .unwrap();
    assert_eq!(out.body, json!({"you_sent": "Bearer [redacted]"}));
    assert!(out.redacted.iter().any(|r| r.contains("credential")));
    let out = c
        .execute(Call {
            operation: "redirect",
            args: &json!({}),
            credential: Some(&secret),
        })
        .await
        .unwrap();
    assert_eq!(out.status, Some(302));
    assert!(!out.success);
}

#[tokio::test]
async fn limits_timeouts_and_failures_are_clear_errors() {
    let (url, _) = upstream().await;
    let c = connector(&url);
    let err = c
        .execute(Call {
            operation: "big",
            args: &json!({}),
            credential: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::ResponseTooLarge { limit: 4096 }),
        "{err}"
    );
    let err = c
        .execute(Call {
            operation: "slow",
            args: &json!({}),
            credential: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Timeout(_)), "{err}");
    let out = c
        .execute(Call {
            operation: "fail",
            args: &json!({"code": 503}),
            credential: None,
        })
        .await
        .unwrap();
    assert_eq!((out.success, out.status), (false, Some(503)));
    // Nothing listens on port 9 of loopback.
    let down = connector("http://127.0.0.1:9");
    let err = down
        .execute(Call {
            operation: "big",
            args: &json!({}),
            credential: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Transport(_)), "{err}");
}

#[test]
fn bad_configuration_is_refused_up_front() {
    let cases = [
        json!({"base_url": "ftp://x", "operations": {}}),
        json!({"base_url": "http://user:pw@x", "operations": {}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "no-slash"}}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "/{a"}}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "/", "args_schema": {"type": 5}}}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "/", "credential": {"name": "k", "inject": "header"}}}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "/", "credential": {"name": "k", "inject": "basic"}}}}),
        json!({"base_url": "http://x", "operations": {"a": {"method": "GET", "path": "/", "redact": ["no-slash"]}}}),
        json!({"base_url": "http://x", "operations": {"a b": {"method": "GET", "path": "/"}}}),
    ];
    for case in cases {
        let config: HttpConnectorConfig = serde_json::from_value(case.clone()).unwrap();
        assert!(HttpConnector::new("c", config).is_err(), "{case}");
    }
    // Unknown keys are a configuration error, not silently ignored.
    let unknown = json!({"base_url": "http://x", "operations": {}, "tiemout_ms": 5});
    assert!(serde_json::from_value::<HttpConnectorConfig>(unknown).is_err());
}
