//! Step 2: one approver's decision. Refused attempts are evidence too and are recorded. On
//! quorum, the stored request must still hash to what the approval is bound to, the tool must
//! still be the one reviewed, policy is evaluated again with the approval facts, and — in the
//! commit that records it executing, with the spend of the grant's budget — Writ executes the
//! approved action itself.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use writ_core::{EntryKind, NewEntry, Timestamp};
use writ_identity::{AgentId, GrantId, UserId};
use writ_policy::{ApprovalFacts, Verdict};
use writ_store::{ActionState, ApprovalState, Change, Decision, DecisionRow, StoreError};

use super::entries::{action_hash, entry, responded, verdict_json};
use super::evaluate::{Subject, denied, grant_verdict, policy_request, tool_facts, user_groups};
use super::execute::execute;
use super::record::{commit_then_finish, finish};
use super::sweeps::expire_one;
use super::{Caller, DecisionRequest, MAX_TEXT, Outcome, empty_object};
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;

/// Step 2: one approver's decision.
pub async fn decide(
    gw: &Arc<Gateway>,
    approver: &UserId,
    approval_id: &str,
    req: DecisionRequest,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    if req.comment.as_ref().is_some_and(|c| c.len() > MAX_TEXT) {
        return Err(Error::invalid(format!(
            "the comment is limited to {MAX_TEXT} bytes"
        )));
    }
    let approval = gw
        .db
        .approval(approval_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("approval {approval_id} does not exist")))?;
    let action_id = approval.action_id.clone();
    let actor = format!("user:{approver}");
    let refuse = |kind: ErrorKind, code: &'static str, why: String| {
        let gw = gw.clone();
        let approval = approval.clone();
        let actor = actor.clone();
        let decision = req.decision;
        async move {
            // The attempt is evidence too: who tried to decide, and why it was refused.
            let e = entry(
                &approval.action_id,
                EntryKind::ApprovalDecided,
                &actor,
                json!({"approval_id": approval.id, "decision": decision.as_str(), "accepted": false, "refused": why}),
            );
            if let Ok(e) = e
                && let Err(err) = gw.db.append(vec![e]).await
            {
                tracing::error!(error = %err, "recording a refused decision failed");
            }
            Error::new(kind, code, why)
        }
    };
    if approval.state != ApprovalState::Pending {
        return Err(refuse(
            ErrorKind::Conflict,
            "approval_closed",
            format!(
                "approval {} is {}; it takes no more decisions",
                approval.id, approval.state
            ),
        )
        .await);
    }
    let now = Timestamp::now();
    if approval.expires <= now {
        expire_one(gw, &approval).await?;
        return Err(refuse(
            ErrorKind::Conflict,
            "approval_expired",
            format!("approval {} expired at {}", approval.id, approval.expires),
        )
        .await);
    }
    // Separation of duties: neither the user the agent acts for nor the agent's owner decides.
    let action = gw
        .db
        .action(&action_id)
        .await?
        .ok_or_else(|| Error::internal(format!("action {action_id} vanished")))?;
    let agent_id =
        AgentId::new(action.agent.clone()).map_err(|e| Error::internal(e.to_string()))?;
    let owner = gw
        .db
        .agent(&agent_id)
        .await?
        .map(|a| a.owner)
        .ok_or_else(|| {
            Error::internal(format!("agent {agent_id} of action {action_id} vanished"))
        })?;
    if approver.as_str() == approval.user {
        return Err(refuse(
            ErrorKind::Forbidden,
            "self_approval",
            format!("user {approver} cannot approve an action their own agent asked for"),
        )
        .await);
    }
    if *approver == owner {
        return Err(refuse(
            ErrorKind::Forbidden,
            "self_approval",
            format!(
                "user {approver} owns agent {agent_id}, which asked for this action, and cannot approve it"
            ),
        )
        .await);
    }
    let user = gw
        .db
        .user(approver)
        .await?
        .ok_or_else(|| Error::forbidden(format!("user {approver} does not exist")))?;
    if !may_approve(&approval.approvers, approver.as_str(), &user.groups) {
        return Err(refuse(
            ErrorKind::Forbidden,
            "not_an_approver",
            format!(
                "user {approver} is not among this approval's approvers ({})",
                approval.approvers.join(", ")
            ),
        )
        .await);
    }
    if let Some(seen) = &req.action_hash
        && *seen != approval.action_hash
    {
        return Err(refuse(
            ErrorKind::Conflict,
            "action_changed",
            format!(
                "this approval is bound to action hash {}, not {seen}; review the action again",
                approval.action_hash
            ),
        )
        .await);
    }
    // The stored request must still be the action the approval was bound to.
    let caller = Caller {
        agent: agent_id,
        user: UserId::new(action.user.clone()).map_err(|e| Error::internal(e.to_string()))?,
        grant: GrantId::new(action.grant.clone().unwrap_or_default())
            .map_err(|e| Error::internal(e.to_string()))?,
        auth: "approval",
        token_id: None,
        token_actions: None,
        stored_grant: None,
    };
    let args = action
        .request
        .get("args")
        .cloned()
        .unwrap_or_else(empty_object);
    let hash = action_hash(&caller, &action.connector, &action.operation, &args)?;
    if hash != approval.action_hash || hash != action.action_hash {
        return Err(Error::internal(format!(
            "action {action_id} no longer matches the hash its approval is bound to; it will not run"
        )));
    }

    let decision_row = DecisionRow {
        approval_id: approval.id.clone(),
        approver: approver.as_str().to_owned(),
        decision: req.decision,
        comment: req.comment.clone(),
        time: now,
    };
    let earlier = gw.db.decisions(&approval.id).await?;
    let approvals: Vec<String> = earlier
        .iter()
        .filter(|d| d.decision == Decision::Approve)
        .map(|d| d.approver.clone())
        .chain((req.decision == Decision::Approve).then(|| approver.as_str().to_owned()))
        .collect();
    let decided = entry(
        &action_id,
        EntryKind::ApprovalDecided,
        &actor,
        json!({
            "approval_id": approval.id,
            "decision": req.decision.as_str(),
            "comment": req.comment,
            "accepted": true,
            "approvals": approvals.len(),
            "quorum": approval.quorum,
        }),
    )?;
    let decided_err = |e: StoreError| match e {
        StoreError::AlreadyExists(_) => Error::new(
            ErrorKind::Conflict,
            "already_decided",
            format!(
                "user {approver} has already decided on approval {}",
                approval.id
            ),
        ),
        other => other.into(),
    };

    if req.decision == Decision::Deny {
        let result = json!({"verdict": action.result.as_ref().and_then(|r| r.get("verdict")), "approval": "denied", "denied_by": approver.as_str()});
        return commit_then_finish(
            gw,
            &action_id,
            vec![
                Change::InsertDecision(decision_row),
                Change::SetApprovalState {
                    id: approval.id.clone(),
                    from: vec![ApprovalState::Pending],
                    to: ApprovalState::Denied,
                    time: now,
                },
                Change::SetActionState {
                    id: action_id.clone(),
                    from: vec![ActionState::PendingApproval],
                    to: ActionState::Rejected,
                    result: Some(result),
                    time: now,
                },
            ],
            vec![decided, responded(&action_id, 403, ActionState::Rejected)?],
            decided_err,
        )
        .await;
    }

    if (approvals.len() as u64) < u64::from(approval.quorum) {
        return commit_then_finish(
            gw,
            &action_id,
            vec![Change::InsertDecision(decision_row)],
            vec![decided],
            decided_err,
        )
        .await;
    }

    // Quorum: evaluate again with the approval facts, exactly as the first time otherwise.
    let version = gw.policy.version().to_string();
    let grant = gw.db.grant(&caller.grant).await?;
    let groups = user_groups(gw, &caller.user).await?;
    let connector = gw.connectors.get(&action.connector).cloned();
    let resource = match &connector {
        Some(c) => Some(
            c.resource(&action.operation, &args)
                .map_err(|e| Error::internal(e.to_string()))?,
        ),
        None => None,
    };
    let intent = action
        .request
        .get("intent")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let subject = resource.as_ref().map(|resource| Subject {
        connector: &action.connector,
        operation: &action.operation,
        resource,
        args: &args,
        intent: &intent,
        tool: connector
            .as_ref()
            .and_then(|c| tool_facts(&**c, &action.operation)),
    });
    let verdict = match (&grant, groups, &subject) {
        (Some(grant), Some(groups), Some(subject)) => match grant.grant.is_live(now) {
            Err(denial) => grant_verdict(&denial, &version),
            Ok(()) => {
                let approval = ApprovalFacts {
                    granted: true,
                    approvers: approvals.clone(),
                };
                gw.policy.evaluate(&policy_request(
                    gw,
                    &caller,
                    subject,
                    &grant.grant,
                    groups,
                    approval,
                ))
            }
        },
        _ => denied(
            "the grant, the user or the connector of this action no longer exists".into(),
            &version,
        ),
    };
    // An upstream tool redefined since the request is not the tool the approvers reviewed: it
    // is not run, whatever the policy says.
    let recorded = action
        .request
        .get("tool_definition")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let verdict = match recorded {
        Some(then) => {
            let now = gw
                .connectors
                .get(&action.connector)
                .and_then(|c| c.definition(&action.operation));
            if now.as_deref() == Some(then.as_str()) {
                verdict
            } else {
                denied(
                    format!(
                        "the tool's definition changed upstream after the request ({then}, now {}); it was not run: request it again",
                        now.as_deref().unwrap_or("gone")
                    ),
                    &version,
                )
            }
        }
        None => verdict,
    };
    let evaluation = |verdict: &Verdict, grant_check: Option<&str>| {
        let mut payload = json!({"reevaluation": true, "approval_id": approval.id, "approvers": approvals, "verdict": verdict_json(verdict)});
        if let Some(why) = grant_check {
            payload["grant_check"] = json!(why);
        }
        entry(&action_id, EntryKind::Evaluated, "writ", payload)
    };
    let evaluated = evaluation(&verdict, None)?;
    let approve_changes = |to: ActionState, result: Option<Value>| {
        vec![
            Change::InsertDecision(decision_row.clone()),
            Change::SetApprovalState {
                id: approval.id.clone(),
                from: vec![ApprovalState::Pending],
                to: ApprovalState::Approved,
                time: now,
            },
            Change::SetActionState {
                id: action_id.clone(),
                from: vec![ActionState::PendingApproval],
                to,
                result,
                time: now,
            },
        ]
    };
    if !verdict.is_allow() {
        // Approved, but policy (changed meanwhile, or a plain forbid) still says no.
        return commit_then_finish(
            gw,
            &action_id,
            approve_changes(
                ActionState::Denied,
                Some(json!({"verdict": verdict_json(&verdict)})),
            ),
            vec![
                decided,
                evaluated,
                responded(&action_id, 403, ActionState::Denied)?,
            ],
            decided_err,
        )
        .await;
    }
    // The budget is spent when the action runs, not when it was asked for: in the commit that
    // records it as executing, so spent if and only if it runs.
    let action_name = format!("{}.{}", action.connector, action.operation);
    let Some(subject) = &subject else {
        return Err(Error::internal(format!(
            "the connector of action {action_id} vanished"
        )));
    };
    let attempt = subject.attempt(&caller, &action_name);
    // Denied by the grant after all: the evaluation recorded says so, with the reason.
    let grant_denied = |reason: String| -> Result<(Vec<Change>, Vec<NewEntry>), Error> {
        let verdict = denied(
            format!("the grant does not cover this action: {reason}"),
            &version,
        );
        Ok((
            approve_changes(
                ActionState::Denied,
                Some(json!({"verdict": verdict_json(&verdict)})),
            ),
            vec![
                decided.clone(),
                evaluation(&verdict, Some(&reason))?,
                responded(&action_id, 403, ActionState::Denied)?,
            ],
        ))
    };
    let amount = match grant
        .as_ref()
        .map(|g| g.grant.check(&attempt, now, g.usage))
    {
        Some(Ok(amount)) => amount,
        Some(Err(denial)) => {
            let (changes, entries) = grant_denied(denial.to_string())?;
            return commit_then_finish(gw, &action_id, changes, entries, decided_err).await;
        }
        None => {
            return Err(Error::internal(format!("grant {} vanished", caller.grant)));
        }
    };
    let verdict_value = verdict_json(&verdict);
    let mut executing = approve_changes(ActionState::Executing, None);
    executing.push(Change::SpendGrant {
        grant: caller.grant.as_str().to_owned(),
        amount_micros: amount.micros(),
        now,
    });
    let receipts = match gw
        .db
        .commit(executing, vec![decided.clone(), evaluated])
        .await
    {
        Ok(receipts) => receipts,
        Err(StoreError::GrantRefused(why)) => {
            // A concurrent use spent the budget, or the grant was revoked, between the check
            // above and the commit: recorded as the denial it now is.
            let reason = match gw.db.grant(&caller.grant).await? {
                Some(g) => match g.grant.check(&attempt, now, g.usage) {
                    Err(denial) => denial.to_string(),
                    Ok(_) => why,
                },
                None => why,
            };
            let (changes, entries) = grant_denied(reason)?;
            return commit_then_finish(gw, &action_id, changes, entries, decided_err).await;
        }
        Err(e) => return Err(decided_err(e)),
    };
    let mut seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    gw.notify_change();
    seqs.extend(
        execute(
            gw,
            &action_id,
            &action.connector,
            &action.operation,
            &args,
            &caller.user,
            verdict_value,
        )
        .await?
        .seqs,
    );
    let outcome = finish(gw, &action_id, seqs, false).await?;
    gw.metrics.record_action(
        "approval",
        &action.connector,
        if outcome.action.state == ActionState::Succeeded {
            "executed"
        } else {
            "error"
        },
        started.elapsed(),
    );
    Ok(outcome)
}
/// Whether a user (with these groups) is one of `approvers` (`user:ID`, a bare id, `group:NAME`).
pub fn may_approve(approvers: &[String], user: &str, groups: &[String]) -> bool {
    approvers.iter().any(|a| {
        if let Some(g) = a.strip_prefix("group:") {
            groups.iter().any(|mine| mine == g)
        } else {
            a.strip_prefix("user:").unwrap_or(a) == user
        }
    })
}
