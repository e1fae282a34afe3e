//! `writ-bench audit`: durable appends/s at several writer counts (SQLite, and PostgreSQL when a
//! URL is given), verification throughput and inclusion-proof latency, beside this machine's fsync
//! and SHA-256 floors measured in the same run.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use writ_core::{ActionId, EntryKind, NewEntry};
use writ_store::{Store, VerifyOptions};

use crate::{Global, machine_description, percentile};

/// Measures, then prints the report (a table, or JSON with `--json`).
pub async fn run(
    global: &Global,
    seconds: f64,
    entries: u64,
    postgres_url: Option<&str>,
    writers: &[usize],
) -> anyhow::Result<()> {
    let report = bench_audit(global, seconds, entries, postgres_url, writers).await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_audit(&report);
    }
    Ok(())
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
