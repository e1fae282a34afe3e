//! Actions and approvals: the state of each governed action, kept beside the audit log.
//!
//! Every change of an action's state is committed in the same database transaction as the audit
//! entries that record it: [`ActionStore::commit`] hands both to the store's single writer, which
//! applies the changes under a savepoint of the group commit, and sequences the entries only if
//! every change applied. A refused change (a state that moved on, a second decision by the same
//! approver, an idempotency key already used) rolls back to the savepoint and appends nothing;
//! the other callers sharing the batch are unaffected.
//!
//! Below the trait: the refusals and row decoding both backends share, then the statements they
//! run alike.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use writ_core::{ActionId, NewEntry, Timestamp};

use crate::columns::{from_json, to_ts};
use crate::{AppendReceipt, StoreError};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where an action stands.
    ActionState {
        Denied = "denied",
        PendingApproval = "pending_approval",
        Executing = "executing",
        Succeeded = "succeeded",
        Failed = "failed",
        Rejected = "rejected",
        Expired = "expired",
        OutcomeUnknown = "outcome_unknown",
    }
}

impl ActionState {
    /// No further change can happen.
    pub fn is_final(self) -> bool {
        !matches!(self, ActionState::PendingApproval | ActionState::Executing)
    }
}

string_enum! {
    /// Where an approval request stands.
    ApprovalState {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Expired = "expired",
    }
}

string_enum! {
    /// One approver's decision.
    Decision {
        Approve = "approve",
        Deny = "deny",
    }
}

/// One governed action as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    pub id: ActionId,
    pub agent: String,
    /// The user the agent acts for.
    pub user: String,
    pub grant: Option<String>,
    pub connector: String,
    pub operation: String,
    /// Hex SHA-256 of the canonical action (agent, user, grant, connector, operation, arguments):
    /// what an approval is bound to and what makes an idempotent retry "the same action".
    pub action_hash: String,
    pub idempotency_key: Option<String>,
    pub state: ActionState,
    /// The request as the agent made it (arguments, intent, rationale).
    pub request: Value,
    /// The last answer: the verdict and its explanation, the connector's result or the error.
    pub result: Option<Value>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// A request for human approval of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub id: String,
    pub action_id: ActionId,
    /// The action hash the approval is bound to.
    pub action_hash: String,
    pub state: ApprovalState,
    /// The user the agent acts for: never an approver of its own agent's action.
    pub user: String,
    /// Who may approve: user ids and `group:NAME` entries, from the policy gate.
    pub approvers: Vec<String>,
    pub quorum: u32,
    pub expires: Timestamp,
    /// The gate's reason, as the policy states it.
    pub reason: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// One approver's decision on one approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    pub approval_id: String,
    pub approver: String,
    pub decision: Decision,
    pub comment: Option<String>,
    pub time: Timestamp,
}

/// A state change, applied by the writer in the transaction of the entries that record it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Refused with [`StoreError::AlreadyExists`] if the agent already used the idempotency key.
    InsertAction(ActionRow),
    /// Refused with [`StoreError::Conflict`] unless the action is in one of the `from` states.
    SetActionState {
        id: ActionId,
        from: Vec<ActionState>,
        to: ActionState,
        /// Replaces the stored result when given.
        result: Option<Value>,
        time: Timestamp,
    },
    InsertApproval(ApprovalRow),
    /// Refused with [`StoreError::AlreadyExists`] if this approver already decided.
    InsertDecision(DecisionRow),
    /// Spends one use and `amount_micros` of a grant's budgets. Refused with
    /// [`StoreError::GrantRefused`] if the grant is revoked, expired at `now`, or the spend would
    /// exceed `max_uses` or the sum budget: the budget is spent if and only if the action that
    /// spends it is recorded.
    SpendGrant {
        grant: String,
        amount_micros: i64,
        now: Timestamp,
    },
    /// Refused with [`StoreError::Conflict`] unless the approval is in one of the `from` states.
    SetApprovalState {
        id: String,
        from: Vec<ApprovalState>,
        to: ApprovalState,
        time: Timestamp,
    },
}

/// Which actions a search wants; empty fields match everything. Newest first.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    pub agent: Option<String>,
    pub user: Option<String>,
    pub connector: Option<String>,
    pub states: Vec<ActionState>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before (for paging: the `created` of the last row seen).
    pub before: Option<Timestamp>,
    pub limit: u32,
}

/// Actions and approvals, committed with their audit entries.
#[async_trait]
pub trait ActionStore: Send + Sync + 'static {
    /// Applies `changes` and appends `entries` in one transaction, durable when it returns. If a
    /// change is refused, nothing of this call is written and the error says why.
    async fn commit(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<AppendReceipt>, StoreError>;

    async fn action(&self, id: &ActionId) -> Result<Option<ActionRow>, StoreError>;

    /// The action an agent submitted under an idempotency key.
    async fn action_by_key(&self, agent: &str, key: &str) -> Result<Option<ActionRow>, StoreError>;

    async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRow>, StoreError>;

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError>;

    async fn approval_for_action(&self, id: &ActionId) -> Result<Option<ApprovalRow>, StoreError>;

    /// Approvals, oldest first, optionally only those in `state`.
    async fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, StoreError>;

    /// The decisions on an approval, in the order they were made.
    async fn decisions(&self, approval_id: &str) -> Result<Vec<DecisionRow>, StoreError>;
}

/// What a refused `SetActionState` says.
pub(crate) fn state_conflict(what: &str, id: &str, found: Option<&str>, to: &str) -> StoreError {
    match found {
        None => StoreError::NotFound(format!("{what} {id}")),
        Some(found) => {
            StoreError::Conflict(format!("{what} {id} is {found}; it cannot become {to}"))
        }
    }
}

/// The refusal of a `SpendGrant` that matched no row.
pub(crate) fn grant_spent(grant: &str) -> StoreError {
    StoreError::GrantRefused(format!(
        "grant {grant} was revoked, has expired, or its budget is spent"
    ))
}

/// The refusal of an `InsertAction` whose idempotency key (or id) is taken.
pub(crate) fn action_exists(a: &ActionRow) -> StoreError {
    StoreError::AlreadyExists(match &a.idempotency_key {
        Some(key) => format!(
            "an action of agent {} with idempotency key {key:?}",
            a.agent
        ),
        None => format!("action {}", a.id),
    })
}

/// The refusal of a second `InsertDecision` by one approver.
pub(crate) fn decision_exists(d: &DecisionRow) -> StoreError {
    StoreError::AlreadyExists(format!(
        "a decision by {} on approval {}",
        d.approver, d.approval_id
    ))
}

pub(crate) fn parse_state<T>(
    parse: fn(&str) -> Option<T>,
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("{what} {text:?} is not a known state")))
}

pub(crate) fn to_action_id(text: String) -> Result<ActionId, StoreError> {
    ActionId::new(text).map_err(|e| StoreError::Corrupt(format!("action id: {e}")))
}

/// The columns of a stored action, as both backends read them.
pub(crate) struct RawAction {
    pub id: String,
    pub agent: String,
    pub user: String,
    pub grant: Option<String>,
    pub connector: String,
    pub operation: String,
    pub action_hash: String,
    pub idempotency_key: Option<String>,
    pub state: String,
    pub request: String,
    pub result: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
}

impl RawAction {
    pub fn decode(self) -> Result<ActionRow, StoreError> {
        Ok(ActionRow {
            id: to_action_id(self.id)?,
            agent: self.agent,
            user: self.user,
            grant: self.grant,
            connector: self.connector,
            operation: self.operation,
            action_hash: self.action_hash,
            idempotency_key: self.idempotency_key,
            state: parse_state(ActionState::parse, &self.state, "action state")?,
            request: from_json(&self.request, "action request")?,
            result: self
                .result
                .map(|r| from_json(&r, "action result"))
                .transpose()?,
            created: to_ts(self.created_us, "action creation time")?,
            updated: to_ts(self.updated_us, "action update time")?,
        })
    }
}

/// The columns of `actions`, in the order [`RawAction`] lists them.
macro_rules! action_columns {
    () => {
        "id, agent_id, user_id, grant_id, connector, operation, action_hash, idempotency_key, \
         state, request, result, created_us, updated_us"
    };
}
pub(crate) const ACTION_COLUMNS: &str = action_columns!();

/// The columns of a stored approval.
pub(crate) struct RawApproval {
    pub id: String,
    pub action_id: String,
    pub action_hash: String,
    pub state: String,
    pub user: String,
    pub approvers: String,
    pub quorum: i64,
    pub expires_us: i64,
    pub reason: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
}

impl RawApproval {
    pub fn decode(self) -> Result<ApprovalRow, StoreError> {
        Ok(ApprovalRow {
            id: self.id,
            action_id: to_action_id(self.action_id)?,
            action_hash: self.action_hash,
            state: parse_state(ApprovalState::parse, &self.state, "approval state")?,
            user: self.user,
            approvers: from_json(&self.approvers, "approvers")?,
            quorum: u32::try_from(self.quorum)
                .map_err(|_| StoreError::Corrupt(format!("quorum {}", self.quorum)))?,
            expires: to_ts(self.expires_us, "approval expiry")?,
            reason: self.reason,
            created: to_ts(self.created_us, "approval creation time")?,
            updated: to_ts(self.updated_us, "approval update time")?,
        })
    }
}

/// The columns of `approvals`, in the order [`RawApproval`] lists them.
macro_rules! approval_columns {
    () => {
        "id, action_id, action_hash, state, user_id, approvers, quorum, expires_us, reason, \
         created_us, updated_us"
    };
}
pub(crate) const APPROVAL_COLUMNS: &str = approval_columns!();

pub(crate) fn decode_decision(
    approval_id: String,
    approver: String,
    decision: String,
    comment: Option<String>,
    time_us: i64,
) -> Result<DecisionRow, StoreError> {
    Ok(DecisionRow {
        approval_id,
        approver,
        decision: parse_state(Decision::parse, &decision, "decision")?,
        comment,
        time: to_ts(time_us, "decision time")?,
    })
}

/// Refused (nothing inserted) when the agent already used the idempotency key.
pub(crate) const INSERT_ACTION: &str = concat!(
    "INSERT INTO actions (",
    action_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
);

/// The state of action `$1`, to say why a change of it was refused.
pub(crate) const ACTION_STATE: &str = "SELECT state FROM actions WHERE id = $1";

/// The state of approval `$1`, to say why a change of it was refused.
pub(crate) const APPROVAL_STATE: &str = "SELECT state FROM approvals WHERE id = $1";

pub(crate) const ACTION_BY_ID: &str =
    concat!("SELECT ", action_columns!(), " FROM actions WHERE id = $1");

pub(crate) const ACTION_BY_KEY: &str = concat!(
    "SELECT ",
    action_columns!(),
    " FROM actions WHERE agent_id = $1 AND idempotency_key = $2"
);

pub(crate) const INSERT_APPROVAL: &str = concat!(
    "INSERT INTO approvals (",
    approval_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);

pub(crate) const APPROVAL_BY_ID: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals WHERE id = $1"
);

pub(crate) const APPROVAL_BY_ACTION: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals WHERE action_id = $1"
);

/// Refused (nothing inserted) when the approver already decided.
pub(crate) const INSERT_DECISION: &str =
    "INSERT INTO approval_decisions (approval_id, approver, decision, comment, time_us)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// The decisions on approval `$1`, in the order they were made.
pub(crate) const DECISIONS: &str = "SELECT approval_id, approver, decision, comment, time_us
     FROM approval_decisions WHERE approval_id = $1 ORDER BY time_us, approver";
