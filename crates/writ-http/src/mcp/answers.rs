//! Actions as MCP answers: tool results, tool errors and tasks.

use rmcp::model::{
    CallToolResult, ContentBlock, DetailedTask, JsonObject, MetaObject, ResultType, Task,
    TaskPayload, TaskStatus,
};
use serde_json::{Value, json};
use writ_store::{ActionRow, ActionState, ApprovalRow};

use super::STATUS_TOOL;

pub(super) fn object_schema(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

pub(super) fn tool_error(text: impl Into<String>, structured: Value) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(structured);
    r
}

/// A request the pipeline refused before it became an action (arguments, limits, connector).
pub(super) fn refused(e: &writ_gateway::Error) -> CallToolResult {
    tool_error(
        format!("Refused: {}", e.message),
        json!({"error": e.code, "message": e.message}),
    )
}

pub(super) fn strings(v: Option<&Value>) -> Vec<String> {
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
pub(super) fn action_task(action: &ActionRow, approval: Option<&ApprovalRow>) -> DetailedTask {
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
pub(super) fn upstream_tool_result(body: &Value) -> Option<CallToolResult> {
    if !body.get("content").is_some_and(Value::is_array) {
        return None;
    }
    serde_json::from_value(body.clone()).ok()
}

/// Writ's own key in a result's `_meta`: the action the answer is about (`action_id`, `status`).
pub(super) const META_KEY: &str = "writ/action";

/// `r` with the action's id and status under Writ's own `_meta` key; the rest of `_meta` (an
/// upstream's own keys) is kept.
fn with_action(mut r: CallToolResult, id: &str, status: &str) -> CallToolResult {
    // An upstream on an older revision sends no `resultType`; 2026-07-28 requires it (rmcp
    // leaves it out again for clients of older revisions).
    r.result_type.get_or_insert(ResultType::COMPLETE);
    r.meta
        .get_or_insert_with(MetaObject::new)
        .0
        .insert(META_KEY.into(), json!({"action_id": id, "status": status}));
    r
}

/// What the model is told about an action, by its state; Writ's data about the action in
/// `_meta` under [`META_KEY`].
pub(super) fn answer(action: &ActionRow, approval: Option<&ApprovalRow>) -> CallToolResult {
    with_action(
        state_answer(action, approval),
        action.id.as_str(),
        action.state.as_str(),
    )
}

/// An upstream MCP tool's result comes back as the upstream sent it (content, `isError`,
/// `structuredContent`, `_meta`); any other connector's answer is JSON text with Writ's
/// structured summary.
fn state_answer(action: &ActionRow, approval: Option<&ApprovalRow>) -> CallToolResult {
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
                return upstream;
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
                return upstream;
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
