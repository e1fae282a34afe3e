//! The policy view, for admins: the serving bundle, its shadow candidate, and the recent
//! disagreements between them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;
use writ_policy::PolicyEffect;
use writ_store::EntryFilter;

use super::layout::{layout, text};
use super::session::SignedIn;
use super::{Console, error_page, html};
use crate::error::ApiError;

/// The serving policy bundle, its shadow candidate and the recent disagreements between them:
/// for admins, as `GET /v1/admin/policy`.
pub(super) async fn policy_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    if !who.user.admin {
        let e = ApiError::forbidden(format!(
            "user {} is not an admin; the policy view is for admins",
            who.user.id
        ));
        return error_page(Some(&who), &e);
    }
    let result = async {
        let size = c.gw.reads().size().await?;
        let recent =
            c.gw.reads()
                .query(&EntryFilter {
                    kind: Some(writ_core::EntryKind::Evaluated),
                    after_seq: size.checked_sub(SHADOW_WINDOW + 1),
                    limit: u32::try_from(SHADOW_WINDOW).unwrap_or(u32::MAX),
                    ..Default::default()
                })
                .await?;
        let mut disagreements = Vec::new();
        for e in recent.iter().rev() {
            let entry = e.decode().map_err(|err| {
                ApiError::internal(format!("entry {} is unreadable: {err}", e.seq))
            })?;
            if entry.payload.pointer("/shadow/disagrees") == Some(&Value::Bool(true)) {
                disagreements.push(entry);
            }
        }
        Ok::<_, ApiError>(policy(&who, c.gw.policy(), &disagreements))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// How many of the latest log entries the policy view searches for shadow disagreements.
const SHADOW_WINDOW: u64 = 5000;

fn policy(
    who: &SignedIn,
    engine: &writ_policy::PolicyEngine,
    disagreements: &[writ_core::AuditEntry],
) -> Markup {
    let bundle = engine.current();
    let candidate = engine.candidate();
    layout(
        "Policy",
        Some(who),
        html! {
            h1 { "Policy" }
            dl.facts {
                dt { "Serving" } dd.mono #bundle-version { (bundle.version().to_string()) }
                dt { "Directory" } dd.mono { (bundle.dir().map(|d| d.display().to_string()).unwrap_or_else(|| "the embedded example bundle".to_owned())) }
                dt { "Last reload" } dd {
                    @match engine.last_reload_error() {
                        Some(e) => span.problem { "refused: " (e) }
                        None => "ok",
                    }
                }
                dt { "Shadow candidate" } dd.mono {
                    @match &candidate { Some(c) => (c.version().to_string()), None => "none" }
                }
            }
            h2 { "Policies" }
            div.table {
                table #policies {
                    thead { tr { th { "Policy" } th { "Effect" } th { "Reason" } th { "Where" } } }
                    tbody {
                        @for p in bundle.policies() {
                            tr data-policy=(p.id) {
                                td { (p.id) }
                                td { (effect(p.effect)) @if p.gate.is_some() { " (approval gate)" } }
                                td { (p.reason.as_deref().unwrap_or("—")) }
                                td.mono { (p.file.display().to_string()) ":" (p.line) }
                            }
                        }
                    }
                }
            }
            h2 { "Shadow disagreements" }
            @if disagreements.is_empty() {
                p.empty #no-disagreements { "None among the latest entries." }
            } @else {
                div.table {
                    table #disagreements {
                        thead { tr { th { "Time" } th { "Action" } th { "Serving" } th { "Candidate" } } }
                        tbody {
                            @for e in disagreements {
                                tr {
                                    td.mono { (e.time.to_string()) }
                                    td.mono { a href=(format!("/console/actions/{}", e.action_id)) { (e.action_id.as_str()) } }
                                    td { (text(e.payload.get("verdict"))) }
                                    td { (text(e.payload.pointer("/shadow/candidate_verdict/verdict"))) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A policy's effect in the words of the bundle (and of `GET /v1/admin/policy`).
fn effect(effect: PolicyEffect) -> &'static str {
    match effect {
        PolicyEffect::Permit => "permit",
        PolicyEffect::Forbid => "forbid",
    }
}
