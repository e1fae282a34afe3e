//! The approvals inbox: the pending approvals a user may see, each with everything an approver
//! needs and the decision form, kept up to date over server-sent events; and the decision itself.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use writ_gateway::pipeline::{self, DecisionRequest};
use writ_gateway::views::{self, ApprovalAction, ApprovalView, DecisionView, GrantScope};
use writ_store::ApprovalState;

use super::layout::{layout, list, or_dash, pretty, text};
use super::session::{SignedIn, check_post};
use super::{Console, error_page, form, html};
use crate::error::ApiError;

/// How often the live inbox looks at the store even when this process saw no change (another
/// replica may have made one).
const EVENTS_POLL: Duration = Duration::from_secs(2);
/// The least time between two looks of one live inbox, however many changes happen.
const EVENTS_MIN_INTERVAL: Duration = Duration::from_millis(250);

pub(super) async fn approvals_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    match views::visible_approvals(&c.gw, &who.user, Some(ApprovalState::Pending), 200).await {
        Ok(items) => html(StatusCode::OK, approvals(&who, &items)),
        Err(e) => error_page(Some(&who), &e.into()),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    action_hash: String,
}

/// One approver's decision, through [`pipeline::decide`] exactly as `POST
/// /v1/approvals/{id}/decision`; bound to the action hash the approver saw.
pub(super) async fn decide(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match c.signed_in(&headers).await {
        Ok(Some(who)) => who,
        Ok(None) => {
            return error_page(
                None,
                &ApiError::forbidden("you are not signed in; sign in and try again"),
            );
        }
        Err(e) => return error_page(None, &e),
    };
    let f: DecisionForm = match form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&who), &e),
    };
    if let Err(e) = check_post(&c.gw, &headers, &who, &f.csrf) {
        return error_page(Some(&who), &e);
    }
    // The same parsing as the API's JSON body.
    let comment = f.comment.trim();
    let request: DecisionRequest = match serde_json::from_value(json!({
        "decision": f.decision,
        "comment": (!comment.is_empty()).then_some(comment),
        "action_hash": (!f.action_hash.is_empty()).then_some(f.action_hash.as_str()),
    })) {
        Ok(r) => r,
        Err(_) => {
            return error_page(
                Some(&who),
                &ApiError::bad_request("the decision must be approve or deny"),
            );
        }
    };
    match pipeline::decide(&c.gw, &who.user.id, &id, request).await {
        Ok(outcome) => {
            Redirect::to(&format!("/console/actions/{}", outcome.action.id)).into_response()
        }
        Err(e) => error_page(Some(&who), &e.into()),
    }
}

/// What the live inbox stream remembers between two looks at the store.
struct Watch {
    console: Arc<Console>,
    headers: HeaderMap,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Pending approvals already sent.
    known: HashSet<String>,
    queue: VecDeque<Event>,
    first: bool,
}

impl Watch {
    /// Looks at the store and queues an `approval` event for every pending approval the user
    /// may see that was not sent yet, and a `closed` event for every one sent that is no longer
    /// pending. Returns false when the session ended.
    async fn look(&mut self) -> Result<bool, ApiError> {
        let Some(who) = self.console.signed_in(&self.headers).await? else {
            return Ok(false);
        };
        let rows = views::visible_approval_rows(
            &self.console.gw,
            &who.user,
            Some(ApprovalState::Pending),
            200,
        )
        .await?;
        let mut now: HashSet<String> = HashSet::new();
        for row in &rows {
            now.insert(row.id.clone());
            if !self.known.contains(&row.id) {
                let item = views::approval_item(&self.console.gw, &who.user, row).await?;
                // The same JSON as `GET /v1/approvals/{id}` answers.
                let data = serde_json::to_string(&item).map_err(|e| {
                    ApiError::internal(format!("approval {} could not be written: {e}", row.id))
                })?;
                self.queue
                    .push_back(Event::default().event("approval").data(data));
            }
        }
        for gone in self.known.difference(&now) {
            self.queue.push_back(
                Event::default()
                    .event("closed")
                    .data(json!({"id": gone}).to_string()),
            );
        }
        self.known = now;
        Ok(true)
    }
}

/// `GET /console/events`: the signed-in user's pending approvals as server-sent events. On
/// connecting, every pending approval is sent (the page ignores those it shows already, so
/// nothing created between the page and the stream is lost); then new ones as they arrive.
pub(super) async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.signed_in(&headers).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return error_page(None, &e),
    }
    let state = Watch {
        changes: c.gw.subscribe_changes(),
        console: c,
        headers,
        known: HashSet::new(),
        queue: VecDeque::new(),
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut w| async move {
        loop {
            if let Some(event) = w.queue.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(event), w));
            }
            if !w.first {
                let shutdown = w.console.gw.shutdown().clone();
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = w.changes.changed() => {}
                    _ = tokio::time::sleep(EVENTS_POLL) => {}
                }
                // Under a burst of changes, one look per interval is enough.
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(EVENTS_MIN_INTERVAL) => {}
                }
                w.changes.mark_unchanged();
            }
            w.first = false;
            match w.look().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    tracing::warn!(error = %e.message, "the console's live inbox could not read the store");
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn approvals(who: &SignedIn, items: &[ApprovalView]) -> Markup {
    layout(
        "Approvals",
        Some(who),
        html! {
            h1 { "Approvals waiting" }
            p.live #live-status data-live="connecting" { "Connecting for live updates…" }
            p.empty #no-approvals hidden[!items.is_empty()] { "Nothing is waiting for you." }
            div #approvals {
                @for item in items {
                    (approval_card(who, Some(item)))
                }
            }
            // The card the script fills for an approval that arrives live.
            template #approval-template {
                (approval_card(who, None))
            }
        },
    )
}

/// One approval request with everything an approver needs to decide, and the decision form
/// when this user may decide. Rendered with `None` it is the empty card the script fills.
fn approval_card(who: &SignedIn, a: Option<&ApprovalView>) -> Markup {
    let act = a.and_then(|a| a.action.as_ref());
    let field = |f: fn(&ApprovalView) -> &str| a.map_or("", f);
    let action_field = |f: fn(&ApprovalAction) -> &str| act.map_or("", f);
    let action_value = |f: fn(&ApprovalAction) -> Option<&Value>| act.and_then(f);
    let id = field(|a| &a.id);
    let may_decide = a.is_none_or(|a| a.you_may_decide == Some(true));
    let decisions: &[DecisionView] = a.map_or(&[], |a| a.decisions.as_slice());
    let approvals_so_far = decisions.iter().filter(|d| d.decision == "approve").count();
    html! {
        article.approval data-approval-id=(id) {
            header {
                h2 data-field="operation" {
                    (action_field(|a| &a.connector)) "." (action_field(|a| &a.operation))
                }
                a.record data-field="record" href=(format!("/console/actions/{}", field(|a| &a.action_id))) { "Record" }
            }
            dl.facts {
                dt { "Agent" } dd data-field="agent" { (action_field(|a| &a.agent)) }
                dt { "Acting for" } dd data-field="user" { (action_field(|a| &a.user)) }
                dt { "Grant" } dd data-field="grant" { (or_dash(act.and_then(|a| a.grant.as_deref()))) }
                dt { "Grant allows" } dd data-field="grant-scope" { (grant_scope(act.and_then(|a| a.grant_scope.as_ref()))) }
                dt { "Intent" } dd data-field="intent" { (text(action_value(|a| a.intent.as_ref()))) }
                dt { "Rationale" } dd data-field="rationale" { (text(action_value(|a| a.rationale.as_ref()))) }
                dt { "Policy gate" } dd data-field="gate" { (text(action_value(|a| a.policy_ids.as_ref()))) }
                dt { "Reason" } dd data-field="reason" { (or_dash(a.and_then(|a| a.reason.as_deref()))) }
                dt { "Policy version" } dd.mono data-field="bundle" { (text(action_value(|a| a.bundle_version.as_ref()))) }
                dt { "Approvers" } dd data-field="approvers" { (list(a.map_or(&[], |a| a.approvers.as_slice()))) }
                dt { "Quorum" } dd data-field="quorum" {
                    (approvals_so_far) " of " (a.map_or("—".to_owned(), |a| a.quorum.to_string())) " approvals"
                }
                dt { "Time left" } dd {
                    span data-field="time-left" data-expires=(field(|a| &a.expires_at)) {
                        "until " (field(|a| &a.expires_at))
                    }
                }
                dt { "Action hash" } dd.mono data-field="hash" { (field(|a| &a.action_hash)) }
            }
            h3 { "Arguments" }
            // Arguments the request did not carry show as its JSON does: `null`.
            pre.args data-field="args" { (pretty(act.map(|a| a.args.as_ref().unwrap_or(&Value::Null)))) }
            h3 { "Decisions so far" }
            ul.decisions data-field="decisions" {
                @for d in decisions {
                    li { (decision_line(d)) }
                }
                @if decisions.is_empty() {
                    li.none { "None yet." }
                }
            }
            @if may_decide {
                form.decide method="post" action=(format!("/console/approvals/{id}/decision")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    input type="hidden" name="action_hash" value=(field(|a| &a.action_hash));
                    label { "Comment"
                        textarea name="comment" rows="2" maxlength="4000" {}
                    }
                    div.buttons {
                        button.approve type="submit" name="decision" value="approve" { "Approve" }
                        button.deny type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            } @else {
                p.cannot data-field="cannot" {
                    @if field(|a| &a.user) == who.user.id.as_str() {
                        "Your own agent asked for this: someone else must decide."
                    } @else {
                        "You may see this request but not decide it."
                    }
                }
            }
        }
    }
}

/// A grant's scope in a line: its actions, resources and expiry.
fn grant_scope(scope: Option<&GrantScope>) -> String {
    let Some(scope) = scope else {
        return "—".to_owned();
    };
    let mut line = list(&scope.actions);
    if !scope.resources.is_empty() {
        line.push_str(" on ");
        line.push_str(&list(&scope.resources));
    }
    line.push_str(", until ");
    line.push_str(&scope.expires_at);
    if scope.revoked {
        line.push_str(" (revoked)");
    }
    line
}

fn decision_line(d: &DecisionView) -> String {
    let mut line = format!(
        "{} {} at {}",
        d.approver,
        match d.decision.as_str() {
            "approve" => "approved",
            "deny" => "denied",
            other => other,
        },
        d.time
    );
    if let Some(c) = &d.comment {
        line.push_str(": ");
        line.push_str(c);
    }
    line
}
