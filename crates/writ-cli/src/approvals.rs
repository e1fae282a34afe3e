//! `writ approvals list|approve|deny`: the approvals a running server waits for, and an
//! approver's decision on one, through the HTTP API with a user API key.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Global;
use crate::actions::operation;
use crate::client::{Client, ServerArgs, cell, short_time, table};
use crate::identity::print;

#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List the approvals you may see: yours to decide, your agents', or all for an admin.
    List {
        /// Which approvals to list.
        #[arg(
            long,
            default_value = "pending",
            value_parser = ["pending", "approved", "denied", "expired", "all"]
        )]
        state: String,
    },
    /// Approve an action; it runs once the quorum is reached.
    Approve {
        /// The approval id (apr_…).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        comment: Option<String>,
        /// The action hash you reviewed; refused if the approval is for another action.
        #[arg(long)]
        action_hash: Option<String>,
    },
    /// Deny an action; it will not run.
    Deny {
        /// The approval id (apr_…).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        comment: Option<String>,
    },
}

pub async fn run(args: ApprovalsArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server, Duration::ZERO)?;
    let (id, body) = match args.command {
        ApprovalsCommand::List { state } => {
            let answer = client
                .get(&["v1", "approvals"], &[("state", state)])
                .await?;
            print(global, &answer, || list_text(&answer));
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Approve {
            id,
            comment,
            action_hash,
        } => {
            let mut body = json!({"decision": "approve", "comment": comment});
            if let Some(hash) = action_hash {
                body["action_hash"] = json!(hash);
            }
            (id, body)
        }
        ApprovalsCommand::Deny { id, comment } => {
            (id, json!({"decision": "deny", "comment": comment}))
        }
    };
    let answer = client
        .post(&["v1", "approvals", &id, "decision"], &body)
        .await?;
    print(global, &answer, || decision_text(&answer));
    Ok(ExitCode::SUCCESS)
}

fn list_text(answer: &Value) -> String {
    let approvals = answer
        .get("approvals")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if approvals.is_empty() {
        return "no approvals".to_owned();
    }
    let rows: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| {
            let action = a.get("action").unwrap_or(&Value::Null);
            vec![
                cell(a.get("id")),
                cell(a.get("action_id")),
                format!("{} → {}", cell(action.get("agent")), cell(a.get("user"))),
                operation(action),
                strings(a.get("approvers")),
                cell(a.get("quorum")),
                short_time(a.get("expires_at")),
                decisions(a.get("decisions")),
                match a.get("you_may_decide").and_then(Value::as_bool) {
                    Some(true) => "yes".to_owned(),
                    _ => "no".to_owned(),
                },
            ]
        })
        .collect();
    table(
        &[
            "APPROVAL",
            "ACTION",
            "AGENT → USER",
            "OPERATION",
            "APPROVERS",
            "QUORUM",
            "EXPIRES",
            "DECISIONS",
            "YOU MAY DECIDE",
        ],
        &rows,
    )
}

fn decision_text(a: &Value) -> String {
    let approval = a.get("approval").unwrap_or(&Value::Null);
    let mut lines = vec![
        format!(
            "approval {}: {}  (decisions: {})",
            cell(approval.get("id")),
            cell(approval.get("state")),
            decisions(approval.get("decisions"))
        ),
        format!(
            "action   {} {}: {}",
            cell(a.get("action_id")),
            operation(a),
            cell(a.get("status"))
        ),
    ];
    if let Some(status) = a.get("result").and_then(|r| r.get("status")) {
        lines.push(format!("result   HTTP {}", cell(Some(status))));
    }
    if let Some(error) = a.get("error") {
        lines.push(format!("error    {}", cell(Some(error))));
    }
    lines.join("\n")
}

/// `bob approve, carol deny` from the decisions of an approval view; `-` when there are none.
fn decisions(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| format!("{} {}", cell(d.get("approver")), cell(d.get("decision"))))
        .collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn strings(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        None => cell(v),
    }
}
