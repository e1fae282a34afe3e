//! [`ActionStore`] on SQLite. Changes are applied by the writer thread inside its group commit
//! ([`apply`], called from `log.rs`); reads use the pool.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use writ_core::{ActionId, NewEntry};

use super::{SqliteStore, db, sql};
use crate::actions::{
    ACTION_BY_ID, ACTION_BY_KEY, ACTION_COLUMNS, ACTION_STATE, APPROVAL_BY_ACTION, APPROVAL_BY_ID,
    APPROVAL_COLUMNS, APPROVAL_STATE, ActionFilter, ActionRow, ActionStore, ApprovalRow,
    ApprovalState, Change, DECISIONS, DecisionRow, INSERT_ACTION, INSERT_APPROVAL, INSERT_DECISION,
    RawAction, RawApproval, action_exists, decision_exists, decode_decision, grant_spent,
    state_conflict,
};
use crate::columns::to_json;
use crate::identity::SPEND_GRANT;
use crate::{AppendReceipt, StoreError};

/// Applies `changes` in order on the writer's transaction; the first refusal stops and is
/// returned (the caller rolls back to its savepoint).
pub(super) fn apply(conn: &Connection, changes: &[Change]) -> Result<(), StoreError> {
    let op = "apply action change";
    for change in changes {
        match change {
            Change::InsertAction(a) => {
                let n = conn
                    .prepare_cached(&sql(INSERT_ACTION))
                    .map_err(db(op))?
                    .execute(params![
                        a.id.as_str(),
                        a.agent,
                        a.user,
                        a.grant,
                        a.connector,
                        a.operation,
                        a.action_hash,
                        a.idempotency_key,
                        a.state.as_str(),
                        to_json(&a.request, "action request")?,
                        a.result
                            .as_ref()
                            .map(|r| to_json(r, "action result"))
                            .transpose()?,
                        a.created.as_micros(),
                        a.updated.as_micros(),
                    ])
                    .map_err(db(op))?;
                if n == 0 {
                    return Err(action_exists(a));
                }
            }
            Change::SetActionState {
                id,
                from,
                to,
                result,
                time,
            } => {
                let found: Option<String> = conn
                    .prepare_cached(&sql(ACTION_STATE))
                    .map_err(db(op))?
                    .query_row([id.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db(op))?;
                if !found
                    .as_deref()
                    .is_some_and(|f| from.iter().any(|s| s.as_str() == f))
                {
                    return Err(state_conflict(
                        "action",
                        id.as_str(),
                        found.as_deref(),
                        to.as_str(),
                    ));
                }
                conn.prepare_cached(
                    "UPDATE actions SET state = ?2, result = COALESCE(?3, result), updated_us = ?4 WHERE id = ?1",
                )
                .map_err(db(op))?
                .execute(params![
                    id.as_str(),
                    to.as_str(),
                    result
                        .as_ref()
                        .map(|r| to_json(r, "action result"))
                        .transpose()?,
                    time.as_micros()
                ])
                .map_err(db(op))?;
            }
            Change::InsertApproval(a) => {
                conn.prepare_cached(&sql(INSERT_APPROVAL))
                    .map_err(db(op))?
                    .execute(params![
                        a.id,
                        a.action_id.as_str(),
                        a.action_hash,
                        a.state.as_str(),
                        a.user,
                        to_json(&serde_json::json!(a.approvers), "approvers")?,
                        i64::from(a.quorum),
                        a.expires.as_micros(),
                        a.reason,
                        a.created.as_micros(),
                        a.updated.as_micros(),
                    ])
                    .map_err(db(op))?;
            }
            Change::InsertDecision(d) => {
                let n = conn
                    .prepare_cached(&sql(INSERT_DECISION))
                    .map_err(db(op))?
                    .execute(params![
                        d.approval_id,
                        d.approver,
                        d.decision.as_str(),
                        d.comment,
                        d.time.as_micros()
                    ])
                    .map_err(db(op))?;
                if n == 0 {
                    return Err(decision_exists(d));
                }
            }
            Change::SpendGrant {
                grant,
                amount_micros,
                now,
            } => {
                // One statement: the conditions and the increment apply atomically.
                let n = conn
                    .prepare_cached(&sql(SPEND_GRANT))
                    .map_err(db(op))?
                    .execute(params![grant, amount_micros, now.as_micros()])
                    .map_err(db(op))?;
                if n == 0 {
                    return Err(grant_spent(grant));
                }
            }
            Change::SetApprovalState { id, from, to, time } => {
                let found: Option<String> = conn
                    .prepare_cached(&sql(APPROVAL_STATE))
                    .map_err(db(op))?
                    .query_row([id.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db(op))?;
                if !found
                    .as_deref()
                    .is_some_and(|f| from.iter().any(|s| s.as_str() == f))
                {
                    return Err(state_conflict(
                        "approval",
                        id,
                        found.as_deref(),
                        to.as_str(),
                    ));
                }
                conn.prepare_cached(
                    "UPDATE approvals SET state = ?2, updated_us = ?3 WHERE id = ?1",
                )
                .map_err(db(op))?
                .execute(params![id, to.as_str(), time.as_micros()])
                .map_err(db(op))?;
            }
        }
    }
    Ok(())
}

fn raw_action(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAction> {
    Ok(RawAction {
        id: r.get(0)?,
        agent: r.get(1)?,
        user: r.get(2)?,
        grant: r.get(3)?,
        connector: r.get(4)?,
        operation: r.get(5)?,
        action_hash: r.get(6)?,
        idempotency_key: r.get(7)?,
        state: r.get(8)?,
        request: r.get(9)?,
        result: r.get(10)?,
        created_us: r.get(11)?,
        updated_us: r.get(12)?,
    })
}

fn raw_approval(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawApproval> {
    Ok(RawApproval {
        id: r.get(0)?,
        action_id: r.get(1)?,
        action_hash: r.get(2)?,
        state: r.get(3)?,
        user: r.get(4)?,
        approvers: r.get(5)?,
        quorum: r.get(6)?,
        expires_us: r.get(7)?,
        reason: r.get(8)?,
        created_us: r.get(9)?,
        updated_us: r.get(10)?,
    })
}

fn one_action(
    c: &Connection,
    op: &'static str,
    statement: &str,
    args: impl rusqlite::Params,
) -> Result<Option<ActionRow>, StoreError> {
    c.prepare_cached(&sql(statement))
        .map_err(db(op))?
        .query_row(args, raw_action)
        .optional()
        .map_err(db(op))?
        .map(RawAction::decode)
        .transpose()
}

fn one_approval(
    c: &Connection,
    op: &'static str,
    statement: &str,
    arg: String,
) -> Result<Option<ApprovalRow>, StoreError> {
    c.prepare_cached(&sql(statement))
        .map_err(db(op))?
        .query_row([arg], raw_approval)
        .optional()
        .map_err(db(op))?
        .map(RawApproval::decode)
        .transpose()
}

#[async_trait]
impl ActionStore for SqliteStore {
    async fn commit(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.commit_job(changes, entries).await
    }

    async fn action(&self, id: &ActionId) -> Result<Option<ActionRow>, StoreError> {
        let id = id.as_str().to_owned();
        self.with_conn("read action", move |c| {
            one_action(c, "read action", ACTION_BY_ID, [id])
        })
        .await
    }

    async fn action_by_key(&self, agent: &str, key: &str) -> Result<Option<ActionRow>, StoreError> {
        let (agent, key) = (agent.to_owned(), key.to_owned());
        self.with_conn("read action", move |c| {
            one_action(c, "read action", ACTION_BY_KEY, [agent, key])
        })
        .await
    }

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRow>, StoreError> {
        let filter = filter.clone();
        self.with_conn("search actions", move |c| {
            let op = "search actions";
            let mut statement = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |statement: &mut String, clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                statement.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(a) = filter.agent {
                arg(&mut statement, " AND agent_id = ?", a.into());
            }
            if let Some(u) = filter.user {
                arg(&mut statement, " AND user_id = ?", u.into());
            }
            if let Some(k) = filter.connector {
                arg(&mut statement, " AND connector = ?", k.into());
            }
            if !filter.states.is_empty() {
                statement.push_str(" AND state IN (");
                for (i, s) in filter.states.iter().enumerate() {
                    if i > 0 {
                        statement.push_str(", ");
                    }
                    arg(&mut statement, "?", s.as_str().to_owned().into());
                }
                statement.push(')');
            }
            if let Some(t) = filter.since {
                arg(&mut statement, " AND created_us >= ?", t.as_micros().into());
            }
            if let Some(t) = filter.before {
                arg(&mut statement, " AND created_us < ?", t.as_micros().into());
            }
            arg(
                &mut statement,
                " ORDER BY created_us DESC, id DESC LIMIT ?",
                i64::from(filter.limit).into(),
            );
            let mut stmt = c.prepare(&statement).map_err(db(op))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), raw_action)
                .map_err(db(op))?;
            rows.map(|r| r.map_err(db(op))?.decode()).collect()
        })
        .await
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let id = id.to_owned();
        self.with_conn("read approval", move |c| {
            one_approval(c, "read approval", APPROVAL_BY_ID, id)
        })
        .await
    }

    async fn approval_for_action(&self, id: &ActionId) -> Result<Option<ApprovalRow>, StoreError> {
        let id = id.as_str().to_owned();
        self.with_conn("read approval", move |c| {
            one_approval(c, "read approval", APPROVAL_BY_ACTION, id)
        })
        .await
    }

    async fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        self.with_conn("list approvals", move |c| {
            let op = "list approvals";
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals
                     WHERE (?1 IS NULL OR state = ?1) ORDER BY created_us, id LIMIT ?2"
                ))
                .map_err(db(op))?;
            let rows = stmt
                .query_map(params![state.map(|s| s.as_str()), limit], raw_approval)
                .map_err(db(op))?;
            rows.map(|r| r.map_err(db(op))?.decode()).collect()
        })
        .await
    }

    async fn decisions(&self, approval_id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        let id = approval_id.to_owned();
        self.with_conn("read decisions", move |c| {
            let op = "read decisions";
            let mut stmt = c.prepare_cached(&sql(DECISIONS)).map_err(db(op))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(db(op))?;
            rows.map(|r| {
                let (a, b, d, c, t) = r.map_err(db(op))?;
                decode_decision(a, b, d, c, t)
            })
            .collect()
        })
        .await
    }
}
