//! `writ mcp-stdio`: an MCP server on standard input and output that forwards to a Writ server's
//! `/mcp`, for MCP clients that only launch stdio servers.
//!
//! It is a bridge, not a second gateway: `tools/list` and `tools/call` go to `<url>/mcp` over
//! Streamable HTTP with `Authorization: Bearer <token>` (and `Writ-Grant` for an agent API key),
//! and the answers come back unchanged. Nothing but protocol is written to stdout; logs go to
//! stderr. When the server cannot be reached or refuses the token, the MCP request gets an error
//! that says so and never holds the token. The connection is made on first use and again after it
//! broke, so a client may start before the server does.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities,
};
use rmcp::service::{ClientInitializeError, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};
use tokio::sync::Mutex;
use writ_connectors::mcp::http_client::{Http, HttpError};

#[derive(Debug, clap::Args)]
pub struct McpStdioArgs {
    /// The Writ server to forward to (its /mcp endpoint is used).
    #[arg(long, env = "WRIT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A delegated token, or an agent API key together with --grant.
    #[arg(long, env = "WRIT_TOKEN", hide_env_values = true)]
    token: String,
    /// The grant the agent acts under, sent as `Writ-Grant` (needed with an agent API key).
    #[arg(long, env = "WRIT_GRANT")]
    grant: Option<String>,
}

pub fn run(args: McpStdioArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: McpStdioArgs) -> anyhow::Result<ExitCode> {
    let upstream = Upstream::new(args)?;
    let bridge = Bridge {
        upstream: Arc::new(upstream),
    };
    let upstream = bridge.upstream.clone();
    let service = bridge
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client on standard input did not initialize")?;
    let _ = service.waiting().await;
    upstream.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The Writ server's `/mcp` and how to authenticate there; one MCP session, opened on demand.
struct Upstream {
    endpoint: String,
    token: String,
    grant: Option<HeaderValue>,
    http: reqwest::Client,
    /// The open session and its generation (which session a failed request used).
    session: Mutex<Option<(u64, RunningService<RoleClient, ()>)>>,
    opened: AtomicU64,
}

impl Upstream {
    fn new(args: McpStdioArgs) -> anyhow::Result<Upstream> {
        let grant = args
            .grant
            .map(|g| HeaderValue::from_str(&g))
            .transpose()
            .context("--grant / WRIT_GRANT is not a valid header value")?;
        if args.token.is_empty() {
            anyhow::bail!(
                "WRIT_TOKEN (or --token) is empty: give a delegated token or an agent API key"
            );
        }
        Ok(Upstream {
            endpoint: format!("{}/mcp", args.url.trim_end_matches('/')),
            token: args.token,
            grant,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            session: Mutex::new(None),
            opened: AtomicU64::new(0),
        })
    }

    /// A message for the MCP client: what failed, where and why; the token blanked out.
    fn error(&self, what: &str, why: &str) -> ErrorData {
        let text = format!("{what} ({}): {why}", self.endpoint).replace(&self.token, "<token>");
        ErrorData::internal_error(text, None)
    }

    /// The open session's peer and generation, after opening a session if there is none.
    async fn peer(&self) -> Result<(u64, Peer<RoleClient>), ErrorData> {
        let mut session = self.session.lock().await;
        if let Some((generation, open)) = session.as_ref() {
            return Ok((*generation, open.peer().clone()));
        }
        let mut headers = HashMap::new();
        if let Some(grant) = &self.grant {
            headers.insert(HeaderName::from_static("writ-grant"), grant.clone());
        }
        let config = StreamableHttpClientTransportConfig::with_uri(self.endpoint.as_str())
            .auth_header(self.token.clone())
            .custom_headers(headers);
        let transport = StreamableHttpClientTransport::with_client(
            Http(
                self.http.clone(),
                " (the token was refused: check WRIT_TOKEN)",
            ),
            config,
        );
        let opened = ().serve(transport).await.map_err(|e| {
            let why = match &e {
                ClientInitializeError::TransportError { error, .. } => reason(error),
                other => other.to_string(),
            };
            self.error("cannot open an MCP session with the Writ server", &why)
        })?;
        let generation = self.opened.fetch_add(1, Ordering::Relaxed);
        let peer = opened.peer().clone();
        *session = Some((generation, opened));
        Ok((generation, peer))
    }

    /// Forwards one request on the open session (opened first if there is none); requests run
    /// side by side. A session whose transport broke is dropped so that the next request opens
    /// a new one.
    async fn forward<T>(
        &self,
        request: impl AsyncFnOnce(Peer<RoleClient>) -> Result<T, ServiceError>,
    ) -> Result<T, ErrorData> {
        let (generation, peer) = self.peer().await?;
        match request(peer).await {
            Ok(v) => Ok(v),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => {
                let mut session = self.session.lock().await;
                if session.as_ref().is_some_and(|(g, _)| *g == generation) {
                    *session = None;
                }
                let why = match &e {
                    ServiceError::TransportSend(error) => reason(error),
                    other => other.to_string(),
                };
                Err(self.error("the request to the Writ server failed", &why))
            }
        }
    }

    /// Ends the session (DELETE /mcp), if one is open.
    async fn close(&self) {
        if let Some((_, session)) = self.session.lock().await.take() {
            let _ = session.cancel().await;
        }
    }
}

/// Why the transport failed, in words: the HTTP client's own error when it is in the chain
/// (rmcp's wrappers name Rust types), else the whole chain.
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return match http {
                StreamableHttpError::Client(e) if e.is_connect() => {
                    "cannot connect; is `writ serve` running there? (check WRIT_URL)".to_owned()
                }
                StreamableHttpError::Client(e) if e.is_timeout() => "timed out".to_owned(),
                StreamableHttpError::Client(e) => e.to_string(),
                other => other.to_string(),
            };
        }
        cause = e.source();
    }
    error.to_string()
}

/// The stdio MCP server.
#[derive(Clone)]
struct Bridge {
    upstream: Arc<Upstream>,
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("writ", env!("CARGO_PKG_VERSION")))
            .with_instructions(writ_http::mcp::INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.upstream
            .forward(async |peer| peer.list_tools(request).await)
            .await
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // rmcp moves a request's `_meta` into the context; it goes upstream with the call. A
        // progress token would name notifications this bridge does not relay.
        let mut meta = request.meta.take().unwrap_or_default();
        meta.extend(ctx.meta);
        meta.remove("progressToken");
        request.meta = (!meta.is_empty()).then_some(meta);
        self.upstream
            .forward(async |peer| peer.call_tool_once(request).await)
            .await
    }
}
