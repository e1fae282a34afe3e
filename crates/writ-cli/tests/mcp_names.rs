//! MCP tool names across upstreams, end to end: two copies of the reference server
//! `@modelcontextprotocol/server-everything` as upstreams `everything` and `twin`, both keeping
//! the server's own names (`tool_names = "upstream"`). Every name both offer is offered by
//! neither, and calling it is refused with an error that names both connectors: Writ never
//! guesses which system a call was meant for. With `twin` prefixed instead, `echo` is
//! `everything`'s again and `twin`'s tools are `twin_<tool>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Api, Env};
use serde_json::{Value, json};

/// Lists the tools and calls `echo` through `/mcp` with the Python SDK; what it saw.
const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession
from mcp import MCPError
import mcp.client.streamable_http as transport

async def main():
    req = json.loads(sys.argv[1])
    http = transport.create_mcp_http_client(headers=req["headers"])
    async with http:
        async with transport.streamable_http_client(req["url"], http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                tools = await s.list_tools()
                out = {"tools": [t.name for t in tools.tools]}
                try:
                    r = await s.call_tool("echo", {"message": "which one?"})
                    out["call"] = r.model_dump(mode="json", by_alias=True, exclude_none=True)
                except MCPError as e:
                    out["error"] = {"code": e.code, "message": e.message}
                print(json.dumps(out))

asyncio.run(main())
"#;

fn project(everything: &std::path::Path, twin_names: &str) -> Env {
    let env = Env::new(None);
    env.run(&["init", "."]);
    let command = format!("command = \"{}\"\n", everything.display());
    let config = format!(
        "[policy]\ndir = \"{}\"\n\n[audit]\ncheckpoint_interval_secs = 0\n\n[limits]\nactions_per_agent_per_minute = 0\nmax_wait_secs = 2\n\n\
         [connectors.everything]\nkind = \"mcp\"\n{command}tool_names = \"upstream\"\n\n\
         [connectors.twin]\nkind = \"mcp\"\n{command}tool_names = \"{twin_names}\"\n",
        env.path("policies").display()
    );
    std::fs::write(env.path("writ.toml"), config).unwrap();
    // The twin's echo is an action too, so that a grant can name it.
    let schema = env.path("policies/writ.cedarschema");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text.push_str(
        "\naction \"twin.echo\" in [\"everything.read\"] appliesTo {\n  principal: [Agent], resource: [McpServer],\n  context: { args: EchoArgs, grant: Grant, intent: String, time: Time, approval: Approval, tool: ToolFacts },\n};\n",
    );
    std::fs::write(&schema, text).unwrap();
    env
}

async fn wait_ready(api: &Api, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api.call("GET", "/readyz", "", None).await;
        if v["connectors"][name]["state"] == "ready" {
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not connect: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both upstreams connected; the agent (a grant of `everything.*` and `twin.echo`) lists and calls.
async fn client_sees(env: &Env, twin_names: &str) -> Value {
    let server = env.serve();
    let api = server.api();
    wait_ready(&api, "everything").await;
    wait_ready(&api, "twin").await;
    let d = api.delegation(&server.admin()).await;
    let (s, v) = api
        .call(
            "POST",
            "/v1/grants",
            &d.keys["alice"],
            Some(
                json!({"agent": "bot", "actions": ["everything.*", "twin.*"], "expires_in": 3600}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let grant = v["id"].as_str().unwrap().to_owned();
    let script = env.path(&format!("names_{twin_names}.py"));
    std::fs::write(&script, CLIENT).unwrap();
    let req = json!({
        "url": format!("{}/mcp", server.url),
        "headers": {"Authorization": format!("Bearer {}", d.agent_key), "Writ-Grant": grant},
    });
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(req.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_two_upstreams_offer_is_offered_by_neither() {
    let Some(everything) = common::mcp_everything() else {
        return;
    };
    if !common::python_mcp_available("mcp.client.streamable_http") {
        return;
    }
    let env = project(&everything, "upstream");
    let seen = client_sees(&env, "upstream").await;
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tools, ["writ.action_status"], "{seen}");
    assert_eq!(seen["error"]["code"], -32602, "{seen}");
    let message = seen["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Unknown tool: echo is the name of a tool of both everything and twin"),
        "{message}"
    );

    // With the twin prefixed, the names are distinct again.
    let env = project(&everything, "prefixed");
    let seen = client_sees(&env, "prefixed").await;
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"echo") && tools.contains(&"twin_echo"),
        "{seen}"
    );
    assert_eq!(common::text_of(&seen["call"]), "Echo: which one?", "{seen}");
}
