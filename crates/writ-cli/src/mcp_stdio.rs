//! `writ mcp-stdio`: an MCP server on standard input and output that forwards to a Writ server's
//! `/mcp`, for MCP clients that only launch stdio servers.
//!
//! It is a bridge, not a second gateway: `tools/list` and `tools/call` go to `<url>/mcp` over
//! Streamable HTTP with `Authorization: Bearer <token>` (and `Writ-Grant` for an agent API key),
//! and the answers come back unchanged. Nothing but protocol is written to stdout; logs go to
//! stderr. When the server cannot be reached or refuses the token, the MCP request gets an error
//! that says so and never holds the token. The connection is made on first use and again after it
//! broke, so a client may start before the server does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerJsonRpcMessage,
};
use rmcp::service::{ClientInitializeError, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_LAST_EVENT_ID, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};
use sse_stream::{Sse, SseStream};
use tokio::sync::Mutex;

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
        let transport = StreamableHttpClientTransport::with_client(Http(self.http.clone()), config);
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
            .with_instructions(writ_gateway::mcp::INSTRUCTIONS)
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

/// rmcp's Streamable HTTP client over the reqwest 0.12 already in the tree (rmcp's own
/// implementation is for reqwest 0.13, which would bring a second HTTP and TLS stack).
#[derive(Clone)]
struct Http(reqwest::Client);

type HttpError = StreamableHttpError<reqwest::Error>;

impl Http {
    fn request(
        &self,
        method: reqwest::Method,
        uri: &str,
        session_id: Option<&str>,
        auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.0.request(method, uri).header(
            ACCEPT,
            format!("{EVENT_STREAM_MIME_TYPE}, {JSON_MIME_TYPE}"),
        );
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        if let Some(id) = session_id {
            req = req.header(HEADER_SESSION_ID, id);
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req
    }
}

/// A refusal, in words: the status and the server's own message (Writ answers JSON
/// `{"error", "message"}`), at most a few hundred characters of it.
async fn refusal(response: reqwest::Response) -> HttpError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(body);
    let message: String = message.chars().take(500).collect();
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (the token was refused: check WRIT_TOKEN)",
        StatusCode::FORBIDDEN => " (the request was refused)",
        _ => "",
    };
    StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
        "HTTP {status}{hint}: {message}"
    )))
}

fn sse(response: reqwest::Response) -> BoxStream<'static, Result<Sse, SseError>> {
    SseStream::from_bytes_stream(response.bytes_stream()).boxed()
}

fn is(response: &reqwest::Response, mime: &str) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
}

impl StreamableHttpClient for Http {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: rmcp::model::ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let with_session = session_id.is_some();
        let response = self
            .request(
                reqwest::Method::POST,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
            )
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && with_session {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(refusal(response).await);
        }
        let new_session = response
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let awaits_no_response = !matches!(message, rmcp::model::JsonRpcMessage::Request(_));
        if is(&response, EVENT_STREAM_MIME_TYPE) {
            return Ok(StreamableHttpPostResponse::Sse(sse(response), new_session));
        }
        if is(&response, JSON_MIME_TYPE) {
            let body = response
                .bytes()
                .await
                .map_err(StreamableHttpError::Client)?;
            return match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                Ok(m) => Ok(StreamableHttpPostResponse::Json(m, new_session)),
                Err(_) if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
                Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                    format!("the answer is not a JSON-RPC message: {e}"),
                ))),
            };
        }
        if awaits_no_response {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        Err(StreamableHttpError::UnexpectedContentType(
            response
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        ))
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &uri,
                Some(&session_id),
                auth_header,
                custom_headers,
            )
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(refusal(response).await)
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        let mut req = self.request(
            reqwest::Method::GET,
            &uri,
            session_id.as_deref(),
            auth_header,
            custom_headers,
        );
        if let Some(id) = last_event_id {
            req = req.header(HEADER_LAST_EVENT_ID, id);
        }
        let response = req.send().await.map_err(StreamableHttpError::Client)?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        if !is(&response, EVENT_STREAM_MIME_TYPE) {
            return Err(StreamableHttpError::UnexpectedContentType(
                response
                    .headers()
                    .get(CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            ));
        }
        Ok(sse(response))
    }
}
