//! `writ token exchange|verify|jwks|metadata`: Writ's token endpoint logic from the command line,
//! for scripts and tests. Tokens are read from environment variables, never from arguments
//! (arguments are visible to every user of the machine).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use writ_core::Timestamp;
use writ_identity::AgentId;
use writ_identity::exchange::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY,
    TokenExchangeRequest,
};
use writ_identity::token::{authorization_server_metadata, check_grant};

use writ_gateway::admin::AdminEvent;

use crate::Global;
use crate::identity::{IssuerArgs, issuer, open, print};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Exchange a user's API key and an agent's credential for a delegated token (RFC 8693).
    Exchange {
        /// The grant the token carries.
        #[arg(long)]
        grant: String,
        /// Narrow the token to these actions (default: all the grant allows); repeatable.
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Environment variable holding the subject token: the user's API key, or an OIDC ID
        /// token from an issuer declared under `[[identity.oidc]]` in --config.
        #[arg(long, default_value = "WRIT_SUBJECT_TOKEN")]
        subject_env: String,
        /// writ.toml whose `[[identity.oidc]]` issuers are trusted for ID-token subjects.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Environment variable holding the agent's API key or client assertion (the actor token).
        #[arg(long, default_value = "WRIT_ACTOR_TOKEN")]
        actor_env: String,
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Verify a delegated token read from standard input, as presented by --agent, including
    /// that its grant is still live.
    Verify {
        #[arg(long)]
        agent: String,
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Print the JWKS document of Writ's token signing key.
    Jwks {
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Print the RFC 8414 authorization server metadata.
    Metadata {
        #[command(flatten)]
        issuer: IssuerArgs,
    },
}

fn env_token(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| format!("environment variable {var} is not set"))
}

pub async fn run(cmd: TokenCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Exchange {
            grant,
            actions,
            subject_env,
            actor_env,
            config,
            issuer: args,
        } => {
            let store = open(global).await?;
            let iss = issuer(&args, &global.data_dir)?;
            let subject = zeroize::Zeroizing::new(env_token(&subject_env)?);
            let actor = zeroize::Zeroizing::new(env_token(&actor_env)?);
            let subject_type = if subject.starts_with("writ_") {
                TOKEN_TYPE_WRIT_API_KEY
            } else {
                TOKEN_TYPE_ID_TOKEN
            };
            let oidc = if subject_type == TOKEN_TYPE_ID_TOKEN {
                oidc_verifiers(config.as_deref(), &subject).await?
            } else {
                Vec::new()
            };
            let actor_type = if actor.starts_with("writ_") {
                TOKEN_TYPE_WRIT_API_KEY
            } else {
                TOKEN_TYPE_JWT
            };
            let details =
                json!([{"type": "writ_grant", "grant_id": grant, "actions": actions}]).to_string();
            let form: Vec<(String, String)> = [
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", subject_type),
                ("actor_token", actor.as_str()),
                ("actor_token_type", actor_type),
                ("authorization_details", details.as_str()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let request = TokenExchangeRequest::from_form(&form).map_err(anyhow::Error::msg)?;
            let endpoint = metadata_endpoint(&args);
            match writ_gateway::auth::exchange_token(
                store.as_ref(),
                &iss,
                &request,
                &oidc,
                &endpoint,
                Timestamp::now(),
            )
            .await
            {
                Ok(resp) => {
                    let claims = iss.verifier().verify(
                        &resp.access_token,
                        &claims_agent(&resp)?,
                        Timestamp::now(),
                    )?;
                    crate::identity::record(
                        store.as_ref(),
                        &format!("agent:{}", claims.act.sub),
                        AdminEvent::TokenIssued {
                            jti: claims.jti.clone(),
                            user: claims.sub.to_string(),
                            agent: claims.act.sub.to_string(),
                            grant: json!(claims.authorization_details),
                            exp: claims.exp,
                        },
                    )
                    .await?;
                    print(global, &serde_json::to_value(&resp)?, || {
                        resp.access_token.clone()
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if global.json {
                        println!("{}", serde_json::to_value(&err)?);
                        Ok(ExitCode::FAILURE)
                    } else {
                        bail!("token exchange refused: {err}")
                    }
                }
            }
        }
        TokenCommand::Verify {
            agent,
            issuer: args,
        } => {
            let store = open(global).await?;
            let iss = issuer(&args, &global.data_dir)?;
            let mut token = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut token)?;
            let agent = AgentId::new(agent)?;
            let now = Timestamp::now();
            let claims = iss.verifier().verify(token.trim(), &agent, now)?;
            let grant_id = &claims.grant()?.grant_id;
            let grant = store
                .grant(grant_id)
                .await?
                .with_context(|| format!("grant {grant_id} does not exist"))?;
            check_grant(&claims, &grant.grant, now)?;
            print(global, &json!({"valid": true, "claims": claims}), || {
                format!(
                    "valid: user {} → agent {} under grant {grant_id}, expires {}",
                    claims.sub, claims.act.sub, claims.exp
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Jwks { issuer: args } => {
            println!("{}", issuer(&args, &global.data_dir)?.jwks());
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Metadata { issuer: args } => {
            println!("{}", authorization_server_metadata(&args.issuer));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The agent a freshly minted token names.
fn claims_agent(resp: &writ_identity::exchange::TokenResponse) -> anyhow::Result<AgentId> {
    use base64::Engine;
    let payload = resp
        .access_token
        .split('.')
        .nth(1)
        .context("minted token has no payload")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(AgentId::new(
        v["act"]["sub"]
            .as_str()
            .context("minted token has no act.sub")?,
    )?)
}

fn metadata_endpoint(args: &IssuerArgs) -> String {
    authorization_server_metadata(&args.issuer)["token_endpoint"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The verifier of the configured issuer the ID token claims (its JWKS fetched now), or none: an
/// ID token from an issuer that is not configured then fails closed in `exchange_token`.
async fn oidc_verifiers(
    config: Option<&std::path::Path>,
    id_token: &str,
) -> anyhow::Result<Vec<writ_identity::oidc::OidcVerifier>> {
    let Some(path) = config else {
        return Ok(Vec::new());
    };
    let config = writ_gateway::Config::load(Some(path), std::env::vars())?;
    let claimed = writ_identity::oidc::claimed_issuer(id_token);
    let Some(c) = config
        .identity
        .oidc
        .iter()
        .find(|c| Some(&c.issuer) == claimed.as_ref())
    else {
        return Ok(Vec::new());
    };
    let client = writ_gateway::assemble::oidc_client(c)?;
    let verifier = client
        .verifier()
        .await
        .with_context(|| format!("fetching the JWKS of issuer {}", c.issuer))?;
    Ok(vec![verifier])
}
