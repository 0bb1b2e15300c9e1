//! A webhook receiver on loopback for the tests: records every request
//! and answers as told (failing, silent, or `200`).

use http_body_util::BodyExt;
use hyper::service::service_fn;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers.
pub const FAIL: u8 = 0;
pub const SILENT: u8 = 1;
pub const OK: u8 = 2;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub path: String,
    pub signature: Option<String>,
    pub event_id: Option<String>,
    pub body: String,
}

/// A webhook receiver on loopback.
pub struct Receiver {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FAIL));
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let (m, g) = (mode.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (m, g) = (m.clone(), g.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (m, g) = (m.clone(), g.clone());
                        async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .map(String::from)
                            };
                            let path = req.uri().to_string();
                            let (signature, event_id) =
                                (header("x-refedge-signature"), header("x-refedge-event-id"));
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            g.lock().unwrap().push(Got {
                                at: Instant::now(),
                                path,
                                signature,
                                event_id,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            let status = match m.load(Ordering::SeqCst) {
                                OK => 200,
                                SILENT => {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    200
                                }
                                _ => 500,
                            };
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"{}"),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, mode, got }
    }

    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Forgets what it got so far.
    pub fn clear(&self) {
        self.got.lock().unwrap().clear();
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until `pred` holds for what was received.
    pub async fn until(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let t0 = Instant::now();
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what}: got {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn of_type<'a>(got: &'a [Got], kind: &str) -> Vec<&'a Got> {
    got.iter()
        .filter(|g| serde_json::from_str::<Value>(&g.body).is_ok_and(|v| v["type"] == kind))
        .collect()
}
