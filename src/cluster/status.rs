//! `refedge cluster status`: the nodes and their roles from their
//! heartbeats, the active calculator and its lease's age, each
//! calculator's lag behind the event stream, each edge's shipping lag and
//! the clicks of each edge in the click stream.

use super::lease::{Heartbeat, Holder, LEASE_KEY};
use super::{Cluster, ClusterError};
use crate::config::ClusterConfig;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

/// A node is listed as down when its heartbeat is older than this.
const DOWN_AFTER_SECONDS: f64 = 10.0;

/// The cluster as NATS sees it now.
#[derive(Debug, Serialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub lease: Option<Lease>,
    pub nodes: Vec<Node>,
    /// The event stream's last sequence.
    pub events_last_seq: u64,
    /// Distinct clicks in the click stream, by the edge that served them,
    /// as the active calculator (or else the one furthest along) counted
    /// them at its last heartbeat.
    pub clicks_by_node: BTreeMap<String, u64>,
}

/// The calculator lease.
#[derive(Debug, Serialize)]
pub struct Lease {
    pub node_id: String,
    pub api_url: String,
    pub since: DateTime<Utc>,
    pub revision: u64,
    /// Seconds since its last renewal.
    pub age_seconds: f64,
}

/// One node, from its heartbeat.
#[derive(Debug, Serialize)]
pub struct Node {
    #[serde(flatten)]
    pub beat: Heartbeat,
    /// Seconds since its heartbeat.
    pub heartbeat_age_seconds: f64,
    pub up: bool,
    /// Calculators: events in the stream not yet applied.
    pub lag_events: Option<u64>,
}

fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - t).num_milliseconds().max(0) as f64 / 1000.0
}

/// Reads the cluster's state through the NATS server(s) in `config`.
pub async fn status(config: ClusterConfig) -> Result<Status, ClusterError> {
    let cluster = Cluster {
        node_id: "refedge-status".into(),
        role: config.role,
        config,
        parts: Default::default(),
        lease: Default::default(),
        secrets_shared: Default::default(),
    };
    let parts = cluster.try_connect().await?;
    let now = Utc::now();
    let lease = match parts
        .lease
        .entry(LEASE_KEY)
        .await
        .map_err(ClusterError::nats)?
    {
        Some(e) if !e.value.is_empty() => {
            serde_json::from_slice::<Holder>(&e.value)
                .ok()
                .map(|h| Lease {
                    node_id: h.node_id,
                    api_url: h.api_url,
                    since: h.since,
                    revision: e.revision,
                    age_seconds: age(
                        DateTime::from_timestamp(
                            e.created.unix_timestamp(),
                            e.created.nanosecond(),
                        )
                        .unwrap_or(now),
                        now,
                    ),
                })
        }
        _ => None,
    };
    let events_last_seq = parts
        .events
        .get_info()
        .await
        .map_err(ClusterError::nats)?
        .state
        .last_sequence;
    let mut nodes = Vec::new();
    let mut keys = parts.nodes.keys().await.map_err(ClusterError::nats)?;
    while let Some(k) = keys.next().await {
        let k = k.map_err(ClusterError::nats)?;
        let Some(v) = parts.nodes.get(&k).await.map_err(ClusterError::nats)? else {
            continue;
        };
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(&v) else {
            continue;
        };
        let a = age(beat.at, now);
        nodes.push(Node {
            lag_events: beat.applied.map(|x| events_last_seq.saturating_sub(x)),
            heartbeat_age_seconds: a,
            up: a < DOWN_AFTER_SECONDS,
            beat,
        });
    }
    nodes.sort_by(|a, b| a.beat.node_id.cmp(&b.beat.node_id));
    let active = lease.as_ref().map(|l| l.node_id.clone());
    let clicks_by_node = nodes
        .iter()
        .filter(|n| !n.beat.clicks_by_node.is_empty())
        .max_by_key(|n| {
            (
                Some(&n.beat.node_id) == active.as_ref(),
                n.beat.clicks_by_node.values().sum::<u64>(),
            )
        })
        .map(|n| n.beat.clicks_by_node.clone())
        .unwrap_or_default();
    Ok(Status {
        at: now,
        lease,
        nodes,
        events_last_seq,
        clicks_by_node,
    })
}

impl Status {
    /// A table for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.lease {
            Some(l) => out.push_str(&format!(
                "active calculator: {} at {} (lease revision {}, renewed {:.1} s ago, held since {})\n",
                l.node_id, l.api_url, l.revision, l.age_seconds, l.since.format("%Y-%m-%d %H:%M:%S")
            )),
            None => out.push_str("active calculator: none (no lease held)\n"),
        }
        out.push_str(&format!(
            "event stream: last sequence {}\n\n",
            self.events_last_seq
        ));
        out.push_str(&format!(
            "{:<20} {:<11} {:<5} {:>9} {:>11} {:>12} {:>14}  {}\n",
            "node", "role", "up", "beat (s)", "lag events", "ship lag", "clicks in stream", "api"
        ));
        for n in &self.nodes {
            let b = &n.beat;
            out.push_str(&format!(
                "{:<20} {:<11} {:<5} {:>9.1} {:>11} {:>12} {:>14}  {}{}\n",
                b.node_id,
                b.role,
                if n.up { "yes" } else { "DOWN" },
                n.heartbeat_age_seconds,
                n.lag_events.map_or("-".into(), |l| l.to_string()),
                b.ship_lag_clicks,
                self.clicks_by_node.get(&b.node_id).copied().unwrap_or(0),
                b.api_url,
                if b.active { "  (active)" } else { "" },
            ));
        }
        out
    }
}
