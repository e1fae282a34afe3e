//! `writ init`: a commented `writ.toml` and a `policies/` bundle to start from.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write `writ.toml` and `policies/` into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

pub fn run(args: InitArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = args.dir.join("writ.toml");
    let policies = args.dir.join("policies");
    if config.exists() {
        bail!("{} already exists; nothing was written", config.display());
    }
    if policies.exists() {
        bail!("{} already exists; nothing was written", policies.display());
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let written = writ_gateway::write_example_policies(&policies)
        .with_context(|| format!("writing {}", policies.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
        .with_context(|| format!("creating {}", config.display()))?;
    std::io::Write::write_all(&mut file, writ_gateway::config::TEMPLATE.as_bytes())?;
    if global.json {
        let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{}",
            serde_json::json!({"config": config.display().to_string(), "policies": policies.display().to_string(), "files": files})
        );
    } else {
        println!(
            "wrote {} and {} ({} files)",
            config.display(),
            policies.display(),
            written.len()
        );
        println!("next: writ policy test {}", policies.display());
    }
    Ok(ExitCode::SUCCESS)
}
