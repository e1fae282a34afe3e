//! `writ`: the command-line interface of Writ.
//!
//! A thin layer over the library crates: it parses arguments, opens the store, calls the library
//! and prints the result (human text by default, JSON with `--json`). No business rule lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod actions;
mod agents;
mod approvals;
mod audit;
mod client;
mod echo;
mod grants;
mod identity;
mod init;
mod keys;
mod mcp_stdio;
mod policy;
mod remote;
mod serve;
mod token;
mod users;
mod vault;

/// Writ: the governed boundary between AI agents and the systems they act on.
#[derive(Debug, Parser)]
#[command(name = "writ", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command understands.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Directory for the embedded database and keys.
    #[arg(
        long,
        global = true,
        env = "WRIT_DATA_DIR",
        default_value = "./writ-data"
    )]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://…`. Default: SQLite in the data directory.
    #[arg(long, global = true, env = "WRIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: the HTTP API agents and approvers use.
    Serve(serve::ServeArgs),
    /// Write a commented writ.toml and a policies/ bundle to start from.
    Init(init::InitArgs),
    /// Manage the audit log's signing key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Append to, sign, prove, verify, query and export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Validate, test, explain and diff Cedar policy bundles.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Add and list local users (and their API keys).
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Register agents and rotate their credentials.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Create, list, show and revoke grants.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
    /// Store, list, rotate and retire credentials in the vault.
    #[command(subcommand)]
    Vault(vault::VaultCommand),
    /// Exchange, verify and publish delegated tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// A stand-in upstream API that echoes every request (for trying Writ on one machine).
    EchoServer(echo::EchoArgs),
    /// List actions and show an action's audit timeline, from a running server.
    Actions(actions::ActionsArgs),
    /// List pending approvals and approve or deny them, on a running server.
    Approvals(approvals::ApprovalsArgs),
    /// An MCP server on stdin/stdout that forwards to a Writ server, for MCP clients that only
    /// launch stdio servers.
    McpStdio(mcp_stdio::McpStdioArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, &cli.global),
        Command::EchoServer(args) => echo::run(args),
        Command::Init(args) => init::run(args, &cli.global),
        Command::Keys(cmd) => keys::run(cmd, &cli.global),
        Command::Policy(cmd) => policy::run(cmd, &cli.global),
        Command::Audit(cmd) => block_on(audit::run(cmd, &cli.global)),
        Command::Users(cmd) => block_on(users::run(cmd, &cli.global)),
        Command::Agents(cmd) => block_on(agents::run(cmd, &cli.global)),
        Command::Grants(cmd) => block_on(grants::run(cmd, &cli.global)),
        Command::Vault(cmd) => block_on(vault::run(cmd, &cli.global)),
        Command::Token(cmd) => block_on(token::run(cmd, &cli.global)),
        Command::Actions(args) => block_on(actions::run(args, &cli.global)),
        Command::Approvals(args) => block_on(approvals::run(args, &cli.global)),
        Command::McpStdio(args) => mcp_stdio::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `WRIT_LOG`. The server logs JSON lines (info and above by
/// default; the MCP SDK's own chatter, which includes whole server descriptions, only from warnings
/// up); the other commands log plain warnings.
fn init_tracing(server: bool) {
    let default = if server { "info,rmcp=warn" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if server {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Opens the store the global options name.
pub async fn open_store(global: &Global) -> anyhow::Result<Arc<dyn writ_store::Store>> {
    Ok(writ_store::open(global.database_url.as_deref(), &global.data_dir).await?)
}

/// A progress bar on standard error, hidden for `--json` and when stderr is not a terminal.
pub fn progress_bar(len: u64, global: &Global, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if global.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
