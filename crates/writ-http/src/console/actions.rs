//! The record of one action: its facts, and its timeline of audit entries with the inclusion
//! proofs and signed checkpoint that the browser verifies itself.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use maud::{Markup, html};
use serde_json::Value;
use writ_gateway::auth::Who;
use writ_gateway::views::{self, ActionRecord, EntryView};

use super::layout::{layout, or_dash, pretty, text};
use super::session::SignedIn;
use super::{Console, error_page, html};

pub(super) async fn action_page(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match c.page_user(&headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let reader = Who::User(who.user.clone());
    match views::action_record(&c.gw, &reader, &id, Duration::ZERO).await {
        Ok((_, record)) => html(StatusCode::OK, action(&who, &record)),
        Err(e) => error_page(Some(&who), &e.into()),
    }
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

fn action(who: &SignedIn, r: &ActionRecord) -> Markup {
    let v = &r.view;
    // Which credential was used is in the execution's entry (the log says what happened).
    let credential = r
        .entries
        .iter()
        .filter(|e| e.kind == "executed")
        .find_map(|e| e.payload.get("credential").and_then(Value::as_str));
    let id = &v.action_id;
    layout(
        &format!("Action {id}"),
        Some(who),
        html! {
            h1 { "Action " span.mono { (id) } }
            p { span.state data-state=(v.status) { (v.status) } }
            dl.facts {
                dt { "Operation" } dd { (v.connector) "." (v.operation) }
                dt { "Agent" } dd { (v.agent) }
                dt { "Acting for" } dd { (v.user) }
                dt { "Grant" } dd { (or_dash(v.grant.as_deref())) }
                dt { "Verdict" } dd { (text(v.verdict.as_ref())) }
                dt { "Policies" } dd { (text(v.policy_ids.as_ref())) }
                dt { "Reasons" } dd { (text(v.reasons.as_ref())) }
                dt { "Policy version" } dd.mono { (text(v.bundle_version.as_ref())) }
                dt { "Credential" } dd { (credential.unwrap_or("—")) }
                dt { "Requested" } dd { (v.created_at) }
                dt { "Last change" } dd { (v.updated_at) }
                dt { "Action hash" } dd.mono { (v.action_hash) }
            }
            section.proofs {
                h2 { "Proofs" }
                p #proof-summary data-proof-summary="pending" {
                    "Your browser is checking every entry against the signed checkpoint…"
                }
                @if let Some(c) = &r.checkpoint {
                    div #checkpoint
                        data-note-b64=(STANDARD.encode(c.note.as_bytes()))
                        data-size=(c.size)
                        data-verifier-key=(r.verifier_key) {
                        dl.facts {
                            dt { "Checkpoint size" } dd { (c.size) }
                            dt { "Root" } dd.mono { (c.root_hash) }
                            dt { "Log key" } dd.mono { (r.verifier_key) }
                            dt { "Signature" } dd { span data-checkpoint-status="pending" { "checking…" } }
                        }
                        details {
                            summary { "Signed note" }
                            pre { (c.note) }
                        }
                        p.hint { "Compare the log key with the one your organisation publishes: the proofs are only as trustworthy as the key they are checked against." }
                    }
                } @else {
                    p { "No checkpoint covers this action yet." }
                }
            }
            h2 { "Timeline" }
            ol.timeline {
                @for e in &r.entries {
                    (entry(e))
                }
            }
        },
    )
}

/// One entry of the timeline. Its payload is JSON by nature (each kind of entry has its own
/// fields, and a newer Writ may add some), so the step's fields are read by pointer.
fn entry(e: &EntryView) -> Markup {
    let kind = e.kind.as_str();
    let (label, fields): (&str, &[(&str, &str)]) = STEPS
        .iter()
        .find(|step| step.kind == kind)
        .map(|step| (step.label, step.fields))
        .unwrap_or((kind, &[]));
    let mut payload = e.payload.clone();
    // A re-evaluation nests its verdict (`{"verdict": {"verdict": …, "policy_ids": …}}`); the
    // first evaluation has the same fields at the top.
    if let Some(Value::Object(verdict)) = payload.get("verdict").cloned()
        && let Value::Object(top) = &mut payload
    {
        for (k, v) in verdict {
            top.insert(k, v);
        }
    }
    let proof = e.inclusion_proof.as_ref().map(|p| p.join(","));
    let canonical = &e.canonical;
    html! {
        li.entry data-kind=(kind) data-seq=(e.seq)
            data-canonical-b64=(STANDARD.encode(canonical.as_bytes()))
            data-proof=[proof] {
            div.entry-head {
                span.step { (label) }
                span.seq { "#" (e.seq) }
                span.proof data-proof-status="pending" { "checking…" }
            }
            div.meta { (e.time) " · " (or_dash(e.actor.as_deref())) }
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
