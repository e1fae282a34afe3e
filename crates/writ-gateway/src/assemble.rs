//! A gateway assembled from its configuration: [`Gateway::from_config`] does everything a server
//! does before it serves — the database, the keys (generated on first start, mode 0600), the
//! vault's master key, the policy bundle (or the built-in examples) with its shadow and watcher,
//! the connectors, the listener, the token issuer, the first admin with its key, the OIDC issuers
//! and console sign-in, recovery of interrupted actions, and the background work. It serves
//! nothing: a face (the HTTP server) takes the [`Assembled`] gateway and its listener from here.
//!
//! [`keys`] holds the key files of the data directory; [`oidc_client`] is the JWKS client of a
//! configured OIDC issuer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use writ_connectors::Connector;
use writ_core::Timestamp;
use writ_identity::apikey::KeyKind;
use writ_identity::oidc::{OidcClient, OidcError, OidcVerifier};
use writ_identity::{TokenIssuer, UserId};
use writ_policy::{
    Bundle, BundleError, BundleVersion, BundleWatcher, PolicyEngine, SourceFile, WatchError,
};
use writ_store::identity::{KeySubject, UserRecord};
use writ_store::{Database, StoreError};
use writ_vault::{MasterKey, MasterKeySource, VaultError};
use zeroize::Zeroizing;

use crate::admin::Admin;
use crate::config::{ConnectorConfig, OidcIssuerConfig};
use crate::gateway::{Gateway, GatewayParts};
use crate::{Config, EXAMPLE_POLICY_FILES};

pub mod keys;

pub use keys::KeyFileError;

/// A gateway built from its configuration, bound to its address and running its background
/// work, but not yet serving requests.
pub struct Assembled {
    pub gateway: Arc<Gateway>,
    /// The gateway's database, for the host's own tools (the benchmarks' set-up and their log
    /// verification). The faces never get it: they read through `Gateway::reads`.
    pub database: Arc<dyn Database>,
    /// Bound to `[server] listen`; the server accepts on it.
    pub listener: tokio::net::TcpListener,
    /// The URL clients reach Writ at: `[server] public_url`, or `http://` and the bound address.
    pub public_url: String,
    /// Where the policy bundle came from, in words (for the start-up banner).
    pub policy_source: String,
    /// The version of the policy bundle in effect at start.
    pub policy_version: BundleVersion,
    /// The names of the configured connectors.
    pub connectors: Vec<String>,
    /// The admin API key created on first start, to be shown once; `None` on every later start.
    pub first_admin_key: Option<Zeroizing<String>>,
    /// Keeps the policy directory watched while it lives (`None` without `[policy] dir` or with
    /// `watch = false`): hold it for as long as the gateway serves.
    pub policy_watcher: Option<BundleWatcher>,
}

/// Why a gateway could not be assembled. Nothing was started; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    DataDir(StoreError),
    #[error("opening the database")]
    Database(#[source] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    #[error("vault.master_key must be generate, env or file:<path> (it is {0:?})")]
    MasterKeySource(String),
    #[error("loading the vault master key")]
    MasterKey(#[source] VaultError),
    #[error("the policy bundle in {} is invalid", dir.display())]
    Policy {
        dir: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("the built-in example bundle is invalid")]
    ExampleBundle(#[source] BundleError),
    #[error("the shadow bundle in {} is invalid", dir.display())]
    ShadowPolicy {
        dir: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Connector(#[from] writ_connectors::ConnectorError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the first admin user")]
    FirstAdmin(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("recovering interrupted actions")]
    Recovery(#[source] crate::Error),
}

impl Gateway {
    /// Assembles the gateway `config` describes, on the current tokio runtime: everything
    /// `writ serve` does before it serves. Actions a previous process left executing are
    /// settled before this returns; the background work (expiry, recovery, checkpoints every
    /// `[audit] checkpoint_interval_secs`) is running.
    pub async fn from_config(config: &Config) -> Result<Assembled, AssembleError> {
        let data_dir = config.storage.data_dir.as_path();
        writ_store::ensure_data_dir(data_dir).map_err(AssembleError::DataDir)?;
        let db = writ_store::open_database(config.storage.database_url.as_deref(), data_dir)
            .await
            .map_err(AssembleError::Database)?;

        // Keys: generated on first start, mode 0600, never printed.
        if !keys::signing_key_path(data_dir).exists() {
            keys::generate(data_dir, &config.audit.origin, false)?;
        }
        let checkpoint_signer = keys::load_signer(data_dir)?;
        let token_key = keys::token_signing_key(data_dir)?;
        let master_key = Arc::new(master_key(&config.vault.master_key, data_dir)?);

        let (policy, policy_source) = policy(config)?;
        let policy_watcher = if config.policy.dir.is_some() && config.policy.watch {
            Some(policy.watch(Duration::from_millis(300))?)
        } else {
            None
        };
        let (connectors, max_connector_timeout) = connectors(config, &db, &master_key)?;

        let addr = config.server.listen;
        let listen_error = |source| AssembleError::Listen { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        let public_url = config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        let mut issuer = TokenIssuer::new(public_url.clone(), "writ", token_key);
        issuer.ttl_secs = i64::try_from(config.identity.token_ttl_secs).unwrap_or(900);

        let first_admin_key = first_admin(db.as_ref())
            .await
            .map_err(AssembleError::FirstAdmin)?;
        let (oidc, oidc_sign_in) = oidc_issuers(config).await;

        let policy_version = policy.version();
        let connector_names = connectors.keys().cloned().collect();
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
            max_connector_timeout,
        });
        // Actions a previous process left executing are settled before anything else runs.
        crate::pipeline::recover_interrupted(&gw)
            .await
            .map_err(AssembleError::Recovery)?;
        crate::pipeline::spawn_background(
            &gw,
            Duration::from_secs(config.audit.checkpoint_interval_secs),
        );
        Ok(Assembled {
            gateway: gw,
            database: db,
            listener,
            public_url,
            policy_source,
            policy_version,
            connectors: connector_names,
            first_admin_key,
            policy_watcher,
        })
    }
}

/// The vault's master key from `[vault] master_key`: `generate` or `env` (`WRIT_MASTER_KEY`
/// when set, else `master.key` in the data directory, made on first use), or `file:<path>`.
fn master_key(setting: &str, data_dir: &Path) -> Result<MasterKey, AssembleError> {
    let source = match setting {
        "generate" | "env" => MasterKeySource::resolve(None, data_dir),
        other => match other.strip_prefix("file:") {
            Some(p) => MasterKeySource::resolve(Some(Path::new(p)), data_dir),
            None => return Err(AssembleError::MasterKeySource(other.to_owned())),
        },
    };
    MasterKey::load(&source).map_err(AssembleError::MasterKey)
}

/// The configured bundle, or the example bundle built into the binary, with the candidate
/// bundle in shadow mode when one is configured (evaluated beside the live one, never in
/// effect); and where it came from, in words.
fn policy(config: &Config) -> Result<(Arc<PolicyEngine>, String), AssembleError> {
    let (engine, source) = match &config.policy.dir {
        Some(dir) => {
            let engine = PolicyEngine::load(dir).map_err(|source| AssembleError::Policy {
                dir: dir.clone(),
                source,
            })?;
            (Arc::new(engine), dir.display().to_string())
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
                .map_err(AssembleError::ExampleBundle)?;
            (
                Arc::new(PolicyEngine::new(bundle)),
                "the built-in example bundle (set [policy] dir to use your own)".to_owned(),
            )
        }
    };
    if let Some(dir) = &config.policy.shadow_dir {
        let candidate = Bundle::load(dir).map_err(|source| AssembleError::ShadowPolicy {
            dir: dir.clone(),
            source,
        })?;
        engine.set_candidate(Some(candidate));
    }
    Ok((engine, source))
}

type Connectors = BTreeMap<String, Arc<dyn Connector>>;

/// The configured connectors (MCP ones start connecting in the background, with vault
/// credentials), and the longest time any of their calls may take.
fn connectors(
    config: &Config,
    db: &Arc<dyn Database>,
    master_key: &Arc<MasterKey>,
) -> Result<(Connectors, Duration), AssembleError> {
    let mut connectors = Connectors::new();
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
                let source = Arc::new(crate::pipeline::VaultCredentials {
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
    Ok((connectors, max_timeout))
}

/// On first start (no user at all), the `admin` user and its API key; `None` afterwards.
async fn first_admin(
    db: &dyn Database,
) -> Result<Option<Zeroizing<String>>, Box<dyn std::error::Error + Send + Sync>> {
    if !db.users().await?.is_empty() {
        return Ok(None);
    }
    let admin = UserId::new("admin")?;
    db.add_user(&UserRecord {
        id: admin.clone(),
        display_name: "Administrator".into(),
        admin: true,
        groups: Vec::new(),
        created_at: Timestamp::now(),
    })
    .await?;
    let issued = Admin::local(db)
        .issue_key(KeySubject::User(admin), KeyKind::User)
        .await?;
    Ok(Some(issued.key))
}

/// The verifiers of the configured OIDC issuers, their keys fetched once now, and the console
/// sign-in of those with a `console` table. An issuer that cannot be reached is logged and its
/// ID tokens are refused (fail closed) until the next start. Console sign-in also needs the
/// issuer's endpoints (configured, or from its discovery document); without them, or without
/// its keys, its button is not shown.
async fn oidc_issuers(
    config: &Config,
) -> (Vec<OidcVerifier>, Vec<crate::oidc_sign_in::OidcSignIn>) {
    let mut oidc = Vec::new();
    let mut oidc_sign_in = Vec::new();
    for c in &config.identity.oidc {
        let verifier = match oidc_client(c) {
            Ok(client) => client.verifier().await,
            Err(e) => Err(e),
        };
        match verifier {
            Ok(v) => {
                if let Some(console) = &c.console {
                    match crate::oidc_sign_in::OidcSignIn::new(c, console, &v, |var| {
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
    (oidc, oidc_sign_in)
}

/// The JWKS client of one `[[identity.oidc]]` issuer of `writ.toml` (its keys at `jwks_url`,
/// by default `<issuer>/.well-known/jwks.json`).
pub fn oidc_client(c: &OidcIssuerConfig) -> Result<OidcClient, OidcError> {
    let jwks_uri = c
        .jwks_url
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/jwks.json", c.issuer.trim_end_matches('/')));
    OidcClient::new(writ_identity::oidc::OidcIssuerConfig {
        issuer: c.issuer.clone(),
        audience: c.audience.clone(),
        jwks_uri,
        user_claim: c.user_claim.clone(),
        groups_claim: c.groups_claim.clone(),
        user_prefix: String::new(),
    })
}
