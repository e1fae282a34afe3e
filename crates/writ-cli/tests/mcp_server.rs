//! Writ as an MCP server, end to end: the real `writ serve` binary with a GitHub-like upstream on
//! loopback, and the official Python MCP client (`pip install mcp`) talking to `/mcp` over
//! Streamable HTTP. Tools follow the grant; an allowed call returns the upstream's answer (the
//! upstream saw the credential, the model never does); a denied call is a tool error naming the
//! policy and its reason; a call needing approval answers "pending", and `writ.action_status`
//! gives the result once a maintainer approved through the HTTP API. A forged token gets 401 with
//! the resource metadata URL, a foreign `Origin` gets 403.
//!
//! Without python3 or the `mcp` package the test is skipped with a reason, except under CI (env
//! `CI` set), where that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{SECRET, Upstream, text_of, tool_names};
use serde_json::{Value, json};

/// The MCP client: one operation per run, its answer as JSON on stdout.
const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession
import mcp.client.streamable_http as transport

async def run(req, session):
    await session.initialize()
    if req["op"] == "list":
        tools = await session.list_tools()
        return {"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]}
    progress = []
    async def on_progress(value, total, message):
        progress.append({"progress": value, "message": message})
    result = await session.call_tool(req["name"], req.get("arguments") or {}, meta=req.get("meta"),
                                     progress_callback=on_progress)
    out = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    out["progress_notifications"] = progress
    return out

async def main():
    req = json.loads(sys.argv[1])
    if hasattr(transport, "streamable_http_client"):
        http = transport.create_mcp_http_client(headers=req["headers"])
        async with http:
            async with transport.streamable_http_client(req["url"], http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    out = await run(req, session)
    else:
        async with transport.streamablehttp_client(req["url"], headers=req["headers"]) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                out = await run(req, session)
    print(json.dumps(out))

asyncio.run(main())
"#;

struct Mcp {
    script: PathBuf,
    url: String,
}

impl Mcp {
    /// Runs one client operation with these headers; the answer must never hold the credential.
    async fn run(&self, headers: Value, op: Value) -> Value {
        let mut req = op;
        req["url"] = json!(self.url);
        req["headers"] = headers;
        let script = self.script.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(&script)
                .arg(req.to_string())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the MCP client failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains(SECRET),
            "an MCP answer carried the credential: {stdout}"
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_act_through_the_governed_pipeline() {
    if !common::python_mcp_available("mcp.client.streamable_http") {
        return;
    }
    let upstream = Upstream::start(None).await;
    let env = common::mcp_env(&upstream);
    let script = env.path("mcp_client.py");
    std::fs::write(&script, CLIENT).unwrap();

    let server = env.serve();
    let admin = server.admin();
    let api = server.api();
    let mcp = Mcp {
        script,
        url: format!("{}/mcp", server.url),
    };

    // A user, a maintainer, an agent, a broad and a narrow grant, a delegated token.
    let common::Delegation {
        keys,
        agent_key,
        grants,
        token,
    } = api.delegation(&admin).await;
    let bearer = json!({"Authorization": format!("Bearer {token}")});

    // Tools follow the grant: the broad one covers both operations, the narrow one only issues.
    let list = mcp.run(bearer.clone(), json!({"op": "list"})).await;
    let names = tool_names(&list);
    for name in [
        "github.create_issue",
        "github.merge_pull_request",
        "writ.action_status",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {list}");
    }
    let issue_tool = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "github.create_issue")
        .unwrap();
    assert!(issue_tool["description"].is_string(), "{list}");
    assert_eq!(
        issue_tool["inputSchema"]["required"],
        json!(["title"]),
        "{list}"
    );
    let narrow = json!({"Authorization": format!("Bearer {agent_key}"), "Writ-Grant": grants[1]});
    let list = mcp.run(narrow.clone(), json!({"op": "list"})).await;
    let names = tool_names(&list);
    assert!(names.iter().any(|n| n == "github.create_issue"), "{list}");
    assert!(
        !names.iter().any(|n| n == "github.merge_pull_request"),
        "{list}"
    );

    // Allowed: the upstream's answer comes back; the upstream saw the credential.
    let r = mcp
        .run(
            bearer.clone(),
            json!({"op": "call", "name": "github.create_issue", "arguments": {"title": "From MCP"},
                   "meta": {"intent": "track the flaky test", "rationale": "CI failed twice"}}),
        )
        .await;
    assert_ne!(r["isError"], true, "{r}");
    assert_eq!(r["structuredContent"]["status"], "succeeded", "{r}");
    assert_eq!(r["structuredContent"]["result"]["number"], 42, "{r}");
    let text: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert_eq!(text["title"], "From MCP", "{r}");
    let issue_action = r["structuredContent"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    // Its audit record, with the intent the client gave in _meta.
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/actions/{issue_action}"),
            &keys["alice"],
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["request"]["intent"], "track the flaky test", "{v}");
    assert!(v["entries"].as_array().unwrap().len() >= 3, "{v}");
    assert!(!v.to_string().contains(SECRET));

    // Denied by policy: a tool error the model can act on; the upstream is never called.
    let r = mcp
        .run(
            bearer.clone(),
            json!({"op": "call", "name": "github.merge_pull_request",
                   "arguments": {"pull_number": 3, "base": "dev", "merge_method": "rebase"}}),
        )
        .await;
    assert_eq!(r["isError"], true, "{r}");
    let text = text_of(&r);
    assert!(
        text.starts_with("Denied by policy no-rebase-merges: "),
        "{text}"
    );
    assert!(text.contains("rebase"), "{text}");
    assert_eq!(
        r["structuredContent"]["policy_ids"],
        json!(["no-rebase-merges"]),
        "{r}"
    );
    assert_eq!(r["structuredContent"]["verdict"], "deny", "{r}");
    assert!(
        r["structuredContent"]["bundle_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Outside the narrow grant: denied by the grant.
    let r = mcp
        .run(
            narrow.clone(),
            json!({"op": "call", "name": "github.merge_pull_request",
                   "arguments": {"pull_number": 4, "base": "dev"}}),
        )
        .await;
    assert_eq!(r["isError"], true, "{r}");
    assert!(text_of(&r).contains("grant"), "{r}");
    assert_eq!(upstream.calls().len(), 1);

    // Needs approval: pending, with the approval id; approved through the HTTP API, the status
    // tool then gives the result.
    let r = mcp
        .run(
            bearer.clone(),
            json!({"op": "call", "name": "github.merge_pull_request",
                   "arguments": {"pull_number": 7, "base": "main"}}),
        )
        .await;
    assert_ne!(r["isError"], true, "{r}");
    assert_eq!(r["structuredContent"]["status"], "pending_approval", "{r}");
    // While it waited, the client that asked for progress heard why.
    let notes = r["progress_notifications"].as_array().unwrap();
    assert!(
        !notes.is_empty(),
        "no progress notification while waiting: {r}"
    );
    assert!(
        notes[0]["message"]
            .as_str()
            .unwrap()
            .contains("waiting for approval apr_"),
        "{r}"
    );
    let approval = r["structuredContent"]["approval"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let merge_action = r["structuredContent"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = text_of(&r);
    assert!(
        text.contains(&approval) && text.contains("writ.action_status"),
        "{text}"
    );
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            &keys["bob"],
            Some(json!({"decision": "approve", "comment": "LGTM"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut status = Value::Null;
    for _ in 0..20 {
        status = mcp
            .run(
                bearer.clone(),
                json!({"op": "call", "name": "writ.action_status", "arguments": {"action_id": merge_action}}),
            )
            .await;
        if status["structuredContent"]["status"] != "pending_approval"
            && status["structuredContent"]["status"] != "executing"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status["structuredContent"]["status"], "succeeded",
        "{status}"
    );
    assert_eq!(
        status["structuredContent"]["result"]["merged"], true,
        "{status}"
    );
    assert_eq!(upstream.paths(), ["issues", "merge/7"]);

    // The protected resource metadata, and the 401 that points to it.
    let metadata_url = format!("{}/.well-known/oauth-protected-resource", server.url);
    let resp = api.client.get(&metadata_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let metadata: Value = resp.json().await.unwrap();
    assert_eq!(metadata["resource"], format!("{}/mcp", server.url));
    assert_eq!(metadata["authorization_servers"], json!([server.url]));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    for auth in [
        Some("Bearer eyJhbGciOiJFZERTQSJ9.eyJhY3QiOnsic3ViIjoiYm90In19.Zm9yZ2Vk"),
        Some("Bearer writ_agent_forged"),
        None,
    ] {
        let mut req = api
            .client
            .post(&mcp.url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            challenge,
            format!("Bearer resource_metadata=\"{metadata_url}\""),
            "{auth:?}"
        );
    }
    // A foreign Origin is refused before anything else, even with a good token.
    let resp = api
        .client
        .post(&mcp.url)
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = api
        .client
        .post(&mcp.url)
        .header("origin", "https://evil.example")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "Origin is checked before auth");
    // The server's own origin is fine.
    let resp = api
        .client
        .post(&mcp.url)
        .bearer_auth(&token)
        .header("origin", &server.url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// The JSON-RPC message of a Streamable HTTP answer, JSON or an SSE stream of one message.
fn jsonrpc_answer(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in {text:?}"))
}

/// Both protocol versions of the issue are negotiated as asked; after initialization the
/// `MCP-Protocol-Version` header must name a version the server supports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_versions_are_negotiated_and_the_version_header_is_checked() {
    let upstream = Upstream::start(None).await;
    let env = common::mcp_env(&upstream);
    let server = env.serve();
    let api = server.api();
    let common::Delegation { token, .. } = api.delegation(&server.admin()).await;
    let url = format!("{}/mcp", server.url);
    let post = |body: Value, session: Option<&str>, version: Option<&str>| {
        let mut req = api
            .client
            .post(&url)
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v);
        }
        req.send()
    };
    for version in ["2025-06-18", "2025-11-25"] {
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "version-test", "version": "1"}}});
        let resp = post(initialize, None, None).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{version}");
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("a session id");
        let answer = jsonrpc_answer(&resp.text().await.unwrap());
        assert_eq!(answer["result"]["protocolVersion"], version, "{answer}");
        assert_eq!(
            answer["result"]["capabilities"]["tools"]["listChanged"], true,
            "{answer}"
        );
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = post(initialized, Some(&session), Some(version))
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let resp = post(list.clone(), Some(&session), Some(version))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{version}");
        let answer = jsonrpc_answer(&resp.text().await.unwrap());
        let names = tool_names(&answer["result"]);
        assert!(
            names.contains(&"github.create_issue".to_owned()),
            "{names:?}"
        );
        // A version the server does not speak is refused.
        let resp = post(list, Some(&session), Some("1999-01-01"))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{version}");
    }
}

/// A client that speaks the tasks extension (rmcp's client, from crates.io) gets a task for a
/// call that waits for approval: `tasks/get` says it is working and what it waits for; once a
/// maintainer approved through the API, the task is completed with the call's result. Another
/// agent cannot read it, and the agent cannot withdraw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_needing_approval_becomes_a_task() {
    use rmcp::ServiceExt;
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities,
        ClientConfig, GetTaskParams, Implementation, TaskPayload, TaskStatus,
    };
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let upstream = Upstream::start(None).await;
    let env = common::mcp_env(&upstream);
    let server = env.serve();
    let api = server.api();
    let common::Delegation { keys, token, .. } = api.delegation(&server.admin()).await;
    let client = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("task-test", "1"),
    );
    let transport = StreamableHttpClientTransport::with_client(
        writ_connectors::mcp::http_client::Http(reqwest::Client::new(), ""),
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.url))
            .auth_header(token.clone()),
    );
    let session = client.serve(transport).await.unwrap();
    let peer = session.peer().clone();
    assert!(
        peer.peer_info().unwrap().capabilities.supports_tasks(),
        "the server declares the tasks extension"
    );

    // Merging into main needs a maintainer: the call answers with a task at once.
    let args = json!({"pull_number": 9, "base": "main"});
    let answer = peer
        .call_tool_once(
            CallToolRequestParams::new("github.merge_pull_request")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let CallToolResponse::Task(created) = answer else {
        panic!("expected a task, got {answer:?}");
    };
    let task_id = created.task.task_id.clone();
    assert!(task_id.starts_with("act_"), "{task_id}");
    assert_eq!(created.task.status, TaskStatus::Working);
    let got = peer.get_task(GetTaskParams::new(&task_id)).await.unwrap();
    assert_eq!(got.task.status(), TaskStatus::Working);
    let message = got.task.task.status_message.clone().unwrap_or_default();
    assert!(message.contains("group:maintainers"), "{message}");
    assert!(upstream.paths().is_empty(), "nothing ran before approval");

    // The agent cannot withdraw it.
    let refused = peer.cancel_task(CancelTaskParams::new(&task_id)).await;
    assert!(
        format!("{refused:?}").contains("cannot be withdrawn"),
        "{refused:?}"
    );

    // bob approves through the API; the task completes with the merge's result.
    let (s, list) = api.call("GET", "/v1/approvals", &keys["bob"], None).await;
    assert_eq!(s, 200, "{list}");
    let approval = list["approvals"][0]["id"].as_str().unwrap().to_owned();
    let (s, d) = api
        .call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            &keys["bob"],
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    let done = loop {
        let got = peer.get_task(GetTaskParams::new(&task_id)).await.unwrap();
        if got.task.status() != TaskStatus::Working {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.task.status(), TaskStatus::Completed);
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("{done:?}");
    };
    let result = Value::Object(result.clone());
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(
        result["structuredContent"]["status"], "succeeded",
        "{result}"
    );
    assert_eq!(upstream.paths(), ["merge/9"]);

    // A task id that is not the caller's is not found.
    let other = peer
        .get_task(GetTaskParams::new("act_00000000000000000000000000000000"))
        .await;
    assert!(other.is_err(), "{other:?}");
    let _ = session.cancel().await;
}
