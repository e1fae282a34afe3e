//! `writ keys …`: the log's Ed25519 signing key and its verifier key.
//!
//! The signing key lives in the data directory as `log.key` (mode 0600) in the private-key text
//! form of Go's `note` package; the verifier key, safe to publish, beside it as `log.pub`. Anyone
//! holding `log.pub` can check Writ's checkpoints with any C2SP signed-note implementation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use writ_audit::{NoteSigner, NoteVerifier};

use crate::Global;

pub const SIGNING_KEY_FILE: &str = "log.key";
pub const VERIFIER_KEY_FILE: &str = "log.pub";
/// The default log origin (the first line of every checkpoint, and the key name).
pub const DEFAULT_ORIGIN: &str = "writ.local/audit";

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate the log's signing key (log.key, mode 0600) and verifier key (log.pub).
    Generate {
        /// The log's origin: the first line of its checkpoints and the key's name. A schema-less
        /// URL naming this log, e.g. `audit.example.com/prod`.
        #[arg(long, env = "WRIT_LOG_ORIGIN", default_value = DEFAULT_ORIGIN)]
        origin: String,
        /// Replace an existing key. Checkpoints signed with the old key then need the old
        /// verifier key to check.
        #[arg(long)]
        force: bool,
    },
    /// Print the verifier key.
    Show,
}

pub fn run(cmd: KeysCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { origin, force } => {
            let verifier = generate(&global.data_dir, &origin, force)?;
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "origin": origin,
                        "verifier_key": verifier.to_string(),
                        "signing_key_file": signing_key_path(&global.data_dir),
                        "verifier_key_file": verifier_key_path(&global.data_dir),
                    })
                );
            } else {
                println!(
                    "signing key:  {} (mode 0600; keep it secret)",
                    signing_key_path(&global.data_dir).display()
                );
                println!(
                    "verifier key: {}",
                    verifier_key_path(&global.data_dir).display()
                );
                println!("{verifier}");
            }
        }
        KeysCommand::Show => {
            let verifier = load_verifier(&global.data_dir, None)?;
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({ "verifier_key": verifier.to_string() })
                );
            } else {
                println!("{verifier}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

pub fn verifier_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VERIFIER_KEY_FILE)
}

/// Creates the key pair; refuses to replace an existing key unless `force`.
pub fn generate(data_dir: &Path, origin: &str, force: bool) -> anyhow::Result<NoteVerifier> {
    writ_store::ensure_data_dir(data_dir)?;
    let key_path = signing_key_path(data_dir);
    if key_path.exists() && !force {
        bail!(
            "{} already exists; the log keeps its key. Use --force to replace it (old checkpoints then need the old verifier key)",
            key_path.display()
        );
    }
    let signer = NoteSigner::generate(origin)
        .with_context(|| format!("cannot make a key named {origin:?}"))?;
    let verifier = signer.verifier();
    write_secret_file(&key_path, signer.to_key_text().as_bytes())?;
    std::fs::write(verifier_key_path(data_dir), format!("{verifier}\n"))
        .with_context(|| format!("writing {}", verifier_key_path(data_dir).display()))?;
    Ok(verifier)
}

/// Writes a file only its owner can read (mode 0600 from creation, never briefly wider).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads the signing key from the data directory.
pub fn load_signer(data_dir: &Path) -> anyhow::Result<NoteSigner> {
    let path = signing_key_path(data_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the log's signing key {}; create it with `writ keys generate`",
            path.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    // The key text is never echoed in an error.
    NoteSigner::from_key_text(text.trim())
        .map_err(|e| anyhow::anyhow!("{} is not a valid signing key: {e}", path.display()))
}

/// Loads a verifier key from `explicit` (a file or the key text itself) or the data directory.
pub fn load_verifier(data_dir: &Path, explicit: Option<&str>) -> anyhow::Result<NoteVerifier> {
    let text = match explicit {
        Some(value) if Path::new(value).is_file() => std::fs::read_to_string(value)
            .with_context(|| format!("reading verifier key {value}"))?,
        Some(value) => value.to_owned(),
        None => {
            let path = verifier_key_path(data_dir);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the verifier key {}; create keys with `writ keys generate`",
                    path.display()
                )
            })?
        }
    };
    NoteVerifier::parse(text.trim()).map_err(|e| anyhow::anyhow!("invalid verifier key: {e}"))
}
