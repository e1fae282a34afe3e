//! The connection to the upstream: connecting (stdio or Streamable HTTP, credentials from the
//! vault), supervising it (reconnect with backoff, credential rotation) and its notifications.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use writ_vault::Secret;

use super::{Connection, Setting, Shared, http_client};
use crate::scrub::{Scrubber, Sent};

/// Keeps the upstream connected: connect, wait for the connection to end, back off, again.
pub(super) async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = connect(&shared) => r,
        };
        let why = match outcome {
            Ok((service, session_stop)) => {
                let since = Instant::now();
                tracing::info!(upstream = %shared.name, tools = shared.read().tools.len(), "connected to the upstream MCP server");
                let cancel = service.cancellation_token();
                // Ends when the server closes the connection, when a call found the transport
                // broken (an HTTP server that went away), when a credential it was made with
                // was rotated in the vault, or when Writ stops.
                let mut rotated = false;
                let ended = tokio::select! {
                    _ = stop.cancelled() => None,
                    _ = session_stop.cancelled() => Some(()),
                    _ = service.waiting() => Some(()),
                    _ = credentials_rotated(&shared) => { rotated = true; Some(()) }
                };
                session_stop.cancel();
                if ended.is_none() {
                    cancel.cancel();
                    shared.write().connection = None;
                    return;
                }
                if since.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                let last = shared.read().stderr.back().cloned();
                if rotated {
                    // Not a failure: reconnect at once with the new version.
                    tracing::info!(upstream = %shared.name, "a credential of the upstream was rotated; reconnecting");
                    session_stop.cancel();
                    cancel.cancel();
                    shared.write().connection = None;
                    failures = 0;
                    continue;
                }
                match last {
                    Some(line) => {
                        format!(
                            "the connection to the upstream ended (its last stderr line: {line})"
                        )
                    }
                    None => "the connection to the upstream ended".to_owned(),
                }
            }
            Err(why) => why,
        };
        let backoff = Duration::from_millis(500)
            .saturating_mul(1u32 << failures.min(6))
            .min(Duration::from_secs(30));
        failures = failures.saturating_add(1);
        tracing::warn!(upstream = %shared.name, error = %why, retry_in_ms = backoff.as_millis() as u64, "the upstream MCP server is not connected");
        {
            let mut state = shared.write();
            state.connection = None;
            state.down = Some((why, Some(Instant::now() + backoff)));
        }
        shared.tick();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// How often the credentials of a connection are compared with the vault's current versions.
const ROTATION_CHECK: Duration = Duration::from_secs(5);

/// Returns when a credential the current connection was made with has a new current version in
/// the vault (checked every [`ROTATION_CHECK`]); never, for a connection without credentials.
/// A vault that cannot be read keeps the connection as it is.
async fn credentials_rotated(shared: &Shared) {
    let names: Vec<String> = shared
        .config
        .env
        .values()
        .chain(shared.config.headers.values())
        .filter_map(|s| match s {
            Setting::Credential(c) => Some(c.credential.clone()),
            Setting::Literal(_) => None,
        })
        .collect();
    if names.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(ROTATION_CHECK).await;
        let in_use = shared
            .read()
            .connection
            .as_ref()
            .and_then(|c| c.references.clone());
        let mut current = Vec::with_capacity(names.len());
        for name in &names {
            match shared.credentials.shared(name).await {
                Ok((_, reference)) => current.push(reference),
                Err(_) => break,
            }
        }
        if current.len() == names.len() && in_use.as_deref() != Some(current.join(", ").as_str()) {
            return;
        }
    }
}

/// Receives the upstream's notifications.
struct Handler {
    shared: Weak<Shared>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("writ", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let limit = Duration::from_millis(shared.config.connect_timeout_ms);
        match tokio::time::timeout(limit, context.peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                tracing::info!(upstream = %shared.name, "the upstream's tools changed");
                shared.set_tools(tools, &shared.scrubber());
            }
            Ok(Err(e)) => {
                let error = shared.scrubber().text(&e.to_string());
                tracing::warn!(upstream = %shared.name, error = %error, "listing the upstream's changed tools failed")
            }
            Err(_) => {
                tracing::warn!(upstream = %shared.name, "listing the upstream's changed tools timed out")
            }
        }
    }
}

/// Resolved settings: the values, the credential references used, and each credential with the
/// prefix it is sent after (to scrub).
async fn resolve(
    shared: &Shared,
    settings: &BTreeMap<String, Setting>,
    references: &mut Vec<String>,
    secrets: &mut Vec<(String, Secret)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(settings.len());
    for (key, setting) in settings {
        let value = match setting {
            Setting::Literal(v) => v.clone(),
            Setting::Credential(c) => {
                let (secret, reference) = shared.credentials.shared(&c.credential).await?;
                let text = std::str::from_utf8(secret.expose())
                    .map_err(|_| {
                        format!("credential {reference} is not text; it cannot be used in {key}")
                    })?
                    .to_owned();
                references.push(reference);
                let sent = Sent::Prefixed {
                    prefix: &c.prefix,
                    secret: text.as_bytes(),
                };
                let value = String::from_utf8_lossy(&sent.wire()).into_owned();
                secrets.push((c.prefix.clone(), secret));
                value
            }
        };
        out.push((key.clone(), value));
    }
    Ok(out)
}

/// One connection attempt: start or reach the server, initialize, list the tools. The returned
/// token stops the helper tasks of this connection.
async fn connect(
    shared: &Arc<Shared>,
) -> Result<(RunningService<RoleClient, Handler>, CancellationToken), String> {
    let config = &shared.config;
    let limit = Duration::from_millis(config.connect_timeout_ms);
    let mut references = Vec::new();
    let mut secrets = Vec::new();
    let handler = Handler {
        shared: Arc::downgrade(shared),
    };
    let session_stop = CancellationToken::new();
    let settings = if config.command.is_some() {
        &config.env
    } else {
        &config.headers
    };
    let values = resolve(shared, settings, &mut references, &mut secrets).await?;
    let sent: Vec<Sent<'_>> = secrets
        .iter()
        .map(|(prefix, secret)| Sent::Prefixed {
            prefix,
            secret: secret.expose(),
        })
        .collect();
    let scrubber = Arc::new(Scrubber::new(&sent)?);
    drop(sent);
    drop(secrets);
    // What a previous process wrote is not this one's.
    shared.write().stderr.clear();
    let started = match (&config.command, &config.url) {
        (Some(command), _) => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(&config.args).env_clear().kill_on_drop(true);
            for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
                if let Some(v) = std::env::var_os(var) {
                    cmd.env(var, v);
                }
            }
            cmd.envs(values);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {command:?}: {e}"))?;
            shared.write().pid = transport.id();
            if let Some(stderr) = stderr {
                let weak = Arc::downgrade(shared);
                let scrubber = scrubber.clone();
                let stop = session_stop.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    loop {
                        let line = tokio::select! {
                            _ = stop.cancelled() => return,
                            l = lines.next_line() => l,
                        };
                        let Ok(Some(line)) = line else { return };
                        let Some(shared) = weak.upgrade() else { return };
                        let line: String = scrubber.text(&line).chars().take(300).collect();
                        tracing::debug!(upstream = %shared.name, line = %line, "upstream stderr");
                        let mut state = shared.write();
                        if state.stderr.len() == 20 {
                            state.stderr.pop_front();
                        }
                        state.stderr.push_back(line);
                    }
                });
            }
            tokio::time::timeout(limit, handler.serve(transport)).await
        }
        (None, Some(url)) => {
            let mut map = HashMap::new();
            for (k, v) in values {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("header name {k:?} is not valid"))?;
                let mut value = HeaderValue::from_str(&v)
                    .map_err(|_| format!("the value of header {k} is not a valid header value"))?;
                value.set_sensitive(true);
                map.insert(name, value);
            }
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(limit)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
            let transport = StreamableHttpClientTransport::with_client(
                http_client::Http(client, " (the upstream refused the credential)"),
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(map),
            );
            tokio::time::timeout(limit, handler.serve(transport)).await
        }
        (None, None) => return Err("neither command nor url".into()),
    };
    let service = match started {
        Err(_) => {
            session_stop.cancel();
            return Err(format!("the upstream did not initialize within {limit:?}"));
        }
        Ok(Err(e)) => {
            session_stop.cancel();
            let last = shared.read().stderr.back().cloned();
            let why = scrubber.text(&e.to_string());
            return Err(match last {
                Some(line) => format!("initialization failed: {why} (stderr: {line})"),
                None => format!("initialization failed: {why}"),
            });
        }
        Ok(Ok(s)) => s,
    };
    let tools = match tokio::time::timeout(limit, service.peer().list_all_tools()).await {
        Ok(Ok(tools)) => tools,
        Ok(Err(e)) => {
            session_stop.cancel();
            return Err(format!(
                "listing the tools failed: {}",
                scrubber.text(&e.to_string())
            ));
        }
        Err(_) => {
            session_stop.cancel();
            return Err(format!("listing the tools took longer than {limit:?}"));
        }
    };
    {
        let mut state = shared.write();
        state.connection = Some(Connection {
            peer: service.peer().clone(),
            references: (!references.is_empty()).then(|| references.join(", ")),
            scrubber: scrubber.clone(),
            since: Instant::now(),
            broken: session_stop.clone(),
        });
        state.down = None;
        state.connects += 1;
    }
    shared.set_tools(tools, &scrubber);
    Ok((service, session_stop))
}
