//! The audit explorer: a search of actions (the API's filter plus a grant), the chart, the
//! log's state and its last verification, and the export as JSON Lines or OCSF.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use writ_gateway::Gateway;
use writ_gateway::auth::Who;
use writ_gateway::views;
use writ_store::{ActionRow, EntryFilter};

use super::chart::chart;
use super::chart::verdict_of;
use super::layout::layout;
use super::session::SignedIn;
use super::{Console, CsrfForm, error_page, html};
use crate::error::ApiError;

/// The explorer's search: the API's action query (empty fields left out), plus a grant.
#[derive(Default)]
pub(crate) struct AuditSearch {
    pub query: views::ActionQuery,
    pub grant: Option<String>,
    /// The fields as given, to fill the form again and to build the export link.
    pub fields: Vec<(String, String)>,
}

impl AuditSearch {
    fn parse(raw: Option<&str>) -> Result<AuditSearch, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("the search could not be read: {e}")))?;
        let mut search = AuditSearch::default();
        for (k, v) in pairs {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            // A browser's datetime-local field has no seconds and no zone: read it as UTC.
            let time = |v: &str| {
                if v.len() == 16 && v.as_bytes().get(10) == Some(&b'T') {
                    format!("{v}:00Z")
                } else {
                    v.to_owned()
                }
            };
            match k.as_str() {
                "user" => search.query.user = Some(v.clone()),
                "agent" => search.query.agent = Some(v.clone()),
                "connector" => search.query.connector = Some(v.clone()),
                "verdict" => search.query.verdict = Some(v.clone()),
                "since" => search.query.since = Some(time(&v)),
                "before" => search.query.before = Some(time(&v)),
                "grant" => search.grant = Some(v.clone()),
                _ => continue,
            }
            search.fields.push((k, v));
        }
        search.query.limit = Some(500);
        Ok(search)
    }

    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The search as a query string.
    pub fn query_string(&self) -> String {
        serde_urlencoded::to_string(&self.fields).unwrap_or_default()
    }
}

/// The actions `who` may search that match, newest first: the same filter as `GET /v1/actions`
/// (a user who is not an admin sees their own agents' actions).
async fn search_actions(
    gw: &Gateway,
    who: &SignedIn,
    search: &AuditSearch,
) -> Result<Vec<ActionRow>, ApiError> {
    let filter = views::action_filter(&search.query, &Who::User(who.user.clone()))?;
    let mut rows = gw.reads().actions(&filter).await?;
    if let Some(grant) = &search.grant {
        rows.retain(|a| a.grant.as_deref() == Some(grant.as_str()));
    }
    Ok(rows)
}

/// The log's state, for the explorer's header.
pub(crate) struct LogStatus {
    pub size: u64,
    pub checkpoint: Option<(u64, String)>,
    pub verifier_key: String,
    /// The latest verification of the whole log by this server (at start, or asked by an admin).
    pub verification: Option<writ_gateway::gateway::LastVerification>,
}

pub(super) async fn audit_page(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let result = async {
        let search = AuditSearch::parse(raw.as_deref())?;
        let rows = search_actions(&c.gw, &who, &search).await?;
        let checkpoint = c.gw.reads().latest_checkpoint().await?;
        let status = LogStatus {
            size: c.gw.reads().size().await?,
            checkpoint: checkpoint.map(|cp| {
                let at = writ_core::Timestamp::from_micros(cp.created_us)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                (cp.tree_size, at)
            }),
            verifier_key: c.gw.verifier_key(),
            verification: c.gw.last_verification(),
        };
        Ok::<_, ApiError>(audit(&who, &search, &rows, &status))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// Every audit entry of the matching actions, in log order, one canonical JSON entry (the exact
/// bytes of its Merkle leaf) per line.
pub(super) async fn audit_export(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    export(&c, raw.as_deref(), &headers, false).await
}

/// The same entries as OCSF API Activity events, one per line (as `writ audit export --format
/// ocsf`).
pub(super) async fn audit_export_ocsf(
    State(c): State<Arc<Console>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    export(&c, raw.as_deref(), &headers, true).await
}

async fn export(c: &Console, raw: Option<&str>, headers: &HeaderMap, ocsf: bool) -> Response {
    let who = match c.signed_in(headers).await {
        Ok(Some(who)) => who,
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return error_page(None, &e),
    };
    let result = async {
        let search = AuditSearch::parse(raw)?;
        let rows = search_actions(&c.gw, &who, &search).await?;
        let mut entries = Vec::new();
        for a in &rows {
            entries.extend(
                c.gw.reads()
                    .query(&EntryFilter {
                        action_id: Some(a.id.as_str().to_owned()),
                        limit: 1000,
                        ..Default::default()
                    })
                    .await?,
            );
        }
        entries.sort_by_key(|e| e.seq);
        let mut body = Vec::new();
        for e in entries {
            if ocsf {
                let entry = e.decode().map_err(|err| {
                    ApiError::internal(format!("entry {} is unreadable: {err}", e.seq))
                })?;
                let event = writ_gateway::ocsf::api_activity(&entry, &e);
                serde_json::to_writer(&mut body, &event)
                    .map_err(|err| ApiError::internal(err.to_string()))?;
            } else {
                body.extend_from_slice(&e.entry);
            }
            body.push(b'\n');
        }
        Ok::<_, ApiError>(body)
    }
    .await;
    match result {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (
                    header::CONTENT_DISPOSITION,
                    if ocsf {
                        "attachment; filename=\"writ-audit.ocsf.jsonl\""
                    } else {
                        "attachment; filename=\"writ-audit.jsonl\""
                    },
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

/// An admin asks for the whole log to be verified now; the audit page shows the outcome.
pub(super) async fn verify_log(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        if !who.user.admin {
            return Err(ApiError::forbidden(format!(
                "user {} is not an admin; only admins verify the whole log from here",
                who.user.id
            )));
        }
        c.gw.verify_log(&format!("user:{}", who.user.id)).await;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/console/audit").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

fn audit(who: &SignedIn, search: &AuditSearch, rows: &[ActionRow], status: &LogStatus) -> Markup {
    let input = |name: &str, label: &str, kind: &str| {
        html! {
            label { (label)
                input type=(kind) name=(name) value=(search.field(name));
            }
        }
    };
    let export = format!("/console/audit/export.jsonl?{}", search.query_string());
    let export_ocsf = format!("/console/audit/export.ocsf.jsonl?{}", search.query_string());
    layout(
        "Audit",
        Some(who),
        html! {
            h1 { "Audit" }
            section.logstatus {
                dl.facts {
                    dt { "Log size" } dd #log-size { (status.size) " entries" }
                    dt { "Latest checkpoint" } dd {
                        @match &status.checkpoint {
                            Some((size, at)) => { "size " (size) ", signed " (at) }
                            None => { "none yet" }
                        }
                    }
                    dt { "Log key" } dd.mono { (status.verifier_key) }
                    dt { "Last verification" } dd #last-verification
                        data-state=(match &status.verification {
                            None => "none",
                            Some(v) if v.result.is_ok() => "verified",
                            Some(_) => "failed",
                        }) {
                        @match &status.verification {
                            None => { "not yet (it runs at start, in the background)" }
                            Some(v) => {
                                @match &v.result {
                                    Ok(r) => {
                                        "verified " (r.entries_checked) " entries and "
                                        (r.checkpoints_checked) " checkpoints, root "
                                        span.mono { (r.root) }
                                    }
                                    Err(why) => { "FAILED: " (why) }
                                }
                                " (" (v.at) ", by " (v.by) ")"
                            }
                        }
                    }
                }
                @if who.user.admin {
                    form method="post" action="/console/audit/verify" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        button #verify-now type="submit" { "Verify the whole log now" }
                    }
                }
            }
            form.search method="get" action="/console/audit" {
                div.fields {
                    (input("user", "User", "text"))
                    (input("agent", "Agent", "text"))
                    (input("grant", "Grant", "text"))
                    (input("connector", "Connector", "text"))
                    label { "Verdict"
                        select name="verdict" {
                            @for (value, text) in [("", "any"), ("allow", "allow"), ("approval", "approval"), ("deny", "deny")] {
                                option value=(value) selected[search.field("verdict") == value] { (text) }
                            }
                        }
                    }
                    (input("since", "Since (UTC)", "datetime-local"))
                    (input("before", "Before (UTC)", "datetime-local"))
                }
                div.buttons {
                    button type="submit" { "Search" }
                    a.export href=(export) download { "Export JSON Lines" }
                    a.export href=(export_ocsf) download { "Export OCSF" }
                }
            }
            @if !user_is_admin(who) {
                p.hint { "You see the actions of your own agents." }
            }
            (chart(rows))
            p #result-count { (rows.len()) " actions" @if rows.len() >= 500 { " (the newest 500)" } }
            div.table {
                table #actions {
                    thead { tr { th { "Time" } th { "Action" } th { "Agent" } th { "User" } th { "Operation" } th { "State" } } }
                    tbody {
                        @for a in rows {
                            tr data-action-id=(a.id.as_str()) data-verdict=(verdict_of(a.state)) {
                                td.mono { (a.created.to_string()) }
                                td.mono { a href=(format!("/console/actions/{}", a.id)) { (a.id.as_str()) } }
                                td { (a.agent) }
                                td { (a.user) }
                                td { (a.connector) "." (a.operation) }
                                td { span.state data-state=(a.state.as_str()) { (a.state.as_str()) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn user_is_admin(who: &SignedIn) -> bool {
    who.user.admin
}
