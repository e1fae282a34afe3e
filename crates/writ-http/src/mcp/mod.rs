//! Writ as an MCP server: `/mcp` over Streamable HTTP, a thin layer over [`writ_gateway::pipeline`].
//!
//! Every connector operation the caller's grant covers is a tool (an upstream MCP tool's
//! definition as its server listed it; otherwise the operation's description and its argument
//! schema as `inputSchema`), named as its connector says (`<connector>.<operation>`, or an MCP
//! upstream's `tool_names`: `<upstream>_<tool>` by default), plus
//! `writ.action_status` to ask about an action that was pending. A tool call is an action: it
//! goes through the same pipeline as `POST /v1/actions` (grant, policy, approval, credential
//! injection, audit), so a denial comes back as a tool error whose text gives the policy and its
//! reason, in words the model can act on. `_meta.intent`, `_meta.rationale` and
//! `_meta.idempotency_key` of a `tools/call` become the action's intent, rationale and
//! idempotency key; without them they are empty.
//!
//! A call that needs approval waits (up to `max_wait_secs`, with progress notifications when the
//! client sent a progress token) and then answers "pending"; a client that declared the tasks
//! extension (`io.modelcontextprotocol/tasks`) instead gets a task at once, whose id is the action
//! id: `tasks/get` reports it working (and what it waits for) until the action is final, then
//! completed with the same result a direct call would have had. Every session hears
//! `notifications/tools/list_changed` when an upstream's tools, the policy bundle or a grant
//! change. Upstream MCP tools' results come back as the upstream sent them; every result carries
//! its action (`action_id`, `status`) in `_meta["writ/action"]`. An unknown tool is JSON-RPC
//! -32602.
//!
//! Before the MCP layer sees a request: a browser `Origin` other than the server's own host is
//! refused (403, DNS-rebinding protection), then the bearer credential is checked the way the
//! HTTP API checks it: a delegated token, or an agent API key with a `Writ-Grant: <grant id>`
//! header. Without one the answer is 401 with `WWW-Authenticate` naming the RFC 9728 protected
//! resource metadata, served at `/.well-known/oauth-protected-resource`.

//!
//! Files: `guard.rs` checks each request before rmcp sees it (origin, credential, the session's
//! owner); `wire.rs` reads each POST as one JSON-RPC message (parse errors, batches) and keeps
//! SSE priming events from revisions that do not define them; `tools.rs` is the MCP server itself
//! (tools, calls, tasks); `names.rs` maps MCP tool names to actions; `answers.rs` turns actions
//! into MCP results and tasks.

mod answers;
mod guard;
mod names;
mod tools;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use writ_gateway::Gateway;

use guard::{Guarded, SessionOwners, allowed_hosts, guard};
use tools::WritMcp;

/// What an MCP client is told at initialization (also by `writ mcp-stdio`).
pub const INSTRUCTIONS: &str = "Each tool is an action on a real system, governed by Writ: your \
    grant and the organisation's policies decide whether it runs, some actions wait for a \
    person's approval, and every call is recorded. Put why you act in _meta.intent and \
    _meta.rationale. When a call is denied, the text says which policy and why: change the \
    request or ask a person; do not retry it unchanged. When a call is pending approval, call \
    writ.action_status with its action_id later.";
/// The tool that answers for an action submitted earlier.
const STATUS_TOOL: &str = "writ.action_status";
/// The header that names the grant when the bearer is an agent API key.
const GRANT_HEADER: &str = "writ-grant";
/// The longest a tool call waits for an approval before answering "pending"; `[limits]
/// max_wait_secs` lowers it.
const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting tool call reports progress, when the client asked for it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `/mcp` (Streamable HTTP: POST, GET for the server's stream, DELETE to end a session) and the
/// protected resource metadata that tells a client where to get a token.
pub fn router(gw: Arc<Gateway>) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(gw.public_url()))
        .with_max_request_body_bytes(gw.limits().max_body_bytes)
        .with_cancellation_token(gw.shutdown().child_token());
    let server = WritMcp { gw: gw.clone() };
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let guarded = Guarded {
        gw: gw.clone(),
        sessions: Arc::new(SessionOwners::default()),
    };
    let mcp = Router::new()
        .route(
            "/mcp",
            post_service(service.clone())
                .get_service(service.clone())
                .delete_service(service),
        )
        .layer(middleware::from_fn_with_state(guarded, guard));
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .with_state(gw)
        .merge(mcp)
}

/// The RFC 9728 document: which resource this is and which authorization server issues tokens.
async fn resource_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(json!({
        "resource": format!("{}/mcp", gw.public_url()),
        "authorization_servers": [gw.public_url()],
        "bearer_methods_supported": ["header"],
        "resource_name": "Writ",
    }))
    .into_response()
}
