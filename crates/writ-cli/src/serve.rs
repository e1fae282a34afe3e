//! `writ serve`: the gateway. With no configuration at all it starts a working gateway: SQLite in
//! `./writ-data`, keys generated on first start (mode 0600), the example policy bundle, and an
//! admin API key printed once. The command loads the configuration, has the library assemble the
//! gateway (`Gateway::from_config`), prints the banner and serves.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use writ_gateway::Config;
use writ_gateway::assemble::Assembled;
use writ_gateway::gateway::Gateway;

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (default: ./writ.toml when it exists). Every setting can also
    /// come from WRIT_<SECTION>_<KEY> environment variables.
    #[arg(long, short = 'c', env = "WRIT_CONFIG")]
    config: Option<PathBuf>,
    /// Where to listen, overriding [server] listen (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: ServeArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let default = PathBuf::from("writ.toml");
    let path = args
        .config
        .clone()
        .or_else(|| default.is_file().then_some(default));
    let mut config = Config::load(path.as_deref(), std::env::vars())
        .with_context(|| "the configuration is invalid; nothing was started")?;
    // The global flags (--data-dir, --database-url) win when given explicitly or by env.
    if global.database_url.is_some() {
        config.storage.database_url = global.database_url.clone();
    }
    if global.data_dir.as_path() != std::path::Path::new("./writ-data") {
        config.storage.data_dir = global.data_dir.clone();
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let Assembled {
        gateway: gw,
        listener,
        public_url,
        policy_source,
        policy_version,
        connectors,
        first_admin_key,
        policy_watcher: _watcher,
        database: _,
    } = Gateway::from_config(&config).await?;
    let data_dir = &config.storage.data_dir;
    let local = listener.local_addr()?;

    println!("Writ is serving on {public_url}");
    println!(
        "  storage:   {}",
        match &config.storage.database_url {
            Some(_) => "PostgreSQL (database_url)".to_owned(),
            None => format!("SQLite in {}", data_dir.display()),
        }
    );
    println!("  policy:    {policy_source} ({policy_version})");
    println!(
        "  connectors: {}",
        if connectors.is_empty() {
            "none (add [connectors.NAME] to writ.toml)".to_owned()
        } else {
            connectors.join(", ")
        }
    );
    if let Some(key) = first_admin_key {
        println!();
        println!("First start: created the admin user. Its API key is shown only this once:");
        println!("  WRIT_TOKEN={}", key.as_str());
        println!();
    }
    println!("  API:       {public_url}/v1/actions  (OpenAPI: {public_url}/openapi.json)");
    println!("  MCP:       {public_url}/mcp  (Streamable HTTP; an agent's delegated token)");
    println!("  console:   {public_url}/console");
    println!("  health:    {public_url}/healthz  {public_url}/readyz  {public_url}/metrics");
    use std::io::Write;
    std::io::stdout().flush()?;
    tracing::info!(listen = %local, "writ serve started");

    let shutdown = gw.shutdown().clone();
    let app = writ_http::router(gw);
    let limits = writ_http::server::ServerLimits::from_config(&config.server);
    writ_http::server::serve(listener, app, limits, async move {
        stop_signal().await;
        tracing::info!("stopping: finishing the requests in flight");
        shutdown.cancel();
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM (what a service manager or `docker stop` sends).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server gracefully");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
