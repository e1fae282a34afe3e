//! Step 1: an agent's request, through to its answer. Read top to bottom: admit, record what was
//! asked, the grant and policy, then deny, ask for approval, or record as executing and execute.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_policy::{ApprovalFacts, ApprovalRequirement, Explanation, ToolFacts, Verdict};
use writ_store::{ActionState, ApprovalRow, ApprovalState, Change};

use super::admit::{Admission, Admitted, admit};
use super::entries::{add, entry, evaluated_payload, responded, verdict_json};
use super::evaluate::{
    Subject, denied, grant_denial_payload, grant_verdict, policy_request, user_groups,
};
use super::record::{Committed, Draft};
use super::{ActionRequest, Caller, Outcome, execute};
use crate::error::Error;
use crate::gateway::Gateway;

/// Step 1: an agent's request, through to its answer.
pub async fn submit(
    gw: &Arc<Gateway>,
    caller: &Caller,
    req: ActionRequest,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let Admitted {
        connector,
        resource,
        hash,
    } = match admit(gw, caller, &req).await? {
        Admission::New(admitted) => admitted,
        Admission::Replayed(outcome) => return Ok(*outcome),
    };
    // An MCP tool's annotations and definition, as its server gave them when the call came:
    // the policy sees the annotations, and an approved action runs only if the definition is
    // still the same.
    let tool = super::evaluate::tool_facts(&*connector, &req.operation);
    let definition = connector.definition(&req.operation);
    let draft = Draft {
        gw,
        caller,
        req: &req,
        id: ActionId::generate(),
        now: Timestamp::now(),
        request: stored_request(caller, &req, &resource, definition.as_deref()),
        hash,
    };
    let mut entries = vec![requested(
        &draft,
        &resource,
        tool.as_ref(),
        definition.as_deref(),
    )?];

    // The grant: live, this agent's, covering this action, its arguments and its budget.
    let stored_grant =
        match &caller.stored_grant {
            Some(g) => g.clone(),
            None => gw.db.grant(&caller.grant).await?.ok_or_else(|| {
                Error::forbidden(format!("grant {} does not exist", caller.grant))
            })?,
        };
    let subject = Subject {
        connector: &req.connector,
        operation: &req.operation,
        resource: &resource,
        args: &req.args,
        intent: &req.intent,
        tool,
    };
    let action_name = subject.action_name();
    let attempt = subject.attempt(caller, &action_name);
    let grant_check = caller.token_allows(&action_name).and_then(|()| {
        stored_grant
            .grant
            .check(&attempt, draft.now, stored_grant.usage)
    });
    // Then policy. A candidate bundle in shadow mode is evaluated beside the live one; only the
    // live verdict takes effect, a disagreement is recorded with the evaluation.
    let mut shadow_note = None;
    let verdict = match &grant_check {
        Err(denial) => grant_verdict(denial, &gw.policy.version().to_string()),
        Ok(_) => {
            let groups = user_groups(gw, &caller.user)
                .await?
                .ok_or_else(|| Error::forbidden(format!("user {} does not exist", caller.user)))?;
            let request = policy_request(
                gw,
                caller,
                &subject,
                &stored_grant.grant,
                groups,
                ApprovalFacts::default(),
            );
            let (verdict, shadow) = gw.policy.evaluate_with_shadow(&request);
            if let Some(shadow) = shadow.filter(|s| s.disagrees) {
                shadow_note = Some(json!({
                    "candidate_verdict": verdict_json(&shadow.candidate),
                    "disagrees": true,
                }));
            }
            verdict
        }
    };
    let mut evaluated = evaluated_payload(&verdict, grant_check.as_ref().err());
    if let Some(note) = shadow_note {
        evaluated["shadow"] = note;
    }
    entries.push(entry(&draft.id, EntryKind::Evaluated, "writ", evaluated)?);
    let explanation = verdict_json(&verdict);

    let (outcome, label) = match &verdict {
        Verdict::Deny { .. } => (deny(&draft, entries, explanation).await?, "deny"),
        Verdict::RequireApproval {
            approval,
            explanation: why,
        } => (
            ask_approval(&draft, entries, approval, why, explanation).await?,
            "approval",
        ),
        Verdict::Allow { .. } => {
            // The grant's budget is spent in the same transaction that records the action as
            // executing: spent if and only if the action runs.
            let amount = grant_check.as_ref().map_or(0, |a| a.micros());
            let changes = vec![
                Change::InsertAction(draft.row(
                    ActionState::Executing,
                    json!({"verdict": explanation.clone()}),
                )),
                Change::SpendGrant {
                    grant: caller.grant.as_str().to_owned(),
                    amount_micros: amount,
                    now: draft.now,
                },
            ];
            match draft.commit(changes, entries.clone()).await? {
                Committed::Raced(outcome) => return Ok(*outcome),
                Committed::GrantRefused => {
                    // A concurrent use spent the budget, or the grant was revoked meanwhile:
                    // check again for the reason in words, and record the denial.
                    let stored = gw.db.grant(&caller.grant).await?;
                    let reason = match stored.map(|g| g.grant.check(&attempt, draft.now, g.usage)) {
                        Some(Err(denial)) => denial.to_string(),
                        _ => format!(
                            "grant {} was revoked or its budget spent meanwhile",
                            caller.grant
                        ),
                    };
                    let verdict = denied(
                        format!("the grant does not cover this action: {reason}"),
                        &gw.policy.version().to_string(),
                    );
                    entries.pop();
                    entries.push(entry(
                        &draft.id,
                        EntryKind::Evaluated,
                        "writ",
                        grant_denial_payload(&verdict, &reason),
                    )?);
                    (deny(&draft, entries, verdict_json(&verdict)).await?, "deny")
                }
                Committed::Done(mut seqs) => {
                    let done = execute::execute(
                        gw,
                        &draft.id,
                        &req.connector,
                        &req.operation,
                        &req.args,
                        &caller.user,
                        explanation.clone(),
                    )
                    .await?;
                    seqs.extend(done.seqs);
                    // The row as just committed: no need to read it back.
                    let mut action = draft.row(done.state, done.result);
                    action.updated = done.time;
                    let outcome = Outcome {
                        action,
                        approval: None,
                        seqs,
                        replayed: false,
                    };
                    (outcome, "allow")
                }
            }
        }
    };
    let result = match (label, outcome.action.state) {
        ("deny", _) => "denied",
        ("approval", _) => "pending",
        (_, ActionState::Succeeded) => "executed",
        _ => "error",
    };
    gw.metrics
        .record_action(label, &req.connector, result, started.elapsed());
    Ok(outcome)
}

/// The request as the action's row keeps it (what `decide` re-hashes and re-evaluates).
fn stored_request(
    caller: &Caller,
    req: &ActionRequest,
    resource: &writ_connectors::ResourceRef,
    definition: Option<&str>,
) -> Value {
    let mut request = json!({
        "args": req.args,
        "intent": req.intent,
        "rationale": req.rationale,
        "resource": {"type": resource.entity_type, "id": resource.id},
        "auth": caller.auth,
    });
    if let Some(d) = definition {
        request["tool_definition"] = json!(d);
    }
    request
}

/// The `requested` entry: who asked for what, with which credential, the tool as its server
/// described it.
fn requested(
    draft: &Draft<'_>,
    resource: &writ_connectors::ResourceRef,
    tool: Option<&ToolFacts>,
    definition: Option<&str>,
) -> Result<NewEntry, Error> {
    let (caller, req) = (draft.caller, draft.req);
    let mut requested = json!({
        "agent": caller.agent.as_str(),
        "user": caller.user.as_str(),
        "grant": caller.grant.as_str(),
        "connector": req.connector,
        "operation": req.operation,
        "args": req.args,
        "intent": req.intent,
        "rationale": req.rationale,
        "resource": {"type": resource.entity_type, "id": resource.id},
        "action_hash": draft.hash,
        "auth": caller.auth,
    });
    if let Some(key) = &req.idempotency_key {
        requested["idempotency_key"] = json!(key);
    }
    if let Some(jti) = &caller.token_id {
        requested["token_id"] = json!(jti);
    }
    if let Some(t) = tool {
        requested["tool"] = json!(t);
    }
    if let Some(d) = definition {
        requested["tool_definition"] = json!(d);
    }
    entry(
        &draft.id,
        EntryKind::Requested,
        &format!("agent:{}", caller.agent),
        requested,
    )
}

/// Denied: the action (`denied`) with requested, evaluated and responded, in one commit.
async fn deny(
    draft: &Draft<'_>,
    mut entries: Vec<NewEntry>,
    explanation: Value,
) -> Result<Outcome, Error> {
    entries.push(responded(&draft.id, 403, ActionState::Denied)?);
    let row = draft.row(ActionState::Denied, json!({"verdict": explanation}));
    draft.settle(vec![Change::InsertAction(row)], entries).await
}

/// Needs approval: the action (`pending_approval`), its approval request bound to the action
/// hash, and requested, evaluated, approval_requested and responded, in one commit.
async fn ask_approval(
    draft: &Draft<'_>,
    mut entries: Vec<NewEntry>,
    approval: &ApprovalRequirement,
    why: &Explanation,
    explanation: Value,
) -> Result<Outcome, Error> {
    let approval_id = format!("apr_{}", uuid::Uuid::now_v7().simple());
    let expires = add(draft.now, approval.expires);
    let reason = why.reasons.first().cloned();
    let quorum = approval.quorum.max(1);
    let row = ApprovalRow {
        id: approval_id.clone(),
        action_id: draft.id.clone(),
        action_hash: draft.hash.clone(),
        state: ApprovalState::Pending,
        user: draft.caller.user.as_str().to_owned(),
        approvers: approval.approvers.clone(),
        quorum,
        expires,
        reason: reason.clone(),
        created: draft.now,
        updated: draft.now,
    };
    entries.push(entry(
        &draft.id,
        EntryKind::ApprovalRequested,
        "writ",
        json!({
            "approval_id": approval_id,
            "approvers": approval.approvers,
            "quorum": quorum,
            "expires_at": expires.to_string(),
            "action_hash": draft.hash,
            "reason": reason,
            "gates": approval.gates.iter().map(|g| g.policy_id.clone()).collect::<Vec<_>>(),
        }),
    )?);
    entries.push(responded(&draft.id, 202, ActionState::PendingApproval)?);
    let action = draft.row(
        ActionState::PendingApproval,
        json!({"verdict": explanation}),
    );
    draft
        .settle(
            vec![Change::InsertAction(action), Change::InsertApproval(row)],
            entries,
        )
        .await
}
