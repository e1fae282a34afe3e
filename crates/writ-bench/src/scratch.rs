//! A gateway for a bench: a scratch data directory (and PostgreSQL schema) removed afterwards,
//! and a gateway assembled from a configuration exactly as `writ serve` assembles it
//! (`Gateway::from_config`), serving its faces on a loopback port. This is the only module that
//! names the faces (`writ_http::router`, `writ_http::server::serve`) or reaches into
//! the gateway's database.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use writ_gateway::Config;
use writ_gateway::gateway::Gateway;
use writ_store::Database;

use crate::Global;

/// Runs `bench` in a scratch data directory (`<data dir>/bench-<name>-<pid>`) with, when the
/// database URL is PostgreSQL, a private schema; both are removed afterwards, whatever happened.
/// `bench` gets the directory, the database URL to use and the backend's name.
pub async fn in_scratch<T, Fut>(
    global: &Global,
    name: &str,
    bench: impl FnOnce(PathBuf, Option<String>, &'static str) -> Fut,
) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    writ_store::ensure_data_dir(&global.data_dir)?;
    let dir = global
        .data_dir
        .join(format!("bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let schema = format!("writ_bench_{name}_{}", std::process::id());
    let (database_url, backend) = match global.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => (
            Some(writ_store::postgres::url_with_fresh_schema(url, &schema).await?),
            "postgres",
        ),
        Some(url) => (Some(url.to_owned()), "sqlite"),
        None => (None, "sqlite"),
    };
    let result = bench(dir.clone(), database_url, backend).await;
    if let Some(url) = global.database_url.as_deref()
        && backend == "postgres"
        && let Err(e) = writ_store::postgres::drop_schema(url, &schema).await
    {
        eprintln!("warning: could not drop the bench schema {schema}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A gateway serving on loopback.
pub struct Served {
    pub gateway: Arc<Gateway>,
    /// Its database, where the benches set up users, agents, grants and credentials, and read
    /// the log's size.
    pub db: Arc<dyn Database>,
    /// Where it answers (`http://127.0.0.1:PORT`).
    pub url: String,
}

/// Assembles the gateway `toml` describes, with its data in `dir` and on `database_url`, and
/// serves its API on a loopback port until the process ends.
pub async fn serve_scratch(
    toml: &str,
    dir: &Path,
    database_url: Option<String>,
) -> anyhow::Result<Served> {
    let mut config = Config::from_toml(toml, "the bench configuration", std::iter::empty())?;
    config.storage.data_dir = dir.to_path_buf();
    config.storage.database_url = database_url;
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let assembled = Gateway::from_config(&config).await?;
    // The policy bundle is the built-in one: there is no directory to watch.
    drop(assembled.policy_watcher);
    let router = writ_http::router(assembled.gateway.clone());
    let limits = writ_http::server::ServerLimits::from_config(&config.server);
    tokio::spawn(writ_http::server::serve(
        assembled.listener,
        router,
        limits,
        std::future::pending(),
    ));
    Ok(Served {
        db: assembled.database,
        gateway: assembled.gateway,
        url: assembled.public_url,
    })
}
