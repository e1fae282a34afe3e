//! The Writ gateway: the server that stands between agents and the systems they act on.
//!
//! [`pipeline`] is the governed action pipeline (authenticate → grant → policy → deny, approval or
//! execute → respond, every step committed with its audit entry); [`api`] is the HTTP API over
//! it; [`mcp`] serves the same pipeline to MCP clients at `/mcp`; [`gateway`] holds the shared
//! state and background work; [`config`] reads `writ.toml`; [`console`] is the web console at
//! `/console` over the same functions as the API; [`ocsf`] maps audit entries to OCSF events;
//! [`server`] is the accept loop with its connection limit and header, body and idle timeouts.

pub mod api;
pub mod config;
pub mod console;
pub mod examples;
pub mod gateway;
pub mod mcp;
pub mod metrics;
pub mod ocsf;
pub mod pipeline;
pub mod ratelimit;
pub mod server;

pub use config::{Config, ConfigError, ConnectorConfig};
pub use examples::{EXAMPLE_POLICY_FILES, write_example_policies};
