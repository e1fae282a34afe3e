//! `writ serve`: the gateway. With no configuration at all it starts a working gateway: SQLite in
//! `./writ-data`, keys generated on first start (mode 0600), the example policy bundle, and an
//! admin API key printed once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use writ_connectors::Connector;
use writ_gateway::config::ConnectorConfig;
use writ_gateway::gateway::{Gateway, GatewayParts};
use writ_gateway::{Config, EXAMPLE_POLICY_FILES};
use writ_identity::apikey::KeyKind;
use writ_identity::{TokenIssuer, UserId};
use writ_policy::{Bundle, PolicyEngine, SourceFile};
use writ_store::identity::{KeySubject, UserRecord};
use writ_vault::{MasterKey, MasterKeySource};

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

/// A gateway built from its configuration, bound to its address but not yet serving.
pub struct Built {
    pub gateway: Arc<Gateway>,
    pub listener: tokio::net::TcpListener,
    pub public_url: String,
    /// Where the policy bundle came from, for the banner.
    policy_source: String,
    /// The admin API key created on first start (shown once).
    first_admin: Option<zeroize::Zeroizing<String>>,
    /// Keeps the policy directory watched for as long as the gateway runs.
    _watcher: Option<writ_policy::BundleWatcher>,
}

/// Everything `writ serve` does before it serves: the database, the keys, the policy, the
/// connectors, the listener, the first admin, recovery of interrupted actions, and the
/// background work (on the current runtime).
pub async fn build(config: &Config) -> anyhow::Result<Built> {
    let data_dir = config.storage.data_dir.clone();
    writ_store::ensure_data_dir(&data_dir)?;
    let db = writ_store::open_database(config.storage.database_url.as_deref(), &data_dir)
        .await
        .context("opening the database")?;

    // Keys: generated on first start, mode 0600, never printed.
    if !crate::keys::signing_key_path(&data_dir).exists() {
        crate::keys::generate(&data_dir, &config.audit.origin, false)?;
    }
    let checkpoint_signer = crate::keys::load_signer(&data_dir)?;
    let token_key = crate::identity::token_signing_key(&data_dir)?;
    let master_source = match config.vault.master_key.as_str() {
        "generate" | "env" => MasterKeySource::resolve(None, &data_dir),
        other => match other.strip_prefix("file:") {
            Some(p) => MasterKeySource::resolve(Some(std::path::Path::new(p)), &data_dir),
            None => anyhow::bail!("vault.master_key must be generate, env or file:<path>"),
        },
    };
    let master_key =
        Arc::new(MasterKey::load(&master_source).context("loading the vault master key")?);

    // Policy: the configured bundle (watched), or the example bundle built into the binary.
    let (policy, policy_source) = match &config.policy.dir {
        Some(dir) => {
            let engine =
                Arc::new(PolicyEngine::load(dir).with_context(|| {
                    format!("the policy bundle in {} is invalid", dir.display())
                })?);
            (engine, dir.display().to_string())
        }
        None => {
            let files = EXAMPLE_POLICY_FILES
                .iter()
                .map(|(path, text)| SourceFile {
                    path: PathBuf::from(path),
                    text: (*text).to_owned(),
                })
                .collect();
            let bundle = Bundle::from_sources("examples/policies", files)
                .context("the built-in example bundle is invalid")?;
            (
                Arc::new(PolicyEngine::new(bundle)),
                "the built-in example bundle (set [policy] dir to use your own)".to_owned(),
            )
        }
    };
    // A candidate bundle in shadow mode: evaluated beside the live one, never in effect.
    if let Some(dir) = &config.policy.shadow_dir {
        let candidate = Bundle::load(dir)
            .with_context(|| format!("the shadow bundle in {} is invalid", dir.display()))?;
        policy.set_candidate(Some(candidate));
    }
    let watcher = if config.policy.dir.is_some() && config.policy.watch {
        Some(policy.watch(Duration::from_millis(300))?)
    } else {
        None
    };

    let mut connectors: BTreeMap<String, Arc<dyn Connector>> = BTreeMap::new();
    let mut max_timeout = Duration::from_secs(1);
    for (name, c) in &config.connectors {
        match c {
            ConnectorConfig::Http(http) => {
                max_timeout = max_timeout.max(Duration::from_millis(http.timeout_ms));
                for op in http.operations.values() {
                    if let Some(ms) = op.timeout_ms {
                        max_timeout = max_timeout.max(Duration::from_millis(ms));
                    }
                }
                connectors.insert(
                    name.clone(),
                    Arc::new(writ_connectors::HttpConnector::new(name, http.clone())?),
                );
            }
            ConnectorConfig::Mcp(mcp) => {
                max_timeout = max_timeout.max(Duration::from_millis(mcp.timeout_ms));
                let source = Arc::new(writ_gateway::pipeline::VaultCredentials {
                    db: db.clone(),
                    master_key: master_key.clone(),
                });
                connectors.insert(
                    name.clone(),
                    Arc::new(writ_connectors::mcp::McpConnector::start(
                        name,
                        mcp.clone(),
                        source,
                    )?),
                );
            }
        }
    }

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let local = listener.local_addr()?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let mut issuer = TokenIssuer::new(public_url.clone(), "writ", token_key);
    issuer.ttl_secs = i64::try_from(config.identity.token_ttl_secs).unwrap_or(900);

    // First start: an admin, whose key is printed once.
    let first_admin = if db.users().await?.is_empty() {
        let admin = UserId::new("admin")?;
        db.add_user(&UserRecord {
            id: admin.clone(),
            display_name: "Administrator".into(),
            admin: true,
            groups: Vec::new(),
            created_at: writ_core::Timestamp::now(),
        })
        .await?;
        let key = writ_gateway::admin::Admin::local(db.as_ref())
            .issue_key(KeySubject::User(admin), KeyKind::User)
            .await?;
        Some(key.key)
    } else {
        None
    };

    // OIDC issuers: their keys are fetched once at start. An issuer that cannot be reached is
    // logged and its ID tokens are refused (fail closed) until the next start.
    // Console sign-in with an issuer also needs its endpoints (configured, or from its discovery
    // document); without them, or without its keys, its button is not shown.
    let mut oidc = Vec::new();
    let mut oidc_sign_in = Vec::new();
    for c in &config.identity.oidc {
        let verifier = match crate::token::oidc_client(c) {
            Ok(client) => client.verifier().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match verifier {
            Ok(v) => {
                if let Some(console) = &c.console {
                    match writ_gateway::oidc_sign_in::OidcSignIn::new(c, console, &v, |var| {
                        std::env::var(var).ok()
                    })
                    .await
                    {
                        Ok(sign_in) => oidc_sign_in.push(sign_in),
                        Err(e) => {
                            tracing::error!(issuer = %c.issuer, error = %e, "console sign-in with this OIDC issuer is unavailable")
                        }
                    }
                }
                oidc.push(v);
            }
            Err(e) => {
                tracing::error!(issuer = %c.issuer, error = %e, "cannot fetch the OIDC issuer's keys; its ID tokens will be refused")
            }
        }
    }
    let gw = Gateway::new(GatewayParts {
        db: db.clone(),
        policy,
        connectors,
        master_key,
        issuer,
        checkpoint_signer,
        oidc,
        oidc_sign_in,
        passwords: config.identity.passwords,
        limits: config.limits.clone(),
        public_url: public_url.clone(),
        allowed_origins: config.server.allowed_origins.clone(),
        max_connector_timeout: max_timeout,
    });
    // Actions a previous process left executing are settled before anything else runs.
    writ_gateway::pipeline::recover_interrupted(&gw)
        .await
        .map_err(|e| anyhow::anyhow!("recovering interrupted actions: {}", e.message))?;
    writ_gateway::pipeline::spawn_background(
        &gw,
        Duration::from_secs(config.audit.checkpoint_interval_secs),
    );
    Ok(Built {
        gateway: gw,
        listener,
        public_url,
        policy_source,
        first_admin,
        _watcher: watcher,
    })
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let Built {
        gateway: gw,
        listener,
        public_url,
        policy_source,
        first_admin,
        _watcher,
    } = build(&config).await?;
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
    println!("  policy:    {policy_source} ({})", gw.policy.version());
    println!(
        "  connectors: {}",
        if gw.connectors.is_empty() {
            "none (add [connectors.NAME] to writ.toml)".to_owned()
        } else {
            gw.connectors.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    if let Some(key) = first_admin {
        println!();
        println!("First start: created the admin user. Its API key is shown only this once:");
        println!("  WRIT_TOKEN={}", key.as_str());
        println!();
    }
    println!("  API:       {public_url}/v1/actions  (OpenAPI: {public_url}/openapi.json)");
    println!("  console:   {public_url}/console");
    println!("  health:    {public_url}/healthz  {public_url}/readyz  {public_url}/metrics");
    use std::io::Write;
    std::io::stdout().flush()?;
    tracing::info!(listen = %local, "writ serve started");

    let shutdown = gw.shutdown.clone();
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
