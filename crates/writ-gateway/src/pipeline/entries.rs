//! The audit vocabulary of an action: every entry the pipeline appends is built here, so that
//! the same fact is always recorded with the same words. An action's record reads requested →
//! evaluated → (approval_requested → approval_decided… → evaluated) → executed → responded.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_identity::GrantDenial;
use writ_policy::Verdict;
use writ_store::ActionState;

use super::Caller;
use crate::error::Error;

/// Responses larger than this go into the log as a digest, not inline.
const MAX_LOGGED_RESPONSE: usize = 64 * 1024;

/// Hex SHA-256 of the canonical action: what approvals are bound to.
pub fn action_hash(
    caller: &Caller,
    connector: &str,
    operation: &str,
    args: &Value,
) -> Result<String, Error> {
    let canonical = writ_core::canonicalize(&json!({
        "agent": caller.agent.as_str(),
        "user": caller.user.as_str(),
        "grant": caller.grant.as_str(),
        "connector": connector,
        "operation": operation,
        "args": args,
    }))
    .map_err(|e| Error::invalid(format!("the arguments have no canonical form: {e}")))?;
    Ok(hex::encode(sha2::Sha256::digest(canonical.as_bytes())))
}

/// The status an answer in `state` carries (HTTP's numbers), as `responded` records it.
pub(super) fn answer_status(state: ActionState) -> u16 {
    match state {
        ActionState::Succeeded => 200,
        ActionState::Denied | ActionState::Rejected => 403,
        ActionState::PendingApproval | ActionState::Executing => 202,
        ActionState::Expired => 410,
        ActionState::Failed | ActionState::OutcomeUnknown => 502,
    }
}

/// A verdict as the record and the answer show it: kind, determining policies, reasons,
/// errors, bundle version, and the approval it asks for.
pub(super) fn verdict_json(verdict: &Verdict) -> Value {
    let e = verdict.explanation();
    let mut v = json!({
        "verdict": verdict.kind().to_string(),
        "policy_ids": e.determining_policies,
        "reasons": e.reasons,
        "errors": e.errors,
        "bundle_version": e.bundle_version,
    });
    if let Some(a) = verdict.approval() {
        v["approval"] = json!({"approvers": a.approvers, "quorum": a.quorum, "expires_secs": a.expires.as_secs()});
    }
    v
}

/// The first `evaluated` entry's payload: the verdict and what the grant check said.
pub(super) fn evaluated_payload(verdict: &Verdict, grant_denial: Option<&GrantDenial>) -> Value {
    let mut v = verdict_json(verdict);
    v["grant_check"] = match grant_denial {
        None => json!("ok"),
        Some(d) => json!(d.to_string()),
    };
    v
}

/// One entry of action `id`.
pub(super) fn entry(
    id: &ActionId,
    kind: EntryKind,
    actor: &str,
    payload: Value,
) -> Result<NewEntry, Error> {
    Ok(NewEntry::new(
        id.clone(),
        kind,
        Some(actor.to_owned()),
        payload,
    )?)
}

/// The `responded` entry: what the agent was answered, and the action's state then.
pub(super) fn responded(id: &ActionId, status: u16, state: ActionState) -> Result<NewEntry, Error> {
    entry(
        id,
        EntryKind::Responded,
        "writ",
        json!({"status": status, "state": state.as_str()}),
    )
}

/// The response as the log keeps it: inline when small, else its size and digest.
pub(super) fn loggable(body: &Value) -> Value {
    let text = body.to_string();
    if text.len() <= MAX_LOGGED_RESPONSE {
        body.clone()
    } else {
        json!({"omitted": "too large for the log", "bytes": text.len(), "sha256": hex::encode(sha2::Sha256::digest(text.as_bytes()))})
    }
}

/// `t + d`, saturating.
pub(super) fn add(t: Timestamp, d: Duration) -> Timestamp {
    let micros = t
        .as_micros()
        .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros).unwrap_or(t)
}
