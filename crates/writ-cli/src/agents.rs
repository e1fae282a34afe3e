//! `writ agents add|list|rotate-key|disable|enable`: registered agents and their credentials (an API key, or a
//! public key for client assertions).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use writ_gateway::admin::{Actor, Admin};
use writ_identity::assertion::AgentPublicKey;
use writ_identity::{AgentId, UserId};

use crate::Global;
use crate::identity::{open, print};

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Register an agent. Without --public-key it gets an API key (printed once).
    Add {
        id: String,
        /// The user who owns the agent.
        #[arg(long)]
        owner: String,
        /// A file holding the agent's public JWK (Ed25519 or P-256) for client assertions.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// List agents.
    List,
    /// Replace an agent's credential: revoke its API keys and issue a new one, or register a
    /// new public key.
    RotateKey {
        id: String,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Disable an agent: its API keys and delegated tokens are refused from the next request on.
    Disable { id: String },
    /// Enable a disabled agent again.
    Enable { id: String },
}

fn read_jwk(path: &PathBuf) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let key = AgentPublicKey::from_jwk(&value)?;
    Ok(key.to_jwk().to_string())
}

pub async fn run(cmd: AgentsCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(client) = crate::remote::configured()? {
        return crate::remote::agents(cmd, &client, global).await;
    }
    let store = open(global).await?;
    let admin = Admin::local(store.as_ref());
    match cmd {
        AgentsCommand::Add {
            id,
            owner,
            public_key,
        } => {
            let jwk = public_key.as_ref().map(read_jwk).transpose()?;
            let (record, key) = admin
                .create_agent(
                    &Actor::Operator,
                    AgentId::new(id)?,
                    Some(UserId::new(owner)?),
                    jwk,
                )
                .await?;
            let mut value = serde_json::to_value(&record)?;
            if let Some(key) = &key {
                value["api_key"] = json!(*key.key);
                value["api_key_id"] = json!(key.key_id);
            }
            print(global, &value, || {
                let mut s = format!("registered agent {} (owner {})", record.id, record.owner);
                if let Some(key) = &key {
                    s.push_str(&format!(
                        "\napi key (shown once, store it now): {}",
                        *key.key
                    ));
                }
                s
            });
        }
        AgentsCommand::List => {
            let agents = store.agents().await?;
            print(global, &serde_json::to_value(&agents)?, || {
                agents
                    .iter()
                    .map(|a| {
                        let cred = if a.public_key.is_some() {
                            "public key"
                        } else {
                            "api key"
                        };
                        let state = if a.disabled_at.is_some() {
                            "\tdisabled"
                        } else {
                            ""
                        };
                        format!("{}\towner {}\t{cred}{state}", a.id, a.owner)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AgentsCommand::Disable { id: ref name } | AgentsCommand::Enable { id: ref name } => {
            let enabled = matches!(cmd, AgentsCommand::Enable { .. });
            let id = AgentId::new(name.as_str())?;
            admin
                .set_agent_enabled(&Actor::Operator, &id, enabled)
                .await?;
            print(global, &json!({"agent": id, "enabled": enabled}), || {
                format!(
                    "agent {id} {}",
                    if enabled { "enabled" } else { "disabled" }
                )
            });
        }
        AgentsCommand::RotateKey { id, public_key } => {
            let id = AgentId::new(id)?;
            let jwk = public_key.as_ref().map(read_jwk).transpose()?;
            let (revoked, key) = admin
                .rotate_agent_key(&Actor::Operator, &id, jwk.clone())
                .await
                .with_context(|| format!("rotating agent {id}'s credential"))?;
            match (jwk, key) {
                (Some(jwk), _) => print(
                    global,
                    &json!({"agent": id, "revoked_api_keys": revoked, "public_key": serde_json::from_str::<serde_json::Value>(&jwk)?}),
                    || {
                        format!(
                            "agent {id}: new public key registered; {revoked} API key(s) revoked"
                        )
                    },
                ),
                (None, Some(key)) => print(
                    global,
                    &json!({"agent": id, "revoked_api_keys": revoked, "api_key": *key.key, "api_key_id": key.key_id}),
                    || {
                        format!(
                            "agent {id}: {revoked} API key(s) revoked\napi key (shown once, store it now): {}",
                            *key.key
                        )
                    },
                ),
                (None, None) => anyhow::bail!("agent {id}'s new API key was not issued"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
