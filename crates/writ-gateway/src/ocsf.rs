//! Audit entries as OCSF API Activity events (class 6003), for SIEMs.
//!
//! Every Writ entry is one step of a governed API call, so API Activity is the natural class. The
//! mapping is deliberately plain: the step becomes the activity, the action id correlates the
//! steps of one action, and the whole entry travels under `unmapped.writ` so that nothing is lost.

use serde_json::{Value, json};
use writ_core::{AuditEntry, EntryKind};
use writ_store::StoredEntry;

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

pub fn api_activity(entry: &AuditEntry, row: &StoredEntry) -> Value {
    const CLASS_UID: u32 = 6003;
    // OCSF API Activity activities: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other. A Writ step
    // is none of the CRUD verbs itself; the connector operation is in api.operation.
    let activity_id = 99;
    let operation = entry
        .payload
        .get("operation")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| entry.kind.as_str().to_owned());
    // status: 1 Success, 2 Failure, 0 Unknown — known only for steps that carry an outcome.
    let (status_id, status) = match (
        entry.kind,
        entry.payload.get("verdict").and_then(Value::as_str),
    ) {
        (EntryKind::Evaluated, Some("deny")) => (2, "Failure"),
        (EntryKind::Evaluated, Some(_)) => (1, "Success"),
        _ => match entry.payload.get("outcome").and_then(Value::as_str) {
            Some("success") => (1, "Success"),
            Some("failure") | Some("error") => (2, "Failure"),
            _ => (0, "Unknown"),
        },
    };
    let time_ms = entry.time.as_micros().div_euclid(1000);
    let mut event = json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": entry.kind.as_str(),
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {}", entry.kind.as_str()),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
        "time": time_ms,
        "api": { "operation": operation, "service": { "name": "writ" } },
        "actor": { "user": { "uid": entry.actor.clone().unwrap_or_else(|| "unknown".into()) } },
        "src_endpoint": { "svc_name": "writ" },
        "metadata": {
            "version": OCSF_VERSION,
            "product": { "name": "Writ", "vendor_name": "Writ", "version": env!("CARGO_PKG_VERSION") },
            "uid": entry.seq.to_string(),
            "correlation_uid": entry.action_id.as_str(),
            "logged_time": time_ms,
        },
        "unmapped": { "writ": { "entry": entry, "leaf_hash": row.leaf_hash.to_hex() } },
    });
    if let Some(intent) = entry.payload.get("intent") {
        event["message"] = intent.clone();
    }
    event
}
