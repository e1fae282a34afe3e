//! `writ mcp-stdio`, end to end: the official Python MCP client (`pip install mcp`) launches the
//! real `writ mcp-stdio` as a stdio server, which forwards to a real `writ serve` with a
//! GitHub-like upstream on loopback. The tools are the server's; an allowed call returns the
//! upstream's answer and its `_meta` reaches the audit record; a denied call is the server's tool
//! error naming the policy; an agent API key with `WRIT_GRANT` sees its grant's tools; a wrong
//! token or an unreachable server gives an MCP error that says so and never holds the token.
//!
//! Without python3 or the `mcp` package the test is skipped with a reason, except under CI (env
//! `CI` set), where that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{SECRET, Upstream, text_of, tool_names};
use serde_json::{Value, json};

/// The MCP client: launches `writ mcp-stdio` with the given environment, runs the operations in
/// one session, and prints their answers (or `{"error": ...}`) as a JSON list.
const CLIENT: &str = r#"
import asyncio, json, os, sys
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

async def op(session, req):
    if req["op"] == "list":
        tools = await session.list_tools()
        return {"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]}
    result = await session.call_tool(req["name"], req.get("arguments") or {}, meta=req.get("meta"))
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)

async def main():
    req = json.loads(sys.argv[1])
    env = dict(req["env"], PATH=os.environ.get("PATH", ""))
    params = StdioServerParameters(command=req["command"], args=["mcp-stdio"], env=env)
    out = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for r in req["ops"]:
                try:
                    out.append(await op(session, r))
                except Exception as e:
                    out.append({"error": str(e)})
    print(json.dumps(out))

asyncio.run(main())
"#;

struct Bridge {
    script: PathBuf,
}

impl Bridge {
    /// Runs the operations through `writ mcp-stdio` with this environment; no answer may hold
    /// the vault's credential or `forbidden` (the token in use).
    async fn run(&self, env: Value, ops: Value, forbidden: &str) -> Vec<Value> {
        let req = json!({"command": env!("CARGO_BIN_EXE_writ"), "env": env, "ops": ops});
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
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the MCP client failed: {stderr}\n{stdout}"
        );
        for secret in [SECRET, forbidden] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a secret came out: {stdout}\n{stderr}"
            );
        }
        serde_json::from_str(stdout.trim()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_clients_reach_the_governed_tools_through_writ_mcp_stdio() {
    if !common::python_mcp_available("mcp.client.stdio") {
        return;
    }
    let upstream = Upstream::start(None).await;
    let env = common::mcp_env(&upstream);
    let script = env.path("mcp_stdio_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let server = env.serve();
    let api = server.api();
    let who = api.delegation(&server.admin()).await;
    let bridge = Bridge { script };

    // With a delegated token: the tools, an allowed call with _meta, a denied call.
    let answers = bridge
        .run(
            json!({"WRIT_URL": server.url, "WRIT_TOKEN": who.token}),
            json!([
                {"op": "list"},
                {"op": "call", "name": "github.create_issue", "arguments": {"title": "Over stdio"},
                 "meta": {"intent": "track the flaky test", "rationale": "CI failed twice"}},
                {"op": "call", "name": "github.merge_pull_request",
                 "arguments": {"pull_number": 3, "base": "dev", "merge_method": "rebase"}},
            ]),
            &who.token,
        )
        .await;
    let [list, created, denied] = &answers[..] else {
        panic!("three answers expected: {answers:?}");
    };
    let names = tool_names(list);
    for name in [
        "github.create_issue",
        "github.merge_pull_request",
        "writ.action_status",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {list}");
    }

    assert_ne!(created["isError"], true, "{created}");
    assert_eq!(created["structuredContent"]["status"], "succeeded");
    assert_eq!(created["structuredContent"]["result"]["number"], 42);
    let text: Value = serde_json::from_str(&text_of(created)).unwrap();
    assert_eq!(text["title"], "Over stdio", "{created}");
    assert_eq!(upstream.paths(), ["issues"]);
    let action = created["structuredContent"]["action_id"].as_str().unwrap();
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/actions/{action}"),
            &who.keys["alice"],
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["intent"], "track the flaky test", "{v}");
    assert_eq!(v["request"]["rationale"], "CI failed twice", "{v}");

    assert_eq!(denied["isError"], true, "{denied}");
    let text = text_of(denied);
    assert!(
        text.starts_with("Denied by policy no-rebase-merges: ") && text.contains("rebase"),
        "{text}"
    );
    assert_eq!(
        denied["structuredContent"]["policy_ids"],
        json!(["no-rebase-merges"])
    );
    assert_eq!(upstream.paths(), ["issues"]);

    // An agent API key with WRIT_GRANT: the narrow grant's tools.
    let answers = bridge
        .run(
            json!({"WRIT_URL": server.url, "WRIT_TOKEN": who.agent_key, "WRIT_GRANT": who.grants[1]}),
            json!([{"op": "list"}]),
            &who.agent_key,
        )
        .await;
    let names = tool_names(&answers[0]);
    assert!(
        names.iter().any(|n| n == "github.create_issue"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "github.merge_pull_request"),
        "{names:?}"
    );

    // A wrong token, then a server that is not there: errors that say so, without the token.
    let wrong = "writ_agent_wrong_token_0123456789";
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (url, what) in [
        (server.url.as_str(), "check WRIT_TOKEN"),
        (unreachable.as_str(), "check WRIT_URL"),
    ] {
        let answers = bridge
            .run(
                json!({"WRIT_URL": url, "WRIT_TOKEN": wrong}),
                json!([
                    {"op": "call", "name": "github.create_issue", "arguments": {"title": "No"}},
                    {"op": "list"},
                ]),
                wrong,
            )
            .await;
        for answer in &answers {
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(what), "{url}: {answer}");
        }
    }
    assert_eq!(upstream.paths(), ["issues"]);
}
