//! The log itself: the latest signed checkpoint (`GET /v1/audit/checkpoint`), a new one
//! (`POST`, admins), and one entry with its inclusion proof (`GET /v1/audit/entries/{seq}`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use writ_gateway::Gateway;

use super::extract::AdminUser;
use super::{ApiResult, ok};
use crate::error::ApiError;

pub(super) async fn latest_checkpoint(State(gw): State<Arc<Gateway>>) -> ApiResult {
    let Some(c) = gw.reads().latest_checkpoint().await? else {
        return Err(ApiError::not_found("no checkpoint has been signed yet"));
    };
    ok(
        200,
        json!({"size": c.tree_size, "root_hash": c.root_hash.to_hex(), "note": c.note, "verifier_key": gw.verifier_key()}),
    )
}

pub(super) async fn make_checkpoint(
    State(gw): State<Arc<Gateway>>,
    AdminUser(_): AdminUser,
) -> ApiResult {
    match gw.checkpoint().await? {
        Some(c) => ok(
            200,
            json!({"size": c.tree_size, "root_hash": c.root_hash.to_hex(), "note": c.note}),
        ),
        None => Err(ApiError::conflict(
            "the log is empty; there is nothing to checkpoint",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProofQuery {
    size: Option<u64>,
}

pub(super) async fn entry(
    State(gw): State<Arc<Gateway>>,
    Path(seq): Path<u64>,
    Query(q): Query<ProofQuery>,
    AdminUser(_): AdminUser,
) -> ApiResult {
    let entry = gw
        .reads()
        .entries(seq, 1)
        .await?
        .into_iter()
        .next()
        .filter(|e| e.seq == seq)
        .ok_or_else(|| ApiError::not_found(format!("entry {seq} does not exist")))?;
    let size = match q.size {
        Some(s) => s,
        None => gw
            .reads()
            .latest_checkpoint()
            .await?
            .map_or(gw.reads().size().await?, |c| c.tree_size.max(seq + 1)),
    };
    if size <= seq {
        return Err(ApiError::bad_request(format!(
            "size {size} does not include entry {seq}"
        )));
    }
    let proof = gw.reads().inclusion_proof(seq, size).await?;
    ok(
        200,
        json!({
            "seq": seq,
            "canonical": String::from_utf8_lossy(&entry.entry),
            "leaf_hash": entry.leaf_hash.to_hex(),
            "tree_size": size,
            "inclusion_proof": proof.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        }),
    )
}
