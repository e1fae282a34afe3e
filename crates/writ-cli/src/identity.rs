//! What `writ users|agents|grants|vault|token` share: opening the identity store, the issuer
//! settings (with the token signing key of the data directory), and reading durations.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use writ_store::Database;

use writ_gateway::admin::{Admin, AdminEvent};

use crate::Global;

/// Where Writ's token endpoint lives: its `iss`, and the audience of the tokens it mints.
#[derive(Debug, Clone, clap::Args)]
pub struct IssuerArgs {
    /// The issuer URL (`iss` of minted tokens).
    #[arg(long, env = "WRIT_ISSUER", default_value = "http://127.0.0.1:8080")]
    pub issuer: String,
    /// The audience (`aud`) of minted tokens: Writ's API.
    #[arg(long, env = "WRIT_AUDIENCE", default_value = "writ")]
    pub audience: String,
}

/// The server's database (identity, vault and log), opened on this host.
pub async fn open(global: &Global) -> anyhow::Result<Arc<dyn Database>> {
    Ok(writ_store::open_database(global.database_url.as_deref(), &global.data_dir).await?)
}

pub fn issuer(args: &IssuerArgs, data_dir: &Path) -> anyhow::Result<writ_identity::TokenIssuer> {
    Ok(writ_identity::TokenIssuer::new(
        args.issuer.clone(),
        args.audience.clone(),
        writ_gateway::assemble::keys::token_signing_key(data_dir)?,
    ))
}

/// Parses `90s`, `15m`, `12h`, `30d` into seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = num
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 15m, 12h or 30d"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?} has unit {unit:?}; use s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|s| *s > 0 && *s <= 10 * 365 * 86_400)
        .with_context(|| format!("{text:?} must be between 1 second and 10 years"))
}

/// Prints `value` as JSON with `--json`, else the text lines `text` makes.
pub fn print(global: &Global, value: &serde_json::Value, text: impl FnOnce() -> String) {
    if global.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// Records an identity or vault change made on this host as an `admin` entry, in the one
/// vocabulary every face uses; `actor` is `operator`, `user:<id>` or `agent:<id>`.
pub async fn record(db: &dyn Database, actor: &str, event: AdminEvent) -> anyhow::Result<()> {
    Admin::local(db).record_as(actor, event).await?;
    Ok(())
}
