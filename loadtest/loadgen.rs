//! Helper for `loadtest/run`: sets up links on a running refedge, drives
//! fixed-rate (open-loop) click load for latency, and verifies how many
//! clicks reached disk. Closed-loop throughput is wrk's job. Targets 127.0.0.1 only; every phase is bounded in
//! time and request count and ends by itself.
//!
//! Usage:
//!   loadgen setup  ADDR TOKEN LINKS
//!   loadgen rate   ADDR LINKS RATE SECONDS CONNECTIONS
//!   loadgen verify ADDR TOKEN LINKS
//!   loadgen events ADDR TOKEN EVENTS BATCH CONNECTIONS
//!     (payments posted in batches; prints events/s, each acknowledged)

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: loadgen setup ADDR TOKEN LINKS | rate ADDR LINKS RATE SECONDS CONNECTIONS | verify ADDR TOKEN LINKS | events ADDR TOKEN EVENTS BATCH CONNECTIONS");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    assert!(
        addr.ip().is_loopback(),
        "the load generator only targets loopback addresses"
    );
    addr
}

fn code(i: usize) -> String {
    format!("lt-{i:07}")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

async fn call(
    tx: &mut Sender,
    method: &str,
    path: &str,
    token: &str,
    body: Option<String>,
) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    tx.ready().await.expect("connection ready");
    let resp = tx.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Runs `f(i)` for i in 0..n over `conns` keep-alive connections.
async fn fan_out<F, Fut>(addr: SocketAddr, n: usize, conns: usize, f: F)
where
    F: Fn(Sender, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = Sender> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let next = next.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                tx = f(tx, i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Posts `events` payments in batches of `batch` over `conns` connections
/// and reports the rate at which they were acknowledged (each batch's
/// answer means every event in it is durable).
async fn events(addr: SocketAddr, token: String, events: usize, batch: usize, conns: usize) {
    let batches = events.div_ceil(batch);
    let started = Instant::now();
    let token = Arc::new(token);
    let run = format!(
        "{:x}",
        std::process::id() as u64 ^ started.elapsed().as_nanos() as u64
    );
    fan_out(addr, batches, conns, move |mut tx, b| {
        let token = token.clone();
        let run = run.clone();
        async move {
            let items: Vec<String> = (b * batch..((b + 1) * batch).min(events))
                .map(|i| {
                    format!(
                        r#"{{"id":"lt-{run}-{i}","type":"payment","program":"krispcall","occurred_at":"2026-03-02T00:00:00Z","customer_id":"c{i}","invoice_id":"inv-{run}-{i}","currency":"USD","lines":[{{"kind":"subscription","amount":"40.00"}}]}}"#
                    )
                })
                .collect();
            let body = format!("[{}]", items.join(","));
            let (status, b) = call(&mut tx, "POST", "/api/v1/events", &token, Some(body)).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
            let out: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(out["accepted"].as_u64(), Some(items.len() as u64), "{out}");
            tx
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"events\": {events}, \"batch\": {batch}, \"connections\": {conns}, \"seconds\": {secs:.2}, \"events_per_second\": {:.0}}}",
        events as f64 / secs
    );
}

async fn setup(addr: SocketAddr, token: String, links: usize) {
    let mut tx = connect(addr).await;
    let (status, body) = call(
        &mut tx,
        "POST",
        "/api/v1/partners",
        &token,
        Some(r#"{"program":"krispcall","name":"Load Test","email":"load@test.example","website":"https://test.example"}"#.into()),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let partner: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let partner = partner["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let token = Arc::new(token);
    fan_out(addr, links, 16, move |mut tx, i| {
        let token = token.clone();
        let partner = partner.clone();
        async move {
            let body = format!(
                r#"{{"partner_id":"{partner}","destination":"https://krispcall.com/pricing","code":"{}"}}"#,
                code(i)
            );
            let (status, b) = call(&mut tx, "POST", "/api/v1/links", &token, Some(body)).await;
            assert!(status == 201 || status == 409, "{status} {}", String::from_utf8_lossy(&b));
            tx
        }
    })
    .await;
    println!(
        "{{\"links\": {links}, \"setup_seconds\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
}

/// Fixed-rate (open-loop) load: request i is due at `start + i / rate`, the
/// requests spread over `conns` keep-alive connections. A request's latency
/// runs from when it was due if its connection was still busy with the
/// previous one (the server's delay, which a closed-loop tool would hide),
/// otherwise from when it was sent (a late client timer is not the server's
/// fault). Bounded by `seconds` and by `rate * seconds` requests.
/// Open-loop load at `rate` requests a second; prints the latency
/// distribution as JSON. Requests slower than `SLOW_US` (µs, default 2000)
/// are counted, and listed in the file `SLOW_LOG` (when set) as lines of
/// "<wall-clock µs when due> <latency µs>".
async fn rate(addr: SocketAddr, links: usize, rate: u64, seconds: u64, conns: usize) {
    let total = rate * seconds;
    let slow_us: u32 = std::env::var("SLOW_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + Duration::from_secs(seconds) + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for c in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(addr).await;
            let mut rng =
                0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let mut lat = Vec::with_capacity((total / conns as u64 + 1) as usize);
            let mut slow: Vec<(u64, u32)> = Vec::new();
            // How late the generator itself sent each request: after it
            // was due and the connection was free. A stalled generator
            // core shows here, not as the server's latency.
            let mut gen_late = Vec::with_capacity(lat.capacity());
            let (mut redirects, mut other) = (0u64, 0u64);
            let mut free_at = start;
            let mut i = c as u64;
            while i < total {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                // Timers are millisecond-grained: sleep to within a
                // millisecond, then yield until due, so requests leave
                // evenly spaced instead of in bursts on each timer tick.
                if due > tokio::time::Instant::now() + Duration::from_millis(2) {
                    tokio::time::sleep_until(due - Duration::from_millis(1)).await;
                }
                while tokio::time::Instant::now() < due {
                    tokio::task::yield_now().await;
                }
                let sent = tokio::time::Instant::now();
                gen_late.push((sent - due.max(free_at)).as_micros() as u32);
                let from = if free_at > due { due } else { sent };
                let req = click_request(&mut rng, links);
                if tx.ready().await.is_err() {
                    break;
                }
                let Ok(resp) = tx.send_request(req).await else {
                    break;
                };
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                free_at = tokio::time::Instant::now();
                let us = (free_at - from).as_micros() as u32;
                lat.push(us);
                if us >= slow_us {
                    // When it was due (the wall clock, µs), to line up with
                    // the server's timeline log.
                    let late = tokio::time::Instant::now() - from;
                    let due_wall = std::time::SystemTime::now() - late;
                    slow.push((
                        due_wall
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_micros() as u64,
                        us,
                    ));
                }
                if status == 302 {
                    redirects += 1;
                } else {
                    other += 1;
                }
                i += conns as u64;
            }
            (lat, slow, gen_late, redirects, other)
        }));
    }
    let mut all = Vec::new();
    let mut slow = Vec::new();
    let mut gen_late = Vec::new();
    let (mut redirects, mut other) = (0, 0);
    for t in tasks {
        let (l, s, g, r, o) = t.await.unwrap();
        all.extend(l);
        slow.extend(s);
        gen_late.extend(g);
        redirects += r;
        other += o;
    }
    slow.sort_unstable();
    if let Ok(path) = std::env::var("SLOW_LOG") {
        let lines: String = slow.iter().map(|(at, us)| format!("{at} {us}\n")).collect();
        std::fs::write(path, lines).expect("write the slow-request log");
    }
    let elapsed = (tokio::time::Instant::now() - start).as_secs_f64();
    all.sort_unstable();
    gen_late.sort_unstable();
    let pct = |v: &[u32], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\": {}, \"redirects\": {redirects}, \"other_status\": {other}, \"seconds\": {elapsed:.2}, \"rps\": {:.0}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \"slow\": {}, \"slow_us\": {slow_us}, \"gen_late_p99_us\": {}, \"gen_late_p999_us\": {}, \"gen_late_max_us\": {}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(&all, 0.50),
        pct(&all, 0.99),
        pct(&all, 0.999),
        all.last().copied().unwrap_or(0),
        slow.len(),
        pct(&gen_late, 0.99),
        pct(&gen_late, 0.999),
        gen_late.last().copied().unwrap_or(0),
    );
}

/// One click as `loadtest/clicks.lua` sends it: a random link, a new visitor
/// (carrier-grade NAT space, on no data-centre list) through the trusted
/// proxy, the headers a desktop Firefox sends on a navigation.
fn click_request(rng: &mut u64, links: usize) -> Request<Full<Bytes>> {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let path = format!("/r/{}?utm_source=load", code(*rng as usize % links));
    let v = (*rng >> 20) as u32 & 0x003f_ffff;
    let visitor = format!("100.{}.{}.{}", 64 + (v >> 16), (v >> 8) & 255, v & 255);
    Request::get(path)
        .header("host", "127.0.0.1")
        .header("x-forwarded-for", visitor)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-language", "en-US,en;q=0.5")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "cross-site")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn verify(addr: SocketAddr, token: String, links: usize) {
    let total = Arc::new(AtomicU64::new(0));
    let sum = total.clone();
    let token = Arc::new(token);
    fan_out(addr, links, 16, move |mut tx, i| {
        let token = token.clone();
        let sum = sum.clone();
        async move {
            let (status, body) = call(
                &mut tx,
                "GET",
                &format!("/api/v1/links/{}", code(i)),
                &token,
                None,
            )
            .await;
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            sum.fetch_add(v["click_count"].as_u64().unwrap(), Ordering::Relaxed);
            tx
        }
    })
    .await;
    println!("{{\"clicks_on_disk\": {}}}", total.load(Ordering::Relaxed));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("events") => rt.block_on(events(
            loopback(arg(&args, 2)),
            arg(&args, 3),
            arg(&args, 4),
            arg(&args, 5),
            arg(&args, 6),
        )),
        Some("setup") => rt.block_on(setup(loopback(arg(&args, 2)), arg(&args, 3), arg(&args, 4))),
        Some("rate") => rt.block_on(rate(
            loopback(arg(&args, 2)),
            arg(&args, 3),
            arg(&args, 4),
            arg(&args, 5),
            arg(&args, 6),
        )),
        Some("verify") => rt.block_on(verify(
            loopback(arg(&args, 2)),
            arg(&args, 3),
            arg(&args, 4),
        )),
        _ => usage(),
    }
}
