//! `writ vault put|list|rotate|retire`: credentials, sealed with the master key. There is no
//! command that prints a secret: secrets go in, and only `name@version` comes out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use writ_core::Timestamp;
use writ_vault::{
    CredentialName, CredentialRef, CredentialScope, MasterKey, MasterKeySource, Secret,
};

use writ_gateway::admin::AdminEvent;

use crate::Global;
use crate::identity::{open, print};

#[derive(Debug, Clone, clap::Args)]
pub struct SecretSource {
    /// Read the secret from this file (a trailing newline is removed).
    #[arg(
        long,
        conflicts_with = "from_env",
        required_unless_present = "from_env"
    )]
    from_file: Option<PathBuf>,
    /// Read the secret from this environment variable.
    #[arg(long)]
    from_env: Option<String>,
    /// Store it as this user's own credential instead of a shared one.
    #[arg(long)]
    for_user: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MasterKeyArgs {
    /// A file holding the master key (64 hex digits). Default: WRIT_MASTER_KEY, else
    /// master.key in the data directory (generated on first use, mode 0600).
    #[arg(long, env = "WRIT_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Store a new credential (version 1).
    Put {
        name: String,
        #[command(flatten)]
        source: SecretSource,
        #[command(flatten)]
        master: MasterKeyArgs,
    },
    /// List credentials and their versions (never their secrets).
    List { name: Option<String> },
    /// Store a new version of an existing credential; the previous version stays readable
    /// until retired.
    Rotate {
        name: String,
        #[command(flatten)]
        source: SecretSource,
        #[command(flatten)]
        master: MasterKeyArgs,
    },
    /// Retire a previous version (NAME@VERSION): its sealed bytes are destroyed.
    Retire {
        reference: String,
        #[arg(long)]
        for_user: Option<String>,
    },
}

fn scope(for_user: Option<&String>) -> anyhow::Result<CredentialScope> {
    Ok(match for_user {
        Some(u) => CredentialScope::user(u.as_str())?,
        None => CredentialScope::Shared,
    })
}

fn read_secret(source: &SecretSource) -> anyhow::Result<Secret> {
    let mut bytes = match (&source.from_file, &source.from_env) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(var)) => std::env::var_os(var)
            .with_context(|| format!("environment variable {var} is not set"))?
            .into_encoded_bytes(),
        (None, None) => bail!("give --from-file or --from-env"),
    };
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(Secret::new(bytes))
}

async fn store_version(
    global: &Global,
    name: String,
    source: SecretSource,
    master: MasterKeyArgs,
    must_exist: bool,
) -> anyhow::Result<ExitCode> {
    let store = open(global).await?;
    let name = CredentialName::new(name)?;
    let scope = scope(source.for_user.as_ref())?;
    let secret = read_secret(&source)?;
    // The master key file lives in the data directory, which a PostgreSQL setup may not have yet.
    writ_store::ensure_data_dir(&global.data_dir)?;
    let key = MasterKey::load(&MasterKeySource::resolve(
        master.master_key_file.as_deref(),
        &global.data_dir,
    ))?;
    let version = store.next_credential_version(&name, &scope).await?;
    match (must_exist, version) {
        (false, v) if v > 1 => bail!(
            "credential {name} already exists (at version {}); use `writ vault rotate {name}`",
            v - 1
        ),
        (true, 1) => {
            bail!("credential {name} does not exist; store it first with `writ vault put {name}`")
        }
        _ => {}
    }
    let reference = CredentialRef {
        name,
        version,
        scope,
    };
    let sealed = writ_vault::seal(&key, reference.clone(), &secret)?;
    store.put_credential(&sealed, Timestamp::now()).await?;
    let (credential, scope, master_key_id) = (
        reference.to_string(),
        json!(reference.scope),
        key.id().to_string(),
    );
    let event = match must_exist {
        true => AdminEvent::CredentialRotated {
            credential,
            scope,
            master_key_id,
        },
        false => AdminEvent::CredentialStored {
            credential,
            scope,
            master_key_id,
        },
    };
    crate::identity::record(store.as_ref(), "operator", event).await?;
    print(
        global,
        &json!({"credential": reference.to_string(), "reference": reference, "master_key_id": key.id()}),
        || format!("stored {reference}"),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(cmd: VaultCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(client) = crate::remote::configured()? {
        return crate::remote::vault(cmd, &client, global).await;
    }
    match cmd {
        VaultCommand::Put {
            name,
            source,
            master,
        } => store_version(global, name, source, master, false).await,
        VaultCommand::Rotate {
            name,
            source,
            master,
        } => store_version(global, name, source, master, true).await,
        VaultCommand::List { name } => {
            let store = open(global).await?;
            let name = name.map(CredentialName::new).transpose()?;
            let versions = store.credential_versions(name.as_ref()).await?;
            print(global, &serde_json::to_value(&versions)?, || {
                versions
                    .iter()
                    .map(|v| {
                        format!(
                            "{}\t{}\tcreated {}",
                            v.reference,
                            v.state.as_str(),
                            v.created_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
        VaultCommand::Retire {
            reference,
            for_user,
        } => {
            let store = open(global).await?;
            let (name, version) = reference
                .rsplit_once('@')
                .context("give the version to retire as NAME@VERSION")?;
            let reference = CredentialRef {
                name: CredentialName::new(name)?,
                version: version
                    .parse()
                    .with_context(|| format!("{version:?} is not a version number"))?,
                scope: scope(for_user.as_ref())?,
            };
            store
                .retire_credential(&reference, Timestamp::now())
                .await?;
            crate::identity::record(
                store.as_ref(),
                "operator",
                AdminEvent::CredentialRetired {
                    credential: reference.to_string(),
                    scope: json!(reference.scope),
                },
            )
            .await?;
            print(
                global,
                &json!({"credential": reference.to_string(), "retired": true}),
                || format!("retired {reference}"),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
