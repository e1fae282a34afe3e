//! [`ActionStore`] on PostgreSQL. Changes are applied by the writer task inside its group
//! commit ([`apply`], called from `log.rs`); reads use the pool.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use writ_core::{ActionId, NewEntry};

use super::{PgStore, db};
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
pub(super) async fn apply(
    conn: &mut sqlx::PgConnection,
    changes: &[Change],
) -> Result<(), StoreError> {
    let op = "apply action change";
    for change in changes {
        match change {
            Change::InsertAction(a) => {
                let n = sqlx::query(INSERT_ACTION)
                    .bind(a.id.as_str())
                    .bind(&a.agent)
                    .bind(&a.user)
                    .bind(&a.grant)
                    .bind(&a.connector)
                    .bind(&a.operation)
                    .bind(&a.action_hash)
                    .bind(&a.idempotency_key)
                    .bind(a.state.as_str())
                    .bind(to_json(&a.request, "action request")?)
                    .bind(
                        a.result
                            .as_ref()
                            .map(|r| to_json(r, "action result"))
                            .transpose()?,
                    )
                    .bind(a.created.as_micros())
                    .bind(a.updated.as_micros())
                    .execute(&mut *conn)
                    .await
                    .map_err(db(op))?
                    .rows_affected();
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
                let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
                let n = sqlx::query(
                    "UPDATE actions SET state = $2, result = COALESCE($3, result), updated_us = $4
                     WHERE id = $1 AND state = ANY($5)",
                )
                .bind(id.as_str())
                .bind(to.as_str())
                .bind(
                    result
                        .as_ref()
                        .map(|r| to_json(r, "action result"))
                        .transpose()?,
                )
                .bind(time.as_micros())
                .bind(&from)
                .execute(&mut *conn)
                .await
                .map_err(db(op))?
                .rows_affected();
                if n == 0 {
                    let found: Option<String> = sqlx::query_scalar(ACTION_STATE)
                        .bind(id.as_str())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db(op))?;
                    return Err(state_conflict(
                        "action",
                        id.as_str(),
                        found.as_deref(),
                        to.as_str(),
                    ));
                }
            }
            Change::InsertApproval(a) => {
                sqlx::query(INSERT_APPROVAL)
                    .bind(&a.id)
                    .bind(a.action_id.as_str())
                    .bind(&a.action_hash)
                    .bind(a.state.as_str())
                    .bind(&a.user)
                    .bind(to_json(&serde_json::json!(a.approvers), "approvers")?)
                    .bind(i64::from(a.quorum))
                    .bind(a.expires.as_micros())
                    .bind(&a.reason)
                    .bind(a.created.as_micros())
                    .bind(a.updated.as_micros())
                    .execute(&mut *conn)
                    .await
                    .map_err(db(op))?;
            }
            Change::InsertDecision(d) => {
                let n = sqlx::query(INSERT_DECISION)
                    .bind(&d.approval_id)
                    .bind(&d.approver)
                    .bind(d.decision.as_str())
                    .bind(&d.comment)
                    .bind(d.time.as_micros())
                    .execute(&mut *conn)
                    .await
                    .map_err(db(op))?
                    .rows_affected();
                if n == 0 {
                    return Err(decision_exists(d));
                }
            }
            Change::SpendGrant {
                grant,
                amount_micros,
                now,
            } => {
                // PostgreSQL re-evaluates the WHERE clause on the newest row version under the
                // row lock, so concurrent spends cannot pass the budget test on old numbers.
                let n = sqlx::query(SPEND_GRANT)
                    .bind(grant)
                    .bind(amount_micros)
                    .bind(now.as_micros())
                    .execute(&mut *conn)
                    .await
                    .map_err(db(op))?
                    .rows_affected();
                if n == 0 {
                    return Err(grant_spent(grant));
                }
            }
            Change::SetApprovalState { id, from, to, time } => {
                let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
                let n = sqlx::query(
                    "UPDATE approvals SET state = $2, updated_us = $3 WHERE id = $1 AND state = ANY($4)",
                )
                .bind(id)
                .bind(to.as_str())
                .bind(time.as_micros())
                .bind(&from)
                .execute(&mut *conn)
                .await
                .map_err(db(op))?
                .rows_affected();
                if n == 0 {
                    let found: Option<String> = sqlx::query_scalar(APPROVAL_STATE)
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db(op))?;
                    return Err(state_conflict(
                        "approval",
                        id,
                        found.as_deref(),
                        to.as_str(),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn raw_action(r: &PgRow) -> Result<ActionRow, StoreError> {
    let op = "read action";
    RawAction {
        id: r.try_get(0).map_err(db(op))?,
        agent: r.try_get(1).map_err(db(op))?,
        user: r.try_get(2).map_err(db(op))?,
        grant: r.try_get(3).map_err(db(op))?,
        connector: r.try_get(4).map_err(db(op))?,
        operation: r.try_get(5).map_err(db(op))?,
        action_hash: r.try_get(6).map_err(db(op))?,
        idempotency_key: r.try_get(7).map_err(db(op))?,
        state: r.try_get(8).map_err(db(op))?,
        request: r.try_get(9).map_err(db(op))?,
        result: r.try_get(10).map_err(db(op))?,
        created_us: r.try_get(11).map_err(db(op))?,
        updated_us: r.try_get(12).map_err(db(op))?,
    }
    .decode()
}

fn raw_approval(r: &PgRow) -> Result<ApprovalRow, StoreError> {
    let op = "read approval";
    RawApproval {
        id: r.try_get(0).map_err(db(op))?,
        action_id: r.try_get(1).map_err(db(op))?,
        action_hash: r.try_get(2).map_err(db(op))?,
        state: r.try_get(3).map_err(db(op))?,
        user: r.try_get(4).map_err(db(op))?,
        approvers: r.try_get(5).map_err(db(op))?,
        quorum: r.try_get(6).map_err(db(op))?,
        expires_us: r.try_get(7).map_err(db(op))?,
        reason: r.try_get(8).map_err(db(op))?,
        created_us: r.try_get(9).map_err(db(op))?,
        updated_us: r.try_get(10).map_err(db(op))?,
    }
    .decode()
}

impl PgStore {
    /// The one approval `statement` finds for `value`.
    async fn one_approval(
        &self,
        statement: &'static str,
        value: &str,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        sqlx::query(statement)
            .bind(value)
            .fetch_optional(self.pool())
            .await
            .map_err(db("read approval"))?
            .as_ref()
            .map(raw_approval)
            .transpose()
    }
}

#[async_trait]
impl ActionStore for PgStore {
    async fn commit(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.commit_job(changes, entries).await
    }

    async fn action(&self, id: &ActionId) -> Result<Option<ActionRow>, StoreError> {
        sqlx::query(ACTION_BY_ID)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read action"))?
            .as_ref()
            .map(raw_action)
            .transpose()
    }

    async fn action_by_key(&self, agent: &str, key: &str) -> Result<Option<ActionRow>, StoreError> {
        sqlx::query(ACTION_BY_KEY)
            .bind(agent)
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .map_err(db("read action"))?
            .as_ref()
            .map(raw_action)
            .transpose()
    }

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRow>, StoreError> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions
             WHERE ($1::TEXT IS NULL OR agent_id = $1)
               AND ($2::TEXT IS NULL OR user_id = $2)
               AND ($3::TEXT IS NULL OR connector = $3)
               AND (cardinality($4::TEXT[]) = 0 OR state = ANY($4))
               AND ($5::BIGINT IS NULL OR created_us >= $5)
               AND ($6::BIGINT IS NULL OR created_us < $6)
             ORDER BY created_us DESC, id DESC LIMIT $7"
        )))
        .bind(&filter.agent)
        .bind(&filter.user)
        .bind(&filter.connector)
        .bind(&states)
        .bind(filter.since.map(|t| t.as_micros()))
        .bind(filter.before.map(|t| t.as_micros()))
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool())
        .await
        .map_err(db("search actions"))?
        .iter()
        .map(raw_action)
        .collect()
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        self.one_approval(APPROVAL_BY_ID, id).await
    }

    async fn approval_for_action(&self, id: &ActionId) -> Result<Option<ApprovalRow>, StoreError> {
        self.one_approval(APPROVAL_BY_ACTION, id.as_str()).await
    }

    async fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE ($1::TEXT IS NULL OR state = $1) ORDER BY created_us, id LIMIT $2"
        )))
        .bind(state.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(db("list approvals"))?
        .iter()
        .map(raw_approval)
        .collect()
    }

    async fn decisions(&self, approval_id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        let op = "read decisions";
        sqlx::query(DECISIONS)
            .bind(approval_id)
            .fetch_all(self.pool())
            .await
            .map_err(db(op))?
            .iter()
            .map(|r| {
                decode_decision(
                    r.try_get(0).map_err(db(op))?,
                    r.try_get(1).map_err(db(op))?,
                    r.try_get(2).map_err(db(op))?,
                    r.try_get(3).map_err(db(op))?,
                    r.try_get(4).map_err(db(op))?,
                )
            })
            .collect()
    }
}
