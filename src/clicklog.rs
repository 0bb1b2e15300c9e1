//! The click log's write path: a bounded in-memory queue and one writer task
//! that group-commits clicks to the store (one flush per batch, every
//! `flush_interval_ms` or `batch_max` clicks, whichever comes first).
//!
//! The redirect only ever calls [`ClickLog::enqueue`], which never waits: if
//! the queue is full the click is dropped and counted, and the visitor is
//! redirected all the same. The raw visitor IP stops here: the writer turns
//! it into a keyed hash and a network prefix before anything reaches disk.

use crate::config::ClickLogConfig;
use crate::metrics::Metrics;
use crate::model::{Click, ClickRow, StoredVisitor};
use crate::net::{ip_hash_bytes, visitor_prefix};
use crate::store::{Store, StoreError};
use ring::hmac;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Requests to the writer that must not wait behind the commit window.
enum Control {
    /// Answered once everything queued before it is on disk.
    Barrier(oneshot::Sender<()>),
    /// Drain, write, and end the writer.
    Stop,
}

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct ClickLog {
    /// Sending side of the bounded click queue. The writer only ever
    /// `try_recv`s it, so a send never has a parked task to wake: a click
    /// costs no syscall on the redirect path.
    tx: mpsc::Sender<Click>,
    /// Barriers and stop.
    control: mpsc::UnboundedSender<Control>,
    /// Wakes the writer early when a full batch is waiting.
    batch_ready: Arc<Notify>,
    /// Clicks per batch (the early-wake threshold).
    batch_max: usize,
    /// Shared metric families.
    metrics: Arc<Metrics>,
    /// False while the writer's last batch failed.
    healthy: Arc<AtomicBool>,
}

/// How the writer turns served [`Click`]s into rows on disk: the visitor
/// IP becomes a keyed hash and a network prefix, and nothing else of it
/// is kept.
pub struct Anonymiser {
    /// Keys the IP hash.
    ip_key: hmac::Key,
    /// IPv4 prefix bits kept.
    v4_bits: u8,
    /// IPv6 prefix bits kept.
    v6_bits: u8,
}

impl Anonymiser {
    /// Hashes under `ip_key`, keeps `/v4_bits` and `/v6_bits` prefixes.
    pub fn new(ip_key: hmac::Key, v4_bits: u8, v6_bits: u8) -> Self {
        Self {
            ip_key,
            v4_bits,
            v6_bits,
        }
    }

    /// Writes a batch of served clicks as one durable sled batch: rows
    /// borrowed from the clicks, each IP replaced by its keyed hash and its
    /// network (bytes: nothing is formatted here).
    pub fn write(&self, store: &Store, clicks: &[Click]) -> Result<(), StoreError> {
        let rows: Vec<ClickRow<'_>> = clicks
            .iter()
            .map(|c| ClickRow {
                id: c.id,
                link: &c.link,
                partner_id: &c.partner_id,
                program: &c.program,
                method: c.method,
                visitor: StoredVisitor::Pseudonym {
                    hash: ip_hash_bytes(&self.ip_key, c.ip),
                    network: visitor_prefix(c.ip, self.v4_bits, self.v6_bits),
                },
                evidence: c.evidence.fields(),
                cookie: c.cookie,
                prior_token_error: c.prior_token_error,
                verdict: c.verdict,
                flags: &c.flags,
            })
            .collect();
        store.write_clicks(&rows)
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
        let (control, control_rx) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let batch_ready = Arc::new(Notify::new());
        let writer = Writer {
            rx,
            control: control_rx,
            batch_ready: batch_ready.clone(),
            store,
            anon: Arc::new(Anonymiser::new(ip_key, cfg.ip_prefix_v4, cfg.ip_prefix_v6)),
            batch_max: cfg.batch_max,
            interval: Duration::from_millis(cfg.flush_interval_ms),
            metrics: metrics.clone(),
            healthy: healthy.clone(),
        };
        let handle = tokio::spawn(writer.run());
        (
            Self {
                tx,
                control,
                batch_ready,
                batch_max: cfg.batch_max,
                metrics,
                healthy,
            },
            handle,
        )
    }

    /// Queues a click without waiting. Returns false (and counts the drop)
    /// when the queue is full or the writer has stopped.
    pub fn enqueue(&self, click: Click) -> bool {
        match self.tx.try_send(click) {
            Ok(()) => {
                self.metrics.click_queue_depth.inc();
                let depth = self.tx.max_capacity() - self.tx.capacity();
                if depth == self.batch_max {
                    self.batch_ready.notify_one();
                }
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
        if self.control.send(Control::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the writer is running and its last batch succeeded.
    pub fn healthy(&self) -> bool {
        !self.control.is_closed() && self.healthy.load(Ordering::Relaxed)
    }

    /// Asks the writer to write everything queued and stop.
    pub async fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }
}

struct Writer {
    rx: mpsc::Receiver<Click>,
    control: mpsc::UnboundedReceiver<Control>,
    batch_ready: Arc<Notify>,
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
            // One commit window: wake on the timer, a full batch, or a
            // control request, whichever comes first.
            let mut barriers = Vec::new();
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.batch_ready.notified() => {}
                c = self.control.recv() => match c {
                    Some(Control::Barrier(b)) => barriers.push(b),
                    Some(Control::Stop) | None => stopping = true,
                },
            }
            while let Ok(c) = self.control.try_recv() {
                match c {
                    Control::Barrier(b) => barriers.push(b),
                    Control::Stop => stopping = true,
                }
            }
            if stopping {
                // Nothing new can arrive once the queue is closed.
                self.rx.close();
            }
            self.drain().await;
            for b in barriers {
                let _ = b.send(());
            }
        }
        while let Ok(c) = self.control.try_recv() {
            if let Control::Barrier(b) = c {
                let _ = b.send(());
            }
        }
    }

    /// Writes everything queued right now, `batch_max` clicks at a time.
    async fn drain(&mut self) {
        loop {
            let waiting = self.rx.len().min(self.batch_max);
            if waiting == 0 {
                return;
            }
            // The clicks are there: `recv_many` takes them in one go
            // (one semaphore update), without waiting.
            let mut batch = Vec::with_capacity(waiting);
            self.rx.recv_many(&mut batch, waiting).await;
            self.metrics.click_queue_depth.sub(batch.len() as i64);
            let full = batch.len() == self.batch_max;
            self.write(batch).await;
            if !full {
                return;
            }
        }
    }
    /// Writes one batch, retrying a failing disk a few times before giving
    /// the batch up (counted as dropped, reason `write_failed`).
    async fn write(&self, clicks: Vec<Click>) {
        let n = clicks.len();
        let started = std::time::Instant::now();
        // One trip to the blocking pool per batch: anonymise, write, and
        // free the clicks there; they come back only for a retry.
        let mut failed = self.write_blocking(clicks).await;
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=5 {
            let Some((clicks, e)) = failed else {
                self.metrics
                    .batch_flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.batch_size.observe(n as f64);
                self.metrics.clicks_written.inc_by(n as u64);
                self.healthy.store(true, Ordering::Relaxed);
                return;
            };
            self.metrics.batch_errors.inc();
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, attempt, clicks = n, "click batch write failed");
            if attempt == 5 {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            failed = self.write_blocking(clicks).await;
        }
        self.metrics
            .clicks_dropped
            .with_label_values(&["write_failed"])
            .inc_by(n as u64);
    }

    /// Writes a batch on the blocking pool; on failure hands the clicks
    /// back for a retry (on success they are freed there).
    async fn write_blocking(&self, clicks: Vec<Click>) -> Option<(Vec<Click>, StoreError)> {
        let (store, anon) = (self.store.clone(), self.anon.clone());
        tokio::task::spawn_blocking(move || anon.write(&store, &clicks).err().map(|e| (clicks, e)))
            .await
            .expect("anonymiser and store do not panic")
    }
}
