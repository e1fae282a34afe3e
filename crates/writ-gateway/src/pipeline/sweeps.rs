//! Step 3: the background work. Pending approvals whose time ran out are closed (a recorded
//! denial); actions left executing by a process that stopped are settled as *outcome unknown*;
//! long-polls wait here for an action to leave its pending states. [`spawn_background`] runs
//! the sweeps every second, signs checkpoints, keeps the gauges, and tells MCP sessions when the
//! tools may have changed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use writ_core::{ActionId, EntryKind, Timestamp};
use writ_store::{
    ActionFilter, ActionRow, ActionState, ApprovalRow, ApprovalState, Change, StoreError,
};

use super::entries::{entry, responded};
use crate::error::Error;
use crate::gateway::Gateway;

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

pub(super) async fn expire_one(gw: &Arc<Gateway>, approval: &ApprovalRow) -> Result<bool, Error> {
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
    gw: &Gateway,
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

/// Starts the background work: approval expiry and recovery every second, checkpoints every
/// `checkpoint_every`, gauges. Runs until the runtime stops.
pub fn spawn_background(gateway: &Arc<Gateway>, checkpoint_every: Duration) {
    // The whole log is verified once at start, in the background.
    let gw = gateway.clone();
    tokio::spawn(async move {
        gw.verify_log("writ").await;
    });
    // An upstream's tools changed: tell the MCP sessions.
    for connector in gateway.connectors.values() {
        if let Some(mut rx) = connector.changes() {
            let gw = Arc::downgrade(gateway);
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    match gw.upgrade() {
                        Some(gw) => gw.notify_tools_changed(),
                        None => return,
                    }
                }
            });
        }
    }
    let gw = gateway.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bundle = gw.policy.version();
        loop {
            tick.tick().await;
            // A new policy bundle (reloaded by the watcher or the API) can change the tools.
            let now = gw.policy.version();
            if now != bundle {
                bundle = now;
                gw.notify_tools_changed();
            }
            if let Err(e) = expire_approvals(&gw).await {
                tracing::error!(error = %e.message, "expiring approvals failed");
            }
            if let Err(e) = recover_interrupted(&gw).await {
                tracing::error!(error = %e.message, "recovering interrupted actions failed");
            }
            if let Ok(pending) = gw
                .db
                .approvals(Some(writ_store::ApprovalState::Pending), 100_000)
                .await
            {
                gw.metrics
                    .set_approvals_pending(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            }
            if let Ok(size) = gw.db.size().await {
                gw.metrics
                    .set_log_size(i64::try_from(size).unwrap_or(i64::MAX));
            }
        }
    });
    if !checkpoint_every.is_zero() {
        let gw = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(checkpoint_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = gw.checkpoint().await {
                    tracing::error!(error = %e.message, "signing a checkpoint failed");
                }
            }
        });
    }
}
