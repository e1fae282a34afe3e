//! `writ-bench`: measurements of Writ on this machine — benchmarks, not tests, and not part of
//! the product binary `writ`. Every figure is printed beside a floor or baseline measured in the
//! same run, because a number without its machine means little.
//!
//! [`audit`] measures the durable log, [`policy`] the verdicts beside raw Cedar, [`identity`] the
//! token and grant checks, [`pipeline`] the whole governed pipeline under load and [`mcp`] an
//! upstream MCP tool called directly, through the API and through `/mcp`. The last two run a
//! gateway assembled as `writ serve` assembles it, in a scratch directory ([`scratch`], the only
//! module that touches the gateway's faces).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod audit;
mod identity;
mod mcp;
mod pipeline;
mod policy;
mod scratch;

/// Measure Writ on this machine (benchmarks, not tests).
#[derive(Debug, Parser)]
#[command(name = "writ-bench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: BenchCommand,
}

/// Options every bench understands (the same as `writ`'s global options).
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Directory for scratch data (each bench works in a subdirectory it removes afterwards).
    #[arg(
        long,
        global = true,
        env = "WRIT_DATA_DIR",
        default_value = "./writ-data"
    )]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://…` (a private schema is created and
    /// dropped). Default: SQLite in the data directory.
    #[arg(long, global = true, env = "WRIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Unmeasured load before each phase.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        warmup: Duration,
    },
    /// Latency (p50/p99) and throughput of an upstream MCP server's tool called directly,
    /// through Writ's HTTP API, and through Writ's /mcp, in one run: what the pipeline adds, and
    /// what the MCP layer adds over the pipeline. Needs the upstream server's command
    /// (`npm install @modelcontextprotocol/server-everything`).
    Mcp(mcp::McpBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli.command, &cli.global)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: BenchCommand, global: &Global) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Audit {
            seconds,
            entries,
            postgres_url,
            writers,
        } => audit::run(global, seconds, entries, postgres_url.as_deref(), &writers).await,
        BenchCommand::Policy {
            policies,
            requests,
            iterations,
        } => policy::run(&policies, requests, iterations, global),
        BenchCommand::Identity {
            samples,
            durable_samples,
        } => identity::run(samples, durable_samples, global).await,
        BenchCommand::Pipeline {
            agents,
            duration,
            warmup,
        } => pipeline::run(agents, duration, warmup, global).await,
        BenchCommand::Mcp(args) => mcp::run(args, global).await,
    }
}

/// Warnings and errors on stderr (as `writ`'s commands log them), filtered by `WRIT_LOG`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `10`, `10s`, `1.5s` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| Duration::from_secs_f64(n * scale))
        .ok_or_else(|| format!("{text:?} is not a duration; use seconds like 10, 10s or 500ms"))
}

/// The value at quantile `p` (0 to 1) of `sorted`; 0 when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The core count and CPU model, printed with every report.
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
