//! Admission, before anything is evaluated: the agent's rate limit, the sizes of the arguments
//! and texts, the connector and the operation's argument schema, the policy resource, and the
//! idempotency key (a retry gets the first answer; the same key for another action is refused).
//! A refusal for the rate limit or the size is recorded as evidence of the attempt.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use writ_core::{ActionId, EntryKind};
use writ_store::ActionState;

use super::entries::{action_hash, entry, responded};
use super::{ActionRequest, Caller, MAX_TEXT, Outcome, record};
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;

/// The longest idempotency key.
const MAX_KEY: usize = 256;

/// A request admitted: its connector, the resource policy sees, and the action's hash.
pub(super) struct Admitted {
    pub connector: Arc<dyn writ_connectors::Connector>,
    pub resource: writ_connectors::ResourceRef,
    pub hash: String,
}

/// What admission found: a new action to evaluate, or the first answer to a retry.
pub(super) enum Admission {
    New(Admitted),
    Replayed(Box<Outcome>),
}

pub(super) async fn admit(
    gw: &Arc<Gateway>,
    caller: &Caller,
    req: &ActionRequest,
) -> Result<Admission, Error> {
    if let Err(retry) = gw.limiter.check(caller.agent.as_str(), Instant::now()) {
        gw.metrics.refused("rate_limited");
        record_refusal(gw, caller, req, "rate_limited").await;
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
        record_refusal(gw, caller, req, "args_too_large").await;
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
    let connector = gw.connectors.get(&req.connector).cloned().ok_or_else(|| {
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
    let hash = action_hash(caller, &req.connector, &req.operation, &req.args)?;
    if let Some(key) = &req.idempotency_key
        && let Some(existing) = gw.db.action_by_key(caller.agent.as_str(), key).await?
    {
        return Ok(Admission::Replayed(Box::new(
            record::replay(gw, existing, &hash).await?,
        )));
    }
    Ok(Admission::New(Admitted {
        connector,
        resource,
        hash,
    }))
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
