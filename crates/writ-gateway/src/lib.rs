//! The Writ gateway core: the server's state and rules between agents and the systems they act
//! on, with no HTTP types (the faces — HTTP API, MCP server, console — are `writ-http`).
//!
//! [`admin`] administers users, agents, keys and grants for every face, with one vocabulary of
//! admin events; [`pipeline`] is the governed action pipeline (grant → policy → deny, approval or execute →
//! respond, every step committed with its audit entry); [`gateway`] holds the shared state and
//! background work; [`config`] reads `writ.toml`; [`error`] is the one error every face maps to
//! its protocol; [`oidc_sign_in`] signs people in with an OpenID Connect issuer; [`ocsf`] maps
//! audit entries to OCSF events; [`metrics`] and [`ratelimit`] count and bound requests;
//! [`examples`] is the built-in policy bundle; [`auth`] says who a credential stands for, and
//! holds the token exchange, the grant check with its spend, and console passwords over the
//! identity rows `writ-store` keeps; [`views`] are the read models every face shows, and
//! [`reads`] is what a face may read of the store (the gateway's fields are private).
//! [`assemble`] builds a gateway from its configuration (`Gateway::from_config`); `tool_names`
//! refuses a configuration in which two connectors would offer the same MCP tool name.

pub mod admin;
pub mod assemble;
pub mod auth;
pub mod config;
pub mod error;
pub mod examples;
pub mod gateway;
pub mod metrics;
pub mod ocsf;
pub mod oidc_sign_in;
pub mod pipeline;
pub mod ratelimit;
pub mod reads;
mod tool_names;
pub mod views;

pub use config::{Config, ConfigError, ConnectorConfig};
pub use error::{Error, ErrorKind};
pub use examples::{EXAMPLE_POLICY_FILES, write_example_policies};
pub use gateway::Gateway;
