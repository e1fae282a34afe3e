//! The governed action pipeline, in the order an action goes through it:
//!
//! 1. [`submit`]: the caller is already authenticated (see `api.rs`); limits, connector and
//!    argument checks; the idempotency key; the grant check; policy. Then one of:
//!    - **deny**: the action is recorded as denied and the agent told why;
//!    - **approval**: the action and its approval request are recorded, the agent gets 202;
//!    - **allow**: the action is recorded as executing, the connector runs with the vault
//!      credential, and the outcome is recorded before the agent gets it.
//! 2. [`decide`]: an approver's decision. On quorum, policy is evaluated again with the approval
//!    facts and, if it now allows, Writ executes the approved action itself.
//! 3. [`expire_approvals`] and [`recover_interrupted`]: background sweeps. An action that was
//!    executing when a process died is marked *outcome unknown* and never re-executed.
//!
//! Every state change is committed in the same transaction as the audit entries that record it
//! (`ActionStore::commit`), and no answer is given before that commit is durable. Any failure of
//! identity, policy, store or vault stops the action before execution (fail closed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_identity::{ActionAttempt, AgentId, GrantDenial, GrantId, UserId};
use writ_policy::{
    ApprovalFacts, PolicyRequest, Principal, RequestContext, RequestTime, Resource, ToolFacts,
    Verdict,
};
use writ_store::{
    ActionFilter, ActionRow, ActionState, ApprovalRow, ApprovalState, Change, Database, Decision,
    DecisionRow, StoreError,
};
use writ_vault::{CredentialName, CredentialScope, MasterKey, Secret, VersionState};

use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;

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
    /// The HTTP status the action's state answers with.
    pub fn status(&self) -> u16 {
        match self.action.state {
            ActionState::Succeeded => 200,
            ActionState::Denied | ActionState::Rejected => 403,
            ActionState::PendingApproval | ActionState::Executing => 202,
            ActionState::Expired => 410,
            ActionState::Failed | ActionState::OutcomeUnknown => 502,
        }
    }
}

const MAX_TEXT: usize = 4096;
const MAX_KEY: usize = 256;
/// Responses larger than this go into the log as a digest, not inline.
const MAX_LOGGED_RESPONSE: usize = 64 * 1024;

/// Step 1: an agent's request, through to its answer.
pub async fn submit(
    gw: &Arc<Gateway>,
    caller: &Caller,
    req: ActionRequest,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    // Limits and shape, before anything is written.
    if let Err(retry) = gw.limiter.check(caller.agent.as_str(), Instant::now()) {
        gw.metrics.refused("rate_limited");
        record_refusal(gw, caller, &req, "rate_limited").await;
        return Err(Error::rate_limited(
            "rate_limited",
            format!(
                "agent {} is over its limit of {} actions per minute; retry in {} s",
                caller.agent,
                gw.limits.actions_per_agent_per_minute,
                retry.header_secs()
            ),
            retry.header_secs(),
        ));
    }
    let args_bytes = serde_json::to_vec(&req.args).map_or(usize::MAX, |v| v.len());
    if args_bytes > gw.limits.max_args_bytes {
        gw.metrics.refused("args_too_large");
        record_refusal(gw, caller, &req, "args_too_large").await;
        return Err(Error::new(
            ErrorKind::TooLarge,
            "args_too_large",
            format!(
                "the arguments are {args_bytes} bytes; the limit is {}",
                gw.limits.max_args_bytes
            ),
        ));
    }
    if req.intent.len() > MAX_TEXT || req.rationale.len() > MAX_TEXT {
        return Err(Error::invalid(format!(
            "intent and rationale are limited to {MAX_TEXT} bytes each"
        )));
    }
    if let Some(key) = &req.idempotency_key
        && (key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control))
    {
        return Err(Error::invalid(format!(
            "idempotency_key must be 1 to {MAX_KEY} characters without control characters"
        )));
    }
    let connector = gw.connectors.get(&req.connector).ok_or_else(|| {
        Error::not_found(format!(
            "there is no connector {:?}; this gateway has: {}",
            req.connector,
            gw.connectors.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    connector
        .validate(&req.operation, &req.args)
        .map_err(|e| Error::invalid(format!("{}.{}: {e}", req.connector, req.operation)))?;
    let resource = connector
        .resource(&req.operation, &req.args)
        .map_err(|e| Error::invalid(format!("{}.{}: {e}", req.connector, req.operation)))?;
    let action_name = format!("{}.{}", req.connector, req.operation);
    let hash = action_hash(caller, &req.connector, &req.operation, &req.args)?;

    // An idempotent retry gets the first answer; the same key for another action is refused.
    if let Some(key) = &req.idempotency_key
        && let Some(existing) = gw.db.action_by_key(caller.agent.as_str(), key).await?
    {
        return replay(gw, existing, &hash).await;
    }

    let id = ActionId::generate();
    let now = Timestamp::now();
    let mut request_json = json!({
        "args": req.args,
        "intent": req.intent,
        "rationale": req.rationale,
        "resource": {"type": resource.entity_type, "id": resource.id},
        "auth": caller.auth,
    });
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
        "action_hash": hash,
        "auth": caller.auth,
    });
    if let Some(key) = &req.idempotency_key {
        requested["idempotency_key"] = json!(key);
    }
    if let Some(jti) = &caller.token_id {
        requested["token_id"] = json!(jti);
    }
    // An MCP tool's annotations, as its server gave them when the call came: the policy saw
    // these, and they are the upstream's claims, so the record keeps them.
    let tool = tool_facts(&**connector, &req.operation);
    if let Some(t) = &tool {
        requested["tool"] = json!(t);
    }
    // The upstream's definition of the tool (an MCP server can redefine its tools): recorded,
    // and checked again before an approved action runs.
    let definition = connector.definition(&req.operation);
    if let Some(d) = &definition {
        requested["tool_definition"] = json!(d);
        request_json["tool_definition"] = json!(d);
    }
    let agent_actor = format!("agent:{}", caller.agent);
    let mut entries = vec![entry(&id, EntryKind::Requested, &agent_actor, requested)?];

    // The grant: live, this agent's, covering this action, its arguments and its budget.
    let stored_grant =
        match &caller.stored_grant {
            Some(g) => g.clone(),
            None => gw.db.grant(&caller.grant).await?.ok_or_else(|| {
                Error::forbidden(format!("grant {} does not exist", caller.grant))
            })?,
        };
    let grant = stored_grant.grant;
    let resource_name = (resource.entity_type != "Connector").then_some(resource.id.as_str());
    let attempt = ActionAttempt {
        agent: &caller.agent,
        action: &action_name,
        resource: resource_name,
        arguments: &req.args,
    };
    let grant_check = grant.check(&attempt, now, stored_grant.usage);
    let mut shadow_note = None;
    let verdict = match &grant_check {
        Err(denial) => grant_verdict(denial, &gw.policy.version().to_string()),
        Ok(_) => {
            let user =
                gw.db.user(&caller.user).await?.ok_or_else(|| {
                    Error::forbidden(format!("user {} does not exist", caller.user))
                })?;
            let policy_request = PolicyRequest {
                principal: Principal {
                    agent: caller.agent.as_str().to_owned(),
                    user: caller.user.as_str().to_owned(),
                    groups: user.groups.clone(),
                    agent_groups: Vec::new(),
                },
                action: action_name.clone(),
                resource: Resource {
                    kind: resource.entity_type.clone(),
                    id: resource.id.clone(),
                    attributes: resource.attributes.clone(),
                    parents: Vec::new(),
                },
                context: RequestContext {
                    args: req.args.clone(),
                    grant: Some(grant_context(
                        &grant,
                        gw.policy.current().action_groups(&action_name),
                    )),
                    intent: req.intent.clone(),
                    time: RequestTime::now_utc(),
                    approval: ApprovalFacts::default(),
                    tool,
                },
            };
            // A candidate bundle in shadow mode is evaluated beside the live one; only the live
            // verdict takes effect, a disagreement is recorded with the evaluation.
            let (verdict, shadow) = gw.policy.evaluate_with_shadow(&policy_request);
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
    entries.push(entry(&id, EntryKind::Evaluated, "writ", evaluated)?);
    let explanation = verdict_json(&verdict);
    let row = |state, result| ActionRow {
        id: id.clone(),
        agent: caller.agent.as_str().to_owned(),
        user: caller.user.as_str().to_owned(),
        grant: Some(caller.grant.as_str().to_owned()),
        connector: req.connector.clone(),
        operation: req.operation.clone(),
        action_hash: hash.clone(),
        idempotency_key: req.idempotency_key.clone(),
        state,
        request: request_json.clone(),
        result: Some(result),
        created: now,
        updated: now,
    };

    match &verdict {
        Verdict::Deny { .. } => {
            entries.push(responded(&id, 403, ActionState::Denied)?);
            let receipts = commit_new(
                gw,
                caller,
                &req,
                &hash,
                vec![Change::InsertAction(row(
                    ActionState::Denied,
                    json!({"verdict": explanation}),
                ))],
                entries,
            )
            .await?;
            let receipts = match receipts {
                Committed::Done(r) => r,
                Committed::Raced(outcome) => return Ok(*outcome),
                Committed::GrantRefused => {
                    return Err(Error::internal("recording the action was refused"));
                }
            };
            gw.metrics
                .record_action("deny", &req.connector, "denied", started.elapsed());
            finish(gw, &id, receipts, false).await
        }
        Verdict::RequireApproval {
            approval,
            explanation: why,
        } => {
            let approval_id = format!("apr_{}", uuid::Uuid::now_v7().simple());
            let expires = add(now, approval.expires);
            let reason = why.reasons.first().cloned();
            let approval_row = ApprovalRow {
                id: approval_id.clone(),
                action_id: id.clone(),
                action_hash: hash.clone(),
                state: ApprovalState::Pending,
                user: caller.user.as_str().to_owned(),
                approvers: approval.approvers.clone(),
                quorum: approval.quorum.max(1),
                expires,
                reason: reason.clone(),
                created: now,
                updated: now,
            };
            entries.push(entry(
                &id,
                EntryKind::ApprovalRequested,
                "writ",
                json!({
                    "approval_id": approval_id,
                    "approvers": approval.approvers,
                    "quorum": approval.quorum.max(1),
                    "expires_at": expires.to_string(),
                    "action_hash": hash,
                    "reason": reason,
                    "gates": approval.gates.iter().map(|g| g.policy_id.clone()).collect::<Vec<_>>(),
                }),
            )?);
            entries.push(responded(&id, 202, ActionState::PendingApproval)?);
            let receipts = commit_new(
                gw,
                caller,
                &req,
                &hash,
                vec![
                    Change::InsertAction(row(
                        ActionState::PendingApproval,
                        json!({"verdict": explanation}),
                    )),
                    Change::InsertApproval(approval_row),
                ],
                entries,
            )
            .await?;
            let receipts = match receipts {
                Committed::Done(r) => r,
                Committed::Raced(outcome) => return Ok(*outcome),
                Committed::GrantRefused => {
                    return Err(Error::internal("recording the action was refused"));
                }
            };
            gw.metrics
                .record_action("approval", &req.connector, "pending", started.elapsed());
            finish(gw, &id, receipts, false).await
        }
        Verdict::Allow { .. } => {
            // The grant's budget is spent in the same transaction that records the action as
            // executing: spent if and only if the action runs.
            let amount = grant_check.as_ref().map_or(0, |a| a.micros());
            let committed = commit_new(
                gw,
                caller,
                &req,
                &hash,
                vec![
                    Change::InsertAction(row(
                        ActionState::Executing,
                        json!({"verdict": explanation}),
                    )),
                    Change::SpendGrant {
                        grant: caller.grant.as_str().to_owned(),
                        amount_micros: amount,
                        now,
                    },
                ],
                entries.clone(),
            )
            .await?;
            let mut seqs = match committed {
                Committed::Done(r) => r,
                Committed::Raced(outcome) => return Ok(*outcome),
                Committed::GrantRefused => {
                    // A concurrent use spent the budget, or the grant was revoked meanwhile:
                    // check again for the reason in words, and record the denial.
                    let stored = gw.db.grant(&caller.grant).await?;
                    let reason = match stored.map(|g| g.grant.check(&attempt, now, g.usage)) {
                        Some(Err(denial)) => denial.to_string(),
                        _ => format!(
                            "grant {} was revoked or its budget spent meanwhile",
                            caller.grant
                        ),
                    };
                    let verdict = Verdict::Deny {
                        explanation: writ_policy::Explanation {
                            reasons: vec![format!(
                                "the grant does not cover this action: {reason}"
                            )],
                            bundle_version: gw.policy.version().to_string(),
                            ..Default::default()
                        },
                    };
                    entries.pop();
                    entries.push(entry(
                        &id,
                        EntryKind::Evaluated,
                        "writ",
                        json!({"verdict": verdict_json(&verdict), "grant_check": reason}),
                    )?);
                    entries.push(responded(&id, 403, ActionState::Denied)?);
                    let receipts = commit_new(
                        gw,
                        caller,
                        &req,
                        &hash,
                        vec![Change::InsertAction(row(
                            ActionState::Denied,
                            json!({"verdict": verdict_json(&verdict)}),
                        ))],
                        entries,
                    )
                    .await?;
                    let receipts = match receipts {
                        Committed::Done(r) => r,
                        Committed::Raced(outcome) => return Ok(*outcome),
                        Committed::GrantRefused => {
                            return Err(Error::internal("recording a denial was refused"));
                        }
                    };
                    gw.metrics
                        .record_action("deny", &req.connector, "denied", started.elapsed());
                    return finish(gw, &id, receipts, false).await;
                }
            };
            let done = execute(
                gw,
                &id,
                &req.connector,
                &req.operation,
                &req.args,
                &caller.user,
                explanation,
            )
            .await?;
            seqs.extend(done.seqs);
            // The row as just committed: no need to read it back.
            let mut action = row(done.state, done.result);
            action.updated = done.time;
            let outcome = Outcome {
                action,
                approval: None,
                seqs,
                replayed: false,
            };
            let label = if outcome.action.state == ActionState::Succeeded {
                "executed"
            } else {
                "error"
            };
            gw.metrics
                .record_action("allow", &req.connector, label, started.elapsed());
            Ok(outcome)
        }
    }
}

enum Committed {
    Done(Vec<u64>),
    /// Another request with the same idempotency key won the race: its answer.
    Raced(Box<Outcome>),
    /// The grant's budget could not be spent (the only change here refused as a conflict).
    GrantRefused,
}

/// Commits a new action; if its idempotency key was taken meanwhile, answers like a retry.
async fn commit_new(
    gw: &Arc<Gateway>,
    caller: &Caller,
    req: &ActionRequest,
    hash: &str,
    changes: Vec<Change>,
    entries: Vec<NewEntry>,
) -> Result<Committed, Error> {
    match gw.db.commit(changes, entries).await {
        Ok(receipts) => {
            gw.notify_change();
            Ok(Committed::Done(receipts.iter().map(|r| r.seq).collect()))
        }
        Err(StoreError::AlreadyExists(_)) if req.idempotency_key.is_some() => {
            let key = req.idempotency_key.as_deref().unwrap_or_default();
            match gw.db.action_by_key(caller.agent.as_str(), key).await? {
                Some(existing) => Ok(Committed::Raced(Box::new(
                    replay(gw, existing, hash).await?,
                ))),
                None => Err(Error::conflict("the idempotency key is in use; retry")),
            }
        }
        Err(StoreError::GrantRefused(_)) => Ok(Committed::GrantRefused),
        Err(e) => Err(e.into()),
    }
}

/// The answer to a retry with an idempotency key already used.
async fn replay(gw: &Arc<Gateway>, existing: ActionRow, hash: &str) -> Result<Outcome, Error> {
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
async fn finish(
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

/// An MCP tool's annotations for the policy context, as the connector knows them now.
fn tool_facts(connector: &dyn writ_connectors::Connector, operation: &str) -> Option<ToolFacts> {
    connector.hints(operation).map(|h| ToolFacts {
        read_only: h.read_only,
        destructive: h.destructive,
        idempotent: h.idempotent,
        open_world: h.open_world,
    })
}

/// Runs the connector for an action already recorded as executing, and records the outcome.
/// Returns the sequence numbers of the entries it appended.
async fn execute(
    gw: &Arc<Gateway>,
    id: &ActionId,
    connector_name: &str,
    operation: &str,
    args: &Value,
    user: &UserId,
    verdict: Value,
) -> Result<Executed, Error> {
    let connector_actor = format!("connector:{connector_name}");
    let started = Instant::now();
    let result: Result<(writ_connectors::Outcome, Option<String>), String> = async {
        let connector = gw
            .connectors
            .get(connector_name)
            .ok_or_else(|| format!("connector {connector_name} is no longer configured"))?;
        let info = connector
            .operation(operation)
            .ok_or_else(|| format!("operation {operation} is no longer offered"))?;
        let credential = match &info.credential {
            Some(name) => Some(load_credential(gw, name, user).await?),
            None => None,
        };
        let outcome = connector
            .execute(writ_connectors::Call {
                operation,
                args,
                credential: credential.as_ref().map(|(s, _)| s),
            })
            .await
            .map_err(|e| e.to_string())?;
        let reference = credential
            .map(|(_, r)| r)
            .or_else(|| outcome.credential.clone());
        Ok((outcome, reference))
    }
    .await;
    gw.metrics
        .record_connector(connector_name, started.elapsed());
    let now = Timestamp::now();
    let (state, executed, result) = match result {
        Ok((outcome, credential)) => {
            let state = if outcome.success {
                ActionState::Succeeded
            } else {
                ActionState::Failed
            };
            let logged = loggable(&outcome.body);
            (
                state,
                json!({
                    "outcome": if outcome.success { "success" } else { "failure" },
                    "status": outcome.status,
                    "credential": credential,
                    "elapsed_ms": outcome.elapsed.as_millis() as u64,
                    "redacted": outcome.redacted,
                    "response": logged,
                }),
                json!({
                    "verdict": verdict,
                    "outcome": {
                        "success": outcome.success,
                        "status": outcome.status,
                        "body": outcome.body,
                        "redacted": outcome.redacted,
                        "credential": credential,
                    },
                }),
            )
        }
        Err(message) => (
            ActionState::Failed,
            json!({"outcome": "error", "error": message}),
            json!({"verdict": verdict, "error": message}),
        ),
    };
    let status = if state == ActionState::Succeeded {
        200
    } else {
        502
    };
    let receipts = gw
        .db
        .commit(
            vec![Change::SetActionState {
                id: id.clone(),
                from: vec![ActionState::Executing],
                to: state,
                result: Some(result.clone()),
                time: now,
            }],
            vec![
                entry(id, EntryKind::Executed, &connector_actor, executed)?,
                responded(id, status, state)?,
            ],
        )
        .await?;
    gw.notify_change();
    Ok(Executed {
        seqs: receipts.iter().map(|r| r.seq).collect(),
        state,
        result,
        time: now,
    })
}

/// What [`execute`] recorded.
struct Executed {
    seqs: Vec<u64>,
    state: ActionState,
    result: Value,
    time: Timestamp,
}

/// The current version of credential `name`: the acting user's own if they have one, else the
/// shared one. Returns the secret and its reference (`name@version`) for the log.
async fn load_credential(
    gw: &Arc<Gateway>,
    name: &str,
    user: &UserId,
) -> Result<(Secret, String), String> {
    open_credential(gw.db.as_ref(), &gw.master_key, name, Some(user)).await
}

/// The current version of credential `name` (the user's own first, when a user is given, else
/// the shared one), opened. Errors say what is missing and never carry secret bytes.
pub async fn open_credential(
    db: &dyn Database,
    master_key: &MasterKey,
    name: &str,
    user: Option<&UserId>,
) -> Result<(Secret, String), String> {
    let name = CredentialName::new(name).map_err(|e| e.to_string())?;
    let versions = db.credential_versions(Some(&name)).await.map_err(|e| {
        tracing::error!(error = %e, "store error while reading a credential");
        "the vault is unavailable".to_owned()
    })?;
    let user_scope = user.and_then(|u| CredentialScope::user(u.as_str()).ok());
    let current = |scope: &CredentialScope| {
        versions
            .iter()
            .find(|v| &v.reference.scope == scope && v.state == VersionState::Current)
    };
    let chosen = user_scope
        .as_ref()
        .and_then(current)
        .or_else(|| current(&CredentialScope::Shared))
        .ok_or_else(|| {
            format!(
                "credential {name} has no current version; store it with `writ vault put {name}`"
            )
        })?;
    let sealed = db
        .sealed_credential(&chosen.reference)
        .await
        .map_err(|_| "the vault is unavailable".to_owned())?
        .ok_or_else(|| format!("credential {} is not readable", chosen.reference))?;
    let secret = writ_vault::open(master_key, &sealed).map_err(|e| {
        tracing::error!(error = %e, credential = %chosen.reference, "cannot open a credential");
        format!(
            "credential {} cannot be opened with this master key",
            chosen.reference
        )
    })?;
    Ok((secret, chosen.reference.to_string()))
}

/// The vault as the credential source of connectors that authenticate per connection (MCP
/// upstreams): shared credentials only, since a connection serves every user.
pub struct VaultCredentials {
    pub db: Arc<dyn Database>,
    pub master_key: Arc<MasterKey>,
}

#[async_trait::async_trait]
impl writ_connectors::mcp::CredentialSource for VaultCredentials {
    async fn shared(&self, name: &str) -> Result<(Secret, String), String> {
        open_credential(self.db.as_ref(), &self.master_key, name, None).await
    }
}

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
    let grant = gw.db.grant(&caller.grant).await?;
    let requester = gw.db.user(&caller.user).await?;
    let connector = gw.connectors.get(&action.connector);
    let verdict = match (&grant, requester, connector) {
        (Some(grant), Some(requester), Some(connector)) => {
            let resource_ref = connector
                .resource(&action.operation, &args)
                .map_err(|e| Error::internal(e.to_string()))?;
            let live = grant.grant.is_live(now);
            match live {
                Err(denial) => grant_verdict(&denial, &gw.policy.version().to_string()),
                Ok(()) => gw.policy.evaluate(&PolicyRequest {
                    principal: Principal {
                        agent: caller.agent.as_str().to_owned(),
                        user: caller.user.as_str().to_owned(),
                        groups: requester.groups.clone(),
                        agent_groups: Vec::new(),
                    },
                    action: format!("{}.{}", action.connector, action.operation),
                    resource: Resource {
                        kind: resource_ref.entity_type,
                        id: resource_ref.id,
                        attributes: resource_ref.attributes,
                        parents: Vec::new(),
                    },
                    context: RequestContext {
                        args: args.clone(),
                        grant: Some(grant_context(
                            &grant.grant,
                            gw.policy.current().action_groups(&format!(
                                "{}.{}",
                                action.connector, action.operation
                            )),
                        )),
                        intent: action
                            .request
                            .get("intent")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        time: RequestTime::now_utc(),
                        approval: ApprovalFacts {
                            granted: true,
                            approvers: approvals.clone(),
                        },
                        tool: tool_facts(&**connector, &action.operation),
                    },
                }),
            }
        }
        _ => Verdict::Deny {
            explanation: writ_policy::Explanation {
                reasons: vec![
                    "the grant, the user or the connector of this action no longer exists".into(),
                ],
                bundle_version: gw.policy.version().to_string(),
                ..Default::default()
            },
        },
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
                Verdict::Deny {
                    explanation: writ_policy::Explanation {
                        reasons: vec![format!(
                            "the tool's definition changed upstream after the request ({then}, now {}); it was not run: request it again",
                            now.as_deref().unwrap_or("gone")
                        )],
                        bundle_version: gw.policy.version().to_string(),
                        ..Default::default()
                    },
                }
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
    let resource_id = connector
        .and_then(|c| c.resource(&action.operation, &args).ok())
        .filter(|r| r.entity_type != "Connector")
        .map(|r| r.id);
    let attempt = ActionAttempt {
        agent: &caller.agent,
        action: &action_name,
        resource: resource_id.as_deref(),
        arguments: &args,
    };
    // Denied by the grant after all: the evaluation recorded says so, with the reason.
    let grant_denied = |reason: String| -> Result<(Vec<Change>, Vec<NewEntry>), Error> {
        let verdict = Verdict::Deny {
            explanation: writ_policy::Explanation {
                reasons: vec![format!("the grant does not cover this action: {reason}")],
                bundle_version: gw.policy.version().to_string(),
                ..Default::default()
            },
        };
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

/// Commits `changes` with `entries`, wakes the long-polls, and answers with the action as it now
/// is (refusals of the store mapped by `refused`).
async fn commit_then_finish(
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

/// Step 3a: closes pending approvals whose time ran out.
pub async fn expire_approvals(gw: &Arc<Gateway>) -> Result<usize, Error> {
    let now = Timestamp::now();
    let mut n = 0;
    for approval in gw.db.approvals(Some(ApprovalState::Pending), 1000).await? {
        if approval.expires <= now && expire_one(gw, &approval).await? {
            n += 1;
        }
    }
    Ok(n)
}

async fn expire_one(gw: &Arc<Gateway>, approval: &ApprovalRow) -> Result<bool, Error> {
    let now = Timestamp::now();
    let result = gw
        .db
        .commit(
            vec![
                Change::SetApprovalState {
                    id: approval.id.clone(),
                    from: vec![ApprovalState::Pending],
                    to: ApprovalState::Expired,
                    time: now,
                },
                Change::SetActionState {
                    id: approval.action_id.clone(),
                    from: vec![ActionState::PendingApproval],
                    to: ActionState::Expired,
                    result: Some(json!({"approval": "expired", "expired_at": approval.expires.to_string()})),
                    time: now,
                },
            ],
            vec![
                entry(
                    &approval.action_id,
                    EntryKind::ApprovalDecided,
                    "writ",
                    json!({"approval_id": approval.id, "decision": "expired", "accepted": true, "expired_at": approval.expires.to_string()}),
                )?,
                responded(&approval.action_id, 410, ActionState::Expired)?,
            ],
        )
        .await;
    match result {
        Ok(_) => {
            gw.notify_change();
            Ok(true)
        }
        // Decided or expired by someone else meanwhile.
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Step 3b: actions left *executing* by a process that stopped. A connector call is bounded by
/// its timeout, so an action executing for longer than the longest timeout plus a margin cannot
/// still be running anywhere: it is marked *outcome unknown* (the upstream may or may not have
/// acted) and never re-executed.
pub async fn recover_interrupted(gw: &Arc<Gateway>) -> Result<usize, Error> {
    let cutoff = Timestamp::now().as_micros()
        - i64::try_from((gw.max_connector_timeout + Duration::from_secs(5)).as_micros())
            .unwrap_or(i64::MAX);
    let stuck = gw
        .db
        .actions(&ActionFilter {
            states: vec![ActionState::Executing],
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut n = 0;
    for action in stuck.into_iter().filter(|a| a.updated.as_micros() < cutoff) {
        let now = Timestamp::now();
        let result = gw
            .db
            .commit(
                vec![Change::SetActionState {
                    id: action.id.clone(),
                    from: vec![ActionState::Executing],
                    to: ActionState::OutcomeUnknown,
                    result: Some(json!({
                        "verdict": action.result.as_ref().and_then(|r| r.get("verdict")),
                        "error": "Writ stopped while this action was executing; whether the upstream acted is unknown. It will not be retried automatically.",
                    })),
                    time: now,
                }],
                vec![entry(
                    &action.id,
                    EntryKind::Executed,
                    "writ",
                    json!({"outcome": "unknown", "reason": "interrupted: the process executing it stopped", "executing_since": action.updated.to_string()}),
                )?],
            )
            .await;
        match result {
            Ok(_) => {
                tracing::warn!(action = %action.id, "action interrupted by a stop; marked outcome unknown");
                n += 1;
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if n > 0 {
        gw.notify_change();
    }
    Ok(n)
}

/// Waits until action `id` leaves `pending_approval`/`executing`, or `timeout` passes.
pub async fn wait_for(
    gw: &Arc<Gateway>,
    id: &ActionId,
    timeout: Duration,
) -> Result<Option<ActionRow>, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = gw.changes.subscribe();
    loop {
        let action = gw.db.action(id).await?;
        match &action {
            None => return Ok(None),
            Some(a) if a.state.is_final() => return Ok(action),
            Some(_) if tokio::time::Instant::now() >= deadline => return Ok(action),
            Some(_) => {}
        }
        // Woken by a change in this process, or every second for changes made by another.
        let tick = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(tick, changes.changed()).await;
    }
}

/// Records a request refused before evaluation (rate limit, size), as evidence of the attempt.
async fn record_refusal(gw: &Arc<Gateway>, caller: &Caller, req: &ActionRequest, reason: &str) {
    let id = ActionId::generate();
    let payload = json!({
        "agent": caller.agent.as_str(),
        "user": caller.user.as_str(),
        "grant": caller.grant.as_str(),
        "connector": req.connector.chars().take(128).collect::<String>(),
        "operation": req.operation.chars().take(128).collect::<String>(),
        "refused": reason,
    });
    let entries = entry(
        &id,
        EntryKind::Requested,
        &format!("agent:{}", caller.agent),
        payload,
    )
    .and_then(|e| {
        Ok(vec![
            e,
            responded(
                &id,
                if reason == "rate_limited" { 429 } else { 413 },
                ActionState::Denied,
            )?,
        ])
    });
    match entries {
        Ok(entries) => {
            if let Err(e) = gw.db.append(entries).await {
                tracing::error!(error = %e, "recording a refused request failed");
            }
        }
        Err(e) => tracing::error!(error = %e.message, "recording a refused request failed"),
    }
}

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

/// The grant as policy sees it: `context.grant`. Its scopes are the grant's action patterns and
/// the schema's action groups (`github.write`) of the action being evaluated, which the grant
/// check has already found the grant to cover; `X.*` also stands for `X.read` and `X.write`.
fn grant_context(grant: &writ_identity::Grant, action_groups: Vec<String>) -> Value {
    let mut scopes: Vec<String> = Vec::new();
    for a in &grant.spec.actions {
        scopes.push(a.clone());
        if let Some(prefix) = a.strip_suffix(".*") {
            scopes.push(format!("{prefix}.read"));
            scopes.push(format!("{prefix}.write"));
        }
    }
    for g in action_groups {
        if !scopes.contains(&g) {
            scopes.push(g);
        }
    }
    json!({
        "id": grant.id.as_str(),
        "scopes": scopes,
        "expires_at": grant.spec.expires_at.as_micros() / 1_000_000,
    })
}

fn grant_verdict(denial: &GrantDenial, bundle_version: &str) -> Verdict {
    Verdict::Deny {
        explanation: writ_policy::Explanation {
            determining_policies: Vec::new(),
            reasons: vec![format!("the grant does not cover this action: {denial}")],
            errors: Vec::new(),
            bundle_version: bundle_version.to_owned(),
        },
    }
}

pub(crate) fn verdict_json(verdict: &Verdict) -> Value {
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

fn evaluated_payload(verdict: &Verdict, grant_denial: Option<&GrantDenial>) -> Value {
    let mut v = verdict_json(verdict);
    v["grant_check"] = match grant_denial {
        None => json!("ok"),
        Some(d) => json!(d.to_string()),
    };
    v
}

fn entry(id: &ActionId, kind: EntryKind, actor: &str, payload: Value) -> Result<NewEntry, Error> {
    Ok(NewEntry::new(
        id.clone(),
        kind,
        Some(actor.to_owned()),
        payload,
    )?)
}

fn responded(id: &ActionId, status: u16, state: ActionState) -> Result<NewEntry, Error> {
    entry(
        id,
        EntryKind::Responded,
        "writ",
        json!({"status": status, "state": state.as_str()}),
    )
}

/// The response as the log keeps it: inline when small, else its size and digest.
fn loggable(body: &Value) -> Value {
    let text = body.to_string();
    if text.len() <= MAX_LOGGED_RESPONSE {
        body.clone()
    } else {
        json!({"omitted": "too large for the log", "bytes": text.len(), "sha256": hex::encode(sha2::Sha256::digest(text.as_bytes()))})
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let micros = t
        .as_micros()
        .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros).unwrap_or(t)
}
