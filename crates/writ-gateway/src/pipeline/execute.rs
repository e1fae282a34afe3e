//! Execution: the connector runs for an action already durably recorded as executing, with
//! the vault credential injected at call time, and the outcome is recorded (executed,
//! responded) before anyone hears it. Credentials are opened here and nowhere else.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use writ_core::{ActionId, EntryKind, Timestamp};
use writ_identity::UserId;
use writ_store::{ActionState, Change, Database};
use writ_vault::{CredentialName, CredentialScope, MasterKey, Secret, VersionState};

use super::entries::{entry, loggable, responded};
use crate::error::Error;
use crate::gateway::Gateway;

/// Runs the connector for an action already recorded as executing, and records the outcome.
/// Returns the sequence numbers of the entries it appended.
pub(super) async fn execute(
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
pub(super) struct Executed {
    pub seqs: Vec<u64>,
    pub state: ActionState,
    pub result: Value,
    pub time: Timestamp,
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
