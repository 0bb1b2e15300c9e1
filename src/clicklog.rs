//! The click log's write path: a bounded in-memory queue and one writer task
//! that group-commits clicks to the store (one flush per batch, every
//! `flush_interval_ms` or `batch_max` clicks, whichever comes first).
//!
//! The redirect only ever calls [`ClickLog::enqueue`], which never waits: if
//! the queue is full the click is dropped and counted, and the visitor is
//! redirected all the same. The raw visitor IP stops here: the writer turns
//! it into a keyed hash and a network prefix before anything reaches disk.

use crate::clock::ms_to_datetime;
use crate::config::ClickLogConfig;
use crate::metrics::Metrics;
use crate::model::{Click, ClickRecord};
use crate::net::visitor_prefix;
use crate::store::Store;
use ring::hmac;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

enum Msg {
    Click(Box<Click>),
    /// Answered once everything queued before it is on disk.
    Barrier(oneshot::Sender<()>),
    /// Drain, write, and end the writer.
    Stop,
}

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct ClickLog {
    /// Sending side of the bounded queue.
    tx: mpsc::Sender<Msg>,
    /// Shared metric families.
    metrics: Arc<Metrics>,
    /// False while the writer's last batch failed.
    healthy: Arc<AtomicBool>,
}

/// How the writer turns a [`Click`] into a [`ClickRecord`].
struct Anonymiser {
    /// Keys the IP hash.
    ip_key: hmac::Key,
    /// IPv4 prefix bits kept.
    v4_bits: u8,
    /// IPv6 prefix bits kept.
    v6_bits: u8,
}

impl Anonymiser {
    fn ip_hash(&self, ip: IpAddr) -> String {
        let ip = crate::net::canonical(ip);
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let tag = hmac::sign(&self.ip_key, &bytes);
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn record(&self, c: Click) -> ClickRecord {
        ClickRecord {
            id: c.id,
            at: ms_to_datetime(c.id.timestamp_ms()),
            ip_hash: self.ip_hash(c.ip),
            ip_prefix: visitor_prefix(c.ip, self.v4_bits, self.v6_bits).to_string(),
            link: c.link,
            partner_id: c.partner_id,
            program: c.program,
            method: c.method.to_string(),
            user_agent: c.user_agent,
            referer: c.referer,
            query: c.query,
            headers: c.headers,
            cookie: c.cookie,
            prior_token_error: c.prior_token_error.map(String::from),
        }
    }
}

impl ClickLog {
    /// Starts the writer task on the current runtime.
    pub fn start(
        store: Store,
        ip_key: hmac::Key,
        cfg: &ClickLogConfig,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            rx,
            store,
            anon: Arc::new(Anonymiser {
                ip_key,
                v4_bits: cfg.ip_prefix_v4,
                v6_bits: cfg.ip_prefix_v6,
            }),
            batch_max: cfg.batch_max,
            interval: Duration::from_millis(cfg.flush_interval_ms),
            metrics: metrics.clone(),
            healthy: healthy.clone(),
        };
        let handle = tokio::spawn(writer.run());
        (
            Self {
                tx,
                metrics,
                healthy,
            },
            handle,
        )
    }

    /// Queues a click without waiting. Returns false (and counts the drop)
    /// when the queue is full or the writer has stopped.
    pub fn enqueue(&self, click: Click) -> bool {
        match self.tx.try_send(Msg::Click(Box::new(click))) {
            Ok(()) => {
                self.metrics.click_queue_depth.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .clicks_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics
                    .clicks_dropped
                    .with_label_values(&["stopped"])
                    .inc();
                false
            }
        }
    }

    /// Waits until every click queued before this call is on disk.
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the writer is running and its last batch succeeded.
    pub fn healthy(&self) -> bool {
        !self.tx.is_closed() && self.healthy.load(Ordering::Relaxed)
    }

    /// Asks the writer to write everything queued and stop.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }
}

struct Writer {
    rx: mpsc::Receiver<Msg>,
    store: Store,
    anon: Arc<Anonymiser>,
    batch_max: usize,
    interval: Duration,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    async fn run(mut self) {
        let mut stopping = false;
        while !stopping {
            let Some(first) = self.rx.recv().await else {
                break;
            };
            let mut clicks = Vec::new();
            let mut barriers = Vec::new();
            let take =
                |m: Msg, clicks: &mut Vec<Click>, barriers: &mut Vec<_>, stopping: &mut bool| {
                    match m {
                        Msg::Click(c) => clicks.push(*c),
                        Msg::Barrier(b) => barriers.push(b),
                        Msg::Stop => *stopping = true,
                    }
                };
            take(first, &mut clicks, &mut barriers, &mut stopping);
            let deadline = Instant::now() + self.interval;
            // Fill the batch: take what is already queued; then, unless a
            // barrier or stop wants it now, wait out the commit window.
            while clicks.len() < self.batch_max {
                let next = match self.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) if stopping || !barriers.is_empty() => None,
                    Err(_) => tokio::time::timeout_at(deadline, self.rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                match next {
                    Some(m) => take(m, &mut clicks, &mut barriers, &mut stopping),
                    None => break,
                }
            }
            self.metrics.click_queue_depth.sub(clicks.len() as i64);
            if !clicks.is_empty() {
                self.write(clicks).await;
            }
            for b in barriers {
                let _ = b.send(());
            }
        }
        // Close, then write whatever raced in before the close.
        self.rx.close();
        let mut rest = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Click(c) => rest.push(*c),
                Msg::Barrier(b) => {
                    let _ = b.send(());
                }
                Msg::Stop => {}
            }
        }
        self.metrics.click_queue_depth.sub(rest.len() as i64);
        for chunk in rest.chunks(self.batch_max) {
            self.write(chunk.to_vec()).await;
        }
    }

    /// Writes one batch, retrying a failing disk a few times before giving
    /// the batch up (counted as dropped, reason `write_failed`).
    async fn write(&self, clicks: Vec<Click>) {
        let n = clicks.len();
        let anon = self.anon.clone();
        let records: Arc<Vec<ClickRecord>> = Arc::new(
            tokio::task::spawn_blocking(move || {
                clicks.into_iter().map(|c| anon.record(c)).collect()
            })
            .await
            .expect("anonymiser does not panic"),
        );
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=5 {
            let store = self.store.clone();
            let batch = records.clone();
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || store.write_clicks(&batch))
                .await
                .expect("store does not panic");
            match result {
                Ok(()) => {
                    self.metrics
                        .batch_flush_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(n as f64);
                    self.metrics.clicks_written.inc_by(n as u64);
                    self.healthy.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    self.metrics.batch_errors.inc();
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::error!(error = %e, attempt, clicks = n, "click batch write failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        self.metrics
            .clicks_dropped
            .with_label_values(&["write_failed"])
            .inc_by(n as u64);
    }
}
