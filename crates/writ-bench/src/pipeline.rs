//! `writ-bench pipeline`: the whole governed pipeline under load. In one process: a no-op
//! upstream on loopback, a gateway built exactly as `writ serve` builds it (durable audit on
//! SQLite, or PostgreSQL with `--database-url`) with the `github` connector pointing at that
//! upstream, and N agents, each with its own API key and grant, posting allowed actions. Beside
//! it, in the same run and with the same client, N clients calling the upstream directly: the
//! difference is what Writ adds.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_gateway::admin::Admin;
use writ_identity::apikey::KeyKind;
use writ_identity::{AgentId, GrantSpec, Principal, UserId};
use writ_store::identity::{AgentRecord, KeySubject, UserRecord};
use writ_store::{Database, Store, VerifyOptions};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, MasterKey, MasterKeySource};

use crate::scratch::{in_scratch, serve_scratch};
use crate::{Global, machine_description};

/// The targets of the issue, printed beside the figures.
const TARGET_ACTIONS_PER_S: f64 = 5_000.0;
const TARGET_ADDED_P50_US: f64 = 1_000.0;

/// The upstream path `create_issue` posts to.
const ISSUES_PATH: &str = "/repos/acme/web/issues";

/// The gateway's configuration, apart from where it stores its data: rate limit off, and the
/// `github` connector of the example policy bundle (`github-writes-within-grant` allows
/// `create_issue` within a `github.*` grant) with a vault credential, as in production.
fn gateway_toml(upstream: &str) -> String {
    format!(
        r#"
[limits]
actions_per_agent_per_minute = 0

[connectors.github]
kind = "http"
base_url = "{upstream}"
timeout_ms = 5000

[connectors.github.operations.create_issue]
method = "POST"
path = "{ISSUES_PATH}"
args_schema = {{ type = "object", required = ["title"], properties = {{ title = {{ type = "string" }} }}, additionalProperties = false }}
resource = {{ type = "Repo", id = "acme/web", attributes = {{ owner = "acme", name = "web", visibility = "private" }} }}
credential = {{ name = "github-token", inject = "bearer" }}
"#
    )
}

#[derive(Debug, Serialize)]
pub(crate) struct Phase {
    /// Requests answered as expected (200; for the pipeline, also `"status": "succeeded"`).
    pub(crate) ok: u64,
    /// Anything else: transport errors, other statuses. Not in the latency figures.
    pub(crate) errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

#[derive(Debug, Serialize)]
struct Audit {
    entries_before: u64,
    entries_after: u64,
    entries_appended: u64,
    /// Entries per action sent (warm-up included), from the log size before and after.
    entries_per_action: f64,
    verified: bool,
    verified_entries: u64,
    verified_root: String,
}

#[derive(Debug, Serialize)]
struct PipelineReport {
    machine: String,
    backend: &'static str,
    agents: usize,
    duration_s: f64,
    warmup_s: f64,
    direct: Phase,
    pipeline: Phase,
    /// Pipeline throughput over direct throughput.
    throughput_ratio: f64,
    added_p50_us: f64,
    added_p99_us: f64,
    target_actions_per_s: f64,
    target_added_p50_us: f64,
    throughput_target_met: bool,
    added_p50_target_met: bool,
    audit: Audit,
}

/// One agent as the load generator sees it.
pub(crate) struct Agent {
    pub(crate) key: String,
    pub(crate) grant: String,
}

pub async fn run(
    agents: usize,
    duration: Duration,
    warmup: Duration,
    global: &Global,
) -> anyhow::Result<()> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    let result = in_scratch(
        global,
        "pipeline",
        |dir, database_url, backend| async move {
            run_in(&dir, database_url, backend, agents, duration, warmup).await
        },
    )
    .await;
    let report = result?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn run_in(
    dir: &Path,
    database_url: Option<String>,
    backend: &'static str,
    agents: usize,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<PipelineReport> {
    let upstream = start_upstream().await?;
    let gateway = serve_scratch(&gateway_toml(&upstream), dir, database_url).await?;

    eprintln!("setting up {agents} agents with their grants ({backend})…");
    let team = setup(gateway.db.as_ref(), dir, agents, "github.*").await?;
    let entries_before = gateway.db.size().await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(agents)
        .build()?;
    let direct_url: Arc<str> = format!("{upstream}{ISSUES_PATH}").into();
    let actions_url: Arc<str> = format!("{}/v1/actions", gateway.url).into();
    let team: Arc<[Agent]> = team.into();

    let direct = |warm: bool| {
        let (client, url) = (client.clone(), direct_url.clone());
        drive(agents, if warm { warmup } else { duration }, move |_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client
                    .post(&*url)
                    .json(&json!({"title": "bench"}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.map_err(|e| e.to_string())?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("{status}: {body}"))
                }
            }
        })
    };
    let governed = |warm: bool| {
        let (client, url, team) = (client.clone(), actions_url.clone(), team.clone());
        drive(agents, if warm { warmup } else { duration }, move |i| {
            let (client, url, team) = (client.clone(), url.clone(), team.clone());
            async move {
                let agent = &team[i];
                let body = json!({
                    "grant_id": agent.grant,
                    "connector": "github",
                    "operation": "create_issue",
                    "args": {"title": "bench"},
                    "intent": "load test",
                });
                post_action(&client, &url, &agent.key, &body).await
            }
        })
    };

    let seconds = duration.as_secs_f64();
    if !warmup.is_zero() {
        direct(true).await?;
    }
    eprintln!("direct calls to the upstream, {agents} clients, {seconds:.1} s…");
    let direct = direct(false).await?;
    let mut warm_actions = 0;
    if !warmup.is_zero() {
        let warm = governed(true).await?;
        warm_actions = warm.ok + warm.errors;
    }
    eprintln!("governed actions through Writ, {agents} agents, {seconds:.1} s…");
    let pipeline = governed(false).await?;

    let entries_after = gateway.db.size().await?;
    let actions = warm_actions + pipeline.ok + pipeline.errors;
    eprintln!("verifying the audit log ({entries_after} entries)…");
    let verified = writ_store::verify_log(
        gateway.db.as_ref() as &dyn Store,
        &VerifyOptions::default(),
        &|_| {},
    )
    .await
    .context("the audit log written by the bench does not verify")?;

    let appended = entries_after - entries_before;
    Ok(PipelineReport {
        machine: machine_description(),
        backend,
        agents,
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        throughput_ratio: ratio(pipeline.per_second, direct.per_second),
        added_p50_us: pipeline.p50_us - direct.p50_us,
        added_p99_us: pipeline.p99_us - direct.p99_us,
        target_actions_per_s: TARGET_ACTIONS_PER_S,
        target_added_p50_us: TARGET_ADDED_P50_US,
        throughput_target_met: pipeline.per_second >= TARGET_ACTIONS_PER_S,
        added_p50_target_met: pipeline.p50_us - direct.p50_us <= TARGET_ADDED_P50_US,
        direct,
        pipeline,
        audit: Audit {
            entries_before,
            entries_after,
            entries_appended: appended,
            entries_per_action: ratio(appended as f64, actions as f64),
            verified: true,
            verified_entries: verified.entries_checked,
            verified_root: verified.root,
        },
    })
}

/// Posts one action with an agent's key; `Ok` only if it ran and succeeded.
pub(crate) async fn post_action(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> Result<(), String> {
    let resp = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status == 200 && body["status"] == "succeeded" {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// A no-op upstream on loopback: `create_issue` answers a small JSON document.
async fn start_upstream() -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        ISSUES_PATH,
        axum::routing::post(|| async { axum::Json(json!({"number": 42, "state": "open"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// A user, `agents` agents each with an API key and a grant of `actions` (such as `github.*`),
/// and the credential the `github` connector injects, written directly into the gateway's
/// database.
pub(crate) async fn setup(
    db: &dyn Database,
    dir: &Path,
    agents: usize,
    actions: &str,
) -> anyhow::Result<Vec<Agent>> {
    let now = Timestamp::now();
    let user = UserId::new("bench-user")?;
    db.add_user(&UserRecord {
        id: user.clone(),
        display_name: "Bench user".into(),
        admin: false,
        groups: Vec::new(),
        created_at: now,
    })
    .await?;
    let mut team = Vec::with_capacity(agents);
    for i in 0..agents {
        let agent = AgentId::new(format!("bench-agent-{i}"))?;
        db.add_agent(&AgentRecord::new(agent.clone(), user.clone(), None, now))
            .await?;
        let key = Admin::local(db)
            .issue_key(KeySubject::Agent(agent.clone()), KeyKind::Agent)
            .await?
            .key;
        let grant = GrantSpec {
            user: user.clone(),
            agent,
            actions: vec![actions.into()],
            resources: Vec::new(),
            constraints: Vec::new(),
            expires_at: Timestamp::from_micros(now.as_micros() + 86_400_000_000)?,
            max_uses: None,
            sum_budget: None,
        }
        .authorize(
            &Principal::User {
                id: user.clone(),
                admin: false,
            },
            now,
        )?;
        db.add_grant(&grant).await?;
        team.push(Agent {
            key: key.as_str().to_owned(),
            grant: grant.id.to_string(),
        });
    }
    // The same master key the gateway loaded (vault.master_key = "generate": the data directory).
    let master_key = MasterKey::load(&MasterKeySource::resolve(None, dir))?;
    let sealed = writ_vault::seal(
        &master_key,
        CredentialRef {
            name: CredentialName::new("github-token")?,
            version: 1,
            scope: CredentialScope::Shared,
        },
        &writ_vault::Secret::new(b"ghp_bench_not_a_secret".to_vec()),
    )?;
    db.put_credential(&sealed, now).await?;
    Ok(team)
}

/// Runs `clients` loops of `call` (given the client's index) for `duration`, and measures each
/// call. Calls still in flight at the end are awaited and counted.
pub(crate) async fn drive<F, Fut>(
    clients: usize,
    duration: Duration,
    call: F,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline {
                let t = Instant::now();
                match call(i).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0u64, None);
    for task in tasks {
        let (l, e, f) = task.await?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let us = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1e6
    };
    Ok(Phase {
        ok: latencies.len() as u64,
        errors,
        first_error,
        seconds,
        per_second: latencies.len() as f64 / seconds,
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        max_us: us(1.0),
    })
}

fn print_report(r: &PipelineReport) {
    println!("machine: {}", r.machine);
    println!(
        "backend: {} (durable audit); {} agents, {:.1} s per phase after {:.1} s of warm-up",
        r.backend, r.agents, r.duration_s, r.warmup_s
    );
    println!();
    println!("| path | ok | errors | per second | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in [
        ("direct to the upstream", &r.direct),
        ("through Writ (allowed actions)", &r.pipeline),
    ] {
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.ok, p.errors, p.per_second, p.p50_us, p.p90_us, p.p99_us, p.max_us
        );
    }
    for (name, p) in [("direct", &r.direct), ("pipeline", &r.pipeline)] {
        if let Some(e) = &p.first_error {
            println!("{name}: {} errors; the first: {e}", p.errors);
        }
    }
    println!();
    println!(
        "Writ: {:.2}× the direct throughput; added latency p50 {:.0} µs, p99 {:.0} µs",
        r.throughput_ratio, r.added_p50_us, r.added_p99_us
    );
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "target ≥ {:.0} allowed actions/s: {} ({:.0}/s)",
        r.target_actions_per_s,
        met(r.throughput_target_met),
        r.pipeline.per_second
    );
    println!(
        "target added p50 ≤ {:.0} µs: {} ({:.0} µs)",
        r.target_added_p50_us,
        met(r.added_p50_target_met),
        r.added_p50_us
    );
    println!(
        "audit log: {} entries appended ({:.1} per action), {} → {}; verified: {} entries, root {}",
        r.audit.entries_appended,
        r.audit.entries_per_action,
        r.audit.entries_before,
        r.audit.entries_after,
        r.audit.verified_entries,
        r.audit.verified_root
    );
}
