//! The console's pages, as maud templates over the same JSON views the API answers with. maud
//! escapes every value; nothing here writes a style or script inline (the CSP forbids it), and
//! what the script needs travels in `data-` attributes.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use writ_store::ActionRow;

use super::{AuditSearch, LogStatus, Outcome, SignInWith, SignedIn, css_url, js_url, verdict_of};

/// A JSON value as text: strings as they are, arrays joined by commas, null as a dash, the rest
/// as compact JSON.
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "—".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "—".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text(Some(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

fn pretty(v: Option<&Value>) -> String {
    v.and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| "—".to_owned())
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The frame of every page.
fn layout(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Writ" }
                link rel="stylesheet" href=(css_url());
                script src=(js_url()) defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "Writ" }
                    @if let Some(who) = who {
                        nav {
                            a href="/console/approvals" { "Approvals" }
                            a href="/console/audit" { "Audit" }
                            a href="/console/identity" { "Agents & grants" }
                            @if who.user.admin { a href="/console/policy" { "Policy" } }
                            a href="/console/account" { "Account" }
                        }
                        div.me {
                            span.user data-signed-in=(who.user.id.as_str()) {
                                (who.user.id.as_str())
                                @if who.user.admin { " (admin)" }
                            }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(who.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn error(who: Option<&SignedIn>, status: StatusCode, message: &str) -> Markup {
    layout(
        "Error",
        who,
        html! {
            section.error data-status=(status.as_u16()) {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                p.message { (message) }
                p { a href="/console/approvals" { "Back to the approvals" } }
            }
        },
    )
}

pub(super) fn login(
    token: &str,
    problem: Option<&str>,
    providers: &[super::OidcSignIn],
    passwords: bool,
) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.login {
                h1 { "Sign in to Writ" }
                @if let Some(p) = problem {
                    p.problem role="alert" { (p) }
                }
                @if passwords {
                    form #password-sign-in method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(token);
                        label for="user" { "User id" }
                        input #user type="text" name="user" autocomplete="username"
                            autocapitalize="none" spellcheck="false" required;
                        label for="password" { "Password" }
                        input #password type="password" name="password"
                            autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "No password yet? Set one with " code { "writ users set-password YOUR_ID" } " (or ask an operator), or sign in with your API key below." }
                    h2 { "Or with your user API key" }
                } @else {
                    h2 { "With your user API key" }
                }
                form #key-sign-in method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(token);
                    label for="api_key" { "Your user API key" }
                    input #api_key type="password" name="api_key" autocomplete="off"
                        placeholder="writ_uk_…" required;
                    button type="submit" { "Sign in with the key" }
                }
                p.hint { "A key or password is checked and forgotten: the session is a separate random token, and neither is ever shown." }
                @if !providers.is_empty() {
                    div.oidc {
                        @for (n, p) in providers.iter().enumerate() {
                            p { a.oidc-start href=(format!("/console/oidc/{n}/start")) { "Sign in with " (p.name) } }
                        }
                    }
                }
            }
        },
    )
}

pub(super) fn approvals(who: &SignedIn, items: &[Value]) -> Markup {
    layout(
        "Approvals",
        Some(who),
        html! {
            h1 { "Approvals waiting" }
            p.live #live-status data-live="connecting" { "Connecting for live updates…" }
            p.empty #no-approvals hidden[!items.is_empty()] { "Nothing is waiting for you." }
            div #approvals {
                @for item in items {
                    (approval_card(who, item))
                }
            }
            // The card the script fills for an approval that arrives live.
            template #approval-template {
                (approval_card(who, &Value::Null))
            }
        },
    )
}

/// One approval request with everything an approver needs to decide, and the decision form
/// when this user may decide. Rendered with `Value::Null` it is the empty card the script fills.
fn approval_card(who: &SignedIn, a: &Value) -> Markup {
    let id = s(a, "/id");
    let may_decide = a.is_null() || a.get("you_may_decide") == Some(&Value::Bool(true));
    let action_id = s(a, "/action_id");
    let decisions = a
        .get("decisions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let approvals_so_far = decisions
        .iter()
        .filter(|d| d.get("decision").and_then(Value::as_str) == Some("approve"))
        .count();
    html! {
        article.approval data-approval-id=(id) {
            header {
                h2 data-field="operation" {
                    (s(a, "/action/connector")) "." (s(a, "/action/operation"))
                }
                a.record data-field="record" href=(format!("/console/actions/{action_id}")) { "Record" }
            }
            dl.facts {
                dt { "Agent" } dd data-field="agent" { (s(a, "/action/agent")) }
                dt { "Acting for" } dd data-field="user" { (s(a, "/action/user")) }
                dt { "Grant" } dd data-field="grant" { (text(a.pointer("/action/grant"))) }
                dt { "Grant allows" } dd data-field="grant-scope" { (grant_scope(a.pointer("/action/grant_scope"))) }
                dt { "Intent" } dd data-field="intent" { (text(a.pointer("/action/intent"))) }
                dt { "Rationale" } dd data-field="rationale" { (text(a.pointer("/action/rationale"))) }
                dt { "Policy gate" } dd data-field="gate" { (text(a.pointer("/action/policy_ids"))) }
                dt { "Reason" } dd data-field="reason" { (text(a.get("reason"))) }
                dt { "Policy version" } dd.mono data-field="bundle" { (text(a.pointer("/action/bundle_version"))) }
                dt { "Approvers" } dd data-field="approvers" { (text(a.get("approvers"))) }
                dt { "Quorum" } dd data-field="quorum" {
                    (approvals_so_far) " of " (text(a.get("quorum"))) " approvals"
                }
                dt { "Time left" } dd {
                    span data-field="time-left" data-expires=(s(a, "/expires_at")) {
                        "until " (s(a, "/expires_at"))
                    }
                }
                dt { "Action hash" } dd.mono data-field="hash" { (s(a, "/action_hash")) }
            }
            h3 { "Arguments" }
            pre.args data-field="args" { (pretty(a.pointer("/action/args"))) }
            h3 { "Decisions so far" }
            ul.decisions data-field="decisions" {
                @for d in &decisions {
                    li { (decision_line(d)) }
                }
                @if decisions.is_empty() {
                    li.none { "None yet." }
                }
            }
            @if may_decide {
                form.decide method="post" action=(format!("/console/approvals/{id}/decision")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    input type="hidden" name="action_hash" value=(s(a, "/action_hash"));
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
                    @if s(a, "/user") == who.user.id.as_str() {
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
fn grant_scope(scope: Option<&Value>) -> String {
    let Some(scope) = scope.filter(|s| s.is_object()) else {
        return "—".to_owned();
    };
    let mut line = text(scope.get("actions"));
    if scope
        .get("resources")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        line.push_str(" on ");
        line.push_str(&text(scope.get("resources")));
    }
    line.push_str(", until ");
    line.push_str(s(scope, "/expires_at"));
    if scope.get("revoked") == Some(&Value::Bool(true)) {
        line.push_str(" (revoked)");
    }
    line
}

fn decision_line(d: &Value) -> String {
    let mut line = format!(
        "{} {} at {}",
        s(d, "/approver"),
        match s(d, "/decision") {
            "approve" => "approved",
            "deny" => "denied",
            other => other,
        },
        s(d, "/time")
    );
    if let Some(c) = d.get("comment").and_then(Value::as_str) {
        line.push_str(": ");
        line.push_str(c);
    }
    line
}

/// The label of each kind of entry, as one step of intent → decision → evaluation → approval →
/// execution → response, and which payload fields to show for it.
struct Step {
    kind: &'static str,
    label: &'static str,
    /// (label, JSON pointer into the payload)
    fields: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        kind: "requested",
        label: "Intent and decision (agent)",
        fields: &[
            ("Intent", "/intent"),
            ("Rationale", "/rationale"),
            ("Operation", "/operation"),
            ("Arguments", "/args"),
            ("Authenticated by", "/auth"),
        ],
    },
    Step {
        kind: "evaluated",
        label: "Evaluation (policy)",
        fields: &[
            ("Verdict", "/verdict"),
            ("Policies", "/policy_ids"),
            ("Reasons", "/reasons"),
            ("Errors", "/errors"),
            ("Policy version", "/bundle_version"),
            ("Grant check", "/grant_check"),
            ("After approval by", "/approvers"),
            ("Shadow disagrees", "/shadow/disagrees"),
        ],
    },
    Step {
        kind: "approval_requested",
        label: "Approval requested",
        fields: &[
            ("Approvers", "/approvers"),
            ("Quorum", "/quorum"),
            ("Expires", "/expires_at"),
            ("Reason", "/reason"),
            ("Gates", "/gates"),
        ],
    },
    Step {
        kind: "approval_decided",
        label: "Approval decision",
        fields: &[
            ("Decision", "/decision"),
            ("Comment", "/comment"),
            ("Accepted", "/accepted"),
            ("Refused because", "/refused"),
            ("Approvals", "/approvals"),
            ("Quorum", "/quorum"),
        ],
    },
    Step {
        kind: "executed",
        label: "Execution",
        fields: &[
            ("Outcome", "/outcome"),
            ("Credential", "/credential"),
            ("Upstream status", "/status"),
            ("Elapsed (ms)", "/elapsed_ms"),
            ("Error", "/error"),
            ("Reason", "/reason"),
        ],
    },
    Step {
        kind: "responded",
        label: "Response",
        fields: &[("Status", "/status"), ("State", "/state")],
    },
];

pub(super) fn action(who: &SignedIn, r: &Value) -> Markup {
    let entries = r
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let credential = entries
        .iter()
        .filter(|e| s(e, "/kind") == "executed")
        .find_map(|e| e.pointer("/payload/credential").and_then(Value::as_str));
    let checkpoint = r.get("checkpoint").filter(|c| !c.is_null());
    let id = s(r, "/action_id");
    layout(
        &format!("Action {id}"),
        Some(who),
        html! {
            h1 { "Action " span.mono { (id) } }
            p { span.state data-state=(s(r, "/status")) { (s(r, "/status")) } }
            dl.facts {
                dt { "Operation" } dd { (s(r, "/connector")) "." (s(r, "/operation")) }
                dt { "Agent" } dd { (s(r, "/agent")) }
                dt { "Acting for" } dd { (s(r, "/user")) }
                dt { "Grant" } dd { (text(r.get("grant"))) }
                dt { "Verdict" } dd { (text(r.get("verdict"))) }
                dt { "Policies" } dd { (text(r.get("policy_ids"))) }
                dt { "Reasons" } dd { (text(r.get("reasons"))) }
                dt { "Policy version" } dd.mono { (text(r.get("bundle_version"))) }
                dt { "Credential" } dd { (credential.unwrap_or("—")) }
                dt { "Requested" } dd { (s(r, "/created_at")) }
                dt { "Last change" } dd { (s(r, "/updated_at")) }
                dt { "Action hash" } dd.mono { (s(r, "/action_hash")) }
            }
            section.proofs {
                h2 { "Proofs" }
                p #proof-summary data-proof-summary="pending" {
                    "Your browser is checking every entry against the signed checkpoint…"
                }
                @if let Some(c) = checkpoint {
                    div #checkpoint
                        data-note-b64=(STANDARD.encode(s(c, "/note").as_bytes()))
                        data-size=(text(c.get("size")))
                        data-verifier-key=(s(r, "/verifier_key")) {
                        dl.facts {
                            dt { "Checkpoint size" } dd { (text(c.get("size"))) }
                            dt { "Root" } dd.mono { (s(c, "/root_hash")) }
                            dt { "Log key" } dd.mono { (s(r, "/verifier_key")) }
                            dt { "Signature" } dd { span data-checkpoint-status="pending" { "checking…" } }
                        }
                        details {
                            summary { "Signed note" }
                            pre { (s(c, "/note")) }
                        }
                        p.hint { "Compare the log key with the one your organisation publishes: the proofs are only as trustworthy as the key they are checked against." }
                    }
                } @else {
                    p { "No checkpoint covers this action yet." }
                }
            }
            h2 { "Timeline" }
            ol.timeline {
                @for e in &entries {
                    (entry(e))
                }
            }
        },
    )
}

fn entry(e: &Value) -> Markup {
    let kind = s(e, "/kind");
    let (label, fields): (&str, &[(&str, &str)]) = STEPS
        .iter()
        .find(|step| step.kind == kind)
        .map(|step| (step.label, step.fields))
        .unwrap_or((kind, &[]));
    let mut payload = e.get("payload").cloned().unwrap_or(Value::Null);
    // A re-evaluation nests its verdict (`{"verdict": {"verdict": …, "policy_ids": …}}`); the
    // first evaluation has the same fields at the top.
    if let Some(Value::Object(verdict)) = payload.get("verdict").cloned()
        && let Value::Object(top) = &mut payload
    {
        for (k, v) in verdict {
            top.insert(k, v);
        }
    }
    let proof = e.get("inclusion_proof").and_then(Value::as_array).map(|p| {
        p.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    });
    let canonical = s(e, "/canonical");
    html! {
        li.entry data-kind=(kind) data-seq=(text(e.get("seq")))
            data-canonical-b64=(STANDARD.encode(canonical.as_bytes()))
            data-proof=[proof] {
            div.entry-head {
                span.step { (label) }
                span.seq { "#" (text(e.get("seq"))) }
                span.proof data-proof-status="pending" { "checking…" }
            }
            div.meta { (s(e, "/time")) " · " (text(e.get("actor"))) }
            dl.facts {
                @for (name, pointer) in fields {
                    @if let Some(v) = payload.pointer(pointer).filter(|v| !v.is_null()) {
                        dt { (name) }
                        dd { @if v.is_object() { pre { (pretty(Some(v))) } } @else { (text(Some(v))) } }
                    }
                }
            }
            details {
                summary { "Entry as logged" }
                pre.canonical { (canonical) }
            }
        }
    }
}

/// The verdicts the chart stacks, bottom to top, with their colours.
const VERDICTS: &[(&str, &str)] = &[
    ("allow", "#1d7a3a"),
    ("approval", "#c98a00"),
    ("deny", "#b3261e"),
];

/// Counts of actions by verdict per time bucket (an hour when the actions span two days or
/// less, else a day), oldest first.
fn buckets(rows: &[ActionRow]) -> (&'static str, Vec<(String, [usize; 3])>) {
    const HOUR: i64 = 3_600_000_000;
    let times: Vec<i64> = rows.iter().map(|a| a.created.as_micros()).collect();
    let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) else {
        return ("hour", Vec::new());
    };
    let (unit, width, label_len) = if max - min <= 48 * HOUR {
        ("hour", HOUR, 13)
    } else {
        ("day", 24 * HOUR, 10)
    };
    let mut out: std::collections::BTreeMap<i64, [usize; 3]> = Default::default();
    for a in rows {
        let key = a.created.as_micros().div_euclid(width);
        let slot = VERDICTS
            .iter()
            .position(|(v, _)| *v == verdict_of(a.state))
            .unwrap_or(0);
        out.entry(key).or_default()[slot] += 1;
    }
    let labelled = out
        .into_iter()
        .map(|(key, counts)| {
            let label = writ_core::Timestamp::from_micros(key * width)
                .map(|t| t.to_string().chars().take(label_len).collect::<String>())
                .unwrap_or_default();
            (label, counts)
        })
        .collect();
    (unit, labelled)
}

/// The (top, height, verdict slot) of each non-empty segment of one stacked bar.
fn stack(counts: &[usize; 3], height: usize, tallest: usize) -> Vec<(usize, usize, usize)> {
    let mut y = height;
    let mut out = Vec::new();
    for (slot, n) in counts.iter().enumerate() {
        if *n > 0 {
            let h = (n * height / tallest).max(1);
            y = y.saturating_sub(h);
            out.push((y, h, slot));
        }
    }
    out
}

/// A stacked bar chart as inline SVG (presentation attributes only: the CSP allows no inline
/// style).
fn chart(rows: &[ActionRow]) -> Markup {
    let (unit, data) = buckets(rows);
    let tallest = data
        .iter()
        .map(|(_, c)| c.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = 24usize;
    let gap = 8usize;
    let height = 120usize;
    let width = (data.len() * (bar + gap)).max(bar + gap);
    html! {
        figure.chart {
            svg #verdict-chart viewBox=(format!("0 0 {width} {}", height + 4)) role="img"
                aria-label=(format!("actions by verdict per {unit}")) preserveAspectRatio="xMinYMax meet" {
                @for (i, (label, counts)) in data.iter().enumerate() {
                    g data-bucket=(label) {
                        title { (label) ": " (counts[0]) " allowed, " (counts[1]) " approval, " (counts[2]) " denied" }
                        @for (y, h, slot) in stack(counts, height, tallest) {
                            rect x=(i * (bar + gap)) y=(y) width=(bar) height=(h)
                                fill=(VERDICTS[slot].1) data-verdict=(VERDICTS[slot].0) data-count=(counts[slot]) {}
                        }
                    }
                }
            }
            figcaption {
                "Actions by verdict per " (unit) ": "
                @for (verdict, colour) in VERDICTS {
                    span.legend data-colour=(colour) { (verdict) } " "
                }
                @if let (Some((first, _)), Some((last, _))) = (data.first(), data.last()) {
                    "(" (first) " … " (last) ", UTC)"
                }
            }
        }
    }
}

pub(super) fn audit(
    who: &SignedIn,
    search: &AuditSearch,
    rows: &[ActionRow],
    status: &LogStatus,
) -> Markup {
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

pub(super) fn identity(
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

pub(super) fn policy(
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
                            @let info = serde_json::to_value(p).unwrap_or(Value::Null);
                            tr data-policy=(p.id) {
                                td { (p.id) }
                                td { (text(info.get("effect"))) @if p.gate.is_some() { " (approval gate)" } }
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

/// The signed-in user's account: who they are, this session, their password (its state, never
/// its hash), the form to set or change it, and the button that ends every session.
pub(super) fn account(
    who: &SignedIn,
    password: Option<&writ_store::identity::PasswordRecord>,
    outcome: Option<&Outcome>,
    passwords: bool,
) -> Markup {
    let now = writ_core::Timestamp::now();
    let (method, how) = match &who.with {
        SignInWith::ApiKey { .. } => ("api_key", "your user API key".to_owned()),
        SignInWith::Password { .. } => ("password", "your password".to_owned()),
        SignInWith::Oidc { issuer } => ("oidc", format!("OpenID Connect, issuer {issuer}")),
    };
    layout(
        "Account",
        Some(who),
        html! {
            h1 { "Your account" }
            @if let Some(o) = outcome {
                @if o.status.is_success() {
                    p.notice #account-outcome role="status" data-status=(o.status.as_u16()) { (o.message) }
                } @else {
                    p.problem #account-outcome role="alert" data-status=(o.status.as_u16()) { (o.message) }
                }
            }
            dl.facts #account {
                dt { "User id" } dd.mono #account-id { (who.user.id.as_str()) }
                dt { "Name" } dd { (who.user.display_name) }
                dt { "Groups" } dd { (if who.user.groups.is_empty() { "none".to_owned() } else { who.user.groups.join(", ") }) }
                dt { "Admin" } dd #account-admin { @if who.user.admin { "yes" } @else { "no" } }
                dt { "This session" } dd #signed-in-with data-method=(method) { "signed in with " (how) }
                dt { "Session ends" } dd #session-ends { (who.expires_at.to_string()) }
                @if passwords {
                    dt { "Password" } dd #password-state data-password=(if password.is_some() { "set" } else { "none" }) {
                        @match password {
                            Some(p) => {
                                "set " (p.set_at.to_string())
                                @if let Some(until) = p.locked_until.filter(|u| *u > now) {
                                    span.problem { " (locked until " (until.to_string()) " after repeated wrong passwords)" }
                                }
                            }
                            None => { "none yet: you sign in with your API key" @if matches!(who.with, SignInWith::Oidc { .. }) { " or your identity provider" } }
                        }
                    }
                }
            }
            @if passwords {
                section.account {
                    h2 { @if password.is_some() { "Change your password" } @else { "Set a password" } }
                    form #password-form method="post" action="/console/account/password" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        @if password.is_some() {
                            label for="current_password" { "Current password" }
                            input #current_password type="password" name="current_password"
                                autocomplete="current-password" required;
                        }
                        label for="new_password" { "New password" }
                        input #new_password type="password" name="new_password"
                            autocomplete="new-password" required;
                        label for="repeat_password" { "New password again" }
                        input #repeat_password type="password" name="repeat_password"
                            autocomplete="new-password" required;
                        button type="submit" { @if password.is_some() { "Change the password" } @else { "Set the password" } }
                    }
                    p.hint {
                        "At least " (writ_identity::password::MIN_CHARS) " characters; a few unrelated words make a good one. "
                        "Changing it ends your other sessions opened with a password; those opened with an API key or an identity provider go on."
                    }
                }
            }
            section.account {
                h2 { "Sign out everywhere" }
                p.hint { "Ends every session of yours, in every browser, this one included. Do it if you left a session open on a device you no longer hold." }
                form #sign-out-everywhere method="post" action="/console/account/sign-out-everywhere" {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.deny type="submit" { "Sign out everywhere" }
                }
            }
        },
    )
}

/// A page that moves on to `to` by itself (a `meta` refresh, no script), with a link for
/// browsers that do not.
pub(super) fn continue_to(to: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0; url={to}"));
                title { "Signed in · Writ" }
                link rel="stylesheet" href=(css_url());
            }
            body {
                main {
                    section.login {
                        h1 { "Signed in" }
                        p { a #continue href=(to) { "Continue to the console" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_read_as_text() {
        for (value, expected) in [
            (json!(null), "—"),
            (json!(""), "—"),
            (json!([]), "—"),
            (json!("x"), "x"),
            (json!(["a", "b"]), "a, b"),
            (json!(3), "3"),
            (json!({"k": 1}), "{\"k\":1}"),
        ] {
            assert_eq!(text(Some(&value)), expected, "{value}");
        }
        assert_eq!(text(None), "—");
    }

    #[test]
    fn bars_stack_from_the_bottom() {
        // (counts, height, tallest) → (top, height, slot) of each segment
        for (counts, expected) in [
            ([0, 0, 0], vec![]),
            ([1, 0, 0], vec![(60, 60, 0)]),
            ([1, 1, 0], vec![(60, 60, 0), (0, 60, 1)]),
            ([0, 0, 2], vec![(0, 120, 2)]),
        ] {
            assert_eq!(stack(&counts, 120, 2), expected, "{counts:?}");
        }
    }

    fn action_at(micros: i64, state: writ_store::ActionState) -> ActionRow {
        let t = writ_core::Timestamp::from_micros(micros)
            .unwrap_or_else(|_| writ_core::Timestamp::now());
        ActionRow {
            id: writ_core::ActionId::generate(),
            agent: "bot".into(),
            user: "alice".into(),
            grant: None,
            connector: "github".into(),
            operation: "create_issue".into(),
            action_hash: String::new(),
            idempotency_key: None,
            state,
            request: json!({}),
            result: None,
            created: t,
            updated: t,
        }
    }

    #[test]
    fn actions_are_counted_by_verdict_per_hour_or_day() {
        use writ_store::ActionState::*;
        const HOUR: i64 = 3_600_000_000;
        let base = 1_780_000_000 * 1_000_000 / HOUR * HOUR;
        let rows = vec![
            action_at(base, Succeeded),
            action_at(base + 10, Denied),
            action_at(base + HOUR, PendingApproval),
            action_at(base + HOUR + 1, Rejected),
        ];
        let (unit, data) = buckets(&rows);
        assert_eq!(unit, "hour");
        assert_eq!(
            data.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            vec![[1, 0, 1], [0, 1, 1]]
        );
        let rows = vec![
            action_at(base, Succeeded),
            action_at(base + 72 * HOUR, Expired),
        ];
        let (unit, data) = buckets(&rows);
        assert_eq!(unit, "day");
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].0.len(), 10, "{data:?}");
        assert_eq!(buckets(&[]).1.len(), 0);
    }
}
