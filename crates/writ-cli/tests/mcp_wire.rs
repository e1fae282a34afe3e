//! Writ's `/mcp` on the wire, as a client library that reads HTTP sees it: the real `writ serve`
//! with a GitHub-like upstream on loopback, spoken to with raw HTTP.
//!
//! A body that is not JSON gets a JSON-RPC parse error (-32700) as JSON with HTTP 400, a batch
//! and a non-message a JSON-RPC invalid request (-32600); a session on 2025-06-18 gets no SSE
//! priming events (that revision does not define them), one on 2025-11-25 does; an unknown tool
//! is one JSON-RPC error (-32602, `Unknown tool: NAME`) whatever its name looks like; `DELETE`
//! ends a session with 204, after which the session is 404; a result carries its action in
//! `_meta["writ/action"]`; the startup banner names `/mcp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Upstream, mcp_env};
use serde_json::{Value, json};

struct Wire {
    client: reqwest::Client,
    url: String,
    token: String,
}

/// What came back: status, content type, session id, body text.
struct Reply {
    status: u16,
    content_type: String,
    session: Option<String>,
    text: String,
}

impl Reply {
    /// The JSON-RPC messages of the body: the body itself when JSON, else each SSE event's data.
    fn messages(&self) -> Vec<Value> {
        if self.content_type.starts_with("application/json") {
            return vec![serde_json::from_str(&self.text).unwrap()];
        }
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    /// SSE events whose data is empty (priming events).
    fn empty_events(&self) -> usize {
        self.text
            .split("\n\n")
            .filter(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect();
                !data.is_empty() && data.iter().all(|d| d.trim().is_empty())
            })
            .count()
    }
}

impl Wire {
    async fn send(
        &self,
        method: reqwest::Method,
        session: Option<&str>,
        version: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, &self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let session = header("mcp-session-id");
        let status = resp.status().as_u16();
        Reply {
            status,
            content_type,
            session,
            text: resp.text().await.unwrap(),
        }
    }

    async fn post(&self, session: Option<&str>, version: Option<&str>, body: Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            session,
            version,
            Some(body.to_string()),
        )
        .await
    }

    /// A session on `version`, initialized; its id and the initialize reply.
    async fn open(&self, version: &str) -> (String, Reply) {
        let init = self
            .post(
                None,
                None,
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {},
                    "clientInfo": {"name": "wire-test", "version": "1"}}}),
            )
            .await;
        assert_eq!(init.status, 200, "{}", init.text);
        let session = init.session.clone().expect("a session id");
        let done = self
            .post(
                Some(&session),
                Some(version),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert!(done.status == 202 || done.status == 200, "{}", done.text);
        (session, init)
    }
}

fn error_of(reply: &Reply) -> Value {
    let messages = reply.messages();
    assert_eq!(messages.len(), 1, "{}", reply.text);
    messages[0]["error"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wire_follows_the_specification() {
    let upstream = Upstream::start(None).await;
    let env = mcp_env(&upstream);
    let server = env.serve();
    assert!(
        server.banner.iter().any(|l| l
            .trim_start()
            .starts_with(&format!("MCP:       {}/mcp", server.url))),
        "the banner does not name /mcp: {:?}",
        server.banner
    );
    let api = server.api();
    let d = api.delegation(&server.admin()).await;
    let wire = Wire {
        client: reqwest::Client::new(),
        url: format!("{}/mcp", server.url),
        token: d.token.clone(),
    };

    // Bodies that are not one JSON-RPC message: JSON-RPC errors, as JSON, with HTTP 400.
    for (body, code, words) in [
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "#,
            -32700,
            "Parse error",
        ),
        ("not json at all", -32700, "Parse error"),
        (
            r#"[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]"#,
            -32600,
            "batches are not accepted",
        ),
        (r#"{"hello": "world"}"#, -32600, "Invalid Request"),
        ("42", -32600, "Invalid Request"),
    ] {
        let reply = wire
            .send(reqwest::Method::POST, None, None, Some(body.to_owned()))
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(
            reply.content_type.starts_with("application/json"),
            "{body}: {}",
            reply.content_type
        );
        let answer: Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer["id"], Value::Null, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }

    // 2025-06-18 defines no priming events: every event carries a message.
    let (old, init) = wire.open("2025-06-18").await;
    assert_eq!(init.empty_events(), 0, "{}", init.text);
    assert_eq!(
        init.messages()[0]["result"]["protocolVersion"],
        "2025-06-18"
    );
    let list = wire
        .post(
            Some(&old),
            Some("2025-06-18"),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.empty_events(), 0, "{}", list.text);
    let tools = list.messages()[0]["result"]["tools"].clone();
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "github.create_issue"),
        "{tools}"
    );

    // 2025-11-25 does: its streams start with one.
    let (new, init) = wire.open("2025-11-25").await;
    assert_eq!(init.empty_events(), 1, "{}", init.text);
    let list = wire
        .post(
            Some(&new),
            Some("2025-11-25"),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
    assert_eq!(list.empty_events(), 1, "{}", list.text);

    // An unknown tool is one error, whatever its name looks like.
    for (id, name) in [
        (3, "no_such_tool"),
        (4, "github.no_such_operation"),
        (5, "nowhere.create_issue"),
    ] {
        let reply = wire
            .post(
                Some(&old),
                Some("2025-06-18"),
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": name, "arguments": {}}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let error = error_of(&reply);
        assert_eq!(error["code"], -32602, "{name}: {error}");
        assert_eq!(
            error["message"],
            format!("Unknown tool: {name}"),
            "{name}: {error}"
        );
    }

    // A call's result names its action in Writ's own `_meta` key.
    let reply = wire
        .post(
            Some(&old),
            Some("2025-06-18"),
            json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                   "params": {"name": "github.create_issue", "arguments": {"title": "On the wire"}}}),
        )
        .await;
    let result = reply.messages()[0]["result"].clone();
    assert_eq!(
        result["_meta"]["writ/action"]["status"], "succeeded",
        "{result}"
    );
    let action_id = result["_meta"]["writ/action"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        result["structuredContent"]["action_id"], action_id,
        "{result}"
    );

    // DELETE ends the session: 204, then the session is unknown (404), also to DELETE.
    let reply = wire
        .send(
            reqwest::Method::DELETE,
            Some(&old),
            Some("2025-06-18"),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let reply = wire
        .post(
            Some(&old),
            Some("2025-06-18"),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = wire
        .send(
            reqwest::Method::DELETE,
            Some(&old),
            Some("2025-06-18"),
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    // The other session is untouched.
    let reply = wire
        .post(
            Some(&new),
            Some("2025-11-25"),
            json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
