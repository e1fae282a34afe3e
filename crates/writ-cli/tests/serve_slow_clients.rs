//! Slow and idle clients against the real `writ serve`: a client trickling its header, one
//! trickling its body, an idle kept-alive connection, and more connections than
//! `max_connections`. The server runs with short timeouts so that each case ends in seconds;
//! the bounds the tests wait for are generous (they say "eventually", not "how fast").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Env, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server on SQLite with the given `[server]` limits.
fn serve(limits: &str) -> (Env, Server) {
    let env = Env::new(None);
    std::fs::write(env.path("writ.toml"), format!("[server]\n{limits}\n")).unwrap();
    let server = env.serve();
    (env, server)
}

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes: then `None`); returns
/// what it sent.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_trickled_header_is_cut_off() {
    let (_env, server) = serve("header_timeout_ms = 500");
    let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms: never a whole header within the limit.
    let trickle = async {
        for _ in 0..200 {
            if tcp.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(15), trickle).await;
    assert!(
        matches!(cut, Ok(true)),
        "the server kept reading a header trickled for 15 s"
    );
    // The server is still there for others.
    let ok = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let (_env, server) = serve("header_timeout_ms = 500");
    let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
    // Nothing sent at all: the header timeout runs from the connection's start.
    assert!(
        read_to_close(&mut tcp, Duration::from_secs(15))
            .await
            .is_some(),
        "a connection that sent nothing was still open after 15 s"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let (_env, server) = serve("body_timeout_ms = 500");
    let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
    // The token endpoint reads its body before anything else.
    let head = "POST /oauth/token HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(15))
        .await
        .expect("the server waited more than 15 s for a body that never came");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (_env, server) =
        serve("header_timeout_ms = 60000\nidle_timeout_ms = 500\nbody_timeout_ms = 60000");
    let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(15))
        .await
        .expect("an idle kept-alive connection was still open after 15 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_their_turn() {
    let (_env, server) = serve("max_connections = 2\nheader_timeout_ms = 60000");
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(addr(&server)).await.unwrap(),
        TcpStream::connect(addr(&server)).await.unwrap(),
    ];
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("{}/healthz", server.url);
    let third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two of two were held"
    );
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(15), third)
        .await
        .expect("the third client was not served after a slot freed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}
