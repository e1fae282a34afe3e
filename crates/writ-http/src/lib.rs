//! Writ's faces: the HTTP server and everything it serves over the gateway core
//! ([`writ_gateway`]). A face translates: it authenticates the request, calls the core, and maps
//! the core's answer and its [`writ_gateway::Error`] to its own protocol. It decides nothing.
//!
//! - [`api`]: the HTTP API (`/v1/…`, `/oauth/token`, discovery documents, health, metrics,
//!   OpenAPI 3.1 at `/openapi.json`) and [`router`], which mounts every face;
//! - [`mcp`]: the MCP server at `/mcp` (Streamable HTTP, rmcp);
//! - [`console`]: the web console at `/console`;
//! - [`server`]: the accept loop, with its connection limit and header, body and idle timeouts;
//! - [`error`]: the HTTP form of the core's errors.

pub mod api;
pub mod console;
pub mod error;
pub mod mcp;
pub mod server;

pub use api::router;
pub use error::ApiError;
