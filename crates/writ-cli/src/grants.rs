//! `writ grants create|list|show|revoke`: what a user authorized an agent to do.
//!
//! Every change names who makes it (`--as USER`). Only that user or an admin may create a grant
//! for the user, or revoke it; an agent (`--as agent:ID`) never can.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_gateway::admin::{Actor, Admin};
use writ_identity::{AgentId, Amount, GrantId, GrantSpec, SumBudget, UserId};
use writ_store::identity::{GrantFilter, StoredGrant};

use crate::Global;
use crate::identity::{open, parse_duration, print};

#[derive(Debug, clap::Subcommand)]
pub enum GrantsCommand {
    /// Create a grant from flags, or from a JSON or YAML spec file (--file).
    Create {
        /// Who creates it: a user id (that user or an admin), or agent:ID (always refused).
        /// Over the API (WRIT_URL set) the token says who you are instead.
        #[arg(long = "as")]
        principal: Option<String>,
        /// A JSON grant spec: {"user", "agent", "actions", "resources", "constraints",
        /// "expires_at", "max_uses", "sum_budget"}.
        #[arg(long, conflicts_with_all = ["user", "agent", "actions"])]
        file: Option<PathBuf>,
        /// The user on whose authority the agent acts (default: --as).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// An action or prefix (github.*); repeatable.
        #[arg(long = "action")]
        actions: Vec<String>,
        /// A resource glob (acme/*); repeatable.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// A constraint as JSON, e.g. '{"pointer":"/amount","rule":"at_most","value":500}';
        /// repeatable.
        #[arg(long = "constraint")]
        constraints: Vec<String>,
        /// Lifetime (90s, 15m, 12h, 30d).
        #[arg(long, default_value = "1h")]
        expires_in: String,
        #[arg(long)]
        max_uses: Option<u64>,
        /// A sum budget: POINTER=MAX, e.g. /amount=5000.
        #[arg(long)]
        max_sum: Option<String>,
    },
    /// List grants, optionally of one user or agent.
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Show one grant and its usage.
    Show { id: String },
    /// Revoke a grant. Takes effect at once: the next check or token verification fails.
    Revoke {
        id: String,
        /// Who revokes it (over the API, the token says).
        #[arg(long = "as")]
        principal: Option<String>,
    },
}

/// The user `--as` names, who acts; an agent never creates or revokes a grant.
async fn actor(
    store: &dyn writ_store::IdentityStore,
    text: &str,
    doing: &str,
) -> anyhow::Result<Actor> {
    if let Some(agent) = text.strip_prefix("agent:") {
        let agent = AgentId::new(agent)?;
        bail!("agent {agent} cannot {doing}; only the user it acts for (or an admin) can");
    }
    let id = UserId::new(text)?;
    let user = store
        .user(&id)
        .await?
        .with_context(|| format!("user {id} does not exist; add it with `writ users add {id}`"))?;
    Ok(Actor::User(user))
}

fn grant_json(g: &StoredGrant) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(&g.grant)?;
    v["usage"] = serde_json::to_value(g.usage)?;
    Ok(v)
}

fn grant_text(g: &StoredGrant) -> String {
    let s = &g.grant.spec;
    let mut out = format!(
        "{}\tuser {} → agent {}\t{}\texpires {}",
        g.grant.id,
        s.user,
        s.agent,
        s.actions.join(","),
        s.expires_at
    );
    if let Some(at) = g.grant.revoked_at {
        out.push_str(&format!("\tREVOKED {at}"));
    }
    if let Some(max) = s.max_uses {
        out.push_str(&format!("\tuses {}/{max}", g.usage.uses));
    }
    if let Some(b) = &s.sum_budget {
        out.push_str(&format!("\t{} {}/{}", b.pointer, g.usage.sum, b.max));
    }
    out
}

pub async fn run(cmd: GrantsCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(client) = crate::remote::configured()? {
        return crate::remote::grants(cmd, &client, global).await;
    }
    let store = open(global).await?;
    match cmd {
        GrantsCommand::Create {
            principal: who,
            file,
            user,
            agent,
            actions,
            resources,
            constraints,
            expires_in,
            max_uses,
            max_sum,
        } => {
            let who = who.context("--as USER is required: who creates the grant")?;
            let who = actor(store.as_ref(), &who, "create, widen or extend a grant").await?;
            let now = Timestamp::now();
            let spec: GrantSpec = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let yaml = path.extension().is_some_and(|e| {
                        e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                    });
                    if yaml {
                        serde_yaml_ng::from_str(&text).with_context(|| {
                            format!("{} is not a valid grant spec", path.display())
                        })?
                    } else {
                        serde_json::from_str(&text).with_context(|| {
                            format!("{} is not a valid grant spec", path.display())
                        })?
                    }
                }
                None => {
                    let user = match (user, &who) {
                        (Some(u), _) => UserId::new(u)?,
                        (None, Actor::User(u)) => u.id.clone(),
                        (None, Actor::Operator) => bail!("--user is required"),
                    };
                    let agent = AgentId::new(agent.context("--agent is required")?)?;
                    let secs = parse_duration(&expires_in)?;
                    let expires_at = Timestamp::from_micros(now.as_micros() + secs * 1_000_000)?;
                    let constraints = constraints
                        .iter()
                        .map(|c| serde_json::from_str(c).with_context(|| format!("constraint {c}")))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let sum_budget = max_sum
                        .map(|m| -> anyhow::Result<SumBudget> {
                            let (pointer, max) = m
                                .split_once('=')
                                .context("--max-sum must look like /amount=5000")?;
                            Ok(SumBudget {
                                pointer: pointer.to_owned(),
                                max: Amount::parse_decimal(max).map_err(anyhow::Error::msg)?,
                            })
                        })
                        .transpose()?;
                    GrantSpec {
                        user,
                        agent,
                        actions,
                        resources,
                        constraints,
                        expires_at,
                        max_uses,
                        sum_budget,
                    }
                }
            };
            let grant = Admin::local(store.as_ref()).issue_grant(&who, spec).await?;
            let stored = StoredGrant {
                grant,
                usage: Default::default(),
            };
            print(global, &grant_json(&stored)?, || {
                format!("created grant {}", grant_text(&stored))
            });
        }
        GrantsCommand::List { user, agent } => {
            let filter = GrantFilter {
                user: user.map(UserId::new).transpose()?,
                agent: agent.map(AgentId::new).transpose()?,
            };
            let grants = store.grants(&filter).await?;
            let value = Value::Array(
                grants
                    .iter()
                    .map(grant_json)
                    .collect::<anyhow::Result<_>>()?,
            );
            print(global, &value, || {
                grants.iter().map(grant_text).collect::<Vec<_>>().join("\n")
            });
        }
        GrantsCommand::Show { id } => {
            let id = GrantId::new(id)?;
            let g = store
                .grant(&id)
                .await?
                .with_context(|| format!("grant {id} does not exist"))?;
            print(global, &grant_json(&g)?, || {
                serde_json::to_string_pretty(&grant_json(&g).unwrap_or(Value::Null))
                    .unwrap_or_default()
            });
        }
        GrantsCommand::Revoke { id, principal: who } => {
            let id = GrantId::new(id)?;
            let who = who.context("--as USER is required: who revokes the grant")?;
            let who = actor(store.as_ref(), &who, "revoke grants").await?;
            let changed = Admin::local(store.as_ref()).revoke_grant(&who, &id).await?;
            print(
                global,
                &json!({"grant": id, "revoked": true, "already_revoked": !changed}),
                || {
                    if changed {
                        format!("revoked grant {id}")
                    } else {
                        format!("grant {id} was already revoked")
                    }
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
