//! `writ agents add|list|rotate-key|disable|enable`: registered agents and their credentials (an API key, or a
//! public key for client assertions).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use writ_core::Timestamp;
use writ_identity::apikey::KeyKind;
use writ_identity::assertion::AgentPublicKey;
use writ_identity::{AgentId, UserId};
use writ_store::identity::{AgentRecord, KeySubject};

use crate::Global;
use crate::identity::{open, print};
use crate::users::issue_key;

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
    match cmd {
        AgentsCommand::Add {
            id,
            owner,
            public_key,
        } => {
            let jwk = public_key.as_ref().map(read_jwk).transpose()?;
            let record = AgentRecord::new(
                AgentId::new(id)?,
                UserId::new(owner)?,
                jwk,
                Timestamp::now(),
            );
            store.add_agent(&record).await?;
            crate::identity::audit(
                global,
                "operator",
                json!({"event": "agent.added", "agent": record.id, "owner": record.owner,
                       "credential": if record.public_key.is_some() { "public_key" } else { "api_key" }}),
            )
            .await?;
            let key = if record.public_key.is_none() {
                Some(
                    issue_key(
                        store.as_ref(),
                        KeySubject::Agent(record.id.clone()),
                        KeyKind::Agent,
                    )
                    .await?,
                )
            } else {
                None
            };
            let mut value = serde_json::to_value(&record)?;
            if let Some((key, key_id)) = &key {
                value["api_key"] = json!(**key);
                value["api_key_id"] = json!(key_id);
            }
            print(global, &value, || {
                let mut s = format!("registered agent {} (owner {})", record.id, record.owner);
                if let Some((key, _)) = &key {
                    s.push_str(&format!("\napi key (shown once, store it now): {}", **key));
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
                        format!("{}\towner {}\t{cred}", a.id, a.owner)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AgentsCommand::Disable { id: ref name } | AgentsCommand::Enable { id: ref name } => {
            let enabled = matches!(cmd, AgentsCommand::Enable { .. });
            let id = AgentId::new(name.as_str())?;
            store
                .set_agent_disabled(&id, (!enabled).then(Timestamp::now))
                .await?;
            let event = if enabled {
                "agent.enabled"
            } else {
                "agent.disabled"
            };
            crate::identity::audit(global, "operator", json!({"event": event, "agent": id}))
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
            if store.agent(&id).await?.is_none() {
                anyhow::bail!("agent {id} does not exist; register it with `writ agents add`");
            }
            let revoked = store
                .revoke_api_keys(&KeySubject::Agent(id.clone()), Timestamp::now())
                .await?;
            crate::identity::audit(
                global,
                "operator",
                json!({"event": "agent.key_rotated", "agent": id, "revoked_api_keys": revoked}),
            )
            .await?;
            match public_key {
                Some(path) => {
                    let jwk = read_jwk(&path)?;
                    store.set_agent_public_key(&id, Some(&jwk)).await?;
                    print(
                        global,
                        &json!({"agent": id, "revoked_api_keys": revoked, "public_key": serde_json::from_str::<serde_json::Value>(&jwk)?}),
                        || {
                            format!(
                                "agent {id}: new public key registered; {revoked} API key(s) revoked"
                            )
                        },
                    );
                }
                None => {
                    store.set_agent_public_key(&id, None).await?;
                    let (key, key_id) = issue_key(
                        store.as_ref(),
                        KeySubject::Agent(id.clone()),
                        KeyKind::Agent,
                    )
                    .await?;
                    print(
                        global,
                        &json!({"agent": id, "revoked_api_keys": revoked, "api_key": *key, "api_key_id": key_id}),
                        || {
                            format!(
                                "agent {id}: {revoked} API key(s) revoked\napi key (shown once, store it now): {}",
                                *key
                            )
                        },
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
