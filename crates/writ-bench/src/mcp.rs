//! `writ-bench mcp`: a tool call of an upstream MCP server, three ways, in one run and one
//! process: straight to the server (its own stdio process, the MCP client Writ uses), through
//! Writ's HTTP API (`POST /v1/actions`: the whole governed pipeline, the upstream reached by the
//! MCP connector), and through Writ's `/mcp` (`tools/call` over Streamable HTTP, the same
//! pipeline behind the MCP layer). The gateway is built as `writ serve` builds it, with durable
//! audit on SQLite (or PostgreSQL with `--database-url`), the example bundle, and the upstream as
//! the connector `everything`, so the default tool `echo` is the example bundle's
//! `everything.echo` (the MCP tool `everything_echo`), allowed within an `everything.*` grant.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde::Serialize;
use serde_json::{Value, json};
use writ_connectors::mcp::http_client::Http;

use crate::pipeline::{Agent, Phase, drive, post_action, ratio, setup};
use crate::scratch::{in_scratch, serve_scratch};
use crate::{Global, machine_description, parse_duration};

/// The issue's target: what `/mcp` adds over the pipeline's own cost, at the median.
const TARGET_MCP_ADDED_P50_US: f64 = 1_000.0;

#[derive(Debug, clap::Args)]
pub struct McpBenchArgs {
    /// The upstream stdio MCP server to start (twice: once for the direct client, once for Writ).
    #[arg(
        long,
        env = "WRIT_BENCH_MCP_COMMAND",
        default_value = "mcp-server-everything"
    )]
    command: String,
    /// Its arguments.
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// The tool to call; the policy bundle must allow `everything.<tool>`.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Its arguments, as a JSON object.
    #[arg(long, default_value = r#"{"message": "bench"}"#)]
    arguments: String,
    /// Concurrent clients in every phase (each an agent with its own key and grant).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long each phase is measured (seconds, or e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load before each phase.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Serialize)]
struct McpReport {
    machine: String,
    backend: &'static str,
    upstream: String,
    tool: String,
    clients: usize,
    duration_s: f64,
    warmup_s: f64,
    /// Straight to the upstream server.
    direct: Phase,
    /// `POST /v1/actions`: the governed pipeline, the upstream behind the MCP connector.
    pipeline: Phase,
    /// `tools/call` on Writ's `/mcp`: the same pipeline behind the MCP layer.
    mcp: Phase,
    /// What the pipeline adds to a direct call, p50.
    pipeline_added_p50_us: f64,
    /// What `/mcp` adds over the pipeline's own cost, p50 and p99.
    mcp_added_p50_us: f64,
    mcp_added_p99_us: f64,
    /// `/mcp` throughput over direct throughput.
    mcp_throughput_ratio: f64,
    target_mcp_added_p50_us: f64,
    target_met: bool,
}

pub async fn run(a: McpBenchArgs, global: &Global) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    let arguments: JsonObject =
        serde_json::from_str(&a.arguments).context("--arguments must be a JSON object")?;
    let result = in_scratch(global, "mcp", |dir, database_url, backend| async move {
        run_in(&a, arguments, &dir, database_url, backend).await
    })
    .await;
    let report = result?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

async fn run_in(
    a: &McpBenchArgs,
    arguments: JsonObject,
    dir: &Path,
    database_url: Option<String>,
    backend: &'static str,
) -> anyhow::Result<McpReport> {
    let args = a
        .args
        .iter()
        .map(|x| toml_string(x))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "[limits]\nactions_per_agent_per_minute = 0\n\n[connectors.everything]\nkind = \"mcp\"\ncommand = {}\nargs = [{args}]\ntimeout_ms = 10000\n",
        toml_string(&a.command)
    );
    let gateway = serve_scratch(&toml, dir, database_url).await?;
    let gateway_url = &gateway.url;

    // Wait for Writ's own connection to the upstream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = gateway.gateway.connector_status();
        if status.get("everything").and_then(|s| s.get("state")) == Some(&json!("ready")) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Writ could not connect to the upstream {:?}: {}",
            a.command,
            Value::Object(status)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!(
        "setting up {} agents with their grants ({backend})…",
        a.clients
    );
    let team = setup(gateway.db.as_ref(), dir, a.clients, "everything.*").await?;

    // The direct client: the same server program in its own process.
    let mut command = tokio::process::Command::new(&a.command);
    command.args(&a.args);
    let direct_service: RunningService<RoleClient, ()> = ()
        .serve(TokioChildProcess::new(command).context("starting the upstream for direct calls")?)
        .await
        .context("initializing the direct MCP session")?;
    let direct_peer = direct_service.peer().clone();

    // One `/mcp` session per agent.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients * 2)
        .build()?;
    let mut sessions = Vec::with_capacity(team.len());
    for agent in &team {
        let mut headers = HashMap::new();
        headers.insert(
            HeaderName::from_static("writ-grant"),
            HeaderValue::from_str(&agent.grant)?,
        );
        let transport = StreamableHttpClientTransport::with_client(
            Http(http.clone(), ""),
            StreamableHttpClientTransportConfig::with_uri(format!("{gateway_url}/mcp"))
                .auth_header(agent.key.clone())
                .custom_headers(headers),
        );
        let session: RunningService<RoleClient, ()> = ()
            .serve(transport)
            .await
            .context("opening an MCP session with Writ")?;
        sessions.push(session);
    }
    let mcp_peers: Arc<[rmcp::Peer<RoleClient>]> =
        sessions.iter().map(|s| s.peer().clone()).collect();

    let tool = a.tool.clone();
    let direct = |d: Duration| {
        let (peer, tool, arguments) = (direct_peer.clone(), tool.clone(), arguments.clone());
        drive(a.clients, d, move |_| {
            let (peer, tool, arguments) = (peer.clone(), tool.clone(), arguments.clone());
            async move {
                let r = peer
                    .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
                    .await
                    .map_err(|e| e.to_string())?;
                if r.is_error == Some(true) {
                    return Err(format!("the tool failed: {:?}", r.content));
                }
                Ok(())
            }
        })
    };
    let team: Arc<[Agent]> = team.into();
    let actions_url: Arc<str> = format!("{gateway_url}/v1/actions").into();
    let pipeline = |d: Duration| {
        let (client, url, team) = (http.clone(), actions_url.clone(), team.clone());
        let (tool, arguments) = (tool.clone(), Value::Object(arguments.clone()));
        drive(a.clients, d, move |i| {
            let (client, url, team) = (client.clone(), url.clone(), team.clone());
            let body = json!({
                "grant_id": team[i].grant,
                "connector": "everything",
                "operation": tool,
                "args": arguments,
                "intent": "load test",
            });
            async move { post_action(&client, &url, &team[i].key, &body).await }
        })
    };
    let through_mcp = |d: Duration| {
        let (peers, name, arguments) = (
            mcp_peers.clone(),
            format!("everything_{tool}"),
            arguments.clone(),
        );
        drive(a.clients, d, move |i| {
            let (peer, name, arguments) = (peers[i].clone(), name.clone(), arguments.clone());
            async move {
                let r = peer
                    .call_tool(CallToolRequestParams::new(name).with_arguments(arguments))
                    .await
                    .map_err(|e| e.to_string())?;
                if r.is_error == Some(true) {
                    return Err(format!("the call failed: {:?}", r.content));
                }
                Ok(())
            }
        })
    };

    let seconds = a.duration.as_secs_f64();
    let clients = a.clients;
    if !a.warmup.is_zero() {
        direct(a.warmup).await?;
    }
    eprintln!("direct calls to the upstream, {clients} clients, {seconds:.1} s…");
    let direct = direct(a.duration).await?;
    if !a.warmup.is_zero() {
        pipeline(a.warmup).await?;
    }
    eprintln!("POST /v1/actions through Writ, {clients} agents, {seconds:.1} s…");
    let pipeline = pipeline(a.duration).await?;
    if !a.warmup.is_zero() {
        through_mcp(a.warmup).await?;
    }
    eprintln!("tools/call on Writ's /mcp, {clients} agents, {seconds:.1} s…");
    let mcp = through_mcp(a.duration).await?;

    for s in sessions {
        let _ = s.cancel().await;
    }
    let _ = direct_service.cancel().await;

    let mcp_added_p50_us = mcp.p50_us - pipeline.p50_us;
    Ok(McpReport {
        machine: machine_description(),
        backend,
        upstream: std::iter::once(a.command.clone())
            .chain(a.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        tool: a.tool.clone(),
        clients,
        duration_s: seconds,
        warmup_s: a.warmup.as_secs_f64(),
        pipeline_added_p50_us: pipeline.p50_us - direct.p50_us,
        mcp_added_p50_us,
        mcp_added_p99_us: mcp.p99_us - pipeline.p99_us,
        mcp_throughput_ratio: ratio(mcp.per_second, direct.per_second),
        target_mcp_added_p50_us: TARGET_MCP_ADDED_P50_US,
        target_met: mcp_added_p50_us <= TARGET_MCP_ADDED_P50_US,
        direct,
        pipeline,
        mcp,
    })
}

fn print_report(r: &McpReport) {
    println!("machine: {}", r.machine);
    println!(
        "backend: {} (durable audit); upstream: {}; tool: {}; {} clients, {:.1} s per phase after {:.1} s of warm-up",
        r.backend, r.upstream, r.tool, r.clients, r.duration_s, r.warmup_s
    );
    println!();
    println!("| path | ok | errors | per second | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in [
        ("direct to the upstream (stdio)", &r.direct),
        ("POST /v1/actions through Writ", &r.pipeline),
        ("tools/call on Writ's /mcp", &r.mcp),
    ] {
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.ok, p.errors, p.per_second, p.p50_us, p.p90_us, p.p99_us, p.max_us
        );
    }
    for (name, p) in [
        ("direct", &r.direct),
        ("pipeline", &r.pipeline),
        ("mcp", &r.mcp),
    ] {
        if let Some(e) = &p.first_error {
            println!("{name}: {} errors; the first: {e}", p.errors);
        }
    }
    println!();
    println!(
        "the pipeline adds p50 {:.0} µs to a direct call; /mcp adds p50 {:.0} µs (p99 {:.0} µs) over the pipeline; /mcp runs at {:.2}× the direct throughput",
        r.pipeline_added_p50_us, r.mcp_added_p50_us, r.mcp_added_p99_us, r.mcp_throughput_ratio
    );
    println!(
        "target: /mcp adds p50 ≤ {:.0} µs over the pipeline: {} ({:.0} µs)",
        r.target_mcp_added_p50_us,
        if r.target_met { "met" } else { "missed" },
        r.mcp_added_p50_us
    );
}
