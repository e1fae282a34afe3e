//! The MCP upstream connector: the tools of an existing MCP server as governed operations.
//!
//! Writ is the MCP *client* here. An upstream is declared in `writ.toml` as a stdio command (with
//! arguments and environment) or a Streamable HTTP URL (with headers). Writ connects in the
//! background, lists the server's tools, and offers each as the operation `<upstream>.<tool>`
//! with its input schema; the tool's annotations (`readOnlyHint`, `destructiveHint`,
//! `idempotentHint`, `openWorldHint`, with the specification's defaults when absent) become
//! [`ToolHints`], which the gateway puts in the policy context. A call goes to the upstream only
//! after the pipeline allowed it.
//!
//! Credentials: environment variables and headers may name a vault credential, resolved at
//! connection time through a [`CredentialSource`]; the agent never sees them, any echo of them (in
//! any form the scrubber knows) in a result, an error, a tool's definition or a line of stderr is
//! replaced by `[redacted]`. A stdio server starts with an
//! empty environment plus `PATH`, `HOME`, `LANG` and `TMPDIR` and what is declared, so Writ's own
//! secrets (such as `WRIT_MASTER_KEY`) never reach it.
//!
//! Failures: the connection is supervised. When it drops (a stdio server crashed or exited, an
//! HTTP server went away) or cannot be made, Writ retries with exponential backoff (0.5 s doubling
//! to 30 s; reset after a minute of health). While it is down a call fails at once with a clear
//! error saying so and when the next attempt is; a call that takes longer than `timeout_ms` is
//! cancelled upstream and fails with a timeout. Each is recorded by the gateway as the action's
//! failure. When the server announces `notifications/tools/list_changed`, the tools are listed
//! again and [`Connector::changes`] ticks, so the gateway can tell its own MCP clients.

pub mod http_client;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use writ_vault::Secret;

use crate::http::ECHOED;
use crate::scrub::{Scrubber, Sent};
use crate::{Call, Connector, ConnectorError, OperationInfo, Outcome, ResourceRef, ToolHints};

/// `[connectors.<name>]` with `kind = "mcp"`: exactly one of `command` and `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConnectorConfig {
    /// A stdio server: the program to start (looked up on `PATH`).
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment besides `PATH`, `HOME`, `LANG`, `TMPDIR`: literal values or
    /// `{ credential = "name" }` from the vault.
    #[serde(default)]
    pub env: BTreeMap<String, Setting>,
    /// A Streamable HTTP server: its endpoint URL (`http://host:port/mcp`).
    #[serde(default)]
    pub url: Option<String>,
    /// Headers sent with every HTTP request: literal values or
    /// `{ credential = "name", prefix = "Bearer " }` from the vault.
    #[serde(default)]
    pub headers: BTreeMap<String, Setting>,
    /// Longest a tool call may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest connecting (starting the process, initializing, listing tools) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest result accepted, in bytes of JSON.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// The policy resource every tool call touches; `McpServer::"<name>"` by default.
    #[serde(default)]
    pub resource: Option<ResourceConfig>,
    /// Only these tools are offered (all the server lists, by default).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    30_000
}
fn default_max_response_bytes() -> usize {
    1 << 20
}

/// A value of an environment variable or header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Literal(String),
    Credential(CredentialSetting),
}

/// `{ credential = "name", prefix = "Bearer " }`: the credential's current shared version,
/// after an optional prefix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSetting {
    pub credential: String,
    #[serde(default)]
    pub prefix: String,
}

/// `{ type = "McpServer", id = "files", attributes = { environment = "production" } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// Where the connector gets the credentials its configuration names.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The current shared version of credential `name`, and its reference `name@version`.
    async fn shared(&self, name: &str) -> Result<(Secret, String), String>;
}

/// The tools of one upstream MCP server as operations.
pub struct McpConnector {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    name: String,
    config: McpConnectorConfig,
    resource: ResourceConfig,
    credentials: Arc<dyn CredentialSource>,
    state: RwLock<State>,
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    tools: Arc<BTreeMap<String, UpstreamTool>>,
    connection: Option<Connection>,
    /// Why the upstream is not connected, and when Writ tries again.
    down: Option<(String, Option<Instant>)>,
    /// The last lines the stdio server wrote to stderr (scrubbed), for the status.
    stderr: VecDeque<String>,
    connects: u64,
    /// The stdio server's process id.
    pid: Option<u32>,
}

#[derive(Clone)]
struct Connection {
    peer: Peer<RoleClient>,
    /// The credentials it was made with: references, and what finds them in an answer.
    references: Option<String>,
    scrubber: Arc<Scrubber>,
    since: Instant,
    /// Cancelled when a call finds the transport broken: the supervisor reconnects.
    broken: CancellationToken,
}

struct UpstreamTool {
    info: OperationInfo,
    validator: Option<jsonschema::Validator>,
    /// `sha256:<hex>` of the tool as the server listed it.
    definition: String,
}

/// Tool names Writ can offer as `<upstream>.<tool>` (and grants can name).
fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl McpConnector {
    /// Checks the configuration (nothing is started).
    pub fn check(name: &str, config: &McpConnectorConfig) -> Result<(), ConnectorError> {
        let bad = |why: String| ConnectorError::Config(format!("connector {name}: {why}"));
        match (&config.command, &config.url) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "give either `command` (stdio) or `url` (HTTP), not both".into(),
                ));
            }
            (None, None) => {
                return Err(bad(
                    "give `command` (a stdio MCP server) or `url` (a Streamable HTTP MCP server)"
                        .into(),
                ));
            }
            (Some(c), None) if c.trim().is_empty() => return Err(bad("`command` is empty".into())),
            (Some(_), None) if !config.headers.is_empty() => {
                return Err(bad(
                    "`headers` are for an HTTP server; a stdio server takes `env`".into(),
                ));
            }
            (None, Some(u)) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(bad(format!(
                        "`url` {u:?} must start with http:// or https://"
                    )));
                }
                if !config.env.is_empty() || !config.args.is_empty() {
                    return Err(bad(
                        "`env` and `args` are for a stdio server; an HTTP server takes `headers`"
                            .into(),
                    ));
                }
                for h in config.headers.keys() {
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| bad(format!("header name {h:?} is not valid")))?;
                }
            }
            _ => {}
        }
        for key in config.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(bad(format!(
                    "environment variable name {key:?} is not valid"
                )));
            }
        }
        if config.timeout_ms == 0 || config.connect_timeout_ms == 0 {
            return Err(bad("timeouts must be positive".into()));
        }
        if let Some(tools) = &config.tools
            && let Some(t) = tools.iter().find(|t| !valid_tool_name(t))
        {
            return Err(bad(format!(
                "tool {t:?}: tool names are letters, digits, '_' and '-'"
            )));
        }
        Ok(())
    }

    /// Checks the configuration and starts connecting in the background; the tools appear when
    /// the upstream answered. Must be called within a Tokio runtime.
    pub fn start(
        name: &str,
        config: McpConnectorConfig,
        credentials: Arc<dyn CredentialSource>,
    ) -> Result<McpConnector, ConnectorError> {
        Self::check(name, &config)?;
        let resource = config.resource.clone().unwrap_or_else(|| ResourceConfig {
            kind: "McpServer".into(),
            id: name.to_owned(),
            attributes: Map::new(),
        });
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            config,
            resource,
            credentials,
            state: RwLock::new(State {
                down: Some(("connecting".into(), None)),
                ..State::default()
            }),
            changes,
        });
        let stop = CancellationToken::new();
        tokio::spawn(supervise(shared.clone(), stop.clone()));
        Ok(McpConnector { shared, stop })
    }

    /// Waits until the upstream is connected and its tools listed, up to `limit`.
    pub async fn ready(&self, limit: Duration) -> bool {
        let mut rx = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.shared.read().connection.is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Stops the connection and the stdio server.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for McpConnector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
    fn tick(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// What finds the current connection's credentials (nothing, when not connected).
    fn scrubber(&self) -> Arc<Scrubber> {
        self.read()
            .connection
            .as_ref()
            .map_or_else(|| Arc::new(Scrubber::none()), |c| c.scrubber.clone())
    }

    /// The tools as operations, keeping only the offered ones with usable names. An echo of
    /// the connection's credentials in a tool's definition is scrubbed before anyone sees it.
    fn set_tools(&self, tools: Vec<Tool>, scrubber: &Scrubber) {
        let mut out = BTreeMap::new();
        for tool in tools {
            let Some(tool) = scrubbed_tool(tool, scrubber, &self.name) else {
                continue;
            };
            let name = tool.name.to_string();
            let definition = match serde_json::to_vec(&tool) {
                Ok(bytes) => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
                Err(_) => continue,
            };
            if !valid_tool_name(&name) {
                tracing::warn!(upstream = %self.name, tool = %name, "tool name not offered: only letters, digits, '_' and '-'");
                continue;
            }
            if let Some(only) = &self.config.tools
                && !only.contains(&name)
            {
                continue;
            }
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match jsonschema::validator_for(&schema) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(upstream = %self.name, tool = %name, error = %e, "the tool's input schema does not compile; its arguments are checked by the upstream only");
                    None
                }
            };
            let defaults = ToolHints::default();
            let hints = tool.annotations.as_ref().map_or(defaults, |a| ToolHints {
                read_only: a.read_only_hint.unwrap_or(defaults.read_only),
                destructive: a.destructive_hint.unwrap_or(defaults.destructive),
                idempotent: a.idempotent_hint.unwrap_or(defaults.idempotent),
                open_world: a.open_world_hint.unwrap_or(defaults.open_world),
            });
            let description = tool
                .description
                .as_deref()
                .or(tool.title.as_deref())
                .unwrap_or_default()
                .to_owned();
            out.insert(
                name.clone(),
                UpstreamTool {
                    info: OperationInfo {
                        name,
                        description,
                        args_schema: schema,
                        credential: None,
                        hints: Some(hints),
                    },
                    validator,
                    definition,
                },
            );
        }
        self.write().tools = Arc::new(out);
        self.tick();
    }

    fn tool_names(&self) -> Vec<String> {
        self.read().tools.keys().cloned().collect()
    }
}

/// Keeps the upstream connected: connect, wait for the connection to end, back off, again.
async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = connect(&shared) => r,
        };
        let why = match outcome {
            Ok((service, session_stop)) => {
                let since = Instant::now();
                tracing::info!(upstream = %shared.name, tools = shared.read().tools.len(), "connected to the upstream MCP server");
                let cancel = service.cancellation_token();
                // Ends when the server closes the connection, when a call found the transport
                // broken (an HTTP server that went away), when a credential it was made with
                // was rotated in the vault, or when Writ stops.
                let mut rotated = false;
                let ended = tokio::select! {
                    _ = stop.cancelled() => None,
                    _ = session_stop.cancelled() => Some(()),
                    _ = service.waiting() => Some(()),
                    _ = credentials_rotated(&shared) => { rotated = true; Some(()) }
                };
                session_stop.cancel();
                if ended.is_none() {
                    cancel.cancel();
                    shared.write().connection = None;
                    return;
                }
                if since.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                let last = shared.read().stderr.back().cloned();
                if rotated {
                    // Not a failure: reconnect at once with the new version.
                    tracing::info!(upstream = %shared.name, "a credential of the upstream was rotated; reconnecting");
                    session_stop.cancel();
                    cancel.cancel();
                    shared.write().connection = None;
                    failures = 0;
                    continue;
                }
                match last {
                    Some(line) => {
                        format!(
                            "the connection to the upstream ended (its last stderr line: {line})"
                        )
                    }
                    None => "the connection to the upstream ended".to_owned(),
                }
            }
            Err(why) => why,
        };
        let backoff = Duration::from_millis(500)
            .saturating_mul(1u32 << failures.min(6))
            .min(Duration::from_secs(30));
        failures = failures.saturating_add(1);
        tracing::warn!(upstream = %shared.name, error = %why, retry_in_ms = backoff.as_millis() as u64, "the upstream MCP server is not connected");
        {
            let mut state = shared.write();
            state.connection = None;
            state.down = Some((why, Some(Instant::now() + backoff)));
        }
        shared.tick();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// How often the credentials of a connection are compared with the vault's current versions.
const ROTATION_CHECK: Duration = Duration::from_secs(5);

/// Returns when a credential the current connection was made with has a new current version in
/// the vault (checked every [`ROTATION_CHECK`]); never, for a connection without credentials.
/// A vault that cannot be read keeps the connection as it is.
async fn credentials_rotated(shared: &Shared) {
    let names: Vec<String> = shared
        .config
        .env
        .values()
        .chain(shared.config.headers.values())
        .filter_map(|s| match s {
            Setting::Credential(c) => Some(c.credential.clone()),
            Setting::Literal(_) => None,
        })
        .collect();
    if names.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(ROTATION_CHECK).await;
        let in_use = shared
            .read()
            .connection
            .as_ref()
            .and_then(|c| c.references.clone());
        let mut current = Vec::with_capacity(names.len());
        for name in &names {
            match shared.credentials.shared(name).await {
                Ok((_, reference)) => current.push(reference),
                Err(_) => break,
            }
        }
        if current.len() == names.len() && in_use.as_deref() != Some(current.join(", ").as_str()) {
            return;
        }
    }
}

/// Receives the upstream's notifications.
struct Handler {
    shared: Weak<Shared>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("writ", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let limit = Duration::from_millis(shared.config.connect_timeout_ms);
        match tokio::time::timeout(limit, context.peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                tracing::info!(upstream = %shared.name, "the upstream's tools changed");
                shared.set_tools(tools, &shared.scrubber());
            }
            Ok(Err(e)) => {
                let error = shared.scrubber().text(&e.to_string());
                tracing::warn!(upstream = %shared.name, error = %error, "listing the upstream's changed tools failed")
            }
            Err(_) => {
                tracing::warn!(upstream = %shared.name, "listing the upstream's changed tools timed out")
            }
        }
    }
}

/// Resolved settings: the values, the credential references used, and each credential with the
/// prefix it is sent after (to scrub).
async fn resolve(
    shared: &Shared,
    settings: &BTreeMap<String, Setting>,
    references: &mut Vec<String>,
    secrets: &mut Vec<(String, Secret)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(settings.len());
    for (key, setting) in settings {
        let value = match setting {
            Setting::Literal(v) => v.clone(),
            Setting::Credential(c) => {
                let (secret, reference) = shared.credentials.shared(&c.credential).await?;
                let text = std::str::from_utf8(secret.expose())
                    .map_err(|_| {
                        format!("credential {reference} is not text; it cannot be used in {key}")
                    })?
                    .to_owned();
                references.push(reference);
                let sent = Sent::Prefixed {
                    prefix: &c.prefix,
                    secret: text.as_bytes(),
                };
                let value = String::from_utf8_lossy(&sent.wire()).into_owned();
                secrets.push((c.prefix.clone(), secret));
                value
            }
        };
        out.push((key.clone(), value));
    }
    Ok(out)
}

/// One connection attempt: start or reach the server, initialize, list the tools. The returned
/// token stops the helper tasks of this connection.
async fn connect(
    shared: &Arc<Shared>,
) -> Result<(RunningService<RoleClient, Handler>, CancellationToken), String> {
    let config = &shared.config;
    let limit = Duration::from_millis(config.connect_timeout_ms);
    let mut references = Vec::new();
    let mut secrets = Vec::new();
    let handler = Handler {
        shared: Arc::downgrade(shared),
    };
    let session_stop = CancellationToken::new();
    let settings = if config.command.is_some() {
        &config.env
    } else {
        &config.headers
    };
    let values = resolve(shared, settings, &mut references, &mut secrets).await?;
    let sent: Vec<Sent<'_>> = secrets
        .iter()
        .map(|(prefix, secret)| Sent::Prefixed {
            prefix,
            secret: secret.expose(),
        })
        .collect();
    let scrubber = Arc::new(Scrubber::new(&sent)?);
    drop(sent);
    drop(secrets);
    // What a previous process wrote is not this one's.
    shared.write().stderr.clear();
    let started = match (&config.command, &config.url) {
        (Some(command), _) => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(&config.args).env_clear().kill_on_drop(true);
            for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
                if let Some(v) = std::env::var_os(var) {
                    cmd.env(var, v);
                }
            }
            cmd.envs(values);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {command:?}: {e}"))?;
            shared.write().pid = transport.id();
            if let Some(stderr) = stderr {
                let weak = Arc::downgrade(shared);
                let scrubber = scrubber.clone();
                let stop = session_stop.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    loop {
                        let line = tokio::select! {
                            _ = stop.cancelled() => return,
                            l = lines.next_line() => l,
                        };
                        let Ok(Some(line)) = line else { return };
                        let Some(shared) = weak.upgrade() else { return };
                        let line: String = scrubber.text(&line).chars().take(300).collect();
                        tracing::debug!(upstream = %shared.name, line = %line, "upstream stderr");
                        let mut state = shared.write();
                        if state.stderr.len() == 20 {
                            state.stderr.pop_front();
                        }
                        state.stderr.push_back(line);
                    }
                });
            }
            tokio::time::timeout(limit, handler.serve(transport)).await
        }
        (None, Some(url)) => {
            let mut map = HashMap::new();
            for (k, v) in values {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("header name {k:?} is not valid"))?;
                let mut value = HeaderValue::from_str(&v)
                    .map_err(|_| format!("the value of header {k} is not a valid header value"))?;
                value.set_sensitive(true);
                map.insert(name, value);
            }
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(limit)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
            let transport = StreamableHttpClientTransport::with_client(
                http_client::Http(client, " (the upstream refused the credential)"),
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(map),
            );
            tokio::time::timeout(limit, handler.serve(transport)).await
        }
        (None, None) => return Err("neither command nor url".into()),
    };
    let service = match started {
        Err(_) => {
            session_stop.cancel();
            return Err(format!("the upstream did not initialize within {limit:?}"));
        }
        Ok(Err(e)) => {
            session_stop.cancel();
            let last = shared.read().stderr.back().cloned();
            let why = scrubber.text(&e.to_string());
            return Err(match last {
                Some(line) => format!("initialization failed: {why} (stderr: {line})"),
                None => format!("initialization failed: {why}"),
            });
        }
        Ok(Ok(s)) => s,
    };
    let tools = match tokio::time::timeout(limit, service.peer().list_all_tools()).await {
        Ok(Ok(tools)) => tools,
        Ok(Err(e)) => {
            session_stop.cancel();
            return Err(format!(
                "listing the tools failed: {}",
                scrubber.text(&e.to_string())
            ));
        }
        Err(_) => {
            session_stop.cancel();
            return Err(format!("listing the tools took longer than {limit:?}"));
        }
    };
    {
        let mut state = shared.write();
        state.connection = Some(Connection {
            peer: service.peer().clone(),
            references: (!references.is_empty()).then(|| references.join(", ")),
            scrubber: scrubber.clone(),
            since: Instant::now(),
            broken: session_stop.clone(),
        });
        state.down = None;
        state.connects += 1;
    }
    shared.set_tools(tools, &scrubber);
    Ok((service, session_stop))
}

#[async_trait]
impl Connector for McpConnector {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn operations(&self) -> Vec<OperationInfo> {
        self.shared
            .read()
            .tools
            .values()
            .map(|t| t.info.clone())
            .collect()
    }

    fn operation(&self, name: &str) -> Option<OperationInfo> {
        self.shared.read().tools.get(name).map(|t| t.info.clone())
    }

    fn validate(&self, operation: &str, args: &Value) -> Result<(), ConnectorError> {
        let tools = self.shared.read().tools.clone();
        let Some(tool) = tools.get(operation) else {
            let offered = self.shared.tool_names();
            return Err(ConnectorError::UnknownOperation(if offered.is_empty() {
                format!("{operation} (the upstream offers no tools yet: it is not connected)")
            } else {
                format!("{operation} (the upstream offers: {})", offered.join(", "))
            }));
        };
        if !args.is_object() {
            return Err(ConnectorError::InvalidArguments(vec![
                "the arguments of a tool are a JSON object".into(),
            ]));
        }
        if let Some(v) = &tool.validator {
            let errors: Vec<String> = v
                .iter_errors(args)
                .take(10)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{at}: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(ConnectorError::InvalidArguments(errors));
            }
        }
        Ok(())
    }

    fn resource(&self, _operation: &str, _args: &Value) -> Result<ResourceRef, ConnectorError> {
        let r = &self.shared.resource;
        Ok(ResourceRef {
            entity_type: r.kind.clone(),
            id: r.id.clone(),
            attributes: r.attributes.clone(),
        })
    }

    async fn execute(&self, call: Call<'_>) -> Result<Outcome, ConnectorError> {
        let shared = &self.shared;
        let connection = {
            let state = shared.read();
            match (&state.connection, &state.down) {
                (Some(c), _) => c.clone(),
                (None, Some((why, retry))) => {
                    let when = retry
                        .map(|at| {
                            format!(
                                "; Writ tries again in {} ms",
                                at.saturating_duration_since(Instant::now()).as_millis()
                            )
                        })
                        .unwrap_or_default();
                    return Err(ConnectorError::Transport(format!(
                        "upstream MCP server {} is not connected: {why}{when}",
                        shared.name
                    )));
                }
                (None, None) => {
                    return Err(ConnectorError::Transport(format!(
                        "upstream MCP server {} is not connected",
                        shared.name
                    )));
                }
            }
        };
        let arguments: JsonObject = match call.args {
            Value::Object(m) => m.clone(),
            _ => {
                return Err(ConnectorError::InvalidArguments(vec![
                    "the arguments of a tool are a JSON object".into(),
                ]));
            }
        };
        let params =
            CallToolRequestParams::new(call.operation.to_owned()).with_arguments(arguments);
        let limit = Duration::from_millis(shared.config.timeout_ms);
        let started = Instant::now();
        // Dropping the request on timeout sends `notifications/cancelled` upstream.
        let answer = tokio::time::timeout(limit, connection.peer.call_tool(params)).await;
        let elapsed = started.elapsed();
        let scrubber = &connection.scrubber;
        let result = match answer {
            Err(_) => return Err(ConnectorError::Timeout(limit)),
            Ok(Err(ServiceError::McpError(e))) => {
                // The upstream refused the call (unknown tool, invalid params): a failure the
                // agent should see, in the upstream's words.
                let message = scrubber.text(&e.message);
                let redacted = if message == e.message {
                    Vec::new()
                } else {
                    vec![ECHOED.to_owned()]
                };
                return Ok(Outcome {
                    success: false,
                    status: None,
                    body: json!({"error": {"code": e.code.0, "message": message}}),
                    redacted,
                    elapsed,
                    credential: connection.references.clone(),
                });
            }
            Ok(Err(e)) => {
                connection.broken.cancel();
                return Err(ConnectorError::Transport(format!(
                    "upstream MCP server {}: {}",
                    shared.name,
                    scrubber.text(&e.to_string())
                )));
            }
            Ok(Ok(result)) => result,
        };
        let success = !result.is_error.unwrap_or(false);
        let raw = serde_json::to_vec(&result)
            .map_err(|e| ConnectorError::Transport(format!("the result is not JSON: {e}")))?;
        if raw.len() > shared.config.max_response_bytes {
            return Err(ConnectorError::ResponseTooLarge {
                limit: shared.config.max_response_bytes,
            });
        }
        let mut redacted = Vec::new();
        let (body, echoed) = scrubber.response(&raw);
        if echoed {
            redacted.push(ECHOED.to_owned());
        }
        Ok(Outcome {
            success,
            status: None,
            body,
            redacted,
            elapsed,
            credential: connection.references.clone(),
        })
    }

    fn definition(&self, operation: &str) -> Option<String> {
        self.shared
            .read()
            .tools
            .get(operation)
            .map(|t| t.definition.clone())
    }

    fn hints(&self, operation: &str) -> Option<ToolHints> {
        self.shared
            .read()
            .tools
            .get(operation)
            .and_then(|t| t.info.hints)
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.shared.changes.subscribe())
    }

    fn status(&self) -> Value {
        let state = self.shared.read();
        match (&state.connection, &state.down) {
            (Some(c), _) => json!({
                "state": "ready",
                "kind": "mcp",
                "tools": state.tools.len(),
                "connected_for_secs": c.since.elapsed().as_secs(),
                "connects": state.connects,
                "pid": state.pid,
            }),
            (None, down) => json!({
                "state": "down",
                "kind": "mcp",
                "error": down.as_ref().map(|(why, _)| why.clone()),
                "retry_in_ms": down.as_ref().and_then(|(_, at)| *at).map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64),
                "connects": state.connects,
            }),
        }
    }
}

/// `tool` with every echo of the connection's credentials replaced (in its name, description,
/// schemas and annotations); `None` if the scrubbed definition is no longer a tool.
fn scrubbed_tool(tool: Tool, scrubber: &Scrubber, upstream: &str) -> Option<Tool> {
    let mut value = serde_json::to_value(&tool).ok()?;
    if !scrubber.value(&mut value) {
        return Some(tool);
    }
    tracing::warn!(upstream = %upstream, "a tool's definition echoed a credential of the connection; it was scrubbed");
    serde_json::from_value(value).ok()
}
