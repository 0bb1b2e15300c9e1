//! Events through JetStream: admitted exactly once cluster-wide, durable in
//! the stream before the client hears `2xx`, and replicated into each
//! calculator node's own event log at the stream's sequence numbers.
//!
//! Admission of one event (id `I`, canonical-JSON digest `D`), from any
//! node:
//! 1. `create` of key `H(I)` in `refedge_event_ids` with `D` and sequence
//!    0 ("claimed, maybe published"). If the key exists with another
//!    digest: `409`. With `D` and a sequence: `200` duplicate.
//! 2. Publish to `REFEDGE_EVENTS` with `Nats-Msg-Id: H(I)`; wait for the
//!    stream's acknowledgement (its sequence `S`). A claim left at 0 by a
//!    node that died between 1 and 2 is published again by the retry; the
//!    stream's window, or else the replicas' id index, absorbs a repeat.
//! 3. `put` of `D` and `S`: later repeats answer from step 1.
//!
//! So a repeat of an acknowledged id, on any node, however long after,
//! answers `200` duplicate, and a different body `409`, as on one node.

use super::{Cluster, ClusterError, EVENTS_SUBJECT};
use crate::commission::Event;
use crate::conversions::Conversions;
use crate::store::events::{Appended, NewEvent, Replicated};
use crate::store::Store;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::kv::CreateErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Most messages appended to the local log in one batch.
const REPLICATE_BATCH: usize = 2000;

/// An event as published.
#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a str,
    /// The canonical JSON's digest, hex.
    digest: String,
    received_at: DateTime<Utc>,
    event: &'a Event,
}

/// An event as read back.
#[derive(Deserialize)]
struct WireIn {
    id: String,
    digest: String,
    received_at: DateTime<Utc>,
    event: Event,
}

/// The bucket key of an event id: ids are free text, keys are not.
fn id_key(id: &str) -> String {
    crate::net::to_hex(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref())
}

/// Digest and sequence as kept in the bucket (32 + 8 bytes).
fn claim(digest: &[u8; 32], seq: u64) -> Bytes {
    let mut v = digest.to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

fn read_claim(v: &[u8]) -> Option<([u8; 32], u64)> {
    if v.len() != 40 {
        return None;
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(&v[..32]);
    Some((d, u64::from_be_bytes(v[32..].try_into().ok()?)))
}

/// What step 1 decided for one event.
enum Step {
    Done(Appended),
    Publish,
}

impl Cluster {
    /// Admits events (see the module's steps); each result as on one node,
    /// with the stream sequence as the seq.
    pub async fn publish_events(
        &self,
        items: Vec<NewEvent>,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<Appended>, ClusterError> {
        let parts = self.parts()?;
        let ids = &parts.event_ids;
        // Step 1, for the whole batch at once. Repeats of one id inside
        // the batch run in order so the second sees the first's claim.
        let mut steps = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<bool> = items.iter().map(|i| seen.insert(i.id.clone())).collect();
        let claims = join_all(
            items
                .iter()
                .zip(&firsts)
                .filter(|(_, &first)| first)
                .map(|(i, _)| ids.create(id_key(&i.id), claim(&i.digest, 0))),
        )
        .await;
        let mut claims = claims.into_iter();
        for (item, first) in items.iter().zip(&firsts) {
            let created = if *first {
                match claims.next().expect("one claim per first id") {
                    Ok(_) => true,
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(ClusterError::nats(e)),
                }
            } else {
                false
            };
            steps.push(if created {
                Step::Publish
            } else {
                self.known(&item.id, &item.digest).await?
            });
        }
        // Step 2: publish what is to be published, acknowledgements
        // awaited together.
        let mut acks = Vec::new();
        for (item, step) in items.iter().zip(&steps) {
            if !matches!(step, Step::Publish) {
                continue;
            }
            let payload = serde_json::to_vec(&WireOut {
                id: &item.id,
                digest: crate::net::to_hex(&item.digest),
                received_at,
                event: &item.event,
            })
            .expect("events serialise");
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                id_key(&item.id).as_str(),
            );
            let ack = parts
                .js
                .publish_with_headers(EVENTS_SUBJECT, headers, payload.into())
                .await
                .map_err(ClusterError::nats)?;
            acks.push(ack);
        }
        let acks = join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await;
        // Step 3: record each sequence.
        let mut acks = acks.into_iter();
        let mut out = Vec::with_capacity(items.len());
        let mut puts = Vec::new();
        for (item, step) in items.iter().zip(steps) {
            out.push(match step {
                Step::Done(a) => a,
                Step::Publish => {
                    let ack = acks
                        .next()
                        .expect("one ack per publish")
                        .map_err(ClusterError::nats)?;
                    puts.push(ids.put(id_key(&item.id), claim(&item.digest, ack.sequence)));
                    if ack.duplicate {
                        Appended::Duplicate(ack.sequence)
                    } else {
                        Appended::Accepted(ack.sequence)
                    }
                }
            });
        }
        for r in join_all(puts).await {
            // The event is durable in the stream; a lost record only means
            // a later repeat publishes again, and the replicas skip it.
            if let Err(e) = r {
                tracing::warn!(error = %e, "cluster: recording an event's sequence failed");
            }
        }
        Ok(out)
    }

    /// The stream's last sequence: the head of the cluster's event log.
    pub async fn stream_head(&self) -> Result<u64, ClusterError> {
        let info = self
            .parts()?
            .events
            .get_info()
            .await
            .map_err(ClusterError::nats)?;
        Ok(info.state.last_sequence)
    }

    /// Step 1 for an id already claimed.
    async fn known(&self, id: &str, digest: &[u8; 32]) -> Result<Step, ClusterError> {
        let ids = &self.parts()?.event_ids;
        let v = ids.get(id_key(id)).await.map_err(ClusterError::nats)?;
        let Some((d, seq)) = v.as_deref().and_then(read_claim) else {
            // Claimed and gone (purged by an operator): admit it again.
            return Ok(Step::Publish);
        };
        Ok(if &d != digest {
            Step::Done(Appended::Conflict(seq))
        } else if seq == 0 {
            Step::Publish
        } else {
            Step::Done(Appended::Duplicate(seq))
        })
    }

    /// Replicates the event stream into this node's event log, from the
    /// stream cursor kept with the log, for as long as the node runs. A
    /// broken connection or a failed write starts again from the cursor.
    pub async fn replicate(self: Arc<Self>, store: Store, conversions: Arc<Conversions>) {
        loop {
            if let Err(e) = self.replicate_once(&store, &conversions).await {
                tracing::warn!(error = %e, "cluster: event replication interrupted; resuming from the cursor");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn replicate_once(
        &self,
        store: &Store,
        conversions: &Arc<Conversions>,
    ) -> Result<(), ClusterError> {
        let parts = self.ready().await;
        let s = store.clone();
        let cursor = tokio::task::spawn_blocking(move || s.stream_cursor())
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?
            .unwrap_or(0);
        let consumer = parts
            .events
            .create_consumer(OrderedConfig {
                filter_subject: EVENTS_SUBJECT.into(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: cursor + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(ClusterError::nats)?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(ClusterError::nats)?
            .ready_chunks(REPLICATE_BATCH);
        while let Some(chunk) = messages.next().await {
            let mut items = Vec::with_capacity(chunk.len());
            let mut changes = Vec::new();
            let mut upto = 0;
            for m in chunk {
                let m = m.map_err(ClusterError::nats)?;
                let seq = m.info().map_err(ClusterError::nats)?.stream_sequence;
                upto = seq;
                if let Some(change) = super::outbox::change_of(&m) {
                    match change {
                        Ok(c) => changes.push((seq, c)),
                        Err(e) => {
                            tracing::error!(seq, error = %e, "cluster: unreadable endpoint change in the event stream skipped")
                        }
                    }
                    continue;
                }
                match decode(&m.payload) {
                    Ok((received_at, item)) => items.push(Replicated {
                        seq,
                        received_at,
                        item,
                    }),
                    // Only something other than refedge publishes what
                    // refedge cannot read: skipped, the cursor moves on.
                    Err(e) => {
                        tracing::error!(seq, error = %e, "cluster: unreadable message in the event stream skipped")
                    }
                }
            }
            if upto == 0 {
                continue;
            }
            // Endpoint changes first: stored before any later event is in
            // the log, so the calculator never applies an event after a
            // new endpoint without knowing it (earlier events in the chunk
            // are kept from it by its position). A crash before the
            // cursor moves applies them again, which changes nothing.
            let c = conversions.clone();
            let s = store.clone();
            tokio::task::spawn_blocking(move || -> Result<usize, crate::store::StoreError> {
                for (seq, change) in &changes {
                    change.apply(&s, *seq)?;
                }
                c.ingest_replicated(items, upto)
            })
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        }
        Err(ClusterError::Nats(
            "the event stream's consumer ended".into(),
        ))
    }
}

/// A stream message back into an event.
fn decode(payload: &[u8]) -> Result<(DateTime<Utc>, NewEvent), String> {
    let w: WireIn = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let digest: [u8; 32] = crate::net::from_hex(&w.digest)
        .and_then(|d| d.try_into().ok())
        .ok_or("bad digest")?;
    Ok((
        w.received_at,
        NewEvent {
            id: w.id,
            digest,
            event: w.event,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_and_reject_other_shapes() {
        let d = [7u8; 32];
        assert_eq!(read_claim(&claim(&d, 42)), Some((d, 42)));
        assert_eq!(read_claim(&[1, 2, 3]), None);
    }

    #[test]
    fn id_keys_are_bucket_keys_whatever_the_id() {
        for id in ["evt_1", "a b/c.d*>", "ünïcode", ""] {
            let k = id_key(id);
            assert_eq!(k.len(), 64);
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(id_key("a"), id_key("b"));
    }
}
