//! Conversions: ingestion of merchant events (attribution resolved, then
//! appended durably and idempotently to the event log) and the calculator
//! task that consumes the log in batches from a persisted cursor.
//!
//! The calculator's state is snapshotted with the seq it covers, in one
//! value; on start the snapshot is loaded and the events after it applied,
//! so a restart (or `kill -9`) resumes exactly and never applies an event
//! twice.

use crate::clock::ms_to_datetime;
use crate::commission::calculator::State;
use crate::commission::event::{ClickSeen, Resolved, Signup};
use crate::commission::{Calculator, Event, ProgramBook};
use crate::id::ClickId;
use crate::store::events::{Appended, NewEvent};
use crate::store::{Store, StoreError};
use crate::token::Keyring;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

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
}

impl Conversions {
    /// Loads the snapshot (if any); call [`Conversions::start`] to run.
    pub fn open(
        store: Store,
        books: Vec<ProgramBook>,
        snapshot_events: u64,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Arc<Self>, StoreError> {
        let mut calc = Calculator::new(books);
        let mut cursor = 0;
        if let Some(bytes) = store.calc_snapshot()? {
            let snap: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    key: "calc/snapshot".into(),
                    reason: e.to_string(),
                })?;
            cursor = snap.cursor;
            calc = calc.with_state(snap.state);
        }
        Ok(Arc::new(Self {
            store,
            calc: RwLock::new(calc),
            applied: watch::channel(cursor).0,
            appended: Notify::new(),
            stop: watch::channel(false).0,
            snapshot_events,
            metrics,
        }))
    }

    /// Starts the calculator task.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    /// Reads the calculator.
    pub fn read<R>(&self, f: impl FnOnce(&Calculator) -> R) -> R {
        f(&self.calc.read().expect("calculator lock"))
    }

    /// Runs `f` with the calculator mutable (dry-run payouts).
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut Calculator) -> R) -> R {
        f(&mut self.calc.write().expect("calculator lock"))
    }

    /// Highest seq applied so far.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
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
        let out = self.store.append_events(items, now)?;
        self.appended.notify_one();
        Ok(out)
    }

    /// Resolves a signup's token or click id to the click it points at
    /// (blocking: reads the click log).
    pub fn resolve_signup(&self, s: &mut Signup, keyring: &Keyring) -> Result<(), StoreError> {
        let mut resolved = Resolved {
            click: None,
            error: None,
        };
        if let Some(token) = &s.attribution.token {
            // Signature and key only: the window is judged against the
            // signup's own time by the calculator.
            match keyring.verify(token, i64::MIN + 1) {
                Ok(c) => {
                    resolved.click = Some(ClickSeen {
                        id: c.click_id.to_string(),
                        partner_id: c.partner_id.into_owned(),
                        occurred_at: ms_to_datetime(c.issued_at * 1000),
                        program: Some(c.program.into_owned()),
                        link: Some(c.link.into_owned()),
                        flags: Vec::new(),
                    })
                }
                Err(e) => {
                    resolved.error = Some(format!("attribution token refused: {}", e.label()))
                }
            }
        } else if let Some(raw) = &s.attribution.click_id {
            match raw.parse::<ClickId>() {
                Err(e) => resolved.error = Some(format!("click id {e}")),
                Ok(id) => match self.store.find_click(id)? {
                    Some(c) => {
                        resolved.click = Some(ClickSeen {
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
                        })
                    }
                    None => resolved.error = Some("no click with this id".into()),
                },
            }
        }
        if resolved.click.is_some() || resolved.error.is_some() {
            s.resolved = Some(resolved);
        }
        Ok(())
    }

    /// Applies what is left and saves a final snapshot.
    pub async fn stop(&self, task: tokio::task::JoinHandle<()>) {
        let _ = self.stop.send(true);
        self.appended.notify_one();
        let _ = task.await;
    }

    fn snapshot(&self) -> Result<(), StoreError> {
        let bytes = {
            let calc = self.calc.read().expect("calculator lock");
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
            let batch = match tokio::task::spawn_blocking(move || store.events_after(cursor, BATCH))
                .await
            {
                Ok(Ok(b)) => b,
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
            if let Some(last) = batch.last().map(|e| e.seq) {
                let me = self.clone();
                let n = batch.len() as u64;
                tokio::task::spawn_blocking(move || {
                    let mut calc = me.calc.write().expect("calculator lock");
                    let before = calc.state.rejections.len();
                    for e in &batch {
                        calc.apply(&e.id, &e.event);
                    }
                    if let Some(m) = &me.metrics {
                        for r in &calc.state.rejections[before..] {
                            let reason = serde_json::to_value(r.reason).ok();
                            let reason =
                                reason.as_ref().and_then(|v| v.as_str()).unwrap_or("other");
                            m.conversions_rejected
                                .with_label_values(&[&r.program, reason])
                                .inc();
                        }
                    }
                })
                .await
                .expect("calculator does not panic");
                self.applied.send_replace(last);
                since_snapshot += n;
            }
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

    fn store_last_seq(&self) -> u64 {
        self.store.last_event_seq().unwrap_or(0)
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
        Event::PartnerStatus(s) => format!(
            "partner_status:{}:{}",
            s.partner_id,
            s.occurred_at.to_rfc3339()
        ),
        other => other.id().unwrap_or_default().to_string(),
    }
}
