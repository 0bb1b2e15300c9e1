//! The delivery task: sends what the outbox holds as it falls due, each
//! attempt bounded by `webhooks.timeout_ms`, many at once (a slow receiver
//! holds only its own deliveries), and records each attempt before the
//! next: a 2xx delivers; anything else retries after `retry_base_ms`,
//! doubling, until the delivery is `max_age_hours` old; an endpoint whose
//! attempts fail `disable_after_failures` times in a row is disabled, with
//! the reason, and its deliveries wait for it to be enabled again.
//!
//! Scheduling is by the wall clock ([`crate::clock::SystemClock`]): retry
//! times are about the receiver, not the events' own times.
//!
//! In a cluster every calculator queues the same deliveries and only the
//! lease holder sends; the others stand by. The sender marks each event id
//! it delivered in the cluster ([`Marks`]). A delivery this node never
//! attempted is not sent when its event id is marked (another calculator
//! sent it before a take-over), and a standby settles its due deliveries
//! from the marks — delivered when marked, failed once older than
//! `max_age_hours`, otherwise looked at again after [`STANDBY_RECHECK`] —
//! so a take-over finds only what nobody sent.

use super::model::{Attempt, Delivery, Disabled, Endpoint, State};
use super::send::{send, Request};
use super::Outbox;
use crate::clock::{Clock, SystemClock};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Header of a webhook's signature (the scheme refedge accepts).
pub const SIGNATURE_HEADER: &str = "x-refedge-signature";
/// Attempts in flight at once.
const IN_FLIGHT: usize = 32;
/// How often the queue is looked at when nothing wakes the task.
const POLL: Duration = Duration::from_millis(200);
/// How long a standby leaves an unmarked due delivery before looking
/// again (and the longest a take-over waits to send it).
pub const STANDBY_RECHECK: Duration = Duration::from_secs(5);

/// Delivered event ids, shared by a cluster's calculators.
pub trait Marks: Send + Sync {
    /// Whether some node delivered `event_id`.
    fn delivered<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<bool, String>>;
    /// Records that `event_id` was delivered.
    fn mark<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// The running task's shared state.
struct Task {
    outbox: Arc<Outbox>,
    /// Deliveries being attempted (not picked again meanwhile).
    in_flight: Mutex<HashSet<String>>,
    /// Serialises endpoints' read-change-write (failure counts).
    endpoints: Mutex<()>,
    slots: Arc<tokio::sync::Semaphore>,
    /// A cluster's delivered marks (none on a single node).
    marks: Option<Arc<dyn Marks>>,
}

/// Runs the delivery task while `active()` says this node sends (a single
/// node, or a cluster's active calculator; a cluster's other calculators
/// settle their queue from `marks`); stops when `stop` turns true.
pub fn spawn(
    outbox: Arc<Outbox>,
    active: impl Fn() -> bool + Send + Sync + 'static,
    marks: Option<Arc<dyn Marks>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let task = Arc::new(Task {
        outbox,
        in_flight: Mutex::new(HashSet::new()),
        endpoints: Mutex::new(()),
        slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        marks,
    });
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                return;
            }
            if active() {
                let t = task.clone();
                let due = tokio::task::spawn_blocking(move || {
                    t.outbox
                        .store()
                        .due_deliveries(SystemClock.now(), IN_FLIGHT * 4)
                })
                .await;
                match due {
                    Ok(Ok(due)) => {
                        // A full read means more are due: read again as
                        // soon as these are under way.
                        let full = due.len() == IN_FLIGHT * 4;
                        let mut dispatched = 0;
                        for (id, due_at) in due {
                            let fresh = task
                                .in_flight
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(id.clone());
                            if !fresh {
                                continue;
                            }
                            let Ok(permit) = task.slots.clone().acquire_owned().await else {
                                return;
                            };
                            dispatched += 1;
                            let t = task.clone();
                            tokio::spawn(async move {
                                if let Err(e) = t.attempt(&id, due_at).await {
                                    tracing::warn!(error = %e, delivery = %id, "recording a webhook attempt failed");
                                }
                                t.in_flight
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .remove(&id);
                                drop(permit);
                            });
                        }
                        if full && dispatched > 0 {
                            continue;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "reading the webhook queue failed"),
                    Err(e) => tracing::error!(error = %e, "webhook queue reader panicked"),
                }
            } else if let Some(marks) = &task.marks {
                if let Err(e) = task.stand_by(marks.as_ref()).await {
                    tracing::warn!(error = %e, "settling the webhook queue from the cluster's marks failed");
                }
            }
            tokio::select! {
                _ = task.outbox.woken() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

impl Task {
    /// One attempt at delivery `id`, listed as due at `due_at`, recorded.
    async fn attempt(self: &Arc<Self>, id: &str, due_at: DateTime<Utc>) -> Result<(), StoreError> {
        let before = Some(due_at);
        let me = self.clone();
        let id = id.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let store = me.outbox.store();
            let Some(d) = store.delivery(&id)? else {
                return Ok(None);
            };
            let endpoint = store.endpoint(&d.endpoint_id)?;
            Ok::<_, StoreError>(Some((d, endpoint)))
        })
        .await
        .expect("reading does not panic")?;
        // The queue was read before this slot came free: another attempt
        // may have finished it meanwhile (sending it twice for no reason).
        let Some((mut d, endpoint)) = found.filter(|(d, _)| {
            // (The queue's keys hold milliseconds.)
            d.state == State::Pending
                && d.next_at.map(|t| t.timestamp_millis()) == Some(due_at.timestamp_millis())
        }) else {
            return Ok(());
        };
        let Some(endpoint) = endpoint else {
            // Its endpoint was removed: nothing more to do.
            d.state = State::Failed;
            d.next_at = None;
            return self.save(before, d, None).await;
        };
        if endpoint.disabled.is_some() {
            // Parked until the endpoint is enabled again.
            d.next_at = None;
            return self.save(before, d, None).await;
        }
        if d.attempts.is_empty() && self.marked(&d.event_id).await {
            // Sent by the calculator active before this one.
            d.state = State::Delivered;
            d.next_at = None;
            return self.save(before, d, None).await;
        }
        let settings = self.outbox.settings().clone();
        let (result, took) = match url::Url::parse(if endpoint.is_postback() {
            &d.body
        } else {
            &endpoint.url
        }) {
            Err(e) => (Err(format!("not a URL: {e}")), Duration::ZERO),
            Ok(url) => {
                let request = if endpoint.is_postback() {
                    Request {
                        method: hyper::Method::GET,
                        url: &url,
                        headers: Vec::new(),
                        body: bytes::Bytes::new(),
                    }
                } else {
                    let sig = crate::signature::sign(
                        &endpoint.secret,
                        SystemClock.now_s(),
                        d.body.as_bytes(),
                    );
                    Request {
                        method: hyper::Method::POST,
                        url: &url,
                        headers: vec![
                            ("content-type", "application/json".into()),
                            (SIGNATURE_HEADER, sig),
                            ("x-refedge-event-id", d.event_id.clone()),
                            ("x-refedge-event-type", d.event_type.clone()),
                        ],
                        body: bytes::Bytes::from(d.body.clone()),
                    }
                };
                // Merchants' endpoints are theirs to place; a partner's
                // postback may reach only the public internet.
                let allow = !endpoint.is_postback() || settings.allow_private_targets;
                send(request, settings.timeout, allow).await
            }
        };
        let now = SystemClock.now();
        let attempt = Attempt {
            at: now,
            status: result.as_ref().ok().copied(),
            error: result.as_ref().err().cloned(),
            latency_ms: took.as_millis() as u64,
        };
        let ok = attempt.succeeded();
        let what = match (&attempt.status, &attempt.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        };
        d.attempts.push(attempt);
        if ok {
            d.state = State::Delivered;
            d.next_at = None;
            if let Some(marks) = &self.marks {
                if let Err(e) = marks.mark(&d.event_id).await {
                    tracing::warn!(error = %e, event = %d.event_id, "marking a webhook delivered in the cluster failed; a take-over may send it again");
                }
            }
        } else {
            d.next_at = next_attempt(&d, now, &settings);
            if d.next_at.is_none() {
                d.state = State::Failed;
            }
            tracing::info!(delivery = %d.id, endpoint = %d.endpoint_id, attempts = d.attempts.len(), outcome = %what, "webhook attempt failed");
        }
        let me = self.clone();
        let endpoint_id = endpoint.id.clone();
        tokio::task::spawn_blocking(move || {
            let _one = me.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
            let mut e: Option<Endpoint> = me.outbox.store().endpoint(&endpoint_id)?;
            if ok && e.as_ref().is_some_and(|e| e.failures == 0) {
                e = None; // unchanged: not written again
            }
            if let Some(e) = &mut e {
                if ok {
                    e.failures = 0;
                } else {
                    e.failures = e.failures.saturating_add(1);
                    if e.failures >= settings.disable_after && e.disabled.is_none() {
                        e.disabled = Some(Disabled {
                            at: now,
                            reason: format!(
                                "{} failed attempts in a row; the last: {what}",
                                e.failures
                            ),
                        });
                        tracing::warn!(endpoint = %e.id, url = %e.url, "webhook endpoint disabled after failed attempts");
                    }
                }
            }
            me.outbox.store().record_attempt(before, &d, e.as_ref())
        })
        .await
        .expect("writing does not panic")
    }

    /// Whether the cluster marks `event_id` delivered (never on a single
    /// node; an unreadable mark counts as not delivered: at least once).
    async fn marked(&self, event_id: &str) -> bool {
        let Some(marks) = &self.marks else {
            return false;
        };
        marks.delivered(event_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, event = %event_id, "reading the cluster's webhook marks failed; sending");
            false
        })
    }

    /// One standby round over the due deliveries (see the module).
    async fn stand_by(self: &Arc<Self>, marks: &dyn Marks) -> Result<(), StoreError> {
        let me = self.clone();
        let now = SystemClock.now();
        let due = tokio::task::spawn_blocking(move || {
            me.outbox.store().due_deliveries(now, IN_FLIGHT * 4)
        })
        .await
        .expect("reading does not panic")?;
        let settings = self.outbox.settings().clone();
        for (id, _) in due {
            // An attempt begun while this node held the lease finishes it.
            if self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&id)
            {
                continue;
            }
            let me = self.clone();
            let Some(mut d) = tokio::task::spawn_blocking(move || me.outbox.store().delivery(&id))
                .await
                .expect("reading does not panic")?
                .filter(|d| d.state == State::Pending)
            else {
                continue;
            };
            let Ok(delivered) = marks.delivered(&d.event_id).await else {
                // The cluster is not answering: left as it is.
                return Ok(());
            };
            let before = d.next_at;
            if delivered {
                d.state = State::Delivered;
                d.next_at = None;
            } else if next_attempt(&d, now, &settings).is_none() {
                // Too old for another try anywhere.
                d.state = State::Failed;
                d.next_at = None;
            } else {
                d.next_at =
                    Some(now + chrono::Duration::from_std(STANDBY_RECHECK).expect("a short wait"));
            }
            self.save(before, d, None).await?;
        }
        Ok(())
    }

    async fn save(
        self: &Arc<Self>,
        before: Option<DateTime<Utc>>,
        d: Delivery,
        e: Option<Endpoint>,
    ) -> Result<(), StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.outbox.store().record_attempt(before, &d, e.as_ref())
        })
        .await
        .expect("writing does not panic")
    }
}

/// When to try again after a failed attempt: `retry_base` × 2^(n − 1)
/// after the n-th, while the delivery is younger than `max_age`; `None`
/// once it is not.
pub fn next_attempt(
    d: &Delivery,
    now: DateTime<Utc>,
    s: &super::Settings,
) -> Option<DateTime<Utc>> {
    let n = d.attempts.len().max(1) as u32;
    let wait = s
        .retry_base
        .checked_mul(2u32.saturating_pow(n - 1))
        .unwrap_or(s.max_age);
    let deadline = d.created_at + chrono::Duration::from_std(s.max_age).ok()?;
    let next = now + chrono::Duration::from_std(wait).ok()?;
    (now < deadline).then_some(next.min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_until_the_delivery_is_too_old() {
        let s = super::super::Settings {
            retry_base: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        let t0: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut d = Delivery {
            id: "whd_1".into(),
            endpoint_id: "we_1".into(),
            event_id: "evt_1".into(),
            event_type: "commission.created".into(),
            body: "{}".into(),
            created_at: t0,
            state: State::Pending,
            next_at: Some(t0),
            attempts: Vec::new(),
        };
        let mut now = t0;
        let mut waits = Vec::new();
        loop {
            d.attempts.push(Attempt {
                at: now,
                status: Some(500),
                error: None,
                latency_ms: 1,
            });
            match next_attempt(&d, now, &s) {
                Some(next) => {
                    waits.push((next - now).num_seconds());
                    now = next;
                }
                None => break,
            }
        }
        assert_eq!(&waits[..5], [30, 60, 120, 240, 480]);
        assert_eq!(
            now,
            t0 + chrono::Duration::hours(24),
            "the last try at the deadline"
        );
        assert_eq!(d.attempts.len(), 13);
    }
}
