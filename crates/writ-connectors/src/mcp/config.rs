//! The `[connectors.<name>] kind = "mcp"` configuration, and its checks.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::header::HeaderName;
use serde::Deserialize;
use serde_json::{Map, Value};
use writ_vault::Secret;

use super::{McpConnector, valid_tool_name};
use crate::ConnectorError;

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
    /// How MCP clients of Writ see the tools' names (the policy action is always
    /// `<upstream>.<tool>`).
    #[serde(default)]
    pub tool_names: ToolNames,
}

/// `tool_names`: the names under which Writ's `/mcp` offers an upstream's tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolNames {
    /// `<upstream>_<tool>`: distinct across upstreams, and within the tool-name rule of LLM APIs
    /// (`^[a-zA-Z0-9_-]{1,64}$`) as long as it is at most 64 characters.
    #[default]
    Prefixed,
    /// The upstream's own names, unchanged (what a client written for that server calls). A name
    /// that two connectors offer is offered by neither.
    Upstream,
    /// `<upstream>.<tool>`, the form of Writ's own connectors; several LLM APIs refuse the dot.
    Dotted,
}

impl ToolNames {
    /// The MCP name of `tool` of upstream `upstream`.
    pub fn name(self, upstream: &str, tool: &str) -> String {
        match self {
            ToolNames::Prefixed => format!("{upstream}_{tool}"),
            ToolNames::Upstream => tool.to_owned(),
            ToolNames::Dotted => format!("{upstream}.{tool}"),
        }
    }

    /// The upstream tool MCP name `name` stands for, if it has this form.
    pub fn tool<'a>(self, upstream: &str, name: &'a str) -> Option<&'a str> {
        match self {
            ToolNames::Prefixed => name.strip_prefix(upstream)?.strip_prefix('_'),
            ToolNames::Upstream => Some(name),
            ToolNames::Dotted => name.strip_prefix(upstream)?.strip_prefix('.'),
        }
    }
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
}
