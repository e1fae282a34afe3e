//! `writ keys …`: the log's Ed25519 signing key and its verifier key.
//!
//! The signing key lives in the data directory as `log.key` (mode 0600) in the private-key text
//! form of Go's `note` package; the verifier key, safe to publish, beside it as `log.pub`. The
//! files are made and read by `writ_gateway::assemble::keys`, the same code `writ serve` uses.

use std::process::ExitCode;

use writ_gateway::assemble::keys::{
    DEFAULT_ORIGIN, generate, load_verifier, signing_key_path, verifier_key_path,
};

use crate::Global;

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
