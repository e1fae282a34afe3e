//! `writ bench …`: measurements of this machine, not tests. Every figure is printed beside a
//! floor or baseline measured in the same run, because a number without its machine means little.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use writ_core::{ActionId, EntryKind, NewEntry};
use writ_store::{Store, VerifyOptions};

use crate::Global;

mod identity;
mod mcp;
mod pipeline;
mod policy;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Durable appends/s at 1, 8 and 64 writers (SQLite, and PostgreSQL when a URL is given),
    /// verification throughput and inclusion-proof latency, beside this machine's fsync and
    /// SHA-256 floors.
    Audit {
        /// Seconds per append measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Log size for the verification and proof measurements.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Also measure PostgreSQL at this URL (a private schema is created and dropped).
        #[arg(long, env = "WRIT_BENCH_POSTGRES_URL", hide_env_values = true)]
        postgres_url: Option<String>,
        /// Writer counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64])]
        writers: Vec<usize>,
    },
    /// Writ's policy verdict latency (p50/p99) and throughput beside raw Cedar `is_authorized`
    /// on the same requests, at several bundle sizes.
    Policy {
        /// Bundle sizes (number of policies) to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 1000])]
        policies: Vec<usize>,
        /// Distinct generated requests per size.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Timed passes over the requests per size.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
    },
    /// Delegated-token verification and grant-check latency (p50/p99) beside bare Ed25519
    /// signature verification, plus a durable budget spend on SQLite.
    Identity {
        /// Timed samples per in-memory measurement.
        #[arg(long, default_value_t = 100_000)]
        samples: usize,
        /// Timed samples of the durable budget spend (0 to skip it).
        #[arg(long, default_value_t = 300)]
        durable_samples: usize,
    },
    /// Allowed actions/s and added latency (p50/p99) of the whole governed pipeline against a
    /// no-op upstream on loopback, beside direct calls to the same upstream in the same run.
    /// Durable audit on SQLite in the data directory, or PostgreSQL with --database-url (a
    /// private schema is created and dropped).
    Pipeline {
        /// Concurrent agents (each with its own API key and grant), and direct clients.
        #[arg(long, default_value_t = 64)]
        agents: usize,
        /// How long each phase is measured (seconds, or e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = pipeline::parse_duration)]
        duration: Duration,
        /// Unmeasured load before each phase.
        #[arg(long, default_value = "2s", value_parser = pipeline::parse_duration)]
        warmup: Duration,
    },
    /// Latency (p50/p99) and throughput of an upstream MCP server's tool called directly,
    /// through Writ's HTTP API, and through Writ's /mcp, in one run: what the pipeline adds, and
    /// what the MCP layer adds over the pipeline. Needs the upstream server's command
    /// (`npm install @modelcontextprotocol/server-everything`).
    Mcp(mcp::McpBenchArgs),
}

pub async fn run(cmd: BenchCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Audit {
            seconds,
            entries,
            postgres_url,
            writers,
        } => {
            let report =
                bench_audit(global, seconds, entries, postgres_url.as_deref(), &writers).await?;
            if global.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_audit(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Policy {
            policies,
            requests,
            iterations,
        } => {
            policy::run(&policies, requests, iterations, global)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Identity {
            samples,
            durable_samples,
        } => {
            identity::run(samples, durable_samples, global).await?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Pipeline {
            agents,
            duration,
            warmup,
        } => {
            pipeline::run(agents, duration, warmup, global).await?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Mcp(args) => {
            mcp::run(args, global).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Serialize)]
struct Floors {
    fsync_p50_us: f64,
    fsyncs_per_s: f64,
    leaf_bytes: usize,
    sha256_leaves_per_s: f64,
    sha256_mb_per_s: f64,
}

#[derive(Debug, Serialize)]
struct AppendResult {
    backend: String,
    writers: usize,
    appends_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Appends per fsync-floor interval: how much group commit buys over one fsync per append.
    ratio_to_fsync_floor: f64,
}

#[derive(Debug, Serialize)]
struct AuditReport {
    machine: String,
    floors: Floors,
    appends: Vec<AppendResult>,
    log_entries: u64,
    fill_seconds: f64,
    verify_entries_per_s: f64,
    verify_ratio_to_sha256_floor: f64,
    inclusion_proof_p50_us: f64,
    inclusion_proof_p99_us: f64,
    inclusion_proof_nodes_read_max: usize,
}

fn sample_entry(i: u64) -> NewEntry {
    NewEntry {
        action_id: ActionId::new(format!("act_bench_{i:012}"))
            .unwrap_or_else(|_| ActionId::generate()),
        kind: EntryKind::Executed,
        actor: Some("agent:deploy-bot".into()),
        payload: json!({
            "connector": "github",
            "operation": "merge_pull_request",
            "args": {"repo": "acme/api", "pull_number": 1234, "merge_method": "squash"},
            "user": "user:alice",
            "grant": "grant_01J9Z3",
            "credential": "github-app@3",
            "intent": "merge the approved fix for the login timeout",
            "outcome": "success",
        }),
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The floor of one durable commit: overwrite 4 KiB of an already allocated file and fdatasync,
/// which is what a database's log write costs at best (no file growth, no metadata journal).
fn measure_fsync(dir: &Path) -> anyhow::Result<f64> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 4096];
    const SAMPLES: u64 = 200;
    for _ in 0..SAMPLES {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let mut samples = Vec::with_capacity(SAMPLES as usize);
    for i in 0..SAMPLES {
        file.seek(SeekFrom::Start(i * 4096))?;
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_file(&path)?;
    samples.sort_by(f64::total_cmp);
    Ok(percentile(&samples, 0.5))
}

fn measure_sha256(leaf: &[u8]) -> f64 {
    let n = 500_000u64;
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..n {
        acc ^= writ_audit::leaf_hash(leaf).0[0];
    }
    std::hint::black_box(acc);
    n as f64 / t.elapsed().as_secs_f64()
}

async fn measure_appends(
    store: Arc<dyn Store>,
    writers: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for w in 0..writers {
        let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                store
                    .append(vec![sample_entry(w as u64 * 1_000_000_000 + i)])
                    .await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((count.load(Ordering::Relaxed) as f64 / elapsed, latencies))
}

async fn bench_audit(
    global: &Global,
    seconds: f64,
    entries: u64,
    postgres_url: Option<&str>,
    writer_counts: &[usize],
) -> anyhow::Result<AuditReport> {
    writ_store::ensure_data_dir(&global.data_dir)?;
    let dir = global
        .data_dir
        .join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = bench_audit_in(&dir, seconds, entries, postgres_url, writer_counts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench_audit_in(
    dir: &Path,
    seconds: f64,
    entries: u64,
    postgres_url: Option<&str>,
    writer_counts: &[usize],
) -> anyhow::Result<AuditReport> {
    eprintln!("measuring floors (fsync in {}, SHA-256)…", dir.display());
    let fsync_us = measure_fsync(dir)?;
    let leaf = sample_entry(0)
        .prepare()?
        .canonical_bytes(123_456, writ_core::Timestamp::now());
    let sha = measure_sha256(&leaf);
    let floors = Floors {
        fsync_p50_us: fsync_us,
        fsyncs_per_s: 1e6 / fsync_us,
        leaf_bytes: leaf.len(),
        sha256_leaves_per_s: sha,
        sha256_mb_per_s: sha * (leaf.len() + 1) as f64 / 1e6,
    };

    let mut appends = Vec::new();
    let mut backends: Vec<(&str, Option<&str>)> = vec![("sqlite", None)];
    if let Some(url) = postgres_url {
        backends.push(("postgres", Some(url)));
    }
    for (name, url) in backends {
        for &writers in writer_counts {
            eprintln!("appending on {name} with {writers} writers for {seconds} s…");
            let schema = format!("writ_bench_{}_{writers}", std::process::id());
            let store: Arc<dyn Store> = match url {
                None => Arc::new(
                    writ_store::sqlite::SqliteStore::open(
                        &dir.join(format!("append-{writers}.db")),
                    )
                    .await?,
                ),
                Some(url) => {
                    let scoped = writ_store::postgres::url_with_fresh_schema(url, &schema).await?;
                    Arc::new(writ_store::postgres::PgStore::connect(&scoped).await?)
                }
            };
            let (rate, latencies) = measure_appends(store, writers, seconds).await?;
            if let Some(url) = url {
                writ_store::postgres::drop_schema(url, &schema).await?;
            }
            appends.push(AppendResult {
                backend: name.into(),
                writers,
                appends_per_s: rate,
                p50_us: percentile(&latencies, 0.5),
                p99_us: percentile(&latencies, 0.99),
                ratio_to_fsync_floor: rate / floors.fsyncs_per_s,
            });
        }
    }

    eprintln!("filling a {entries}-entry SQLite log…");
    let store: Arc<dyn Store> =
        Arc::new(writ_store::sqlite::SqliteStore::open(&dir.join("verify.db")).await?);
    let fill = Instant::now();
    let mut next = 0u64;
    while next < entries {
        let n = (entries - next).min(8192);
        store
            .append((next..next + n).map(sample_entry).collect())
            .await?;
        next += n;
    }
    let fill_seconds = fill.elapsed().as_secs_f64();

    eprintln!("verifying {entries} entries…");
    let t = Instant::now();
    let report = writ_store::verify_log(store.as_ref(), &VerifyOptions::default(), &|_| {}).await?;
    let verify_rate = report.entries_checked as f64 / t.elapsed().as_secs_f64();

    eprintln!("inclusion proofs at size {entries}…");
    let mut latencies = Vec::new();
    let mut max_nodes = 0;
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5000 {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let seq = rng_state % entries.max(1);
        let t = Instant::now();
        let proof = store.inclusion_proof(seq, entries).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        max_nodes = max_nodes.max(writ_audit::inclusion_plan(seq, entries)?.node_ids().len());
        std::hint::black_box(proof);
    }
    latencies.sort_by(f64::total_cmp);

    Ok(AuditReport {
        machine: machine_description(),
        floors,
        appends,
        log_entries: entries,
        fill_seconds,
        verify_entries_per_s: verify_rate,
        verify_ratio_to_sha256_floor: verify_rate / sha,
        inclusion_proof_p50_us: percentile(&latencies, 0.5),
        inclusion_proof_p99_us: percentile(&latencies, 0.99),
        inclusion_proof_nodes_read_max: max_nodes,
    })
}

pub fn machine_description() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

fn print_audit(r: &AuditReport) {
    println!("machine: {}", r.machine);
    println!(
        "floors:  fsync p50 {:.0} µs ({:.0} fsyncs/s); SHA-256 of a {}-byte leaf: {:.0} leaves/s ({:.0} MB/s)",
        r.floors.fsync_p50_us,
        r.floors.fsyncs_per_s,
        r.floors.leaf_bytes,
        r.floors.sha256_leaves_per_s,
        r.floors.sha256_mb_per_s
    );
    println!();
    println!(
        "| backend  | writers | durable appends/s | p50 µs | p99 µs | appends per fsync floor |"
    );
    println!(
        "|----------|--------:|------------------:|-------:|-------:|------------------------:|"
    );
    for a in &r.appends {
        println!(
            "| {:<8} | {:>7} | {:>17.0} | {:>6.0} | {:>6.0} | {:>23.1} |",
            a.backend, a.writers, a.appends_per_s, a.p50_us, a.p99_us, a.ratio_to_fsync_floor
        );
    }
    println!();
    println!(
        "log of {} entries filled in {:.1} s",
        r.log_entries, r.fill_seconds
    );
    println!(
        "verify: {:.0} entries/s ({:.2}× the SHA-256 floor of one core)",
        r.verify_entries_per_s, r.verify_ratio_to_sha256_floor
    );
    println!(
        "inclusion proof at {} entries: p50 {:.0} µs, p99 {:.0} µs, at most {} stored nodes read",
        r.log_entries,
        r.inclusion_proof_p50_us,
        r.inclusion_proof_p99_us,
        r.inclusion_proof_nodes_read_max
    );
}
