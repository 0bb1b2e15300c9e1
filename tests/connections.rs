//! Idle and stalled connections are closed; slow but active ones are not.
//! Raw TCP against the real server, with a short `idle_timeout_ms`.

mod common;

use common::{TestServer, ADMIN};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE_MS: u64 = 300;

async fn server() -> TestServer {
    TestServer::start_with(|c| c.idle_timeout_ms = IDLE_MS).await
}

/// Reads until the server closes the connection; returns what it sent and
/// how long that took. Fails after five seconds.
async fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("read");
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// A new connection to `srv` that has sent `bytes`.
async fn connected(srv: &TestServer, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

#[tokio::test]
async fn a_request_head_never_finished_is_cut_off() {
    let srv = server().await;
    let mut s = connected(
        &srv,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slo",
    )
    .await;
    let (answer, after) = read_to_close(&mut s).await;
    assert_eq!(answer, "", "nothing is answered to half a request");
    assert!(
        after >= Duration::from_millis(IDLE_MS - 50),
        "closed after {after:?}, before a whole idle period"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let srv = server().await;
    let mut s = connected(&srv, HEALTHZ).await;
    let (answer, after) = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    assert!(after >= Duration::from_millis(IDLE_MS - 50), "{after:?}");
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_off() {
    let srv = server().await;
    let body = br#"{"program":"krispcall","name":"Slow Sam","email":"sam@slow.example","website":"https://slow.example"}"#;
    let head = format!(
        "POST /api/v1/partners HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = connected(&srv, head.as_bytes()).await;
    // The body over three idle periods, in pieces.
    let started = Instant::now();
    for piece in body.chunks(body.len().div_ceil(6)) {
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
        s.write_all(piece).await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(3 * IDLE_MS - 50));
    let (answer, _) = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    assert!(answer.contains("\"name\":\"Slow Sam\""), "{answer}");
}

#[tokio::test]
async fn a_connection_in_use_stays_open() {
    let srv = server().await;
    let mut s = connected(&srv, b"").await;
    let mut buf = vec![0u8; 4096];
    // A request every half period for four periods, on one connection.
    for _ in 0..8 {
        s.write_all(HEALTHZ).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
    }
}
