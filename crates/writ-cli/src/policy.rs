//! `writ policy …` (placeholder until the policy crate lands).

use std::process::ExitCode;

use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy bundle directory.
    Validate { dir: std::path::PathBuf },
}

pub fn run(cmd: PolicyCommand, _global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir } => anyhow::bail!("not built yet: {}", dir.display()),
    }
}
