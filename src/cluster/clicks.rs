//! Click shipping: an edge's durable click log is its outbox. A shipper
//! reads the clicks after its cursor, publishes each to the file-backed
//! stream `REFEDGE_CLICKS` (subject `refedge.clicks.{node}`, message id
//! `{node}.{click id}`), waits for every acknowledgement, then moves the
//! cursor, kept in the node's store. A restart or a NATS outage resumes
//! from the cursor: nothing is lost, and a click published twice (a crash
//! between the acknowledgement and the cursor's write) is absorbed by the
//! stream's de-duplication window. The redirect never waits for any of
//! this.

use super::{Cluster, ClusterError};
use crate::id::ClickId;
use crate::metrics::Metrics;
use crate::model::ClickRecord;
use crate::store::{ClickQuery, Store};
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
        let page = tokio::task::spawn_blocking(move || {
            s.clicks(&ClickQuery {
                after: cursor,
                limit: SHIP_BATCH,
                ..Default::default()
            })
        })
        .await
        .map_err(ClusterError::nats)?
        .map_err(ClusterError::nats)?;
        let Some(last) = page.clicks.last().map(|c| c.id) else {
            metrics.ship_lag_seconds.set(0.0);
            return Ok(None);
        };
        let oldest = page.clicks[0].at;
        metrics
            .ship_lag_seconds
            .set((chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0);
        let subject = subject(&self.node_id);
        let mut acks = Vec::with_capacity(page.clicks.len());
        for c in &page.clicks {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}.{}", self.node_id, c.id).as_str(),
            );
            let body = serde_json::to_vec(c).expect("clicks serialise");
            acks.push(
                parts
                    .js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .map_err(ClusterError::nats)?,
            );
        }
        let n = acks.len();
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

/// Clicks in the local log after `cursor` (blocking; at start only).
fn count_after(store: &Store, mut cursor: Option<ClickId>) -> usize {
    let mut n = 0;
    loop {
        let page = match store.clicks(&ClickQuery {
            after: cursor,
            limit: 10_000,
            ..Default::default()
        }) {
            Ok(p) => p,
            Err(_) => return n,
        };
        n += page.clicks.len();
        match page.clicks.last() {
            Some(c) => cursor = Some(c.id),
            None => return n,
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
        let parts = loop {
            match self.parts() {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
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
            let mut batch = Vec::with_capacity(chunk.len());
            let mut seq = 0;
            for m in chunk {
                let m = m.map_err(ClusterError::nats)?;
                seq = m.info().map_err(ClusterError::nats)?.stream_sequence;
                match serde_json::from_slice::<ClickRecord>(&m.payload) {
                    Ok(c) => batch.push((c, m.payload.to_vec())),
                    Err(e) => {
                        tracing::error!(seq, error = %e, "cluster: unreadable click in the click stream skipped")
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
