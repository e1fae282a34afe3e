//! Connectors: how Writ acts on the world once an action is allowed.
//!
//! A [`Connector`] declares its operations (name, JSON Schema of arguments, the policy resource an
//! action touches, the vault credential it needs) and executes them with a credential injected at
//! call time. The agent never sees the credential, and a connector never lets it into a response,
//! a log line or an error. This crate is not the pipeline: it does not authenticate, evaluate
//! policy or write the audit log; the gateway calls it only after all of that has allowed the call.
//!
//! [`HttpConnector`]: operations declared in configuration (method, URL template, argument
//! schema, credential injection, response limit and redaction). [`mcp::McpConnector`]: the tools
//! of an upstream MCP server (a stdio command or a Streamable HTTP URL) as operations. Both take
//! an echoed credential out of what the upstream answers, in every form in which it was sent
//! (`scrub.rs`), before anyone sees it.
//!
//! Modules: `http` (the HTTP connector), `template` (URL templates that fill one path segment per
//! argument, redaction by JSON pointer), `mcp` (the MCP upstream connector), `scrub` (the
//! `Scrubber` both connectors share).

mod http;
pub mod mcp;
mod scrub;
mod template;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use writ_vault::Secret;

pub use http::{
    BodyMode, CredentialSpec, HttpConnector, HttpConnectorConfig, HttpMethod, HttpOperationConfig,
    Injection, ResourceSpec,
};
pub use template::redact_pointers;

/// What a connector says about one of its operations: enough for the gateway to validate
/// arguments, map the action to a policy resource and pick the credential, before executing.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationInfo {
    /// `merge_pull_request`; the action name is `<connector>.<operation>`.
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub args_schema: Value,
    /// The vault credential the operation runs with, by name, if any.
    pub credential: Option<String>,
    /// What the operation says of itself (an MCP tool's annotations), for policy.
    pub hints: Option<ToolHints>,
    /// An upstream MCP tool's definition as the server listed it (title, output schema,
    /// annotations, icons, `_meta`; credentials scrubbed), for Writ's own `tools/list` to pass on
    /// unchanged; `None` for operations defined by configuration. Shared, as every call clones
    /// its operation.
    pub definition: Option<std::sync::Arc<serde_json::Map<String, Value>>>,
}

/// An MCP tool's behaviour hints, with the specification's defaults where the server says
/// nothing: not read-only, destructive, not idempotent, open world. They are the upstream
/// server's claims, not facts Writ verified; policy decides how far to trust them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ToolHints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Default for ToolHints {
    fn default() -> Self {
        ToolHints {
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
        }
    }
}

/// The policy resource an action touches, such as `Repo::"acme/api"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRef {
    pub entity_type: String,
    pub id: String,
    /// The entity's attributes, for policies that read them (`resource.visibility`).
    pub attributes: serde_json::Map<String, Value>,
}

/// One call to execute: arguments already validated and allowed.
pub struct Call<'a> {
    pub operation: &'a str,
    pub args: &'a Value,
    /// The decrypted credential, when the operation needs one.
    pub credential: Option<&'a Secret>,
}

/// What the connector got back, already size-limited and redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the upstream reported success (HTTP 2xx for the HTTP connector).
    pub success: bool,
    /// The upstream status code, where the protocol has one.
    pub status: Option<u16>,
    /// The response: parsed JSON when it was JSON, otherwise a JSON string.
    pub body: Value,
    /// JSON pointers that were redacted.
    pub redacted: Vec<String>,
    /// How long the upstream took.
    pub elapsed: Duration,
    /// The credentials (`name@version`) the connection to the upstream was made with, for a
    /// connector that authenticates once per connection rather than per call.
    pub credential: Option<String>,
}

/// Why a call was refused or failed. Messages never contain credentials or response bodies.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    #[error("invalid arguments: {}", .0.join("; "))]
    InvalidArguments(Vec<String>),
    #[error("operation {operation:?} needs credential {credential:?}, and none was given")]
    MissingCredential {
        operation: String,
        credential: String,
    },
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the upstream response exceeds the limit of {limit} bytes")]
    ResponseTooLarge { limit: usize },
    #[error("the upstream could not be reached: {0}")]
    Transport(String),
    #[error("invalid connector configuration: {0}")]
    Config(String),
}

/// A system Writ can act on.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector's name, the first half of its action names.
    fn name(&self) -> &str;

    /// Every operation it offers.
    fn operations(&self) -> Vec<OperationInfo>;

    /// One operation, by name (every call looks one up: override when `operations` is costly).
    fn operation(&self, name: &str) -> Option<OperationInfo> {
        self.operations().into_iter().find(|o| o.name == name)
    }

    /// The name MCP clients of Writ (`/mcp`) call the operation by: `<connector>.<operation>`
    /// unless the connector is configured otherwise (an MCP upstream's `tool_names`). The action
    /// policy sees is `<connector>.<operation>` whatever this name is.
    fn tool_name(&self, operation: &str) -> String {
        format!("{}.{operation}", self.name())
    }

    /// The operation MCP tool `tool` names, if this connector offers it ([`Connector::tool_name`]
    /// read backwards).
    fn operation_of_tool(&self, tool: &str) -> Option<String> {
        let operation = tool.strip_prefix(self.name())?.strip_prefix('.')?;
        self.operation(operation).map(|o| o.name)
    }

    /// Checks arguments against the operation's schema, before policy sees them.
    fn validate(&self, operation: &str, args: &Value) -> Result<(), ConnectorError>;

    /// The policy resource a call touches.
    fn resource(&self, operation: &str, args: &Value) -> Result<ResourceRef, ConnectorError>;

    /// Performs the call. Only the pipeline calls this, and only for an allowed action.
    async fn execute(&self, call: Call<'_>) -> Result<Outcome, ConnectorError>;

    /// What the operation says of itself (an MCP tool's annotations), for the policy context.
    fn hints(&self, _operation: &str) -> Option<ToolHints> {
        None
    }

    /// A digest of the operation's definition as the upstream declared it (`sha256:<hex>` of an
    /// MCP tool's name, description, schemas and annotations), for connectors whose operations
    /// the upstream can redefine; `None` for operations fixed by configuration.
    fn definition(&self, _operation: &str) -> Option<String> {
        None
    }

    /// Bumped whenever the set of operations changes (an upstream MCP server's tools changed);
    /// `None` for a connector whose operations are fixed by configuration.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The connector's health, for `/readyz` and operators: `{"state": "ready"}` or why not.
    fn status(&self) -> Value {
        serde_json::json!({"state": "ready"})
    }
}
