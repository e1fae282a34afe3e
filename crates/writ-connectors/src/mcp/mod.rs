//! The MCP upstream connector: the tools of an existing MCP server as governed operations.
//!
//! Writ is the MCP *client* here. An upstream is declared in `writ.toml` as a stdio command (with
//! arguments and environment) or a Streamable HTTP URL (with headers). Writ connects in the
//! background, lists the server's tools, and offers each as the operation `<upstream>.<tool>`
//! with its input schema and its definition as listed (for Writ's `/mcp`, which names it by the
//! connector's `tool_names`: `<upstream>_<tool>`, the upstream's own name, or `<upstream>.<tool>`); the tool's annotations (`readOnlyHint`, `destructiveHint`,
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

mod config;
mod connection;
pub mod http_client;

pub use config::{
    CredentialSetting, CredentialSource, McpConnectorConfig, ResourceConfig, Setting, ToolNames,
};

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, JsonObject, Tool};
use rmcp::{Peer, RoleClient, ServiceError};
use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http::ECHOED;
use crate::scrub::Scrubber;
use crate::{Call, Connector, ConnectorError, OperationInfo, Outcome, ResourceRef, ToolHints};
use connection::supervise;

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
                        definition: match serde_json::to_value(&tool) {
                            Ok(Value::Object(o)) => Some(Arc::new(o)),
                            _ => None,
                        },
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

    fn tool_name(&self, operation: &str) -> String {
        self.shared
            .config
            .tool_names
            .name(&self.shared.name, operation)
    }

    fn operation_of_tool(&self, tool: &str) -> Option<String> {
        let shared = &self.shared;
        let operation = shared.config.tool_names.tool(&shared.name, tool)?;
        shared
            .read()
            .tools
            .contains_key(operation)
            .then(|| operation.to_owned())
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
