//! Click shipping: an edge's durable click log is its outbox. The log is
//! a sequence of chunks that never change once written; a shipper
//! publishes the chunks after its cursor, as they are stored (the log's
//! compact binary encoding, ~48 bytes a click), one message a chunk, to
//! the file-backed stream `REFEDGE_CLICKS` (subject `refedge.clicks.{node}`,
//! message id `{node}.{chunk's first click id}`), waits for every
//! acknowledgement of the round (up to 2,000 clicks), then moves the cursor,
//! kept in the node's store. A restart or a NATS outage resumes from the
//! cursor, and a chunk published twice carries the same id, so the
//! stream's de-duplication window absorbs it; beyond the window the
//! calculators count a click once by its id. The redirect never waits for
//! any of this.

use super::{Cluster, ClusterError};
use crate::id::ClickId;
use crate::metrics::Metrics;
use crate::store::Store;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::HeaderMap;
use futures_util::future::join_all;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Clicks published per round.
const SHIP_BATCH: usize = 2000;
/// Pause when there is nothing to ship.
const IDLE: Duration = Duration::from_millis(50);

/// The subject of a node's clicks.
pub fn subject(node: &str) -> String {
    format!("refedge.clicks.{node}")
}

impl Cluster {
    /// Ships the local click log for as long as the node runs.
    pub async fn ship_clicks(self: Arc<Self>, store: Store, metrics: Arc<Metrics>) {
        let s = store.clone();
        let mut cursor = match tokio::task::spawn_blocking(move || s.ship_cursor()).await {
            Ok(Ok(c)) => c,
            _ => None,
        };
        // Lag in clicks: what waited at start, plus what this process
        // wrote since, less what it shipped.
        let written_at_start = metrics.clicks_written.get() as i64;
        let s = store.clone();
        let waiting = tokio::task::spawn_blocking(move || count_after(&s, cursor))
            .await
            .unwrap_or(0) as i64;
        let mut shipped = 0i64;
        let mut logged = false;
        loop {
            let round = self.ship_round(&store, &metrics, cursor).await;
            if let Ok(Some((_, n))) = &round {
                shipped += *n as i64;
            }
            let written = metrics.clicks_written.get() as i64 - written_at_start;
            metrics
                .ship_lag_clicks
                .set((waiting + written - shipped).max(0));
            match round {
                Ok(Some((last, _))) => {
                    cursor = Some(last);
                    logged = false;
                }
                Ok(None) => tokio::time::sleep(IDLE).await,
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "cluster: click shipping paused; resuming from the cursor (redirects are not affected)");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One round; the new cursor and the clicks shipped, or `None` when
    /// there was nothing to ship.
    async fn ship_round(
        &self,
        store: &Store,
        metrics: &Metrics,
        cursor: Option<ClickId>,
    ) -> Result<Option<(ClickId, usize)>, ClusterError> {
        let parts = self.parts()?;
        let s = store.clone();
        let chunks = tokio::task::spawn_blocking(move || s.chunks_after(cursor, SHIP_BATCH))
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        let Some(last) = chunks.last().map(|c| c.first) else {
            metrics.ship_lag_seconds.set(0.0);
            return Ok(None);
        };
        let oldest = crate::clock::ms_to_datetime(chunks[0].first.timestamp_ms());
        metrics
            .ship_lag_seconds
            .set((chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0);
        let subject = subject(&self.node_id);
        let mut acks = Vec::with_capacity(chunks.len());
        let mut n = 0;
        for chunk in chunks {
            n += chunk.clicks;
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}.{}", self.node_id, chunk.first).as_str(),
            );
            acks.push(
                parts
                    .js
                    .publish_with_headers(subject.clone(), headers, chunk.bytes.into())
                    .await
                    .map_err(ClusterError::nats)?,
            );
        }
        for ack in join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
            ack.map_err(ClusterError::nats)?;
        }
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.set_ship_cursor(last))
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        metrics.clicks_shipped.inc_by(n as u64);
        Ok(Some((last, n)))
    }
}

/// Clicks in the local log after the chunk `cursor` (blocking; at start).
fn count_after(store: &Store, mut cursor: Option<ClickId>) -> usize {
    let mut n = 0;
    loop {
        match store.chunks_after(cursor, 10_000) {
            Ok(chunks) if !chunks.is_empty() => {
                n += chunks.iter().map(|c| c.clicks).sum::<usize>();
                cursor = chunks.last().map(|c| c.first);
            }
            _ => return n,
        }
    }
}

impl Cluster {
    /// Calculator nodes: replicates every edge's clicks from the click
    /// stream into the store's cluster click index, from the sequence kept
    /// there, for as long as the node runs.
    pub async fn replicate_clicks(self: Arc<Self>, store: Store) {
        loop {
            if let Err(e) = self.replicate_clicks_once(&store).await {
                tracing::warn!(error = %e, "cluster: click replication interrupted; resuming from its cursor");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn replicate_clicks_once(&self, store: &Store) -> Result<(), ClusterError> {
        let parts = self.ready().await;
        let s = store.clone();
        let cursor = tokio::task::spawn_blocking(move || s.cluster_clicks_cursor())
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        let stream = parts
            .js
            .get_stream(super::CLICKS_STREAM)
            .await
            .map_err(ClusterError::nats)?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: cursor + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(ClusterError::nats)?;
        let mut chunks = consumer
            .messages()
            .await
            .map_err(ClusterError::nats)?
            .ready_chunks(SHIP_BATCH);
        while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::new();
            let mut seq = 0;
            for m in chunk {
                let m = m.map_err(ClusterError::nats)?;
                seq = m.info().map_err(ClusterError::nats)?.stream_sequence;
                let node = m
                    .subject
                    .as_str()
                    .strip_prefix("refedge.clicks.")
                    .unwrap_or_default()
                    .to_string();
                match crate::store::clicks::decode_raw_chunk(&m.payload) {
                    Ok(clicks) => batch.extend(clicks.into_iter().map(|c| (node.clone(), c))),
                    Err(e) => {
                        tracing::error!(seq, error = %e, "cluster: unreadable message in the click stream skipped")
                    }
                }
            }
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.add_cluster_clicks(&batch, seq))
                .await
                .map_err(ClusterError::nats)?
                .map_err(ClusterError::nats)?;
        }
        Err(ClusterError::Nats(
            "the click stream's consumer ended".into(),
        ))
    }
}
