//! Webhook delivery throughput from the outbox (issue 17): how many signed
//! deliveries a second refedge sends to a receiver that answers at once.
//!
//! Starts the release server on a fresh data dir and a receiver of its own
//! on loopback, registers a webhook endpoint for `referral.created` and
//! `commission.created`, then measures two things:
//!
//! 1. **live**: EVENTS signups (each a referral through a coupon) and as
//!    many payments (each a commission) posted in batches; deliveries a
//!    second from the first post to the last delivery received, and how
//!    long after the last event was accepted the last delivery arrived;
//! 2. **backlog**: the same again while the endpoint is disabled (its first
//!    attempt fails and `disable_after_failures = 1`), so every delivery
//!    waits in the outbox; then the receiver answers and the endpoint is
//!    enabled: the enable call's time and the drain's deliveries a second.
//!
//! Targets 127.0.0.1 only, bounded by EVENTS, stops the server it started
//! by its pid. Usage: outbox BINARY EVENTS OUT_JSON

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "client.rs"]
mod client;
use client::{send, Server};

const TOKEN: &str = "outbox-bench-admin-token-0123456789";
/// Events per `POST /api/v1/events` (the API's limit is 1,000).
const BATCH: usize = 500;

/// What the receiver saw: arrival times, and whether it answers 200.
struct Seen {
    ok: AtomicBool,
    arrivals: Mutex<Vec<Instant>>,
    /// Event ids answered 200 (an id seen twice is a duplicate: allowed by
    /// at-least-once, but worth knowing).
    ids: Mutex<std::collections::HashSet<String>>,
    duplicates: AtomicUsize,
}

async fn receiver(seen: Arc<Seen>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let seen = seen.clone();
                    let id = req
                        .headers()
                        .get("x-refedge-event-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    async move {
                        let status = if seen.ok.load(Ordering::SeqCst) {
                            if !seen.ids.lock().unwrap().insert(id) {
                                seen.duplicates.fetch_add(1, Ordering::SeqCst);
                            }
                            seen.arrivals.lock().unwrap().push(Instant::now());
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, _, out) = send(addr, method, path, &h, &body).await;
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

async fn must(addr: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let (status, v) = api(addr, method, path, body).await;
    assert!(status < 300, "{method} {path}: {status} {v}");
    v
}

/// Posts `n` signups through `coupon` and a payment for each, customers
/// named from `tag`; returns the `seq` of the last event.
async fn post_events(addr: SocketAddr, tag: &str, coupon: &str, n: usize) -> u64 {
    let at =
        |s: usize| (chrono::Utc::now() + chrono::Duration::milliseconds(s as i64)).to_rfc3339();
    let mut last = 0;
    for kind in ["signup", "payment"] {
        for start in (0..n).step_by(BATCH) {
            let batch: Vec<Value> = (start..(start + BATCH).min(n))
                .map(|i| {
                    let customer = format!("cus_{tag}_{i}");
                    if kind == "signup" {
                        json!({"id": format!("s_{tag}_{i}"), "type": "signup", "program": "krispcall",
                               "occurred_at": at(i), "customer": {"id": customer,
                               "email": format!("buyer{i}@{tag}{i}.example")},
                               "attribution": {"coupon": coupon}})
                    } else {
                        json!({"id": format!("p_{tag}_{i}"), "type": "payment", "program": "krispcall",
                               "occurred_at": at(n + i), "customer_id": customer,
                               "invoice_id": format!("in_{tag}_{i}"), "currency": "USD",
                               "lines": [{"kind": "subscription", "amount": "30.00",
                                          "plan": "standard", "unit_price": "15.00", "quantity": 2}]})
                    }
                })
                .collect();
            let v = must(addr, "POST", "/api/v1/events", Value::Array(batch)).await;
            assert_eq!(v["accepted"], batch_len(start, n), "{v}");
            last = v["last_seq"].as_u64().unwrap_or(last);
        }
    }
    last
}

fn batch_len(start: usize, n: usize) -> usize {
    (start + BATCH).min(n) - start
}

async fn wait_for(seen: &Seen, want: usize, limit: Duration) {
    let t0 = Instant::now();
    while seen.ids.lock().unwrap().len() < want {
        assert!(
            t0.elapsed() < limit,
            "{} of {want} deliveries after {limit:?}",
            seen.ids.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rate(arrivals: &[Instant], from: Instant) -> f64 {
    let last = *arrivals.iter().max().unwrap();
    arrivals.len() as f64 / (last - from).as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(events), Some(out)) = (
        args.get(1),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3),
    ) else {
        eprintln!("usage: outbox BINARY EVENTS OUT_JSON");
        std::process::exit(2)
    };
    let seen = Arc::new(Seen {
        ok: AtomicBool::new(true),
        arrivals: Mutex::new(Vec::new()),
        ids: Mutex::new(Default::default()),
        duplicates: AtomicUsize::new(0),
    });
    let rx = receiver(seen.clone()).await;
    let data = std::env::temp_dir().join(format!("refedge-outbox-{}", std::process::id()));
    let server = Server::start(
        binary,
        &data,
        TOKEN,
        &[
            ("REFEDGE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
            ("REFEDGE_WEBHOOKS__DISABLE_AFTER_FAILURES", "1"),
            // Attempts that failed beside the first are parked within the
            // backlog phase's wait, not 30 s later.
            ("REFEDGE_WEBHOOKS__RETRY_BASE_MS", "1000"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let addr = server.addr;
    let partner = must(
        addr,
        "POST",
        "/api/v1/partners",
        json!({"program": "krispcall", "name": "Outbox bench", "email": "bench@partner.example",
               "website": "https://partner.example"}),
    )
    .await;
    let pid = partner["id"].as_str().unwrap().to_string();
    must(
        addr,
        "POST",
        "/api/v1/coupons",
        json!({"code": "BENCH", "partner_id": pid}),
    )
    .await;
    let hook = must(
        addr,
        "POST",
        "/api/v1/webhooks",
        json!({"url": format!("http://{rx}/hook"),
               "events": ["referral.created", "commission.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let want = 2 * events;
    let limit = Duration::from_secs(600);

    // 1. Live: deliveries as the calculator applies the events.
    let started = Instant::now();
    post_events(addr, "live", "BENCH", events).await;
    let accepted = started.elapsed();
    wait_for(&seen, want, limit).await;
    let live: Vec<Instant> = std::mem::take(&mut *seen.arrivals.lock().unwrap());
    let live_rate = rate(&live, started);
    let live_lag = (*live.iter().max().unwrap() - started).saturating_sub(accepted);
    eprintln!(
        "live: {want} deliveries at {live_rate:.0}/s; events accepted in {accepted:.1?}, \
         the last delivery {live_lag:.1?} after"
    );

    // 2. Backlog: the endpoint disabled by its first failure, everything
    // else waiting in the outbox; then enabled.
    seen.ok.store(false, Ordering::SeqCst);
    let live_dups = seen.duplicates.swap(0, Ordering::SeqCst);
    seen.ids.lock().unwrap().clear();
    let last = post_events(addr, "backlog", "BENCH", events).await;
    must(
        addr,
        "GET",
        &format!("/api/v1/partners/{pid}/balance?wait_for={last}"),
        Value::Null,
    )
    .await;
    let t0 = Instant::now();
    loop {
        let v = must(
            addr,
            "GET",
            &format!("/api/v1/webhooks/{hook_id}"),
            Value::Null,
        )
        .await;
        if v["enabled"] == false {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "not disabled: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the task park what was due (each delivery is looked at once).
    tokio::time::sleep(Duration::from_secs(5)).await;
    seen.ok.store(true, Ordering::SeqCst);
    let enabling = Instant::now();
    must(
        addr,
        "POST",
        &format!("/api/v1/webhooks/{hook_id}/enable"),
        Value::Null,
    )
    .await;
    let enable_took = enabling.elapsed();
    wait_for(&seen, want, limit).await;
    let drained: Vec<Instant> = std::mem::take(&mut *seen.arrivals.lock().unwrap());
    let drain_rate = rate(&drained, enabling);
    eprintln!(
        "backlog: enable took {enable_took:.1?}; {} deliveries drained at {drain_rate:.0}/s",
        drained.len()
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    let backlog_dups = seen.duplicates.load(Ordering::SeqCst);
    eprintln!("duplicates: live {live_dups}, backlog {backlog_dups}");
    let report = json!({
        "events": events, "deliveries_per_phase": want,
        "live": {"deliveries_per_s": live_rate, "events_accepted_s": accepted.as_secs_f64(),
                 "last_delivery_after_accepted_s": live_lag.as_secs_f64(), "duplicates": live_dups},
        "backlog": {"enable_s": enable_took.as_secs_f64(), "deliveries": drained.len(),
                    "deliveries_per_s": drain_rate, "duplicates": backlog_dups},
    });
    std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {out}");
}
