//! The MCP server: one per session over the shared gateway. Tools are the operations the
//! caller's grant covers; a call is an action through the pipeline; a pending approval is a task.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult,
    GetTaskParams, GetTaskResult, Implementation, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use writ_core::ActionId;
use writ_gateway::Gateway;
use writ_gateway::pipeline::{self, ActionRequest, Caller};
use writ_store::{ActionRow, ApprovalRow};

use super::answers::*;
use super::names;
use super::{INSTRUCTIONS, MAX_APPROVAL_WAIT, PROGRESS_EVERY, STATUS_TOOL};

/// The MCP server: one per session, all sharing the gateway.
#[derive(Clone)]
pub(super) struct WritMcp {
    pub gw: Arc<Gateway>,
}

/// The caller the guard authenticated for this HTTP request.
pub(super) fn request_caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))
}

pub(super) fn internal(e: writ_gateway::Error) -> ErrorData {
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
        let stop = self.gw.shutdown().clone();
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
            .reads()
            .grant(&caller.grant)
            .await
            .map_err(|e| internal(e.into()))?;
        let patterns = grant.map(|g| g.grant.spec.actions).unwrap_or_default();
        let mut tools = Vec::new();
        for (tool_name, connector, op) in names::offered(self.gw.connectors()) {
            // Grants and policy speak of actions, `<connector>.<operation>`, whatever the name.
            let action = format!("{connector}.{}", op.name);
            let granted = patterns
                .iter()
                .any(|p| writ_identity::grant::action_matches(p, &action));
            if !granted || caller.token_allows(&action).is_err() {
                continue;
            }
            // An upstream MCP tool as its server defined it (title, output schema, annotations,
            // icons, `_meta`), under the name Writ offers it by.
            if let Some(definition) = op.definition {
                let mut definition = (*definition).clone();
                definition.insert("name".into(), Value::String(tool_name.clone()));
                match serde_json::from_value::<Tool>(Value::Object(definition)) {
                    Ok(tool) => {
                        tools.push(tool);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(tool = %tool_name, error = %e, "an upstream tool's definition could not be passed on; offering its name, description and schema");
                    }
                }
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
        let (connector, operation) = names::resolve(&self.gw, &request.name)?;
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
            connector,
            operation,
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
            let wait = MAX_APPROVAL_WAIT.min(Duration::from_secs(self.gw.limits().max_wait_secs));
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
                        .reads()
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
                .reads()
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
            .reads()
            .action(&id)
            .await
            .map_err(|e| internal(e.into()))?
            .filter(|a| a.agent == caller.agent.as_str())
            .ok_or_else(not_found)?;
        let approval = self
            .gw
            .reads()
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
            .reads()
            .action(&id)
            .await
            .map_err(|e| internal(e.into()))?;
        let Some(action) = action.filter(|a| a.agent == caller.agent.as_str()) else {
            return Ok(not_found());
        };
        let approval = self
            .gw
            .reads()
            .approval_for_action(&action.id)
            .await
            .map_err(|e| internal(e.into()))?;
        Ok(answer(&action, approval.as_ref()))
    }
}
