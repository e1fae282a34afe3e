//! The MCP connector against real upstream MCP servers that echo the credentials Writ gave them:
//! a Streamable HTTP server on loopback (credentials in headers) and a stdio server (Python, in
//! the environment). Results, failed results, JSON-RPC errors, refusals cut short by the
//! transport, stderr and tool definitions never give the credential back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod echo;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use echo::{ECHOED, FORMS, SECRETS, assert_no_leak, echo, leak};
use serde_json::{Value, json};
use writ_connectors::mcp::{CredentialSource, McpConnector, McpConnectorConfig};
use writ_connectors::{Call, Connector, Outcome};
use writ_vault::Secret;

/// A vault with one shared credential, `k`.
struct Vault(String);

#[async_trait]
impl CredentialSource for Vault {
    async fn shared(&self, name: &str) -> Result<(Secret, String), String> {
        match name {
            "k" => Ok((Secret::new(self.0.as_bytes().to_vec()), "k@1".into())),
            other => Err(format!("no credential {other}")),
        }
    }
}

fn start(config: Value, secret: &str) -> McpConnector {
    let config: McpConnectorConfig = serde_json::from_value(config).unwrap();
    McpConnector::start("up", config, Arc::new(Vault(secret.to_owned()))).unwrap()
}

/// Polls `done` until it holds (a connection is made or dropped in the background).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 20 s");
}

async fn call(c: &McpConnector, tool: &str, args: Value) -> Outcome {
    c.execute(Call {
        operation: tool,
        args: &args,
        credential: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
}

/// Calls `echo` (succeeding and failing) and `fail` (a JSON-RPC error) in every form; returns
/// every leak found.
async fn every_echo(c: &McpConnector, secret: &str, context: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    for form in FORMS.iter().chain(["python"].iter()) {
        for (tool, error) in [("echo", false), ("echo", true), ("fail", false)] {
            let out = call(c, tool, json!({"form": form, "error": error})).await;
            let context = format!("{context}, {tool} (error: {error}) in form {form}");
            assert_eq!(out.success, tool == "echo" && !error, "{context}");
            assert_eq!(out.credential.as_deref(), Some("k@1, k@1"), "{context}");
            let noticed = out.redacted == [ECHOED];
            if let Err(e) = leak(&out.body, secret).and_then(|()| {
                noticed
                    .then_some(())
                    .ok_or_else(|| "the echo was not noticed".into())
            }) {
                leaks.push(format!("{context}: {e}\n{}", out.body));
            }
        }
    }
    leaks
}

/// A Streamable HTTP MCP server (JSON answers, no session) whose tools echo the request's
/// credential headers.
async fn http_upstream(State(refuse): State<bool>, headers: HeaderMap, body: String) -> Response {
    let received: Vec<(String, String)> = ["authorization", "x-api-key"]
        .iter()
        .filter_map(|h| {
            headers.get(*h).map(|v| {
                (
                    h.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
        })
        .collect();
    if refuse {
        // A refusal quoting the credential where the transport cuts the message (at 500
        // characters): the cut falls inside the secret.
        let (_, value) = received.first().cloned().unwrap_or_default();
        let message = format!("{}{value} was refused", "x".repeat(485));
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthorized", "message": message})),
        )
            .into_response();
    }
    let Ok(msg) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let params = &msg["params"];
    let result = match msg["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo", "version": "1.0.0"},
        }),
        "tools/list" => json!({"tools": [
            {"name": "echo", "description": format!("Echoes. Configured with {:?}", received), "inputSchema": {"type": "object"}},
            {"name": "fail", "description": "Fails", "inputSchema": {"type": "object"}},
        ]}),
        "tools/call" => {
            let form = params["arguments"]["form"].as_str().unwrap_or("json");
            let form = if form == "python" { "text" } else { form };
            let (_, text) = echo(form, &received);
            if params["name"] == "fail" {
                return axum::Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": text}}),
                )
                .into_response();
            }
            json!({"content": [{"type": "text", "text": text}], "isError": params["arguments"]["error"]})
        }
        _ => json!({}),
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

async fn serve_http(refuse: bool) -> String {
    let app = Router::new()
        .route(
            "/mcp",
            post(http_upstream)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::METHOD_NOT_ALLOWED }),
        )
        .with_state(refuse);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/mcp")
}

fn http_config(url: &str) -> Value {
    json!({
        "url": url,
        "headers": {
            "authorization": {"credential": "k", "prefix": "Bearer "},
            "x-api-key": {"credential": "k"},
        },
        "timeout_ms": 10000,
        "connect_timeout_ms": 10000,
    })
}

#[tokio::test]
async fn credentials_in_headers_are_scrubbed_from_results_and_errors() {
    let url = serve_http(false).await;
    let mut leaks = Vec::new();
    // A header carries visible ASCII only.
    for secret in SECRETS.iter().filter(|s| s.is_ascii() && !s.contains('\n')) {
        let c = start(http_config(&url), secret);
        assert!(c.ready(Duration::from_secs(20)).await, "{}", c.status());
        let context = format!("headers, secret {secret:?}");
        let echo_tool = c.operation("echo").unwrap();
        assert!(echo_tool.description.contains("[redacted]"), "{context}");
        assert_no_leak(&json!(echo_tool.description), secret, &context);
        leaks.extend(every_echo(&c, secret, &context).await);
        c.stop();
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[tokio::test]
async fn a_refusal_cut_inside_the_credential_does_not_carry_its_start() {
    let url = serve_http(true).await;
    let secret = "ghp_plain-Token-0123";
    let c = start(http_config(&url), secret);
    until("the refusal", || {
        c.status()["error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    let error = c.status()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("Bearer [redacted]…"), "{error}");
    assert!(!error.contains(&secret[..6]), "{error}");
    let err = c
        .execute(Call {
            operation: "echo",
            args: &json!({}),
            credential: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains(&secret[..6]), "{err}");
}

/// A stdio MCP server, in Python's standard library, whose tools echo its environment with
/// Python's own encoders (json.dumps escapes non-ASCII as \uXXXX, urlencode, html.escape).
const PYTHON_UPSTREAM: &str = r#"
import base64, html, json, os, sys, urllib.parse

def received():
    return [(k, os.environ.get(k, "")) for k in ("API_TOKEN", "AUTH")]

def echo(form):
    r = received()
    dump = "".join(f"{k}: {v}\r\n" for k, v in r)
    if form in ("json", "ascii_json"):
        return json.dumps(dict(r))
    if form == "double":
        return json.dumps({"log": json.dumps(dict(r), ensure_ascii=False)})
    if form == "html":
        return "<pre>" + html.escape(dump) + "</pre>"
    if form == "base64":
        return json.dumps({"dump": base64.b64encode(dump.encode()).decode(),
                           "each": [base64.urlsafe_b64encode(v.encode()).decode() for _, v in r]})
    if form == "url":
        return json.dumps({"next": "https://upstream.test/cb?" + urllib.parse.urlencode(r),
                           "paths": ["https://upstream.test/v/" + urllib.parse.quote(v, safe="") for _, v in r]})
    if form == "python":
        return repr(dict(r))
    return "you sent:\n" + dump

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion"), "capabilities": {"tools": {}},
                  "serverInfo": {"name": "echo", "version": "1.0.0"}}
    elif method == "tools/list":
        tool = lambda name, text: {"name": name, "description": text, "inputSchema": {"type": "object"}}
        result = {"tools": [tool("echo", "Echoes. Token: " + os.environ.get("API_TOKEN", "")),
                            tool("fail", "Fails"), tool("exit", "Exits")]}
    elif method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "exit":
            sys.stderr.write("leaving; my token was " + os.environ.get("API_TOKEN", "") + "\n")
            sys.stderr.flush()
            sys.exit(3)
        text = echo(args.get("form", "json"))
        if name == "fail":
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32001, "message": text}})
            continue
        result = {"content": [{"type": "text", "text": text}], "isError": bool(args.get("error"))}
    else:
        result = {}
    send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
"#;

fn python() -> String {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests need python3 on PATH (the stdio upstream is a Python script)"
    );
    "python3".into()
}

#[tokio::test]
async fn credentials_in_the_environment_are_scrubbed_from_results_errors_and_stderr() {
    let python = python();
    let mut leaks = Vec::new();
    let mut by_secret: HashMap<&str, String> = HashMap::new();
    for secret in SECRETS {
        let c = start(
            json!({
                "command": python,
                "args": ["-c", PYTHON_UPSTREAM],
                "env": {
                    "API_TOKEN": {"credential": "k"},
                    "AUTH": {"credential": "k", "prefix": "Bearer "},
                },
                "timeout_ms": 10000,
                "connect_timeout_ms": 10000,
            }),
            secret,
        );
        assert!(c.ready(Duration::from_secs(20)).await, "{}", c.status());
        let context = format!("environment, secret {secret:?}");
        let echo_tool = c.operation("echo").unwrap();
        assert_no_leak(&json!(echo_tool.description), secret, &context);
        leaks.extend(every_echo(&c, secret, &context).await);

        // The server prints the credential to stderr and exits: the reason the upstream is down
        // quotes that line, scrubbed.
        let _ = c
            .execute(Call {
                operation: "exit",
                args: &json!({}),
                credential: None,
            })
            .await;
        until("the upstream's exit", || {
            c.status()["error"]
                .as_str()
                .is_some_and(|e| e.contains("stderr"))
        })
        .await;
        let reason = c.status()["error"].as_str().unwrap().to_owned();
        assert_no_leak(&json!(reason), secret, &context);
        by_secret.insert(secret, reason);
        c.stop();
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    assert!(
        by_secret["ghp_plain-Token-0123"].contains("leaving; my token was [redacted]"),
        "{by_secret:?}"
    );
}
