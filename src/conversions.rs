//! Conversions: ingestion of merchant events (attribution resolved, then
//! appended durably and idempotently to the event log) and the calculator
//! task that consumes the log in batches from a persisted cursor.
//!
//! The calculator's state is snapshotted with the seq it covers, in one
//! value; on start the snapshot is loaded and the events after it applied,
//! so a restart (or `kill -9`) resumes exactly and never applies an event
//! twice.
//!
//! One event can never stop the others: an event the calculator fails on
//! is quarantined (recorded durably, listed by `GET /api/v1/problems`,
//! counted), the state is rebuilt without it from the snapshot and the log,
//! and the next event is applied. A restart skips quarantined events.

use crate::clock::ms_to_datetime;
use crate::commission::calculator::State;
use crate::commission::event::{ClickSeen, Resolved};
use crate::commission::quarantine::{try_apply, Quarantined};
use crate::commission::{Calculator, Event, ProgramBook};
use crate::store::events::{Appended, NewEvent, StoredEvent};
use crate::store::{Store, StoreError};
use crate::token::Keyring;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// What a signup's attribution token says, checked against the keyring
/// (signature and key only: the window is judged against the signup's own
/// time by the calculator).
pub fn resolve_token(token: &str, keyring: &Keyring) -> Resolved {
    match keyring.verify(token, i64::MIN + 1) {
        Ok(c) => Resolved {
            click: Some(ClickSeen {
                id: c.click_id.to_string(),
                partner_id: c.partner_id.into_owned(),
                occurred_at: ms_to_datetime(c.issued_at * 1000),
                program: Some(c.program.into_owned()),
                link: Some(c.link.into_owned()),
                flags: Vec::new(),
            }),
            error: None,
        },
        Err(e) => Resolved {
            click: None,
            error: Some(format!("attribution token refused: {}", e.label())),
        },
    }
}

/// A click as money sees it.
pub fn click_seen(c: crate::model::ClickRecord) -> ClickSeen {
    ClickSeen {
        id: c.id.to_string(),
        partner_id: c.partner_id,
        occurred_at: c.at,
        program: Some(c.program),
        link: Some(c.link),
        flags: c
            .flags
            .iter()
            .map(|f| f.reason.label().to_string())
            .collect(),
    }
}

/// Events applied per calculator batch.
const BATCH: usize = 2000;
/// Snapshot at least this often when anything changed (and after
/// `snapshot_every_events` applied events).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Snapshot {
    cursor: u64,
    state: State,
}

/// The money side of the server.
pub struct Conversions {
    /// Event log and snapshots.
    store: Store,
    /// The calculator; written only by the calculator task.
    calc: RwLock<Calculator>,
    /// Highest seq applied.
    applied: watch::Sender<u64>,
    /// Wakes the calculator task after an append.
    appended: Notify,
    /// Asks the task to finish.
    stop: watch::Sender<bool>,
    /// Events between snapshots.
    snapshot_events: u64,
    /// Where rejected signups are counted.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The programs, to rebuild a fresh calculator after a failed event.
    books: Vec<ProgramBook>,
    /// Events set aside, oldest first; their seqs are skipped on replay.
    quarantined: RwLock<Vec<Quarantined>>,
    /// When the calculator last finished a batch or found nothing to do;
    /// readiness calls it stalled when events wait and this grows old.
    progress: Mutex<Instant>,
    /// The last event-log write's error, while it is the last word.
    write_failure: Mutex<Option<String>>,
    /// Where what the events did is queued for webhooks and postbacks.
    outbox: std::sync::OnceLock<Arc<crate::webhooks::Outbox>>,
}

/// Why the calculator is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the calculator is {lag} events behind the log (bound {bound})")]
    Behind { lag: u64, bound: u64 },
    #[error("the calculator has applied nothing for {seconds} s with {lag} events waiting")]
    Stalled { seconds: u64, lag: u64 },
    #[error("the event log cannot be read: {0}")]
    Log(String),
}

impl Conversions {
    /// Sends what applied events did to the webhook outbox (set once,
    /// before [`Conversions::start`]).
    pub fn set_outbox(&self, outbox: Arc<crate::webhooks::Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// Loads the snapshot (if any); call [`Conversions::start`] to run.
    pub fn open(
        store: Store,
        books: Vec<ProgramBook>,
        snapshot_events: u64,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Arc<Self>, StoreError> {
        let (calc, cursor) = from_snapshot(&store, &books)?;
        let quarantined = store.quarantined()?;
        Ok(Arc::new(Self {
            store,
            calc: RwLock::new(calc),
            applied: watch::channel(cursor).0,
            appended: Notify::new(),
            stop: watch::channel(false).0,
            snapshot_events,
            metrics,
            books,
            quarantined: RwLock::new(quarantined),
            progress: Mutex::new(Instant::now()),
            write_failure: Mutex::new(None),
            outbox: std::sync::OnceLock::new(),
        }))
    }

    /// Starts the calculator task.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    /// Reads the calculator. The writer catches every failure inside its
    /// lock, so the state behind a poisoned lock (a reader's own panic) is
    /// still whole and is read as it is.
    pub fn read<R>(&self, f: impl FnOnce(&Calculator) -> R) -> R {
        f(&self.calc.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` with the calculator mutable (dry-run payouts).
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut Calculator) -> R) -> R {
        f(&mut self.calc.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// The store was reopened and took a write: the last failure no longer
    /// speaks for the event log.
    pub fn store_healed(&self) {
        *self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The error of the last event-log write, when it failed.
    pub fn write_failure(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Events the calculator failed on and set aside, oldest first.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the calculator keeps up: behind the log by at most
    /// `max_lag` events, and not stalled (events waiting, none applied for
    /// `stall_after`).
    pub fn readiness(&self, max_lag: u64, stall_after: Duration) -> Result<(), NotReady> {
        let last = self
            .store
            .last_event_seq()
            .map_err(|e| NotReady::Log(e.to_string()))?;
        let lag = last.saturating_sub(self.applied());
        if let Some(m) = &self.metrics {
            m.calculator_lag.set(lag as i64);
        }
        if lag > max_lag {
            return Err(NotReady::Behind {
                lag,
                bound: max_lag,
            });
        }
        let idle = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if lag > 0 && idle > stall_after {
            return Err(NotReady::Stalled {
                seconds: idle.as_secs(),
                lag,
            });
        }
        Ok(())
    }

    /// Highest seq applied so far.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The newest seq in the event log.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.store.last_event_seq()
    }

    /// Waits until `seq` is applied; false on timeout.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|&a| a >= seq)).await;
        reached.is_ok_and(|r| r.is_ok())
    }

    /// Appends events durably (blocking: call off the request task).
    pub fn ingest(
        &self,
        items: Vec<NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Appended>, StoreError> {
        let result = self.store.append_events(items, now);
        *self
            .write_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            result.as_ref().err().map(ToString::to_string);
        if result.is_err() {
            if let Some(m) = &self.metrics {
                m.store_write_failures.with_label_values(&["events"]).inc();
            }
        }
        let out = result?;
        self.appended.notify_one();
        Ok(out)
    }

    /// Appends events replicated from the cluster's stream, moving the
    /// stream cursor to `upto` (blocking).
    pub fn ingest_replicated(
        &self,
        items: Vec<crate::store::events::Replicated>,
        upto: u64,
    ) -> Result<usize, StoreError> {
        let n = self.store.append_replicated(items, upto)?;
        self.appended.notify_one();
        Ok(n)
    }

    /// Applies what is left and saves a final snapshot.
    pub async fn stop(&self, task: tokio::task::JoinHandle<()>) {
        let _ = self.stop.send(true);
        self.appended.notify_one();
        let _ = task.await;
    }

    fn snapshot(&self) -> Result<(), StoreError> {
        let bytes = {
            let calc = self.calc.read().unwrap_or_else(PoisonError::into_inner);
            serde_json::to_vec(&SnapshotRef {
                cursor: self.applied(),
                state: &calc.state,
            })
            .expect("state serialises")
        };
        self.store.save_calc_snapshot(&bytes)
    }

    async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut since_snapshot = 0u64;
        let mut last_snapshot = Instant::now();
        loop {
            let cursor = self.applied();
            let store = self.store.clone();
            // The head is read first: when nothing is found after the
            // cursor, everything up to it was read (a replicated log skips
            // the stream's repeats, leaving gaps, even at its end).
            let head = self.store_last_seq();
            let batch = match tokio::task::spawn_blocking(move || store.events_after(cursor, BATCH))
                .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) if *stop.borrow() => {
                    tracing::error!(error = %e, "stopping with the event log unreadable; the calculator resumes from its snapshot at the next start");
                    return;
                }
                Ok(Err(e)) if e.is_io() => {
                    tracing::warn!(error = %e, "the event log cannot be read now; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the event log failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "event reader panicked");
                    return;
                }
            };
            if batch.is_empty() && head > cursor {
                self.applied.send_replace(head);
            }
            if let Some(last) = batch.last().map(|e| e.seq) {
                let me = self.clone();
                let n = batch.len() as u64;
                match tokio::task::spawn_blocking(move || me.apply_batch(&batch)).await {
                    Ok(()) => {}
                    Err(e) => {
                        // apply_batch catches the calculator's failures; a
                        // panic here is refedge's own bookkeeping failing.
                        tracing::error!(error = %e, "calculator batch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                self.applied.send_replace(last);
                since_snapshot += n;
                if let Some(m) = &self.metrics {
                    m.calculator_lag
                        .set(self.store_last_seq().saturating_sub(last) as i64);
                }
            }
            *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            let stopping = *stop.borrow();
            let due = since_snapshot >= self.snapshot_events
                || (since_snapshot > 0 && last_snapshot.elapsed() >= SNAPSHOT_EVERY);
            let caught_up = self.applied() >= self.store_last_seq();
            if due || (stopping && caught_up && since_snapshot > 0) {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.snapshot()).await {
                    Ok(Ok(())) => {
                        since_snapshot = 0;
                        last_snapshot = Instant::now();
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "calculator snapshot failed"),
                    Err(e) => tracing::error!(error = %e, "snapshot task panicked"),
                }
            }
            if stopping && caught_up {
                return;
            }
            if caught_up {
                tokio::select! {
                    _ = self.appended.notified() => {}
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                }
            }
        }
    }

    /// Applies a batch under the write lock. An event the calculator fails
    /// on is quarantined and the state rebuilt without it; the batch goes on.
    fn apply_batch(&self, batch: &[StoredEvent]) {
        let mut calc = self.calc.write().unwrap_or_else(PoisonError::into_inner);
        let before = calc.state.rejections.len();
        let mut notices = Vec::new();
        for e in batch {
            if self.is_quarantined(e.seq) {
                continue;
            }
            // An event received too long ago is told to no one (see
            // `Outbox::is_fresh`).
            let marks = self
                .outbox
                .get()
                .filter(|o| o.is_fresh(e.received_at))
                .map(|_| crate::webhooks::marks(&calc));
            let Err(error) = try_apply(&mut calc, &e.id, &e.event) else {
                if let Some(m) = &marks {
                    notices.extend(
                        crate::webhooks::notices(m, &calc, e.seq, &e.event)
                            .into_iter()
                            .map(|n| (e.seq, n)),
                    );
                }
                continue;
            };
            let q = Quarantined {
                seq: Some(e.seq),
                event_id: e.id.clone(),
                program: e.event.program().map(String::from),
                error,
                at: e.received_at,
            };
            tracing::error!(
                seq = e.seq,
                event_id = %q.event_id,
                program = q.program.as_deref().unwrap_or("-"),
                error = %q.error,
                "event quarantined: the calculator failed on it; the others go on"
            );
            if let Some(m) = &self.metrics {
                m.events_quarantined
                    .with_label_values(&[q.program.as_deref().unwrap_or("none")])
                    .inc();
            }
            if let Err(err) = self.store.quarantine(&q) {
                // Still skipped in this process; after a restart it fails
                // again and is quarantined again.
                tracing::error!(error = %err, seq = e.seq, "saving the quarantine record failed");
            }
            self.quarantined
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(q);
            *calc = self.rebuild_before(e.seq);
        }
        if let Some(outbox) = self.outbox.get() {
            // Queued before the snapshot that covers these events is
            // written (its flush makes them durable); a replay queues
            // nothing twice.
            use crate::clock::Clock;
            if let Err(err) = outbox.enqueue(&notices, crate::clock::SystemClock.now()) {
                tracing::error!(error = %err, "queueing webhook deliveries failed");
            }
        }
        if let Some(m) = &self.metrics {
            for r in &calc.state.rejections[before.min(calc.state.rejections.len())..] {
                let reason = serde_json::to_value(r.reason).ok();
                let reason = reason.as_ref().and_then(|v| v.as_str()).unwrap_or("other");
                m.conversions_rejected
                    .with_label_values(&[&r.program, reason])
                    .inc();
            }
        }
    }

    fn is_quarantined(&self, seq: u64) -> bool {
        self.quarantined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|q| q.seq == Some(seq))
    }

    /// The calculator as it stood just before event `seq`: the snapshot
    /// plus the log up to it, quarantined events skipped. Retries until the
    /// store answers (the calculator must not go on from a half-applied
    /// event; readiness reports the stall meanwhile).
    fn rebuild_before(&self, seq: u64) -> Calculator {
        loop {
            match self.try_rebuild_before(seq) {
                Ok(c) => return c,
                Err(e) => {
                    tracing::error!(error = %e, "rebuilding the calculator failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn try_rebuild_before(&self, seq: u64) -> Result<Calculator, StoreError> {
        let (mut calc, mut cursor) = from_snapshot(&self.store, &self.books)?;
        while cursor + 1 < seq {
            let batch = self
                .store
                .events_after(cursor, BATCH.min((seq - cursor - 1) as usize))?;
            if batch.is_empty() {
                break;
            }
            for e in batch.iter().filter(|e| e.seq < seq) {
                if !self.is_quarantined(e.seq) {
                    // Applied once before without failing: deterministic.
                    let _ = try_apply(&mut calc, &e.id, &e.event);
                }
                cursor = e.seq;
            }
        }
        Ok(calc)
    }

    fn store_last_seq(&self) -> u64 {
        self.store.last_event_seq().unwrap_or(0)
    }
}

/// A calculator from the saved snapshot (or a fresh one), and the seq it
/// covers.
fn from_snapshot(store: &Store, books: &[ProgramBook]) -> Result<(Calculator, u64), StoreError> {
    let calc = Calculator::new(books.to_vec());
    match store.calc_snapshot()? {
        None => Ok((calc, 0)),
        Some(bytes) => {
            let snap: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    key: "calc/snapshot".into(),
                    reason: e.to_string(),
                })?;
            Ok((calc.with_state(snap.state), snap.cursor))
        }
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    cursor: u64,
    state: &'a State,
}

/// Canonical digest of an event's JSON (keys sorted), for idempotency.
pub fn digest(v: &serde_json::Value) -> [u8; 32] {
    let canonical = serde_json::to_vec(v).expect("values serialise");
    let d = ring::digest::digest(&ring::digest::SHA256, &canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Ids of internal events, so that repeating an operation is idempotent.
pub fn internal_id(e: &Event) -> String {
    match e {
        Event::Partner(p) => format!("partner:{}", p.id),
        Event::Coupon(c) => format!("coupon:{}", c.code),
        Event::FxRates(r) => format!("fx_rates:{}:{}", r.base, r.at.to_rfc3339()),
        Event::PayoutRun(r) => format!("payout_run:{}:{}", r.program, r.as_of.format("%Y-%m-%d")),
        Event::PayoutConfirm(c) => format!("payout_confirm:{}", c.payout_id),
        Event::ReviewDecision(d) => format!("review:{}", d.review_id),
        Event::PartnerStatus(s) => format!(
            "partner_status:{}:{}",
            s.partner_id,
            s.occurred_at.to_rfc3339()
        ),
        other => other.id().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commission::event::{Cancellation, Event};

    fn cancellation(id: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            digest: [1; 32],
            event: Event::Cancellation(Cancellation {
                id: id.into(),
                program: "krispcall".into(),
                occurred_at: "2026-03-01T00:00:00Z".parse().unwrap(),
                customer_id: "c1".into(),
            }),
        }
    }

    #[tokio::test]
    async fn events_received_longer_ago_than_the_outbox_retries_are_told_to_no_one() {
        use crate::clock::{FakeClock, SharedClock};
        use crate::webhooks::{change::Change, model::Endpoint, Outbox, Settings};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let books = crate::replay::books(&crate::config::Config::defaults("unused").programs);
        let conv = Arc::new(Conversions::open(store.clone(), books, 1000, None).unwrap());
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let clock = Arc::new(FakeClock::new(t("2026-03-10T12:00:00Z")));
        let outbox = Outbox::new(
            store.clone(),
            Settings::default(),
            b"refs",
            clock.clone() as SharedClock,
        );
        conv.set_outbox(Arc::new(outbox));
        let endpoint = Endpoint {
            id: "we_1".into(),
            url: "https://hooks.example/in".into(),
            events: vec!["partner.status_changed".into()],
            secret: "whsec_1".into(),
            created_at: t("2026-03-01T00:00:00Z"),
            from_seq: 0,
            partner_id: None,
            disabled: None,
            failures: 0,
        };
        Change::Put { endpoint }.apply(&store, 0).unwrap();
        let task = conv.start();
        let event = |id: &str, e: Event| NewEvent {
            id: id.into(),
            digest: [2; 32],
            event: e,
        };
        let partner = Event::Partner(
            serde_json::from_value(serde_json::json!({"id": "p1", "program": "krispcall"}))
                .unwrap(),
        );
        let standing = |status: &str| {
            Event::PartnerStatus(crate::commission::event::PartnerStatusChange {
                partner_id: "p1".into(),
                status: status.into(),
                occurred_at: t("2026-03-01T00:00:00Z"),
                actor: "fraud".into(),
                reason: "checked".into(),
            })
        };
        // Received 25 hours before the calculator applies it (a stream
        // replayed by a new calculator): no delivery.
        conv.ingest(
            vec![event("p", partner), event("s1", standing("suspended"))],
            t("2026-03-09T11:00:00Z"),
        )
        .unwrap();
        // Received within the retries' window: told.
        let seq = conv
            .ingest(
                vec![event("s2", standing("active"))],
                t("2026-03-10T11:00:00Z"),
            )
            .unwrap();
        let Appended::Accepted(seq) = seq[0] else {
            panic!("{seq:?}")
        };
        assert!(conv.wait_for(seq, Duration::from_secs(10)).await);
        let queued = store.deliveries_of("we_1", 10).unwrap();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(queued[0].body.contains("\"active\""), "{}", queued[0].body);
        conv.stop(task).await;
    }

    #[tokio::test]
    async fn readiness_reports_a_calculator_behind_or_stalled_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let books = crate::replay::books(&crate::config::Config::defaults("unused").programs);
        let conv = Conversions::open(store, books, 1000, None).unwrap();
        assert_eq!(conv.readiness(10, Duration::ZERO), Ok(()));
        let now = "2026-03-01T00:00:00Z".parse().unwrap();
        conv.ingest(vec![cancellation("a"), cancellation("b")], now)
            .unwrap();
        // The calculator task is not running: two events wait.
        assert_eq!(
            conv.readiness(1, Duration::from_secs(3600)),
            Err(NotReady::Behind { lag: 2, bound: 1 })
        );
        assert!(matches!(
            conv.readiness(10, Duration::ZERO),
            Err(NotReady::Stalled { lag: 2, .. })
        ));
        assert_eq!(conv.readiness(10, Duration::from_secs(3600)), Ok(()));
        let task = conv.start();
        assert!(conv.wait_for(2, Duration::from_secs(10)).await);
        assert_eq!(conv.readiness(1, Duration::ZERO), Ok(()));
        conv.stop(task).await;
    }
}
