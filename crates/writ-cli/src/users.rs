//! `writ users add|list|set-password|clear-password`: local users, their groups, API keys shown
//! once, and console passwords (read from standard input, never from the command line).

use std::process::ExitCode;

use serde_json::json;
use writ_core::Timestamp;
use writ_gateway::auth::passwords::Authority;
use writ_identity::UserId;
use writ_identity::password::Password;
use writ_store::identity::UserRecord;

use crate::Global;
use writ_gateway::admin::{Actor, Admin};

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
    /// Set a user's console password, read from standard input (first line; with --current,
    /// the current password on the first line and the new one on the second). On a terminal it
    /// is asked for without echo, twice. With WRIT_URL set, WRIT_TOKEN must be that user's key.
    SetPassword {
        id: String,
        /// The user already has a password: read the current one first (always needed over the
        /// API once one is set; on the server's host an operator needs none).
        #[arg(long)]
        current: bool,
    },
    /// Remove a user's console password (a forgotten password): they sign in with their API
    /// key until they set a new one. With WRIT_URL set, WRIT_TOKEN must be an admin's key.
    ClearPassword { id: String },
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
            let record = UserRecord {
                display_name: name.unwrap_or_else(|| id.to_string()),
                id: id.clone(),
                admin,
                groups,
                created_at: Timestamp::now(),
            };
            let key = Admin::local(store.as_ref())
                .create_user(&Actor::Operator, &record, api_key)
                .await?
                .map(|k| (k.key, k.key_id));
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
        UsersCommand::SetPassword { id, current } => {
            let id = UserId::new(id)?;
            let (current, new) = read_passwords(current)?;
            let authority = match current {
                Some(current) => Authority::User {
                    current: Some(current),
                },
                None => Authority::Operator,
            };
            Admin::local(store.as_ref())
                .set_password(&Actor::Operator, &id, &new, authority)
                .await
                .map_err(|e| anyhow::anyhow!("the password of user {id} was not set: {e}"))?;
            print(
                global,
                &json!({"user": id.as_str(), "password_set": true}),
                || {
                    format!(
                        "password set for user {id}; console sessions opened with an older password have ended"
                    )
                },
            );
        }
        UsersCommand::ClearPassword { id } => {
            let id = UserId::new(id)?;
            let cleared = Admin::local(store.as_ref())
                .clear_password(&Actor::Operator, &id)
                .await?;
            print(
                global,
                &json!({"user": id.as_str(), "cleared": cleared}),
                || {
                    if cleared {
                        format!("password of user {id} cleared")
                    } else {
                        format!("user {id} had no password")
                    }
                },
            );
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

/// Reads `(current, new)` passwords from standard input: `current` only when asked for. From a
/// pipe, one per line (current first). On a terminal, asked for with echo turned off (`stty`),
/// the new one twice. Passwords never come from the command line, where `ps` and shell history
/// would show them.
pub fn read_passwords(with_current: bool) -> anyhow::Result<(Option<Password>, Password)> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _quiet = Quiet::start();
        let current = if with_current {
            Some(prompt("Current password: ")?)
        } else {
            None
        };
        let new = prompt("New password: ")?;
        let again = prompt("New password again: ")?;
        if new.expose() != again.expose() {
            anyhow::bail!("the two new passwords differ; nothing was changed");
        }
        return Ok((current, new));
    }
    let mut lines = stdin.lines();
    let mut next = |what: &str| -> anyhow::Result<Password> {
        let line = lines
            .next()
            .transpose()?
            .map(|l| Password::new(l.trim_end_matches('\r').to_owned()));
        line.filter(|p| !p.expose().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no {what} on standard input: pipe it in, one per line"))
    };
    let current = if with_current {
        Some(next("current password")?)
    } else {
        None
    };
    Ok((current, next("new password")?))
}

/// Asks for one line on the terminal.
fn prompt(label: &str) -> anyhow::Result<Password> {
    use std::io::Write;
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line)?;
    eprintln!();
    Ok(Password::new(
        line.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Terminal echo off while it lives (through `stty`, so that no terminal library is needed); if
/// `stty` is unavailable, says that typing will be visible.
struct Quiet(bool);

impl Quiet {
    fn start() -> Quiet {
        let off = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        if !off {
            eprintln!(
                "(echo could not be turned off: the password will be visible as you type; pipe it in to avoid that)"
            );
        }
        Quiet(off)
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}
