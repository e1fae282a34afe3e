//! `writ actions list|show`: the actions agents asked a running server for, and the audit
//! timeline of one of them, read through the HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use writ_audit::{Hash, leaf_hash, verify_inclusion};

use crate::Global;
use crate::client::{Client, ServerArgs, cell, short_time, table};
use crate::identity::{parse_duration, print};

#[derive(Debug, clap::Args)]
pub struct ActionsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ActionsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ActionsCommand {
    /// List actions, newest first (a user who is not an admin sees their own).
    List {
        /// Only this agent's actions.
        #[arg(long)]
        agent: Option<String>,
        /// Only actions on this user's authority.
        #[arg(long)]
        user: Option<String>,
        /// A state: pending_approval, executing, succeeded, failed, denied, rejected, expired,
        /// outcome_unknown.
        #[arg(long)]
        state: Option<String>,
        /// Only actions with this verdict.
        #[arg(long, value_parser = ["allow", "deny", "approval"])]
        verdict: Option<String>,
        /// Only actions created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one action: its state, then each audit entry and its inclusion proof.
    Show {
        /// The action id (act_…).
        id: String,
        /// Wait this long (30s, 2m) for a pending action to settle before showing it.
        #[arg(long)]
        wait: Option<String>,
    },
}

pub async fn run(args: ActionsArgs, global: &Global) -> anyhow::Result<ExitCode> {
    match args.command {
        ActionsCommand::List {
            agent,
            user,
            state,
            verdict,
            since,
            limit,
        } => {
            let client = Client::new(&args.server, Duration::ZERO)?;
            let mut query: Vec<(&str, String)> = Vec::new();
            let params = [
                ("agent", agent),
                ("user", user),
                ("state", state),
                ("verdict", verdict),
                ("since", since),
                ("limit", limit.map(|n| n.to_string())),
            ];
            for (name, value) in params {
                if let Some(v) = value {
                    query.push((name, v));
                }
            }
            let answer = client.get(&["v1", "actions"], &query).await?;
            print(global, &answer, || list_text(&answer));
        }
        ActionsCommand::Show { id, wait } => {
            let wait_secs = wait.as_deref().map(parse_duration).transpose()?;
            let wait_secs = wait_secs.map_or(0, |s| s.unsigned_abs());
            let client = Client::new(&args.server, Duration::from_secs(wait_secs))?;
            let query: Vec<(&str, String)> = if wait_secs > 0 {
                vec![("wait", format!("{wait_secs}s"))]
            } else {
                Vec::new()
            };
            let answer = client.get(&["v1", "actions", &id], &query).await?;
            print(global, &answer, || timeline_text(&answer));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_text(answer: &Value) -> String {
    let actions = answer
        .get("actions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if actions.is_empty() {
        return "no actions".to_owned();
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                short_time(a.get("created_at")),
                cell(a.get("action_id")),
                cell(a.get("agent")),
                cell(a.get("user")),
                operation(a),
                cell(a.get("status")),
                cell(a.get("verdict")),
            ]
        })
        .collect();
    table(
        &[
            "TIME",
            "ACTION",
            "AGENT",
            "USER",
            "OPERATION",
            "STATUS",
            "VERDICT",
        ],
        &rows,
    )
}

/// `connector.operation` of an action view.
pub fn operation(a: &Value) -> String {
    format!("{}.{}", cell(a.get("connector")), cell(a.get("operation")))
}

fn timeline_text(a: &Value) -> String {
    let mut out = vec![
        format!(
            "action    {}  {}",
            cell(a.get("action_id")),
            cell(a.get("status"))
        ),
        format!(
            "by        {} → {}  (grant {})",
            cell(a.get("agent")),
            cell(a.get("user")),
            cell(a.get("grant"))
        ),
        format!("operation {}", operation(a)),
        format!("hash      {}", cell(a.get("action_hash"))),
        format!(
            "policy    bundle {}  verdict {}",
            cell(a.get("bundle_version")),
            cell(a.get("verdict"))
        ),
    ];
    if let Some(ap) = a.get("approval").filter(|v| v.is_object()) {
        out.push(format!(
            "approval  {} {}  approvers {}  quorum {}  expires {}",
            cell(ap.get("id")),
            cell(ap.get("state")),
            list(ap.get("approvers")),
            cell(ap.get("quorum")),
            short_time(ap.get("expires_at"))
        ));
    }
    let checkpoint = a.get("checkpoint").filter(|c| c.is_object());
    let size = checkpoint
        .and_then(|c| c.get("size"))
        .and_then(Value::as_u64);
    let root = checkpoint
        .and_then(|c| c.get("root_hash"))
        .and_then(Value::as_str)
        .and_then(|h| Hash::from_hex(h).ok());
    out.push(match size {
        Some(n) => format!(
            "checkpoint size {n}  root {}",
            cell(checkpoint.and_then(|c| c.get("root_hash")))
        ),
        None => "checkpoint none yet".to_owned(),
    });
    out.push(String::new());
    let entries = a
        .get("entries")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let kind = cell(e.get("kind"));
            vec![
                format!("#{}", cell(e.get("seq"))),
                short_time(e.get("time")),
                kind.clone(),
                cell(e.get("actor")),
                summary(&kind, e.get("payload").unwrap_or(&Value::Null)),
                proof_status(e, size, root.as_ref()),
            ]
        })
        .collect();
    out.push(table(
        &["SEQ", "TIME", "KIND", "ACTOR", "SUMMARY", "PROOF"],
        &rows,
    ));
    out.join("\n")
}

/// Whether an entry's inclusion proof leads from its canonical bytes to the checkpoint's root.
fn proof_status(e: &Value, size: Option<u64>, root: Option<&Hash>) -> String {
    let (Some(size), Some(root)) = (size, root) else {
        return "no checkpoint".to_owned();
    };
    let Some(hexes) = e.get("inclusion_proof").and_then(Value::as_array) else {
        return format!("not in checkpoint {size}");
    };
    let proof: Option<Vec<Hash>> = hexes
        .iter()
        .map(|h| h.as_str().and_then(|s| Hash::from_hex(s).ok()))
        .collect();
    let canonical = e.get("canonical").and_then(Value::as_str);
    let seq = e.get("seq").and_then(Value::as_u64);
    let (Some(proof), Some(canonical), Some(seq)) = (proof, canonical, seq) else {
        return format!("unreadable proof (size {size})");
    };
    let leaf = leaf_hash(canonical.as_bytes());
    if e.get("leaf_hash").and_then(Value::as_str) != Some(leaf.to_hex().as_str()) {
        return "leaf hash MISMATCH".to_owned();
    }
    match verify_inclusion(&leaf, seq, size, &proof, root) {
        Ok(()) => format!("included in {size} ✓"),
        Err(err) => format!("proof FAILED (size {size}): {err}"),
    }
}

/// A one-line summary of an audit entry's payload.
fn summary(kind: &str, p: &Value) -> String {
    match kind {
        "requested" => {
            if let Some(refused) = p.get("refused") {
                return format!("refused before evaluation: {}", cell(Some(refused)));
            }
            format!(
                "{:?} {}",
                cell(p.get("intent")),
                compact(p.get("args").unwrap_or(&Value::Null), 120)
            )
        }
        "evaluated" => {
            // A re-evaluation after approval nests the verdict under "verdict".
            let v = p.get("verdict").filter(|v| v.is_object()).unwrap_or(p);
            let mut s = format!(
                "{}: {}  [{}]",
                cell(v.get("verdict")),
                v.get("reasons")
                    .and_then(Value::as_array)
                    .map(|r| r
                        .iter()
                        .map(|x| cell(Some(x)))
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default(),
                list(v.get("policy_ids"))
            );
            if p.get("reevaluation").and_then(Value::as_bool) == Some(true) {
                s.push_str(&format!(
                    "  (re-evaluated, approved by {})",
                    list(p.get("approvers"))
                ));
            }
            s
        }
        "approval_requested" => format!(
            "{} needs {} of {}, expires {}",
            cell(p.get("approval_id")),
            cell(p.get("quorum")),
            list(p.get("approvers")),
            short_time(p.get("expires_at"))
        ),
        "approval_decided" => {
            let mut s = format!("{} {}", cell(p.get("decision")), cell(p.get("approval_id")));
            if let Some(c) = p.get("comment").and_then(Value::as_str) {
                s.push_str(&format!(" {c:?}"));
            }
            if p.get("accepted").and_then(Value::as_bool) == Some(false) {
                s.push_str(&format!(" (refused: {})", cell(p.get("refused"))));
            }
            s
        }
        "executed" => {
            let mut s = format!(
                "{} status {}",
                cell(p.get("outcome")),
                cell(p.get("status"))
            );
            match p.get("credential") {
                Some(Value::Object(c)) => {
                    s.push_str(&format!(
                        " credential {}@{}",
                        cell(c.get("name")),
                        cell(c.get("version"))
                    ));
                }
                Some(Value::String(c)) => s.push_str(&format!(" credential {c}")),
                _ => {}
            }
            if let Some(e) = p.get("error").or_else(|| p.get("reason")) {
                s.push_str(&format!(": {}", cell(Some(e))));
            }
            s
        }
        "responded" => format!("HTTP {} {}", cell(p.get("status")), cell(p.get("state"))),
        _ => compact(p, 120),
    }
}

/// A JSON array of strings as `a, b`.
fn list(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        None => cell(v),
    }
}

/// Compact JSON cut to `max` characters.
fn compact(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.chars().count() <= max {
        text
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}
