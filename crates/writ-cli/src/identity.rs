//! What `writ users|agents|grants|vault|token` share: opening the identity store, the token
//! signing key, the issuer settings, and reading durations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use writ_store::Database;

use writ_gateway::admin::{Admin, AdminEvent};

use crate::Global;

/// The token signing key file in the data directory (hex of 32 bytes, mode 0600).
pub const TOKEN_KEY_FILE: &str = "token.key";

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

pub fn token_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_KEY_FILE)
}

/// Loads the token signing key, generating it (mode 0600) on first use.
pub fn token_signing_key(data_dir: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    use std::io::Write;
    let path = token_key_path(data_dir);
    if path.exists() {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
        let bytes = zeroize::Zeroizing::new(
            hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("{} is not 64 hex digits", path.display()))?,
        );
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        return Ok(ed25519_dalek::SigningKey::from_bytes(&key));
    }
    writ_store::ensure_data_dir(data_dir)?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| anyhow::anyhow!("random generator failed: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{}\n", hex::encode(&seed[..])).as_bytes())?;
    file.sync_all()?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

pub fn issuer(args: &IssuerArgs, data_dir: &Path) -> anyhow::Result<writ_identity::TokenIssuer> {
    Ok(writ_identity::TokenIssuer::new(
        args.issuer.clone(),
        args.audience.clone(),
        token_signing_key(data_dir)?,
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
