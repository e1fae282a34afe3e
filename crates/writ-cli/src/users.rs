//! `writ users add|list`: local users, their groups, and API keys shown once.

use std::process::ExitCode;

use serde_json::json;
use writ_core::Timestamp;
use writ_identity::UserId;
use writ_identity::apikey::{self, KeyKind};
use writ_store::identity::{ApiKeyRecord, KeySubject, UserRecord};

use crate::Global;
use crate::identity::{open, print};

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a local user, optionally with an API key (printed once, stored only as a hash).
    Add {
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// May create grants for any user and revoke any grant.
        #[arg(long)]
        admin: bool,
        /// Group memberships (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Issue an API key for the user.
        #[arg(long)]
        api_key: bool,
    },
    /// List users.
    List,
}

pub async fn run(cmd: UsersCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(client) = crate::remote::configured()? {
        return crate::remote::users(cmd, &client, global).await;
    }
    let store = open(global).await?;
    match cmd {
        UsersCommand::Add {
            id,
            name,
            admin,
            groups,
            api_key,
        } => {
            let id = UserId::new(id)?;
            for g in &groups {
                writ_core::id::validate_token("group", g, 128)?;
            }
            let record = UserRecord {
                display_name: name.unwrap_or_else(|| id.to_string()),
                id: id.clone(),
                admin,
                groups,
                created_at: Timestamp::now(),
            };
            store.add_user(&record).await?;
            crate::identity::audit(
                global,
                "operator",
                json!({"event": "user.added", "user": record.id, "admin": record.admin, "groups": record.groups}),
            )
            .await?;
            let key = if api_key {
                Some(issue_key(store.as_ref(), KeySubject::User(id), KeyKind::User).await?)
            } else {
                None
            };
            let mut value = serde_json::to_value(&record)?;
            if let Some((key, key_id)) = &key {
                value["api_key"] = json!(**key);
                value["api_key_id"] = json!(key_id);
            }
            print(global, &value, || {
                let mut s = format!(
                    "added user {}{}",
                    record.id,
                    if record.admin { " (admin)" } else { "" }
                );
                if let Some((key, _)) = &key {
                    s.push_str(&format!("\napi key (shown once, store it now): {}", **key));
                }
                s
            });
        }
        UsersCommand::List => {
            let users = store.users().await?;
            print(global, &serde_json::to_value(&users)?, || {
                users
                    .iter()
                    .map(|u| {
                        format!(
                            "{}\t{}\t{}{}",
                            u.id,
                            u.display_name,
                            u.groups.join(","),
                            if u.admin { "\tadmin" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates a key, stores its hash, returns the key (to print once) and its public id.
pub async fn issue_key(
    store: &dyn writ_store::IdentityStore,
    subject: KeySubject,
    kind: KeyKind,
) -> anyhow::Result<(zeroize::Zeroizing<String>, String)> {
    let key = apikey::generate(kind)?;
    store
        .add_api_key(
            &key.hash,
            &ApiKeyRecord {
                key_id: key.key_id.clone(),
                subject,
                created_at: Timestamp::now(),
                revoked_at: None,
            },
        )
        .await?;
    Ok((key.key, key.key_id))
}
