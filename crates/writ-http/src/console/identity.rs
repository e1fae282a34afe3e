//! Agents and grants: the agents and grants a user may see, disabling and enabling an agent,
//! granting one of their agents, and revoking a grant, through the core's admin service.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use writ_gateway::admin::Actor;
use writ_gateway::views;

use super::layout::layout;
use super::session::SignedIn;
use super::{Console, CsrfForm, error_page, html};
use crate::error::ApiError;

pub(super) async fn identity_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let result = async {
        let agents = views::visible_agents(&c.gw, &who.user).await?;
        let grants = views::visible_grants(&c.gw, &who.user).await?;
        Ok::<_, ApiError>(identity(&who, &agents, &grants))
    }
    .await;
    match result {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => error_page(Some(&who), &e),
    }
}

#[derive(Deserialize)]
/// Its CSRF token is read and checked by [`Console::posted`].
struct GrantForm {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    actions: String,
    #[serde(default)]
    resources: String,
    #[serde(default)]
    expires_hours: String,
    #[serde(default)]
    max_uses: String,
}

/// Words separated by commas or white space.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A new grant on the signed-in user's authority, through the core's admin service.
pub(super) async fn create_grant(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, f): (SignedIn, GrantForm) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        let number = |text: &str, what: &str| {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{what} must be a whole number")))
        };
        let request = writ_gateway::admin::GrantRequest {
            agent: f.agent.trim().to_owned(),
            actions: words(&f.actions),
            resources: words(&f.resources),
            expires_in: number(&f.expires_hours, "the expiry in hours")?
                .map(|h| h.saturating_mul(3600)),
            max_uses: number(&f.max_uses, "the use limit")?,
            ..Default::default()
        };
        if request.actions.is_empty() {
            return Err(ApiError::bad_request(
                "name at least one action, such as github.create_issue or github.*",
            ));
        }
        let spec = request.into_spec(&who.user.id, writ_core::Timestamp::now())?;
        Ok(c.gw
            .admin()
            .issue_grant(&Actor::User(who.user.clone()), spec)
            .await?)
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

pub(super) async fn disable_agent(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_agent_enabled(c, id, headers, body, false).await
}

pub(super) async fn enable_agent(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_agent_enabled(c, id, headers, body, true).await
}

/// Disables or enables one of the user's agents (any agent, for an admin) through the API's own
/// core's admin service.
async fn set_agent_enabled(
    c: Arc<Console>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
    enabled: bool,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = match writ_identity::AgentId::new(id) {
        Ok(id) => {
            c.gw.admin()
                .set_agent_enabled(&Actor::User(who.user.clone()), &id, enabled)
                .await
                .map_err(ApiError::from)
        }
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    };
    match result {
        Ok(()) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

pub(super) async fn revoke_grant(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, CsrfForm { .. }) = match c.posted(&headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let result = async {
        let id =
            writ_identity::GrantId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let revoked =
            c.gw.admin()
                .revoke_grant(&Actor::User(who.user.clone()), &id)
                .await?;
        Ok::<_, ApiError>((id, revoked))
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/console/identity").into_response(),
        Err(e) => error_page(Some(&who), &e),
    }
}

fn identity(
    who: &SignedIn,
    agents: &[writ_store::identity::AgentRecord],
    grants: &[writ_store::identity::StoredGrant],
) -> Markup {
    let now = writ_core::Timestamp::now();
    let own_agents: Vec<&writ_store::identity::AgentRecord> =
        agents.iter().filter(|a| a.owner == who.user.id).collect();
    layout(
        "Agents and grants",
        Some(who),
        html! {
            h1 { "Agents and grants" }
            h2 { @if who.user.admin { "Agents" } @else { "Your agents" } }
            @if agents.is_empty() {
                p.empty { "No agents yet. Register one with the API or `writ agents add`." }
            } @else {
                div.table {
                    table #agents {
                        thead { tr { th { "Agent" } th { "Owner" } th { "Key" } th { "Registered" } th { "State" } } }
                        tbody {
                            @for a in agents {
                                @let state = if a.disabled_at.is_some() { "disabled" } else { "enabled" };
                                tr data-agent=(a.id.as_str()) data-state=(state) {
                                    td { (a.id.as_str()) }
                                    td { (a.owner.as_str()) }
                                    td { @if a.public_key.is_some() { "API key and public key" } @else { "API key" } }
                                    td.mono { (a.created_at.to_string()) }
                                    td {
                                        span.state data-state=(state) { (state) }
                                        form.agent-state method="post" action=(format!("/console/agents/{}/{}", a.id, if a.disabled_at.is_some() { "enable" } else { "disable" })) {
                                            input type="hidden" name="csrf" value=(who.csrf);
                                            @if a.disabled_at.is_some() {
                                                button.approve type="submit" { "Enable" }
                                            } @else {
                                                button.deny type="submit" { "Disable" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Grants" }
            @if grants.is_empty() {
                p.empty { "No grants yet." }
            }
            @for g in grants {
                @let grant = &g.grant;
                @let state = if grant.revoked_at.is_some() { "revoked" } else if grant.spec.expires_at <= now { "expired" } else { "live" };
                article.grant data-grant=(grant.id.as_str()) data-state=(state) {
                    header {
                        h3.mono { (grant.id.as_str()) }
                        span.state data-state=(state) { (state) }
                    }
                    dl.facts {
                        dt { "Agent" } dd { (grant.spec.agent.as_str()) }
                        dt { "For user" } dd { (grant.spec.user.as_str()) }
                        dt { "Actions" } dd { (grant.spec.actions.join(", ")) }
                        dt { "Resources" } dd { @if grant.spec.resources.is_empty() { "any" } @else { (grant.spec.resources.join(", ")) } }
                        @if !grant.spec.constraints.is_empty() {
                            dt { "Constraints" } dd { pre { (serde_json::to_string_pretty(&grant.spec.constraints).unwrap_or_default()) } }
                        }
                        dt { "Uses" } dd {
                            (g.usage.uses)
                            @if let Some(max) = grant.spec.max_uses { " of " (max) }
                        }
                        dt { "Expires" } dd.mono { (grant.spec.expires_at.to_string()) }
                        dt { "Granted by" } dd { (grant.created_by.as_str()) " at " (grant.created_at.to_string()) }
                        @if let Some(at) = grant.revoked_at {
                            dt { "Revoked" } dd.mono { (at.to_string()) }
                        }
                    }
                    @if grant.revoked_at.is_none() && (who.user.admin || grant.spec.user == who.user.id) {
                        form.revoke method="post" action=(format!("/console/grants/{}/revoke", grant.id)) {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button.deny type="submit" { "Revoke" }
                        }
                    }
                }
            }
            h2 { "Grant one of your agents" }
            @if own_agents.is_empty() {
                p.empty { "You have no agents to grant to." }
            } @else {
                form.new-grant method="post" action="/console/grants" {
                    input type="hidden" name="csrf" value=(who.csrf);
                    div.fields {
                        label { "Agent"
                            select name="agent" {
                                @for a in &own_agents { option value=(a.id.as_str()) { (a.id.as_str()) } }
                            }
                        }
                        label { "Actions (comma-separated, e.g. github.create_issue or github.*)"
                            input type="text" name="actions" required;
                        }
                        label { "Resources (optional globs, e.g. acme/*)"
                            input type="text" name="resources";
                        }
                        label { "Expires in (hours)"
                            input type="number" name="expires_hours" min="1" max="8784" value="24";
                        }
                        label { "At most this many uses (optional)"
                            input type="number" name="max_uses" min="1";
                        }
                    }
                    div.buttons { button.approve type="submit" { "Grant" } }
                }
            }
        },
    )
}
