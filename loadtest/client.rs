//! A one-request HTTP/1.1 client for the load tools (loopback only).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Sends one request on a new connection: status, headers and body.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    assert!(addr.ip().is_loopback(), "loopback only");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tx
        .send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, hs, body)
}

/// A refedge server started by a load tool, stopped by its pid however the
/// run ends.
pub struct Server {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `binary serve` on a free loopback port with `data_dir`,
    /// the admin `token` and `env`, and waits (up to `limit`) until it
    /// accepts connections.
    pub async fn start(
        binary: &str,
        data_dir: &std::path::Path,
        token: &str,
        env: &[(&str, &str)],
        limit: std::time::Duration,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = std::process::Command::new(binary)
            .arg("serve")
            .env("REFEDGE_DATA_DIR", data_dir)
            .env("REFEDGE_LISTEN", addr.to_string())
            .env("REFEDGE_ADMIN_TOKEN", token)
            .env("REFEDGE_LOG", "warn")
            .envs(env.iter().copied())
            .spawn()
            .expect("start the server");
        let server = Self { child, addr };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(started.elapsed() < limit, "server did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
