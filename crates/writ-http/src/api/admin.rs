//! What admins look at and change on the server itself: the vault's credential versions (names
//! and versions, never a secret), the policy bundle's status, and a reload of it.

use std::sync::Arc;

use axum::extract::State;
use serde_json::json;
use writ_gateway::Gateway;
use writ_gateway::admin::{Actor, AdminEvent};

use super::extract::AdminUser;
use super::{ApiResult, ok};
use crate::error::ApiError;

pub(super) async fn list_vault(
    State(gw): State<Arc<Gateway>>,
    AdminUser(_): AdminUser,
) -> ApiResult {
    let versions = gw.reads().credential_versions(None).await?;
    ok(
        200,
        json!({"credentials": versions.iter().map(|v| json!({
        "name": v.reference.name.as_str(),
        "version": v.reference.version,
        "scope": v.reference.scope,
        "state": v.state.as_str(),
        "master_key_id": v.master_key_id,
        "created_at": v.created_at.to_string(),
        "retired_at": v.retired_at.map(|t| t.to_string()),
    })).collect::<Vec<_>>()}),
    )
}

pub(super) async fn policy_status(
    State(gw): State<Arc<Gateway>>,
    AdminUser(_): AdminUser,
) -> ApiResult {
    let bundle = gw.policy().current();
    ok(
        200,
        json!({
            "version": bundle.version().to_string(),
            "dir": bundle.dir().map(|d| d.display().to_string()),
            "policies": bundle.policies().iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            "last_reload_error": gw.policy().last_reload_error(),
            "shadow": gw.policy().candidate().map(|c| c.version().to_string()),
        }),
    )
}

pub(super) async fn policy_reload(
    State(gw): State<Arc<Gateway>>,
    AdminUser(admin): AdminUser,
) -> ApiResult {
    let actor = Actor::User(admin);
    let before = gw.policy().version().to_string();
    match gw.policy().reload() {
        Ok(outcome) => {
            let after = gw.policy().version().to_string();
            gw.admin()
                .record(
                    &actor,
                    AdminEvent::PolicyReloaded {
                        from: before.clone(),
                        to: after.clone(),
                    },
                )
                .await?;
            ok(
                200,
                json!({"version": after, "previous": before, "outcome": format!("{outcome:?}")}),
            )
        }
        Err(e) => {
            gw.admin()
                .record(
                    &actor,
                    AdminEvent::PolicyReloadRefused {
                        serving: before.clone(),
                        error: e.to_string(),
                    },
                )
                .await?;
            Err(ApiError::new(
                422,
                "invalid_bundle",
                format!("the bundle was refused and {before} keeps serving: {e}"),
            ))
        }
    }
}
