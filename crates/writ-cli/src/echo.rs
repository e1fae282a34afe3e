//! `writ echo-server`: a stand-in upstream API for trying Writ on one machine. It answers every
//! request with what it received (method, path, query, headers, JSON body), the way a careless
//! API might echo a credential back, which shows that Writ scrubs it before the agent sees it.

use std::process::ExitCode;

use axum::extract::Request;
use axum::response::IntoResponse;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
}

pub fn run(args: EchoArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            println!("echo server on http://{}", listener.local_addr()?);
            let app = axum::Router::new().fallback(echo);
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        })
}

async fn echo(request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                json!(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": body,
    }))
}
