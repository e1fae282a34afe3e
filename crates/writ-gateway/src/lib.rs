//! The Writ gateway: the server that stands between agents and the systems they act on.
//!
//! Today it holds the configuration (`writ.toml` with `WRIT_*` overrides, checked as a whole
//! before anything starts) and the example policy bundle built into the binary. The governed action pipeline, approvals and the HTTP API are being
//! built here (issue 6); they join the audit log (`writ-store`), policy (`writ-policy`), identity
//! (`writ-identity`), the vault (`writ-vault`) and connectors (`writ-connectors`).

pub mod api;
pub mod config;
pub mod examples;
pub mod gateway;
pub mod metrics;
pub mod pipeline;
pub mod ratelimit;

pub use config::{Config, ConfigError, ConnectorConfig};
pub use examples::{EXAMPLE_POLICY_FILES, write_example_policies};
