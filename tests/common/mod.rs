//! Test harness: servers on 127.0.0.1 port 0 (in-process or the real
//! binary), and an HTTP/1.1 client that never follows redirects.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::TokioIo;
use refedge::clock::{FakeClock, SharedClock};
use refedge::config::Config;
use refedge::edge::Running;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tempfile::TempDir;

pub mod browser;
pub mod nats;
pub mod receiver;
pub mod stripe;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `refedge_attr` token from `Set-Cookie`, if one was set.
    pub fn attribution_cookie(&self) -> Option<String> {
        let v = self.header("set-cookie")?;
        let first = v.split(';').next()?;
        first.strip_prefix("refedge_attr=").map(String::from)
    }
}

/// One request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on a fresh connection; connection failures are returned.
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Admin-authenticated JSON request.
pub async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Resp {
    api_as(addr, ADMIN, method, path, body.as_ref()).await
}

/// A JSON request with `token` as the bearer (an API key's secret).
pub async fn api_as(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Resp {
    try_api_as(addr, token, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// As [`api_as`], with a refused connection returned.
pub async fn try_api_as(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let auth = format!("Bearer {token}");
    let text = body.map(Value::to_string);
    try_send(
        addr,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        text.as_deref().map(str::as_bytes),
    )
    .await
}

/// A fresh visitor address in carrier-grade NAT space (100.64.0.0/10),
/// which no data-centre list contains.
pub fn next_visitor() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("100.{}.{}.{}", 64 + (n >> 16) % 64, (n >> 8) & 255, n & 255)
}

/// A browser-like click from a new visitor (servers started by the harness
/// trust 127.0.0.1 as their proxy).
pub async fn click(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Resp {
    click_from(addr, path, cookie, &next_visitor()).await
}

/// A browser-like click from a given visitor address.
pub async fn click_from(addr: SocketAddr, path: &str, cookie: Option<&str>, visitor: &str) -> Resp {
    let cookie = cookie.map(|c| format!("refedge_attr={c}"));
    let mut h = vec![
        ("x-forwarded-for", visitor),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "cross-site"),
        ("referer", "https://blog.example/review"),
    ];
    if let Some(c) = &cookie {
        h.push(("cookie", c));
    }
    send(addr, "GET", path, &h, None).await
}

/// An in-process server on a temporary data dir.
pub struct TestServer {
    pub dir: TempDir,
    pub running: Running,
    pub clock: Arc<FakeClock>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_token = Some(ADMIN.into());
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        tweak(&mut config);
        let clock = Arc::new(FakeClock::new("2026-03-01T12:00:00Z".parse().unwrap()));
        let running = refedge::edge::start(config, clock.clone() as SharedClock)
            .await
            .expect("server starts");
        Self {
            dir,
            running,
            clock,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn partner(&self, program: &str, email: &str) -> String {
        create_partner(self.addr(), program, email).await
    }

    pub async fn link(&self, partner: &str, destination: &str, code: Option<&str>) -> Value {
        create_link(self.addr(), partner, destination, code).await
    }

    /// The value of a metric line, e.g. `refedge_clicks_served_total{program="krispcall"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(self.addr(), series).await
    }
}

pub async fn create_partner(addr: SocketAddr, program: &str, email: &str) -> String {
    let r = api(
        addr,
        "POST",
        "/api/v1/partners",
        Some(serde_json::json!({
            "program": program,
            "name": "Test Partner",
            "email": email,
            "website": "https://blog.example",
        })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

pub async fn create_link(
    addr: SocketAddr,
    partner: &str,
    destination: &str,
    code: Option<&str>,
) -> Value {
    let mut body = serde_json::json!({"partner_id": partner, "destination": destination});
    if let Some(c) = code {
        body["code"] = c.into();
    }
    let r = api(addr, "POST", "/api/v1/links", Some(body)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let r = send(addr, "GET", "/metrics", &[], None).await;
    let text = String::from_utf8(r.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The real `refedge` binary, serving on a port it picked.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Option<std::thread::JoinHandle<String>>,
}

/// A test that fails part way does not leave its server running.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    pub fn spawn(data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_refedge"));
        cmd.arg("serve")
            .env_clear()
            .env("REFEDGE_DATA_DIR", data_dir)
            .env("REFEDGE_LISTEN", "127.0.0.1:0")
            .env("REFEDGE_ADMIN_TOKEN", ADMIN)
            .env("REFEDGE_LOG", "info")
            .env("REFEDGE_TRUSTED_PROXIES", "127.0.0.1/32")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn refedge");
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(stderr).lines() {
                s.push_str(&line.unwrap_or_default());
                s.push('\n');
            }
            s
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("refedge listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit; returns the exit code and everything logged.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let log = self.stderr.take().map(|h| h.join().unwrap());
        (status.code(), log.unwrap_or_default())
    }
}

/// Drives the money API of a test server, remembering the last event seq so
/// that reads wait for it (no sleeps).
pub struct Money<'a> {
    pub s: &'a TestServer,
    pub last: u64,
}

impl<'a> Money<'a> {
    pub fn new(s: &'a TestServer) -> Self {
        Self { s, last: 0 }
    }

    /// Posts one merchant event; it must be accepted.
    pub async fn ev(&mut self, v: Value) -> u64 {
        let r = api(self.s.addr(), "POST", "/api/v1/events", Some(v.clone())).await;
        assert_eq!(r.status, 201, "{v}: {}", String::from_utf8_lossy(&r.body));
        let seq = r.json()["seq"].as_u64().unwrap();
        self.last = self.last.max(seq);
        seq
    }

    pub async fn post(&mut self, path: &str, v: Value) -> Resp {
        api(self.s.addr(), "POST", path, Some(v)).await
    }

    /// GET with `wait_for` the last event.
    pub async fn get(&self, path: &str) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = api(
            self.s.addr(),
            "GET",
            &format!("{path}{sep}wait_for={}", self.last),
            None,
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    pub async fn balance(&self, partner: &str, as_of: &str, currency: &str) -> Value {
        let b = self
            .get(&format!("/api/v1/partners/{partner}/balance?as_of={as_of}"))
            .await;
        b["balances"][currency].clone()
    }

    pub async fn payout(&mut self, program: &str, as_of: &str) -> Value {
        let r = self
            .post(
                "/api/v1/payouts/run",
                serde_json::json!({"program": program, "as_of": as_of}),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 200,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// The last rejection reason recorded for a customer.
    pub async fn rejection(&self, customer: &str) -> String {
        let c = self.get(&format!("/api/v1/customers/{customer}")).await;
        let rej = c["programs"][0]["rejections"].as_array().unwrap();
        rej.last().unwrap()["reason"].as_str().unwrap().to_string()
    }

    pub async fn referred_to(&self, customer: &str) -> Option<String> {
        let c = self.get(&format!("/api/v1/customers/{customer}")).await;
        c["programs"][0]["referral"]["partner_id"]
            .as_str()
            .map(String::from)
    }
}

/// The `refclk` of a redirect.
pub fn click_id_of(r: &Resp) -> String {
    r.header("location")
        .unwrap()
        .split("refclk=")
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .to_string()
}

/// Runs the real binary with `args` and no environment but the admin
/// token; it must succeed, and its standard output is JSON.
pub fn run_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_refedge"))
        .args(args)
        .env_clear()
        .env("REFEDGE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The kinds of a replayed partner's ledger lines, in order.
pub fn line_kinds(partner: &Value) -> Vec<&str> {
    partner["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect()
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A new API key of `role` named "`role` desk" (bound to `partner` for a
/// partner key), made with the admin token: the whole answer (`id`,
/// `secret`, …).
pub async fn new_api_key(addr: SocketAddr, role: &str, partner: Option<&str>) -> Value {
    let mut body = serde_json::json!({"name": format!("{role} desk"), "role": role});
    if let Some(p) = partner {
        body["partner_id"] = serde_json::json!(p);
    }
    let r = api(addr, "POST", "/api/v1/api-keys", Some(body)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// A new API key's secret (see [`new_api_key`]).
pub async fn api_key(addr: SocketAddr, role: &str, partner: Option<&str>) -> String {
    new_api_key(addr, role, partner).await["secret"]
        .as_str()
        .unwrap()
        .to_string()
}
