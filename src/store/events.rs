//! The event log: every accepted event, in arrival order, durably; the
//! idempotency index; and the calculator's snapshot.
//!
//! Keys in the `events` tree:
//! - `e` + seq (`u64` BE) → JSON [`StoredEvent`]
//! - `i` + event id → seq (`u64` BE) + SHA-256 of the event's canonical JSON
//!
//! and in the `calc` tree: `snapshot` → `{cursor, state}` JSON, and
//! `q` + seq (`u64` BE) → JSON [`Quarantined`] for each event the calculator
//! failed on and set aside.

use super::{Store, StoreError};
use crate::commission::quarantine::Quarantined;
use crate::commission::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const EVENT: u8 = b'e';
const ID: u8 = b'i';
const SNAPSHOT: &[u8] = b"snapshot";
const QUARANTINE: u8 = b'q';
/// In cluster mode: the stream sequence the local log is replicated up to.
const STREAM_CURSOR: &[u8] = b"stream-cursor";

/// An event as kept in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Idempotency key.
    pub id: String,
    /// When refedge accepted it (wall clock; money never reads it).
    pub received_at: DateTime<Utc>,
    /// The event, attribution resolved.
    pub event: Event,
}

/// What happened to one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// New: stored under this seq.
    Accepted(u64),
    /// Same id, same body: already stored under this seq.
    Duplicate(u64),
    /// Same id, different body: refused (the stored one is at this seq).
    Conflict(u64),
}

/// One event of the cluster's event stream, at the stream's sequence.
pub struct Replicated {
    /// The stream sequence; it becomes the event's seq in the local log.
    pub seq: u64,
    /// When the publishing node accepted it.
    pub received_at: DateTime<Utc>,
    /// The event, its id and digest.
    pub item: NewEvent,
}

/// One event to append.
pub struct NewEvent {
    /// Idempotency key.
    pub id: String,
    /// SHA-256 of the canonical JSON the client sent.
    pub digest: [u8; 32],
    /// The event to store.
    pub event: Event,
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn id_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(ID);
    k.extend_from_slice(id.as_bytes());
    k
}

impl Store {
    /// Appends events atomically and durably (one batch, one flush) after
    /// checking each id: duplicates and conflicts are reported, not stored.
    pub fn append_events(
        &self,
        items: Vec<NewEvent>,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<Appended>, StoreError> {
        let mut next = self.next_event_seq.lock().expect("event seq lock");
        self.with(|t| {
            let mut out = Vec::with_capacity(items.len());
            let mut batch = sled::Batch::default();
            let mut in_batch: std::collections::HashMap<String, (u64, [u8; 32])> =
                Default::default();
            let mut seq = *next;
            for item in items {
                let known = match in_batch.get(&item.id) {
                    Some(&(s, d)) => Some((s, d)),
                    None => t.events.get(id_key(&item.id))?.map(|v| {
                        let s = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                        let mut d = [0u8; 32];
                        d.copy_from_slice(&v[8..40]);
                        (s, d)
                    }),
                };
                if let Some((s, d)) = known {
                    out.push(if d == item.digest {
                        Appended::Duplicate(s)
                    } else {
                        Appended::Conflict(s)
                    });
                    continue;
                }
                let stored = StoredEvent {
                    seq,
                    id: item.id.clone(),
                    received_at,
                    event: item.event,
                };
                batch.insert(
                    &event_key(seq)[..],
                    serde_json::to_vec(&stored).expect("events serialise"),
                );
                let mut v = seq.to_be_bytes().to_vec();
                v.extend_from_slice(&item.digest);
                batch.insert(id_key(&item.id), v);
                in_batch.insert(item.id, (seq, item.digest));
                out.push(Appended::Accepted(seq));
                seq += 1;
            }
            if seq != *next {
                t.events.apply_batch(batch)?;
                t.db.flush()?;
                *next = seq;
            }
            Ok(out)
        })
    }

    /// Appends events replicated from the cluster's stream at their stream
    /// sequences, with the stream cursor, in one batch and one flush. An id
    /// already in the log (a repeat the stream's de-duplication window did
    /// not absorb) is skipped; its sequence is consumed all the same.
    /// Returns how many were new. The cursor moves to `upto`, the last
    /// sequence read from the stream, events or not.
    pub fn append_replicated(
        &self,
        items: Vec<Replicated>,
        upto: u64,
    ) -> Result<usize, StoreError> {
        debug_assert!(items.iter().all(|r| r.seq <= upto), "upto is the last read");
        let mut next = self.next_event_seq.lock().expect("event seq lock");
        self.with(|t| {
            let mut batch = sled::Batch::default();
            let mut seen = std::collections::HashSet::new();
            let mut new = 0;
            for r in items {
                if !seen.insert(r.item.id.clone()) || t.events.get(id_key(&r.item.id))?.is_some() {
                    continue;
                }
                let stored = StoredEvent {
                    seq: r.seq,
                    id: r.item.id.clone(),
                    received_at: r.received_at,
                    event: r.item.event,
                };
                batch.insert(
                    &event_key(r.seq)[..],
                    serde_json::to_vec(&stored).expect("events serialise"),
                );
                let mut v = r.seq.to_be_bytes().to_vec();
                v.extend_from_slice(&r.item.digest);
                batch.insert(id_key(&r.item.id), v);
                new += 1;
            }
            batch.insert(STREAM_CURSOR, &upto.to_be_bytes()[..]);
            t.events.apply_batch(batch)?;
            t.db.flush()?;
            *next = (*next).max(upto + 1);
            Ok(new)
        })
    }

    /// The stream sequence the local log holds events up to, once it has
    /// replicated from a cluster (`None`: never).
    pub fn stream_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.with(|t| {
            Ok(t.events
                .get(STREAM_CURSOR)?
                .map(|v| u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))))
        })
    }

    /// Up to `limit` durable events after `cursor`, in order (an append
    /// whose flush has not returned is not read).
    pub fn events_after(&self, cursor: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let head = *self.next_event_seq.lock().expect("event seq lock");
        self.with(|t| {
            t.events
                .range(event_key(cursor + 1)..event_key(head))
                .take(limit)
                .map(decode)
                .collect()
        })
    }

    /// The newest durable seq in the log (0 when empty).
    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        let next = *self.next_event_seq.lock().expect("event seq lock");
        if next > 0 {
            return Ok(next - 1);
        }
        self.with(head)
    }

    /// Saves the calculator's state and the seq it covers.
    pub fn save_calc_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.calc.insert(SNAPSHOT, bytes)?;
            Ok(t.db.flush().map(|_| ())?)
        })
    }

    /// The saved calculator snapshot, if any.
    pub fn calc_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| Ok(t.calc.get(SNAPSHOT)?.map(|v| v.to_vec())))
    }

    /// Records an event the calculator set aside, durably.
    pub fn quarantine(&self, q: &Quarantined) -> Result<(), StoreError> {
        let seq = q.seq.unwrap_or_default();
        let mut k = vec![QUARANTINE];
        k.extend_from_slice(&seq.to_be_bytes());
        self.with(|t| {
            t.calc
                .insert(k, serde_json::to_vec(q).expect("quarantine serialises"))?;
            Ok(t.db.flush().map(|_| ())?)
        })
    }

    /// Every event set aside, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.with(|t| t.calc.scan_prefix([QUARANTINE]).map(decode).collect())
    }
}

/// One stored JSON value of the event or calc tree.
fn decode<T: serde::de::DeserializeOwned>(
    kv: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<T, StoreError> {
    let (k, v) = kv?;
    serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
        key: format!("{k:?}"),
        reason: e.to_string(),
    })
}

/// The log's head: its newest seq, or in cluster mode the stream sequence
/// it is replicated up to when that is later (repeats are skipped).
pub(super) fn head(t: &super::Trees) -> Result<u64, StoreError> {
    let cursor = t.events.get(STREAM_CURSOR)?.map_or(0, |v| {
        u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
    });
    Ok(last_seq(&t.events)?.max(cursor))
}

/// The newest seq in an event tree (0 when empty).
pub(super) fn last_seq(events: &sled::Tree) -> Result<u64, StoreError> {
    Ok(events
        .scan_prefix([EVENT])
        .next_back()
        .transpose()?
        .map_or(0, |(k, _)| {
            u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"))
        }))
}
