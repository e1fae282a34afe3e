//! The governed action pipeline, in the order an action goes through it. Each step is a file:
//!
//! 1. [`submit`] (`submit.rs`) takes an authenticated caller's request through
//!    - `admit.rs`: limits, connector and argument schema, the idempotency key;
//!    - `evaluate.rs`: the grant check (live, this agent, action, resource, constraints,
//!      budget) and policy;
//!    - `record.rs`: one commit of the action's state with its entries, then the answer. Deny:
//!      recorded as denied and the agent told why. Approval: the action and its approval request
//!      recorded, the agent gets 202. Allow: recorded as executing with the spend of the grant's
//!      budget, then
//!    - `execute.rs`: the connector runs with the vault credential, and the outcome is recorded
//!      before the agent gets it.
//! 2. [`decide`] (`decide.rs`): an approver's decision. On quorum, policy is evaluated again with
//!    the approval facts and, if it now allows, Writ executes the approved action itself.
//! 3. `sweeps.rs`: the background work. [`expire_approvals`], and [`recover_interrupted`]: an
//!    action that was executing when a process died is marked *outcome unknown* and never
//!    re-executed. [`wait_for`] wakes long-polls.
//!
//! `entries.rs` is the audit vocabulary of an action: every entry the pipeline appends is built
//! there. Every state change is committed in the same transaction as the entries that record it
//! (`ActionStore::commit`), and no answer is given before that commit is durable. Any failure of
//! identity, policy, store or vault stops the action before execution (fail closed).

mod admit;
mod decide;
mod entries;
mod evaluate;
mod execute;
mod record;
mod submit;
mod sweeps;

use serde::Deserialize;
use serde_json::{Value, json};
use writ_identity::{AgentId, GrantId, UserId};
use writ_store::{ActionRow, ApprovalRow, Decision};

pub use decide::{decide, may_approve};
pub use entries::action_hash;
pub use execute::{VaultCredentials, open_credential};
pub use submit::submit;
pub use sweeps::{expire_approvals, recover_interrupted, spawn_background, wait_for};

/// Who is asking, as authentication established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: AgentId,
    pub user: UserId,
    pub grant: GrantId,
    /// `delegated_token` or `agent_key`.
    pub auth: &'static str,
    /// The delegated token's id, when there is one.
    pub token_id: Option<String>,
    /// The actions a delegated token was narrowed to (a subset of its grant's), when there is
    /// one: the action must be among them as well as the grant's.
    pub token_actions: Option<Vec<String>>,
    /// The grant as authentication read it, so that the pipeline does not read it again.
    pub stored_grant: Option<writ_store::identity::StoredGrant>,
}

/// What an agent asks for: `POST /v1/actions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub connector: String,
    pub operation: String,
    #[serde(default = "empty_object")]
    pub args: Value,
    #[serde(default)]
    pub intent: String,
    #[serde(default)]
    pub rationale: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// With an agent API key: the grant the action is made under (a delegated token names it).
    #[serde(default)]
    pub grant_id: Option<String>,
}

impl Caller {
    /// Refuses an action outside the actions the caller's token was narrowed to.
    pub fn token_allows(&self, action: &str) -> Result<(), writ_identity::GrantDenial> {
        match &self.token_actions {
            Some(patterns)
                if !patterns
                    .iter()
                    .any(|p| writ_identity::grant::action_matches(p, action)) =>
            {
                Err(writ_identity::GrantDenial::TokenAction {
                    grant: self.grant.clone(),
                    action: action.to_owned(),
                    allowed: patterns.join(", "),
                })
            }
            _ => Ok(()),
        }
    }
}

fn empty_object() -> Value {
    json!({})
}

/// An action's answer: its row and the sequence numbers of the entries this request appended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: ActionRow,
    pub approval: Option<ApprovalRow>,
    pub seqs: Vec<u64>,
    /// True when an earlier answer was returned for an idempotent retry.
    pub replayed: bool,
}

impl Outcome {
    /// The status the answer carries (HTTP's numbers, which the `responded` entry records too).
    pub fn status(&self) -> u16 {
        entries::answer_status(self.action.state)
    }
}

/// Intent, rationale and an approver's comment are limited to this many bytes.
const MAX_TEXT: usize = 4096;
/// What an approver sends: `POST /v1/approvals/{id}/decision`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    #[serde(default)]
    pub comment: Option<String>,
    /// The action hash the approver reviewed; refused if the approval is for another.
    #[serde(default)]
    pub action_hash: Option<String>,
}
