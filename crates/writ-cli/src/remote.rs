//! `writ users|agents|grants|vault` against a running server: when `WRIT_URL` is set, these
//! commands go through the HTTP API with `WRIT_TOKEN` (a user API key; an admin's for users and
//! the vault) instead of opening the database. Who acts is who the token says, so `--as` is not
//! needed. Secrets never travel through the API: `writ vault put|rotate|retire` run on the
//! server's host only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Global;
use crate::agents::AgentsCommand;
use crate::client::{Client, ServerArgs, Token, cell, table};
use crate::grants::GrantsCommand;
use crate::users::UsersCommand;
use crate::vault::VaultCommand;

/// The server named by `WRIT_URL`, if any.
pub fn configured() -> anyhow::Result<Option<Client>> {
    let url = match std::env::var("WRIT_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => return Ok(None),
    };
    let token = std::env::var("WRIT_TOKEN")
        .ok()
        .map(|t| t.parse::<Token>())
        .transpose()?;
    Ok(Some(Client::new(
        &ServerArgs { url, token },
        Duration::ZERO,
    )?))
}

fn print(global: &Global, value: &Value, text: impl FnOnce() -> String) {
    if global.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn key_note(v: &Value) -> String {
    format!(
        "API key (shown once, store it now): {}",
        v["api_key"].as_str().unwrap_or("-")
    )
}

pub async fn users(
    cmd: UsersCommand,
    client: &Client,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCommand::Add {
            id,
            name,
            admin,
            groups,
            api_key: _,
        } => {
            // Over the API a user always gets a key: it is how they sign in to approve.
            let v = client
                .post(
                    &["v1", "admin", "users"],
                    &json!({"id": id, "display_name": name, "admin": admin, "groups": groups}),
                )
                .await?;
            print(global, &v, || format!("added user {id}\n{}", key_note(&v)));
        }
        UsersCommand::SetPassword { id, current } => {
            // Over the API a user sets only their own password: the body names the user so that
            // the server refuses another user's key instead of changing the wrong account.
            let (current, new) = crate::users::read_passwords(current)?;
            let mut body = json!({"user": id, "password": new.expose()});
            if let Some(current) = &current {
                body["current_password"] = json!(current.expose());
            }
            let v = client
                .post(&["v1", "users", "me", "password"], &body)
                .await
                .map_err(|e| {
                    if current.is_none() && e.to_string().contains("current_password") {
                        anyhow::anyhow!(
                            "{e}\nrun it again with --current: the current password first (first line of standard input), then the new one"
                        )
                    } else {
                        e
                    }
                })?;
            print(global, &v, || {
                format!(
                    "password set for user {id}; console sessions opened with an older password have ended"
                )
            });
        }
        UsersCommand::ClearPassword { id } => {
            let v = client
                .delete(&["v1", "admin", "users", &id, "password"])
                .await?;
            print(global, &v, || {
                if v["cleared"] == true {
                    format!("password of user {id} cleared")
                } else {
                    format!("user {id} had no password")
                }
            });
        }
        UsersCommand::List => {
            let v = client.get(&["v1", "admin", "users"], &[]).await?;
            print(global, &v, || {
                let rows = list(&v, "users")
                    .iter()
                    .map(|u| {
                        vec![
                            cell(u.get("id")),
                            cell(u.get("display_name")),
                            if u["admin"] == true {
                                "admin".into()
                            } else {
                                String::new()
                            },
                            join(&u["groups"]),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["USER", "NAME", "ADMIN", "GROUPS"], &rows)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(
    cmd: AgentsCommand,
    client: &Client,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentsCommand::Add {
            id,
            owner,
            public_key,
        } => {
            if public_key.is_some() {
                bail!(
                    "registering an agent's public key is done on the server's host (unset WRIT_URL)"
                );
            }
            let v = client
                .post(
                    &["v1", "admin", "agents"],
                    &json!({"id": id, "owner": owner}),
                )
                .await?;
            print(global, &v, || {
                format!("added agent {id} (owner {owner})\n{}", key_note(&v))
            });
        }
        AgentsCommand::List => {
            let v = client.get(&["v1", "admin", "agents"], &[]).await?;
            print(global, &v, || {
                let rows = list(&v, "agents")
                    .iter()
                    .map(|a| {
                        vec![
                            cell(a.get("id")),
                            cell(a.get("owner")),
                            cell(a.get("created_at")),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["AGENT", "OWNER", "CREATED"], &rows)
            });
        }
        AgentsCommand::RotateKey {
            public_key: Some(_),
            ..
        } => {
            bail!(
                "registering an agent's new public key is done on the server's host (unset WRIT_URL)"
            )
        }
        AgentsCommand::RotateKey {
            id,
            public_key: None,
        } => {
            let v = client
                .post(&["v1", "admin", "agents", &id, "keys"], &json!({}))
                .await?;
            print(global, &v, || {
                format!(
                    "agent {id}: {} API key(s) revoked\n{}",
                    v["revoked_api_keys"],
                    key_note(&v)
                )
            });
        }
        AgentsCommand::Disable { ref id } | AgentsCommand::Enable { ref id } => {
            let verb = match cmd {
                AgentsCommand::Enable { .. } => "enable",
                _ => "disable",
            };
            let v = client
                .post(&["v1", "admin", "agents", id, verb], &json!({}))
                .await?;
            print(global, &v, || format!("agent {id} {verb}d"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn grants(
    cmd: GrantsCommand,
    client: &Client,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    match cmd {
        GrantsCommand::Create {
            file,
            user,
            agent,
            actions,
            resources,
            constraints,
            expires_in,
            max_uses,
            max_sum,
            ..
        } => {
            if file.is_some() || max_sum.is_some() {
                bail!(
                    "--file and --max-sum are not available over the API yet; unset WRIT_URL to run them on the server's host"
                );
            }
            let constraints = constraints
                .iter()
                .map(|c| {
                    serde_json::from_str::<Value>(c).with_context(|| format!("constraint {c}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let secs = crate::identity::parse_duration(&expires_in)?;
            let v = client
                .post(
                    &["v1", "grants"],
                    &json!({
                        "user": user,
                        "agent": agent.context("--agent is required")?,
                        "actions": actions,
                        "resources": resources,
                        "constraints": constraints,
                        "expires_in": secs,
                        "max_uses": max_uses,
                    }),
                )
                .await?;
            print(global, &v, || grant_line(&v));
        }
        GrantsCommand::List { user, agent } => {
            let v = client.get(&["v1", "grants"], &[]).await?;
            let shown: Vec<&Value> = list(&v, "grants")
                .iter()
                .filter(|g| user.as_deref().is_none_or(|u| g["user"] == u))
                .filter(|g| agent.as_deref().is_none_or(|a| g["agent"] == a))
                .collect();
            print(global, &json!({"grants": shown}), || {
                shown
                    .iter()
                    .map(|g| grant_line(g))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        GrantsCommand::Show { id } => {
            let v = client.get(&["v1", "grants"], &[]).await?;
            let g = list(&v, "grants")
                .iter()
                .find(|g| g["id"] == id.as_str())
                .cloned()
                .with_context(|| format!("grant {id} does not exist or is not yours to see"))?;
            print(global, &g, || {
                serde_json::to_string_pretty(&g).unwrap_or_default()
            });
        }
        GrantsCommand::Revoke { id, .. } => {
            let v = client
                .post(&["v1", "grants", &id, "revoke"], &json!({}))
                .await?;
            print(global, &v, || format!("revoked {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn vault(
    cmd: VaultCommand,
    client: &Client,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    match cmd {
        VaultCommand::List { name } => {
            let v = client.get(&["v1", "admin", "vault"], &[]).await?;
            let shown: Vec<&Value> = list(&v, "credentials")
                .iter()
                .filter(|c| name.as_deref().is_none_or(|n| c["name"] == n))
                .collect();
            print(global, &json!({"credentials": shown}), || {
                let rows = shown
                    .iter()
                    .map(|c| {
                        vec![
                            format!("{}@{}", cell(c.get("name")), cell(c.get("version"))),
                            cell(c.get("state")),
                            cell(c.get("master_key_id")),
                            cell(c.get("created_at")),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["CREDENTIAL", "STATE", "MASTER KEY", "CREATED"], &rows)
            });
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!(
            "secrets never travel through the API: run `writ vault put|rotate|retire` on the server's host (unset WRIT_URL)"
        ),
    }
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn grant_line(g: &Value) -> String {
    let mut out = format!(
        "{}\tuser {} → agent {}\t{}\texpires {}",
        cell(g.get("id")),
        cell(g.get("user")),
        cell(g.get("agent")),
        join(&g["actions"]),
        cell(g.get("expires_at")),
    );
    if !g["revoked_at"].is_null() {
        out.push_str(&format!("\tREVOKED {}", cell(g.get("revoked_at"))));
    }
    out
}
