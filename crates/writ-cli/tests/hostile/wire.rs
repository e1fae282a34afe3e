//! Requests written straight to a socket: bytes no HTTP client would send (request smuggling,
//! broken framing) and clients that are slow on purpose. Every one is bounded in time and runs on
//! loopback only.
//!
//! A slow client's outcome is reported as a status: the server's own status if it answered,
//! `0` if it closed the connection without answering, and [`STILL_OPEN`] if the connection was
//! still held when the client gave up (the server let it hog a connection).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::case::{Answer, Tcp};

/// The status of a connection the server still held when the client stopped.
pub const STILL_OPEN: u16 = 999;
/// How long a slow client keeps going before it gives up.
const PATIENCE: Duration = Duration::from_secs(6);

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The status of an HTTP/1.1 answer (`HTTP/1.1 400 Bad Request` → 400), or 0.
fn status_of(bytes: &[u8]) -> u16 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn answer(status: u16, text: String) -> Answer {
    Answer::text(status, text)
}

/// Writes `request` and reads until the server closes or 5 s pass.
pub async fn raw(url: &str, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(host(url)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    // One answer is all we wait for.
                    if let Some(end) = find(&got, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    answer(status_of(&got), String::from_utf8_lossy(&got).into_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `head` at once, then `trickle` one byte every 100 ms, until the server closes the
/// connection or answers, or [`PATIENCE`] runs out.
async fn trickle(url: &str, head: &[u8], trickle: &[u8]) -> Answer {
    let stream = TcpStream::connect(host(url)).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let _ = w.write_all(head).await;
    let mut bytes = trickle.iter().cycle();
    while !reader.is_finished() && started.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(b) = bytes.next()
            && w.write_all(&[*b]).await.is_err()
        {
            break;
        }
    }
    let deadline = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(deadline);
    tokio::select! {
        got = reader => {
            let got = got.unwrap_or_default();
            let took = started.elapsed().as_secs_f64();
            answer(status_of(&got), format!("ended after {took:.1} s: {}", String::from_utf8_lossy(&got)))
        }
        _ = &mut deadline => answer(STILL_OPEN, format!("still open after {:.1} s", started.elapsed().as_secs_f64())),
    }
}

/// One slow behaviour against the server at `url`.
pub async fn slow(url: &str, kind: Tcp) -> Answer {
    let h = host(url);
    match kind {
        Tcp::SlowHeaders => {
            let head = format!("POST /v1/actions HTTP/1.1\r\nHost: {h}\r\n");
            trickle(
                url,
                head.as_bytes(),
                b"X-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            )
            .await
        }
        Tcp::SlowBody => {
            // The token endpoint reads its body before it authenticates anything (the API
            // answers an unauthenticated request at once, without reading its body).
            let head = format!(
                "POST /oauth/token HTTP/1.1\r\nHost: {h}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ngrant_type="
            );
            trickle(url, head.as_bytes(), b"a").await
        }
        Tcp::Idle => {
            // One request on a keep-alive connection, answered; then silence.
            let mut s = TcpStream::connect(h).await.unwrap();
            let req = format!("GET /healthz HTTP/1.1\r\nHost: {h}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let started = Instant::now();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let closed = tokio::time::timeout(PATIENCE, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await
            .is_ok();
            let first = status_of(&got);
            if first != 200 {
                return answer(
                    first,
                    format!("the request itself was not answered: {first}"),
                );
            }
            if closed {
                answer(
                    0,
                    format!(
                        "answered, then closed after {:.1} s idle",
                        started.elapsed().as_secs_f64()
                    ),
                )
            } else {
                answer(STILL_OPEN, "answered, then held open while idle".into())
            }
        }
        Tcp::Connections => connections(url).await,
    }
}

/// Holds six silent connections (more than the test server's `max_connections = 4`), then asks
/// for `/healthz` on a seventh: it must not be served at once, and it must be served (or
/// refused) once the silent ones have been cut.
async fn connections(url: &str) -> Answer {
    let h = host(url);
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(TcpStream::connect(h).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(h).await.unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    drop(held);
    let status = status_of(&got);
    let how = match status {
        0 if took >= PATIENCE => "never served",
        0 => "refused (closed)",
        200 if took < Duration::from_millis(300) => "served at once",
        200 => "held, then served",
        _ => "refused",
    };
    answer(status, format!("{how} after {:.2} s", took.as_secs_f64()))
}
