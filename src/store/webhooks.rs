//! The webhook outbox, in the `webhooks` tree: endpoints, deliveries, the
//! queue of due attempts and each endpoint's delivery log.
//!
//! Keys: `e` + endpoint id → [`Endpoint`]; `p` + partner id → its
//! postback's endpoint id; `d` + delivery id → [`Delivery`]; `q` + next
//! attempt (ms, `u64` BE) + delivery id → nothing (due order); `l` +
//! endpoint id + `0` + delivery id → nothing (the endpoint's log, oldest
//! first); `k` + event id → delivery id (an event is queued once per
//! endpoint however often the calculator replays it).

use super::{from_json, to_json, Store, StoreError};
use crate::webhooks::model::{Delivery, Endpoint, State};
use chrono::{DateTime, Utc};

fn key(tag: u8, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest.as_bytes());
    k
}

fn due_key(at: DateTime<Utc>, delivery: &str) -> Vec<u8> {
    let mut k = vec![b'q'];
    k.extend_from_slice(&(at.timestamp_millis().max(0) as u64).to_be_bytes());
    k.extend_from_slice(delivery.as_bytes());
    k
}

fn log_key(endpoint: &str, delivery: &str) -> Vec<u8> {
    let mut k = key(b'l', endpoint);
    k.push(0);
    k.extend_from_slice(delivery.as_bytes());
    k
}

impl Store {
    /// Stores an endpoint (new or changed) durably.
    pub fn put_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        self.with(|t| {
            let mut b = sled::Batch::default();
            b.insert(key(b'e', &e.id), to_json(e));
            if let Some(p) = &e.partner_id {
                b.insert(key(b'p', p), e.id.as_bytes());
            }
            t.webhooks.apply_batch(b)?;
            t.db.flush()?;
            Ok(())
        })
    }

    /// Removes an endpoint and its pending deliveries (its log stays
    /// readable by delivery id until pruned).
    pub fn remove_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        self.with(|t| {
            let mut b = sled::Batch::default();
            b.remove(key(b'e', &e.id));
            if let Some(p) = &e.partner_id {
                b.remove(key(b'p', p));
            }
            let mut prefix = key(b'l', &e.id);
            prefix.push(0);
            for k in t.webhooks.scan_prefix(&prefix).keys() {
                let k = k?;
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                if let Some(d) = self.delivery_in(t, &id)? {
                    if let Some(at) = d.next_at {
                        b.remove(due_key(at, &d.id));
                    }
                }
            }
            t.webhooks.apply_batch(b)?;
            t.db.flush()?;
            Ok(())
        })
    }

    /// An endpoint by id.
    pub fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.with(|t| {
            let k = key(b'e', id);
            t.webhooks.get(&k)?.map(|v| from_json(&k, &v)).transpose()
        })
    }

    /// Every endpoint (merchant webhooks and partner postbacks).
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.webhooks.scan_prefix([b'e']) {
                let (k, v) = kv?;
                out.push(from_json(&k, &v)?);
            }
            Ok(out)
        })
    }

    /// A partner's postback endpoint.
    pub fn postback_of(&self, partner: &str) -> Result<Option<Endpoint>, StoreError> {
        let id = self.with(|t| Ok(t.webhooks.get(key(b'p', partner))?))?;
        match id {
            Some(id) => self.endpoint(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn delivery_in(&self, t: &super::Trees, id: &str) -> Result<Option<Delivery>, StoreError> {
        let k = key(b'd', id);
        t.webhooks.get(&k)?.map(|v| from_json(&k, &v)).transpose()
    }

    /// A delivery by id.
    pub fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.with(|t| self.delivery_in(t, id))
    }

    /// Queues deliveries not queued before (by event id), in one batch.
    /// Returns how many were new. Durable with the next flush (the
    /// calculator's snapshot, which follows, flushes).
    pub fn enqueue_deliveries(&self, ds: &[Delivery]) -> Result<usize, StoreError> {
        self.with(|t| {
            let mut b = sled::Batch::default();
            let mut new = 0;
            let mut seen = std::collections::HashSet::new();
            for d in ds {
                let k = key(b'k', &d.event_id);
                if !seen.insert(&d.event_id) || t.webhooks.contains_key(&k)? {
                    continue;
                }
                b.insert(k, d.id.as_bytes());
                b.insert(key(b'd', &d.id), to_json(d));
                b.insert(log_key(&d.endpoint_id, &d.id), &[][..]);
                if let Some(at) = d.next_at {
                    b.insert(due_key(at, &d.id), &[][..]);
                }
                new += 1;
            }
            if new > 0 {
                t.webhooks.apply_batch(b)?;
            }
            Ok(new)
        })
    }

    /// Saves a delivery changed by a request (a redelivery), moving its
    /// place in the queue; durable when this returns.
    pub fn update_delivery(
        &self,
        before: Option<DateTime<Utc>>,
        d: &Delivery,
        endpoint: Option<&Endpoint>,
    ) -> Result<(), StoreError> {
        self.write_delivery(before, d, endpoint, true)
    }

    /// Records an attempt's outcome (and the endpoint's failure count),
    /// moving the delivery's place in the queue. Not flushed here: sled
    /// flushes within `flush_every_ms`, and a record lost to a crash only
    /// means the delivery is sent again — which at-least-once allows, and
    /// receivers de-duplicate by event id. One fsync per attempt was the
    /// outbox's ceiling (docs/performance.md, "delivery throughput").
    pub fn record_attempt(
        &self,
        before: Option<DateTime<Utc>>,
        d: &Delivery,
        endpoint: Option<&Endpoint>,
    ) -> Result<(), StoreError> {
        self.write_delivery(before, d, endpoint, false)
    }

    fn write_delivery(
        &self,
        before: Option<DateTime<Utc>>,
        d: &Delivery,
        endpoint: Option<&Endpoint>,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            let mut b = sled::Batch::default();
            if let Some(at) = before {
                b.remove(due_key(at, &d.id));
            }
            if let Some(at) = d.next_at {
                b.insert(due_key(at, &d.id), &[][..]);
            }
            b.insert(key(b'd', &d.id), to_json(d));
            if let Some(e) = endpoint {
                b.insert(key(b'e', &e.id), to_json(e));
            }
            t.webhooks.apply_batch(b)?;
            if durable {
                t.db.flush()?;
            }
            Ok(())
        })
    }

    /// Enables `e` again (stored as given) and makes every delivery parked
    /// while it was disabled due at `now`, in one durable batch. Returns
    /// how many were parked.
    pub fn resume_endpoint(&self, e: &Endpoint, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let parked: Vec<Delivery> = self
            .deliveries_of(&e.id, usize::MAX)?
            .into_iter()
            .filter(|d| d.state == State::Pending && d.next_at.is_none())
            .collect();
        self.with(|t| {
            let mut b = sled::Batch::default();
            b.insert(key(b'e', &e.id), to_json(e));
            for d in &parked {
                let mut d = d.clone();
                d.next_at = Some(now);
                b.insert(due_key(now, &d.id), &[][..]);
                b.insert(key(b'd', &d.id), to_json(&d));
            }
            t.webhooks.apply_batch(b)?;
            t.db.flush()?;
            Ok(parked.len())
        })
    }

    /// Up to `limit` deliveries due by `now`, soonest first: each one's id
    /// and the time it is due at (from the queue's keys alone; the
    /// delivery itself is read when its attempt starts, so it is current).
    pub fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.with(|t| {
            let end = due_key(now, "\u{10ffff}");
            let mut out = Vec::new();
            for k in t.webhooks.range(vec![b'q']..end).keys().take(limit) {
                let k = k?;
                let ms: [u8; 8] = k[1..9].try_into().expect("a due key holds its time");
                let at = crate::clock::ms_to_datetime(u64::from_be_bytes(ms) as i64);
                out.push((String::from_utf8_lossy(&k[9..]).into_owned(), at));
            }
            Ok(out)
        })
    }

    /// An endpoint's deliveries, newest first, at most `limit`.
    pub fn deliveries_of(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.with(|t| {
            let mut prefix = key(b'l', endpoint);
            prefix.push(0);
            let mut out = Vec::new();
            for k in t.webhooks.scan_prefix(&prefix).keys().rev().take(limit) {
                let k = k?;
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                if let Some(d) = self.delivery_in(t, &id)? {
                    out.push(d);
                }
            }
            Ok(out)
        })
    }
}
