//! Read models: what every face shows of actions, approvals, agents and grants, typed, and who
//! may see them. The API serialises them as its JSON answers; the console renders the same
//! structs; nothing reads another face's JSON by string.
//!
//! Visibility: an action is read by its agent, its user, an approver of it, or an admin (to
//! anyone else it does not exist); approvals by the user the agent acts for, an approver, or an
//! admin; agents and grants by their owner or user, or an admin.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use writ_core::{ActionId, Timestamp};
use writ_identity::GrantId;
use writ_store::identity::{AgentRecord, GrantFilter, StoredGrant, UserRecord};
use writ_store::{ActionFilter, ActionRow, ActionState, ApprovalRow, ApprovalState, EntryFilter};

use crate::auth::Who;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::{self, Outcome};

/// The answer to an agent about its action: state, verdict and reasons, result, approval, and
/// the audit entries the request appended. Fields in the order the JSON shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub action_hash: String,
    pub action_id: String,
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSummary>,
    pub audit: AuditSeqs,
    pub bundle_version: Option<Value>,
    pub connector: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub grant: Option<String>,
    pub operation: String,
    pub policy_ids: Option<Value>,
    pub reasons: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// The connector's outcome: `{success, status, body, redacted, credential}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The action's state (`succeeded`, `denied`, `pending_approval`, …).
    pub status: String,
    pub updated_at: String,
    pub user: String,
    /// `allow`, `deny` or `require_approval`.
    pub verdict: Option<Value>,
    /// Where to wait for an action that is not final yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditSeqs {
    pub seqs: Vec<u64>,
}

/// An approval as an action's answer shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalSummary {
    pub action_hash: String,
    pub approvers: Vec<String>,
    /// Every decision so far (in an action's whole record only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Vec<DecisionView>>,
    pub expires_at: String,
    pub id: String,
    pub quorum: u32,
    pub reason: Option<String>,
    pub state: String,
}

/// One approver's decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub approver: String,
    pub comment: Option<String>,
    pub decision: String,
    pub time: String,
}

/// The whole record of one action: its answer, the request as stored, every audit entry with its
/// canonical bytes and inclusion proof, the signed checkpoint the proofs lead to and the log's
/// verifier key.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    #[serde(flatten)]
    pub view: ActionView,
    pub checkpoint: Option<CheckpointView>,
    pub entries: Vec<EntryView>,
    pub request: Value,
    pub verifier_key: String,
}

/// One audit entry of an action's record.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub actor: Option<String>,
    /// The entry's exact canonical bytes (the Merkle leaf's data).
    pub canonical: String,
    /// The audit path to the record's checkpoint (hex), if it covers the entry.
    pub inclusion_proof: Option<Vec<String>>,
    pub kind: String,
    pub leaf_hash: String,
    pub payload: Value,
    pub seq: u64,
    pub time: String,
}

/// A signed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointView {
    pub note: String,
    pub root_hash: String,
    pub size: u64,
}

/// An approval as the inbox and `GET /v1/approvals/{id}` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub action: Option<ApprovalAction>,
    pub action_hash: String,
    pub action_id: String,
    pub approvers: Vec<String>,
    pub decisions: Vec<DecisionView>,
    pub expires_at: String,
    pub id: String,
    pub quorum: u32,
    pub reason: Option<String>,
    pub state: String,
    pub user: String,
    /// In a user's list: pending, not the user's own agent's action, and the user an approver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub you_may_decide: Option<bool>,
}

/// The action an approval is for, as an approver reviews it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalAction {
    pub agent: String,
    pub args: Option<Value>,
    pub bundle_version: Option<Value>,
    pub connector: String,
    pub grant: Option<String>,
    /// What the grant allows: the authority the agent acts under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_scope: Option<GrantScope>,
    pub intent: Option<Value>,
    pub operation: String,
    pub policy_ids: Option<Value>,
    pub rationale: Option<Value>,
    pub status: String,
    pub user: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantScope {
    pub actions: Vec<String>,
    pub expires_at: String,
    pub resources: Vec<String>,
    pub revoked: bool,
}

/// A search of actions: `GET /v1/actions` and the console's audit explorer.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    pub agent: Option<String>,
    pub user: Option<String>,
    pub connector: Option<String>,
    /// A state (`succeeded`, `denied`, ...) or a verdict (`allow`, `deny`, `approval`).
    pub state: Option<String>,
    pub verdict: Option<String>,
    pub since: Option<String>,
    pub before: Option<String>,
    pub limit: Option<u32>,
}

/// The answer to `outcome`'s agent.
pub fn action_view(gw: &Gateway, outcome: &Outcome) -> ActionView {
    let a = &outcome.action;
    let verdict = a.result.as_ref().and_then(|r| r.get("verdict"));
    let field = |k: &str| verdict.and_then(|v| v.get(k)).cloned();
    ActionView {
        action_hash: a.action_hash.clone(),
        action_id: a.id.as_str().to_owned(),
        agent: a.agent.clone(),
        approval: outcome.approval.as_ref().map(approval_summary),
        audit: AuditSeqs {
            seqs: outcome.seqs.clone(),
        },
        bundle_version: field("bundle_version"),
        connector: a.connector.clone(),
        created_at: a.created.to_string(),
        error: a.result.as_ref().and_then(|r| r.get("error")).cloned(),
        grant: a.grant.clone(),
        operation: a.operation.clone(),
        policy_ids: field("policy_ids"),
        reasons: field("reasons"),
        replayed: outcome.replayed,
        result: a.result.as_ref().and_then(|r| r.get("outcome")).cloned(),
        status: a.state.as_str().to_owned(),
        updated_at: a.updated.to_string(),
        user: a.user.clone(),
        verdict: field("verdict"),
        wait_url: (!a.state.is_final())
            .then(|| format!("{}/v1/actions/{}?wait=30s", gw.public_url, a.id)),
    }
}

fn approval_summary(a: &ApprovalRow) -> ApprovalSummary {
    ApprovalSummary {
        action_hash: a.action_hash.clone(),
        approvers: a.approvers.clone(),
        decisions: None,
        expires_at: a.expires.to_string(),
        id: a.id.clone(),
        quorum: a.quorum,
        reason: a.reason.clone(),
        state: a.state.as_str().to_owned(),
    }
}

fn decision_views(decisions: &[writ_store::DecisionRow]) -> Vec<DecisionView> {
    decisions
        .iter()
        .map(|d| DecisionView {
            approver: d.approver.clone(),
            comment: d.comment.clone(),
            decision: d.decision.as_str().to_owned(),
            time: d.time.to_string(),
        })
        .collect()
}

/// May `who` read this action? Its agent, its user, an approver of it, or an admin.
pub async fn may_read(gw: &Gateway, who: &Who, action: &ActionRow) -> Result<bool, Error> {
    Ok(match who {
        Who::Agent(_) | Who::Delegated(_) => {
            who.agent().is_some_and(|a| a.as_str() == action.agent)
        }
        Who::User(u) => {
            u.admin
                || u.id.as_str() == action.user
                || match gw.db.approval_for_action(&action.id).await? {
                    Some(ap) => pipeline::may_approve(&ap.approvers, u.id.as_str(), &u.groups),
                    None => false,
                }
        }
    })
}

/// The whole record of action `id` as `who` may read it (else not found), after waiting up to
/// `wait` for it to become final. Also returns the status its answer carries.
pub async fn action_record(
    gw: &Gateway,
    who: &Who,
    id: &str,
    wait: Duration,
) -> Result<(u16, ActionRecord), Error> {
    let id = ActionId::new(id).map_err(|e| Error::invalid(e.to_string()))?;
    let not_found = || Error::not_found(format!("action {id} does not exist"));
    let action = gw.db.action(&id).await?.ok_or_else(not_found)?;
    if !may_read(gw, who, &action).await? {
        return Err(not_found());
    }
    let action = if !action.state.is_final() && !wait.is_zero() {
        pipeline::wait_for(gw, &id, wait)
            .await?
            .ok_or_else(not_found)?
    } else {
        action
    };
    let approval = gw.db.approval_for_action(&id).await?;
    let entries = gw
        .db
        .query(&EntryFilter {
            action_id: Some(id.as_str().to_owned()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    // Proofs against a signed checkpoint that covers every entry of the action.
    let mut checkpoint = gw.db.latest_checkpoint().await?;
    let needed = entries.last().map_or(0, |e| e.seq + 1);
    if checkpoint.as_ref().is_none_or(|c| c.tree_size < needed) {
        checkpoint = gw.checkpoint().await?;
    }
    let mut timeline = Vec::with_capacity(entries.len());
    for e in &entries {
        let decoded = e
            .decode()
            .map_err(|err| Error::internal(format!("entry {} is unreadable: {err}", e.seq)))?;
        let proof = match &checkpoint {
            Some(c) if c.tree_size > e.seq => Some(
                gw.db
                    .inclusion_proof(e.seq, c.tree_size)
                    .await?
                    .iter()
                    .map(|h| h.to_hex())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        timeline.push(EntryView {
            actor: decoded.actor,
            canonical: String::from_utf8_lossy(&e.entry).into_owned(),
            inclusion_proof: proof,
            kind: decoded.kind.as_str().to_owned(),
            leaf_hash: e.leaf_hash.to_hex(),
            payload: decoded.payload,
            seq: e.seq,
            time: decoded.time.to_string(),
        });
    }
    let decisions = match &approval {
        Some(a) => gw.db.decisions(&a.id).await?,
        None => Vec::new(),
    };
    let request = action.request.clone();
    let outcome = Outcome {
        action,
        approval,
        seqs: entries.iter().map(|e| e.seq).collect(),
        replayed: false,
    };
    let mut view = action_view(gw, &outcome);
    if let Some(a) = view.approval.as_mut() {
        a.decisions = Some(decision_views(&decisions));
    }
    let record = ActionRecord {
        view,
        checkpoint: checkpoint.map(|c| CheckpointView {
            note: c.note,
            root_hash: c.root_hash.to_hex(),
            size: c.tree_size,
        }),
        entries: timeline,
        request,
        verifier_key: gw.verifier_key(),
    };
    Ok((outcome.status(), record))
}

/// The store filter for an action search by `who`: the query's fields, with agents and
/// non-admin users restricted to their own actions.
pub fn action_filter(q: &ActionQuery, who: &Who) -> Result<ActionFilter, Error> {
    let time = |t: &Option<String>, what: &str| {
        t.as_deref()
            .map(|s| {
                s.parse::<Timestamp>()
                    .map_err(|e| Error::invalid(format!("{what}={s:?}: {e}")))
            })
            .transpose()
    };
    let mut states = Vec::new();
    if let Some(s) = &q.state {
        states.push(ActionState::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "state={s:?}: one of {}",
                ActionState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?);
    }
    if let Some(v) = &q.verdict {
        states.extend(match v.as_str() {
            "allow" => vec![
                ActionState::Succeeded,
                ActionState::Failed,
                ActionState::Executing,
                ActionState::OutcomeUnknown,
            ],
            "deny" => vec![ActionState::Denied, ActionState::Rejected],
            "approval" | "require_approval" => {
                vec![ActionState::PendingApproval, ActionState::Expired]
            }
            other => {
                return Err(Error::invalid(format!(
                    "verdict={other:?}: one of allow, deny, approval"
                )));
            }
        });
    }
    let mut filter = ActionFilter {
        agent: q.agent.clone(),
        user: q.user.clone(),
        connector: q.connector.clone(),
        states,
        since: time(&q.since, "since")?,
        before: time(&q.before, "before")?,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    // Non-admins see their own.
    match who {
        Who::Agent(_) | Who::Delegated(_) => filter.agent = who.agent().map(|a| a.to_string()),
        Who::User(u) if !u.admin => filter.user = Some(u.id.as_str().to_owned()),
        Who::User(_) => {}
    }
    Ok(filter)
}

/// The actions `who` may see that match `q`, as answers.
pub async fn search_actions(
    gw: &Gateway,
    who: &Who,
    q: &ActionQuery,
) -> Result<Vec<ActionView>, Error> {
    let filter = action_filter(q, who)?;
    Ok(gw
        .db
        .actions(&filter)
        .await?
        .into_iter()
        .map(|action| {
            action_view(
                gw,
                &Outcome {
                    action,
                    approval: None,
                    seqs: Vec::new(),
                    replayed: false,
                },
            )
        })
        .collect())
}

/// May `user` see approval `a`? An admin, the user the agent acts for, or an approver.
pub fn may_see_approval(user: &UserRecord, a: &ApprovalRow) -> bool {
    user.admin
        || a.user == user.id.as_str()
        || pipeline::may_approve(&a.approvers, user.id.as_str(), &user.groups)
}

/// Approval `a` as an approver reviews it.
pub async fn approval_view(gw: &Gateway, a: &ApprovalRow) -> Result<ApprovalView, Error> {
    let mut action = None;
    if let Some(row) = gw.db.action(&a.action_id).await? {
        let verdict = |k: &str| {
            row.result
                .as_ref()
                .and_then(|r| r.pointer(&format!("/verdict/{k}")))
                .cloned()
        };
        let request = |k: &str| row.request.get(k).cloned();
        let mut grant_scope = None;
        if let Some(id) = row.grant.as_deref().and_then(|g| GrantId::new(g).ok())
            && let Some(g) = gw.db.grant(&id).await?
        {
            grant_scope = Some(GrantScope {
                actions: g.grant.spec.actions,
                expires_at: g.grant.spec.expires_at.to_string(),
                resources: g.grant.spec.resources,
                revoked: g.grant.revoked_at.is_some(),
            });
        }
        action = Some(ApprovalAction {
            agent: row.agent.clone(),
            args: request("args"),
            bundle_version: verdict("bundle_version"),
            connector: row.connector.clone(),
            grant: row.grant.clone(),
            grant_scope,
            intent: request("intent"),
            operation: row.operation.clone(),
            policy_ids: verdict("policy_ids"),
            rationale: request("rationale"),
            status: row.state.as_str().to_owned(),
            user: row.user.clone(),
        });
    }
    Ok(ApprovalView {
        action,
        action_hash: a.action_hash.clone(),
        action_id: a.action_id.as_str().to_owned(),
        approvers: a.approvers.clone(),
        decisions: decision_views(&gw.db.decisions(&a.id).await?),
        expires_at: a.expires.to_string(),
        id: a.id.clone(),
        quorum: a.quorum,
        reason: a.reason.clone(),
        state: a.state.as_str().to_owned(),
        user: a.user.clone(),
        you_may_decide: None,
    })
}

/// The approvals `user` may see, in `state` (every state when `None`), at most `limit`.
pub async fn visible_approval_rows(
    gw: &Gateway,
    user: &UserRecord,
    state: Option<ApprovalState>,
    limit: u32,
) -> Result<Vec<ApprovalRow>, Error> {
    let mut rows = gw.db.approvals(state, limit).await?;
    rows.retain(|a| may_see_approval(user, a));
    Ok(rows)
}

/// One approval as `user` sees it in a list: its view and whether they may decide it.
pub async fn approval_item(
    gw: &Gateway,
    user: &UserRecord,
    a: &ApprovalRow,
) -> Result<ApprovalView, Error> {
    let mut v = approval_view(gw, a).await?;
    v.you_may_decide = Some(
        a.state == ApprovalState::Pending
            && a.user != user.id.as_str()
            && pipeline::may_approve(&a.approvers, user.id.as_str(), &user.groups),
    );
    Ok(v)
}

/// The approvals `user` may see, each with whether they may decide it.
pub async fn visible_approvals(
    gw: &Gateway,
    user: &UserRecord,
    state: Option<ApprovalState>,
    limit: u32,
) -> Result<Vec<ApprovalView>, Error> {
    let mut items = Vec::new();
    for a in visible_approval_rows(gw, user, state, limit).await? {
        items.push(approval_item(gw, user, &a).await?);
    }
    Ok(items)
}

/// The agents `user` may see: their own, or every agent for an admin.
pub async fn visible_agents(gw: &Gateway, user: &UserRecord) -> Result<Vec<AgentRecord>, Error> {
    Ok(gw
        .db
        .agents()
        .await?
        .into_iter()
        .filter(|a| user.admin || a.owner == user.id)
        .collect())
}

/// The grants `user` may see: their own, or every grant for an admin.
pub async fn visible_grants(gw: &Gateway, user: &UserRecord) -> Result<Vec<StoredGrant>, Error> {
    let filter = GrantFilter {
        user: (!user.admin).then(|| user.id.clone()),
        agent: None,
    };
    Ok(gw.db.grants(&filter).await?)
}

/// A grant with its usage, as the API answers it.
pub fn grant_json(g: &StoredGrant) -> Value {
    let mut v = serde_json::to_value(&g.grant).unwrap_or(Value::Null);
    v["usage"] = serde_json::json!({"uses": g.usage.uses, "sum": g.usage.sum.to_string()});
    v
}
