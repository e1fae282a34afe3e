//! Writ as an MCP server: `/mcp` over Streamable HTTP, a thin layer over [`writ_gateway::pipeline`].
//!
//! Every connector operation the caller's grant covers is a tool named `<connector>.<operation>`
//! (the operation's description, its argument schema as `inputSchema`), plus
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
//! change. Upstream MCP tools' annotations are passed on, and their results' content blocks come
//! back as the upstream sent them.
//!
//! Before the MCP layer sees a request: a browser `Origin` other than the server's own host is
//! refused (403, DNS-rebinding protection), then the bearer credential is checked the way the
//! HTTP API checks it: a delegated token, or an agent API key with a `Writ-Grant: <grant id>`
//! header. Without one the answer is 401 with `WWW-Authenticate` naming the RFC 9728 protected
//! resource metadata, served at `/.well-known/oauth-protected-resource`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Implementation, InitializeResult,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, Task, TaskPayload, TaskStatus, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use writ_core::ActionId;
use writ_store::{ActionRow, ActionState, ApprovalRow};

use writ_gateway::auth::{Who, caller};

use crate::api::extract::authenticate;
use writ_gateway::Gateway;
use writ_gateway::pipeline::{self, ActionRequest, Caller};

use crate::error::ApiError;

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
        .with_allowed_hosts(allowed_hosts(&gw.public_url))
        .with_max_request_body_bytes(gw.limits.max_body_bytes)
        .with_cancellation_token(gw.shutdown.child_token());
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
        "resource": format!("{}/mcp", gw.public_url),
        "authorization_servers": [gw.public_url],
        "bearer_methods_supported": ["header"],
        "resource_name": "Writ",
    }))
    .into_response()
}

/// The host part of a URL (`https://writ.example:8443/x` → `writ.example`), lowercased.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `Host` values rmcp accepts: the public URL's host and loopback (a local reverse proxy).
fn allowed_hosts(public_url: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if let Some(h) = url_host(public_url)
        && !hosts.contains(&h)
    {
        hosts.push(h);
    }
    hosts
}

/// A browser's `Origin` must be this server's own host or one of the configured
/// `allowed_origins` (compared as `scheme://host[:port]`, case-insensitively); clients that send
/// none are not browsers.
fn origin_allowed(public_url: &str, allowed: &[String], origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (url_host(origin), url_host(public_url)) {
        (Some(o), Some(own)) => o == own,
        _ => false,
    }
}

/// The header that carries a Streamable HTTP session's id.
const SESSION_HEADER: &str = "mcp-session-id";
/// At most this many sessions are remembered; beyond, the earliest opened are forgotten (their
/// requests are then refused as if the session were unknown).
const MAX_SESSIONS: usize = 100_000;

/// Who opened each MCP session: the agent, the user it acts for and the grant. A session id is a
/// bearer of nothing: a request with another principal's session id is answered as for an
/// unknown session, so a leaked id lets nobody else read its stream or end it.
#[derive(Default)]
struct SessionOwners {
    owners: std::sync::Mutex<SessionMap>,
}

#[derive(Default)]
struct SessionMap {
    by_id: std::collections::HashMap<String, (u64, Principal)>,
    order: std::collections::BTreeMap<u64, String>,
    next: u64,
}

type Principal = (String, String, String);

impl SessionOwners {
    fn principal(caller: &Caller) -> Principal {
        (
            caller.agent.to_string(),
            caller.user.to_string(),
            caller.grant.to_string(),
        )
    }

    /// Whether `caller` may use session `id`: it opened it. Unknown ids pass, for rmcp to refuse.
    fn may_use(&self, id: &str, caller: &Caller) -> bool {
        let map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        map.by_id
            .get(id)
            .is_none_or(|(_, owner)| *owner == Self::principal(caller))
    }

    fn opened(&self, id: String, caller: &Caller) {
        let mut map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.next;
        map.next += 1;
        if let Some((old, _)) = map.by_id.insert(id.clone(), (n, Self::principal(caller))) {
            map.order.remove(&old);
        }
        map.order.insert(n, id);
        while map.by_id.len() > MAX_SESSIONS {
            let Some((_, oldest)) = map.order.pop_first() else {
                break;
            };
            map.by_id.remove(&oldest);
        }
    }

    fn closed(&self, id: &str) {
        let mut map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = map.by_id.remove(id) {
            map.order.remove(&n);
        }
    }
}

/// What the guard needs: the gateway and the sessions' owners.
#[derive(Clone)]
struct Guarded {
    gw: Arc<Gateway>,
    sessions: Arc<SessionOwners>,
}

/// Origin check, then authentication, then the session's owner; the caller goes into the
/// request for the MCP handler.
async fn guard(State(guarded): State<Guarded>, mut req: Request, next: Next) -> Response {
    let gw = &guarded.gw;
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin_allowed(&gw.public_url, &gw.allowed_origins, origin)
    {
        gw.metrics.refused("origin");
        return ApiError::forbidden(format!(
            "requests from origin {:?} are refused: /mcp accepts browser requests only from {}",
            origin.to_str().unwrap_or("(not text)"),
            gw.public_url
        ))
        .into_response();
    }
    match mcp_caller(gw, req.headers()).await {
        Ok(caller) => {
            let session = req
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = &session
                && !guarded.sessions.may_use(id, &caller)
            {
                gw.metrics.refused("mcp_session_owner");
                return ApiError::not_found(
                    "session not found: no MCP session with this id was opened by this agent for this grant",
                )
                .into_response();
            }
            let delete = req.method() == axum::http::Method::DELETE;
            let opener = caller.clone();
            req.extensions_mut().insert(caller);
            let response = next.run(req).await;
            match (&session, response.headers().get(SESSION_HEADER)) {
                (Some(id), _) if delete && response.status().is_success() => {
                    guarded.sessions.closed(id)
                }
                (None, Some(new)) => {
                    if let Ok(new) = new.to_str() {
                        guarded.sessions.opened(new.to_owned(), &opener);
                    }
                }
                _ => {}
            }
            response
        }
        Err(e) if e.status == 401 => {
            let mut response = e.into_response();
            let challenge = format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\"",
                gw.public_url
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// A delegated token names its grant; an agent API key needs the `Writ-Grant` header.
async fn mcp_caller(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let who = authenticate(gw, headers).await?;
    let grant = match headers.get(GRANT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("the Writ-Grant header is not text"))?,
        ),
    };
    if matches!(who, Who::Agent(_)) && grant.is_none() {
        return Err(ApiError::bad_request(
            "with an agent API key, name the grant the agent acts under: `Writ-Grant: <grant id>`",
        ));
    }
    Ok(caller(gw, who, grant).await?)
}

/// The MCP server: one per session, all sharing the gateway.
#[derive(Clone)]
struct WritMcp {
    gw: Arc<Gateway>,
}

/// The caller the guard authenticated for this HTTP request.
fn request_caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))
}

fn internal(e: writ_gateway::Error) -> ErrorData {
    ErrorData::internal_error(e.message, None)
}

impl ServerHandler for WritMcp {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("writ", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// From now on, the session hears `notifications/tools/list_changed` whenever an upstream's
    /// tools, the policy bundle or a grant changed (bursts within 100 ms are sent once).
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let peer = context.peer;
        let mut changed = self.gw.subscribe_tools();
        let stop = self.gw.shutdown.clone();
        tokio::spawn(async move {
            // A session that ended without a change since is noticed here, not kept forever.
            let mut alive = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = alive.tick() => {
                        if peer.is_transport_closed() {
                            return;
                        }
                        continue;
                    }
                    r = changed.changed() => if r.is_err() { return },
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                changed.borrow_and_update();
                if peer.is_transport_closed() || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// `tasks/get`: the action's state; once it is final, its result exactly as a direct call
    /// would have answered (a denial or rejection is a completed task whose result is an error).
    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let caller = request_caller(&ctx)?;
        let (action, approval) = self.own_action(&caller, &request.task_id).await?;
        Ok(GetTaskResult::new(action_task(&action, approval.as_ref())))
    }

    /// `tasks/cancel`: an action waiting for approval is not withdrawn by its agent; it ends by
    /// an approver's decision or by expiring, and the answer says so.
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = request_caller(&ctx)?;
        let (action, approval) = self.own_action(&caller, &request.task_id).await?;
        if action.state.is_final() {
            return Ok(());
        }
        let until = approval
            .map(|a| format!(" (its approval expires at {})", a.expires))
            .unwrap_or_default();
        Err(ErrorData::invalid_request(
            format!(
                "action {} cannot be withdrawn by its agent: it ends when an approver decides, or when it expires{until}",
                action.id
            ),
            None,
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = request_caller(&ctx)?;
        let grant = self
            .gw
            .db
            .grant(&caller.grant)
            .await
            .map_err(|e| internal(e.into()))?;
        let patterns = grant.map(|g| g.grant.spec.actions).unwrap_or_default();
        let mut tools = Vec::new();
        for (name, connector) in &self.gw.connectors {
            for op in connector.operations() {
                let tool_name = format!("{name}.{}", op.name);
                if !patterns
                    .iter()
                    .any(|p| writ_identity::grant::action_matches(p, &tool_name))
                {
                    continue;
                }
                let schema = match op.args_schema {
                    Value::Object(o) => o,
                    _ => object_schema(json!({"type": "object"})),
                };
                let mut tool = Tool::new(tool_name, op.description, schema);
                if let Some(h) = op.hints {
                    tool = tool.with_annotations(
                        ToolAnnotations::new()
                            .read_only(h.read_only)
                            .destructive(h.destructive)
                            .idempotent(h.idempotent)
                            .open_world(h.open_world),
                    );
                }
                tools.push(tool);
            }
        }
        tools.push(Tool::new(
            STATUS_TOOL,
            "The current state of an action you submitted (one that was pending approval): its \
             result once approved and executed, or why it was rejected or expired.",
            object_schema(json!({
                "type": "object",
                "required": ["action_id"],
                "properties": {"action_id": {"type": "string", "description": "the action_id a tool call returned"}},
                "additionalProperties": false,
            })),
        ));
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = request_caller(&ctx)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        if request.name == STATUS_TOOL {
            return Ok(self.action_status(&caller, &args).await?.into());
        }
        let Some((connector, operation)) = request.name.split_once('.') else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; tools are named <connector>.<operation>",
                    request.name
                ),
                None,
            ));
        };
        // rmcp hands a request's `_meta` to the handler in the context; the params may keep it.
        let metas = [
            serde_json::to_value(&ctx.meta).unwrap_or(Value::Null),
            serde_json::to_value(&request.meta).unwrap_or(Value::Null),
        ];
        let text = |key: &str| {
            metas
                .iter()
                .find_map(|m| m.get(key).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let action = ActionRequest {
            connector: connector.to_owned(),
            operation: operation.to_owned(),
            args,
            intent: text("intent").unwrap_or_default(),
            rationale: text("rationale").unwrap_or_default(),
            idempotency_key: text("idempotency_key"),
            grant_id: None,
        };
        let outcome = match pipeline::submit(&self.gw, &caller, action).await {
            Ok(o) => o,
            Err(e) => return Ok(refused(&e).into()),
        };
        let mut action = outcome.action;
        let mut approval = outcome.approval;
        // A client that speaks the tasks extension gets a task for a call that waits for
        // approval, at once: the task is the action, and `tasks/get` follows it to its end.
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if tasks && !action.state.is_final() {
            let task = action_task(&action, approval.as_ref()).task;
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
        }
        if !action.state.is_final() {
            let wait = MAX_APPROVAL_WAIT.min(Duration::from_secs(self.gw.limits.max_wait_secs));
            // A client that sent a progress token hears, every second, that the call is still
            // waiting for its approval and how many approvals it has.
            let progress = ctx.meta.get_progress_token();
            let deadline = tokio::time::Instant::now() + wait;
            let mut step = 0u32;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let slice = match progress {
                    Some(_) => left.min(PROGRESS_EVERY),
                    None => left,
                };
                match pipeline::wait_for(&self.gw, &action.id, slice)
                    .await
                    .map_err(internal)?
                {
                    Some(a) => action = a,
                    None => break,
                }
                if action.state.is_final() || slice >= left {
                    break;
                }
                if let (Some(token), Some(a)) = (&progress, &approval) {
                    step += 1;
                    let approvals = self
                        .gw
                        .db
                        .decisions(&a.id)
                        .await
                        .map_err(|e| internal(e.into()))?
                        .iter()
                        .filter(|d| d.decision == writ_store::Decision::Approve)
                        .count();
                    let mut note = ProgressNotificationParam::new(token.clone(), f64::from(step));
                    note.message = Some(format!(
                        "waiting for approval {}: {approvals} of {} approvals from {}",
                        a.id,
                        a.quorum,
                        a.approvers.join(", ")
                    ));
                    // A client that went away does not stop the wait; the answer will tell.
                    let _ = ctx.peer.notify_progress(note).await;
                }
            }
            approval = self
                .gw
                .db
                .approval_for_action(&action.id)
                .await
                .map_err(|e| internal(e.into()))?;
        }
        Ok(answer(&action, approval.as_ref()).into())
    }
}

impl WritMcp {
    /// The caller's own action named by a task id, with its approval.
    async fn own_action(
        &self,
        caller: &Caller,
        task_id: &str,
    ) -> Result<(ActionRow, Option<ApprovalRow>), ErrorData> {
        let not_found =
            || ErrorData::invalid_params(format!("there is no task {task_id} of yours"), None);
        let id = ActionId::new(task_id).map_err(|_| not_found())?;
        let action = self
            .gw
            .db
            .action(&id)
            .await
            .map_err(|e| internal(e.into()))?
            .filter(|a| a.agent == caller.agent.as_str())
            .ok_or_else(not_found)?;
        let approval = self
            .gw
            .db
            .approval_for_action(&action.id)
            .await
            .map_err(|e| internal(e.into()))?;
        Ok((action, approval))
    }

    async fn action_status(
        &self,
        caller: &Caller,
        args: &Value,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(id) = args.get("action_id").and_then(Value::as_str) else {
            return Ok(tool_error(
                "writ.action_status needs {\"action_id\": \"...\"}, the action_id a tool call returned",
                json!({"error": "bad_request"}),
            ));
        };
        let not_found = || {
            tool_error(
                format!("there is no action {id} of yours"),
                json!({"error": "not_found", "action_id": id}),
            )
        };
        let Ok(id) = ActionId::new(id) else {
            return Ok(not_found());
        };
        let action = self
            .gw
            .db
            .action(&id)
            .await
            .map_err(|e| internal(e.into()))?;
        let Some(action) = action.filter(|a| a.agent == caller.agent.as_str()) else {
            return Ok(not_found());
        };
        let approval = self
            .gw
            .db
            .approval_for_action(&action.id)
            .await
            .map_err(|e| internal(e.into()))?;
        Ok(answer(&action, approval.as_ref()))
    }
}

fn object_schema(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

fn tool_error(text: impl Into<String>, structured: Value) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(structured);
    r
}

/// A request the pipeline refused before it became an action (arguments, limits, connector).
fn refused(e: &writ_gateway::Error) -> CallToolResult {
    tool_error(
        format!("Refused: {}", e.message),
        json!({"error": e.code, "message": e.message}),
    )
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An action as an MCP task (the task id is the action id): working while it waits for approval
/// or executes, completed with the call's result once it is final.
fn action_task(action: &ActionRow, approval: Option<&ApprovalRow>) -> DetailedTask {
    let mut task = Task::new(
        action.id.as_str(),
        TaskStatus::Working,
        action.created.to_string(),
        action.updated.to_string(),
    );
    task.poll_interval_ms = Some(1000);
    if !action.state.is_final() {
        let message = match approval {
            Some(a) if action.state == ActionState::PendingApproval => {
                task.ttl_ms = u64::try_from(
                    (a.expires.as_micros() - action.created.as_micros()).max(0) / 1000,
                )
                .ok();
                format!(
                    "waiting for approval {} by {} ({})",
                    a.id,
                    a.approvers.join(", "),
                    a.reason.as_deref().unwrap_or("a policy requires it")
                )
            }
            _ => "executing".to_owned(),
        };
        return DetailedTask::new(task.with_status_message(message), TaskPayload::Working);
    }
    let result = match serde_json::to_value(answer(action, approval)) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    };
    DetailedTask::new(
        task.with_status_message(action.state.as_str()),
        TaskPayload::Completed { result },
    )
}

/// The result of an upstream MCP tool, when `body` is one (its `content` blocks are valid).
fn upstream_tool_result(body: &Value) -> Option<CallToolResult> {
    if !body.get("content").is_some_and(Value::is_array) {
        return None;
    }
    serde_json::from_value(body.clone()).ok()
}

/// An upstream tool's answer as it came (`content` built into a success or an error by `make`),
/// with the action's id and status beside its own structured content.
fn passed_through(
    make: fn(Vec<ContentBlock>) -> CallToolResult,
    upstream: CallToolResult,
    id: &str,
    status: &str,
) -> CallToolResult {
    let mut r = make(upstream.content);
    r.structured_content = Some(json!({
        "action_id": id,
        "status": status,
        "result": upstream.structured_content,
    }));
    r
}

/// What the model is told about an action, by its state.
fn answer(action: &ActionRow, approval: Option<&ApprovalRow>) -> CallToolResult {
    let result = action.result.clone().unwrap_or(Value::Null);
    let verdict = result.get("verdict").cloned().unwrap_or(Value::Null);
    let id = action.id.as_str();
    let status = action.state.as_str();
    match action.state {
        ActionState::Succeeded => {
            let body = result
                .get("outcome")
                .and_then(|o| o.get("body"))
                .cloned()
                .unwrap_or(Value::Null);
            // An upstream MCP tool's own content blocks go back as they came (text, images,
            // resource links); any other connector's answer as JSON text.
            if let Some(upstream) = upstream_tool_result(&body) {
                return passed_through(CallToolResult::success, upstream, id, status);
            }
            let mut r = CallToolResult::success(vec![ContentBlock::text(body.to_string())]);
            r.structured_content = Some(json!({"action_id": id, "status": status, "result": body}));
            r
        }
        ActionState::Denied => {
            let policy_ids = strings(verdict.get("policy_ids"));
            let reasons = strings(verdict.get("reasons"));
            let by = if policy_ids.is_empty() {
                "Denied".to_owned()
            } else {
                format!("Denied by policy {}", policy_ids.join(", "))
            };
            let why = if reasons.is_empty() {
                "no policy permits this action".to_owned()
            } else {
                reasons.join("; ")
            };
            tool_error(
                format!(
                    "{by}: {why}. This action will not be allowed as it is: change the request, or ask a person."
                ),
                json!({
                    "action_id": id,
                    "status": status,
                    "verdict": verdict.get("verdict"),
                    "policy_ids": policy_ids,
                    "reasons": reasons,
                    "bundle_version": verdict.get("bundle_version"),
                }),
            )
        }
        ActionState::PendingApproval | ActionState::Executing => {
            let waiting = match approval {
                Some(a) if action.state == ActionState::PendingApproval => format!(
                    "is waiting for approval {} ({}) by {}",
                    a.id,
                    a.reason.as_deref().unwrap_or("a policy requires it"),
                    a.approvers.join(", ")
                ),
                _ => "is still executing".to_owned(),
            };
            let mut structured = json!({"action_id": id, "status": status});
            if let Some(a) = approval {
                structured["approval"] = json!({
                    "id": a.id,
                    "state": a.state.as_str(),
                    "approvers": a.approvers,
                    "quorum": a.quorum,
                    "reason": a.reason,
                    "expires_at": a.expires.to_string(),
                });
            }
            let mut r = CallToolResult::success(vec![ContentBlock::text(format!(
                "Action {id} {waiting}. It has not run yet. Call {STATUS_TOOL} with {{\"action_id\": \"{id}\"}} later to learn the outcome."
            ))]);
            r.structured_content = Some(structured);
            r
        }
        ActionState::Rejected | ActionState::Expired => {
            let what = if action.state == ActionState::Rejected {
                "was rejected by an approver"
            } else {
                "expired before it was approved"
            };
            tool_error(
                format!(
                    "Action {id} {what}; it did not run. Do not retry it unchanged; ask a person."
                ),
                json!({"action_id": id, "status": status, "approval": approval.map(|a| a.id.clone())}),
            )
        }
        ActionState::Failed | ActionState::OutcomeUnknown => {
            let error = match (result.get("error"), result.get("outcome")) {
                (Some(e), _) => e.as_str().map_or_else(|| e.to_string(), str::to_owned),
                (None, Some(o)) => format!(
                    "the upstream answered {}: {}",
                    o.get("status")
                        .map_or_else(|| "?".to_owned(), Value::to_string),
                    o.get("body").map_or_else(String::new, Value::to_string)
                ),
                (None, None) => "the action failed".to_owned(),
            };
            let upstream = result
                .get("outcome")
                .and_then(|o| o.get("body"))
                .and_then(upstream_tool_result);
            if let Some(upstream) = upstream.filter(|_| action.state == ActionState::Failed) {
                // The upstream tool reported an error (`isError`): its own words, for the model.
                return passed_through(CallToolResult::error, upstream, id, status);
            }
            let text = if action.state == ActionState::OutcomeUnknown {
                format!(
                    "Action {id}: whether it took effect is unknown ({error}). Check the system before trying again."
                )
            } else {
                format!("Action {id} failed: {error}")
            };
            tool_error(
                text,
                json!({"action_id": id, "status": status, "error": error, "result": result.get("outcome")}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        for (url, host) in [
            ("https://writ.example", Some("writ.example")),
            ("https://Writ.Example:8443/mcp", Some("writ.example")),
            ("http://127.0.0.1:9000", Some("127.0.0.1")),
            ("http://[::1]:9000", Some("::1")),
            ("https://user@evil.example/x", Some("evil.example")),
            ("null", Some("null")),
            ("https://", None),
        ] {
            assert_eq!(url_host(url).as_deref(), host, "{url}");
        }
    }

    #[test]
    fn only_the_own_origin_is_allowed() {
        let own = "https://writ.example";
        for (origin, allowed) in [
            ("https://writ.example", true),
            ("https://writ.example:443", true),
            ("https://evil.example", false),
            ("https://writ.example.evil.example", false),
            ("null", false),
        ] {
            assert_eq!(
                origin_allowed(own, &[], &HeaderValue::from_static(origin)),
                allowed,
                "{origin}"
            );
        }
    }

    #[test]
    fn configured_origins_are_allowed_exactly() {
        let own = "https://writ.example";
        let allowed = ["https://agents.example.com".to_owned()];
        for (origin, ok) in [
            ("https://agents.example.com", true),
            ("HTTPS://AGENTS.EXAMPLE.COM", true),
            ("http://agents.example.com", false),
            ("https://agents.example.com:8443", false),
            ("https://evil.example", false),
        ] {
            assert_eq!(
                origin_allowed(own, &allowed, &HeaderValue::from_static(origin)),
                ok,
                "{origin}"
            );
        }
    }
}
