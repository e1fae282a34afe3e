//! Recording: one commit of an action's state change with the entries that record it, then
//! the answer. [`Draft`] is a new action on its way to its first commit: its row, and the
//! commit that answers like a retry when a racing request with the same idempotency key won.

use std::sync::Arc;

use serde_json::Value;
use writ_core::{ActionId, NewEntry, Timestamp};
use writ_store::{ActionRow, ActionState, Change, StoreError};

use super::{ActionRequest, Caller, Outcome};
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;

/// A new action before its first commit.
pub(super) struct Draft<'a> {
    pub gw: &'a Arc<Gateway>,
    pub caller: &'a Caller,
    pub req: &'a ActionRequest,
    pub id: ActionId,
    pub now: Timestamp,
    pub hash: String,
    /// The request as the action's row keeps it.
    pub request: Value,
}

/// How a draft's commit went.
pub(super) enum Committed {
    Done(Vec<u64>),
    /// Another request with the same idempotency key won the race: its answer.
    Raced(Box<Outcome>),
    /// The grant's budget could not be spent (the only change here refused as a conflict).
    GrantRefused,
}

impl Draft<'_> {
    /// The action's row in `state`, with `result`.
    pub fn row(&self, state: ActionState, result: Value) -> ActionRow {
        ActionRow {
            id: self.id.clone(),
            agent: self.caller.agent.as_str().to_owned(),
            user: self.caller.user.as_str().to_owned(),
            grant: Some(self.caller.grant.as_str().to_owned()),
            connector: self.req.connector.clone(),
            operation: self.req.operation.clone(),
            action_hash: self.hash.clone(),
            idempotency_key: self.req.idempotency_key.clone(),
            state,
            request: self.request.clone(),
            result: Some(result),
            created: self.now,
            updated: self.now,
        }
    }

    /// Commits the new action; if its idempotency key was taken meanwhile, answers like a retry.
    pub async fn commit(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Committed, Error> {
        let gw = self.gw;
        match gw.db.commit(changes, entries).await {
            Ok(receipts) => {
                gw.notify_change();
                Ok(Committed::Done(receipts.iter().map(|r| r.seq).collect()))
            }
            Err(StoreError::AlreadyExists(_)) if self.req.idempotency_key.is_some() => {
                let key = self.req.idempotency_key.as_deref().unwrap_or_default();
                match gw.db.action_by_key(self.caller.agent.as_str(), key).await? {
                    Some(existing) => Ok(Committed::Raced(Box::new(
                        replay(gw, existing, &self.hash).await?,
                    ))),
                    None => Err(Error::conflict("the idempotency key is in use; retry")),
                }
            }
            Err(StoreError::GrantRefused(_)) => Ok(Committed::GrantRefused),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits a final answer (denied, or pending approval) and answers with the action as
    /// recorded.
    pub async fn settle(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Outcome, Error> {
        match self.commit(changes, entries).await? {
            Committed::Done(seqs) => finish(self.gw, &self.id, seqs, false).await,
            Committed::Raced(outcome) => Ok(*outcome),
            Committed::GrantRefused => Err(Error::internal("recording the action was refused")),
        }
    }
}

/// The answer to a retry with an idempotency key already used.
pub(super) async fn replay(
    gw: &Arc<Gateway>,
    existing: ActionRow,
    hash: &str,
) -> Result<Outcome, Error> {
    if existing.action_hash != hash {
        return Err(Error::new(
            ErrorKind::Conflict,
            "idempotency_key_reused",
            format!(
                "idempotency key {:?} was used for another action ({}); use a new key for a different action",
                existing.idempotency_key.as_deref().unwrap_or_default(),
                existing.id
            ),
        ));
    }
    let id = existing.id.clone();
    let mut outcome = finish(gw, &id, Vec::new(), true).await?;
    outcome.seqs = gw
        .db
        .query(&writ_store::EntryFilter {
            action_id: Some(id.as_str().to_owned()),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .iter()
        .map(|e| e.seq)
        .collect();
    Ok(outcome)
}

/// Reads the action back (with its approval) for the answer.
pub(super) async fn finish(
    gw: &Arc<Gateway>,
    id: &ActionId,
    seqs: Vec<u64>,
    replayed: bool,
) -> Result<Outcome, Error> {
    let action = gw
        .db
        .action(id)
        .await?
        .ok_or_else(|| Error::internal(format!("action {id} vanished")))?;
    let approval = gw.db.approval_for_action(id).await?;
    Ok(Outcome {
        action,
        approval,
        seqs,
        replayed,
    })
}

/// Commits `changes` with `entries`, wakes the long-polls, and answers with the action as it now
/// is (refusals of the store mapped by `refused`).
pub(super) async fn commit_then_finish(
    gw: &Arc<Gateway>,
    id: &ActionId,
    changes: Vec<Change>,
    entries: Vec<NewEntry>,
    refused: impl Fn(StoreError) -> Error,
) -> Result<Outcome, Error> {
    let receipts = gw.db.commit(changes, entries).await.map_err(refused)?;
    gw.notify_change();
    finish(gw, id, receipts.iter().map(|r| r.seq).collect(), false).await
}
