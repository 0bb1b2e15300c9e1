//! The active calculator's lease, in the `refedge_lease` bucket (key
//! `calculator`), and every node's heartbeat in `refedge_nodes`.
//!
//! The holder renews the key once a second by compare-and-set on its last
//! revision. A standby watches the revision with its own monotonic clock
//! (no wall clocks compared across machines): when it has not moved for
//! `cluster.lease_seconds`, the standby writes its own claim with
//! compare-and-set on the revision it saw, so of two standbys only one
//! wins. A holder that cannot renew for `lease_seconds` stops calling
//! itself active before anyone may take over from it.
//!
//! Every calculator node applies the whole event stream to its own state,
//! so the lease does not guard the ledger's data (no calculator shares or
//! overwrites another's state): it names the node that answers the money
//! reads edges forward, and it is what `refedge cluster status` shows.

use super::{Cluster, ClusterError};
use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The lease key.
pub const LEASE_KEY: &str = "calculator";
/// How often the holder renews, and a standby or an edge looks.
const TICK: Duration = Duration::from_millis(500);

/// What the lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The active calculator.
    pub node_id: String,
    /// Where its API answers.
    pub api_url: String,
    /// When it took the lease (its clock, for display).
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The lease as this node last saw it.
#[derive(Default)]
pub struct LeaseView {
    inner: RwLock<Seen>,
}

#[derive(Default, Clone)]
struct Seen {
    holder: Option<Holder>,
    revision: u64,
    /// When this node last saw the revision change.
    changed: Option<Instant>,
    /// This node holds it, renewed at this instant.
    renewed: Option<Instant>,
}

impl LeaseView {
    /// The active calculator, as last seen.
    pub fn holder(&self) -> Option<Holder> {
        self.read().holder
    }

    /// Whether this node holds a live lease.
    pub fn held_by_me(&self, lease: Duration) -> bool {
        self.read().renewed.is_some_and(|t| t.elapsed() < lease)
    }

    /// The lease's revision, as last seen.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    fn read(&self) -> Seen {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A node's heartbeat, in `refedge_nodes` under its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    pub role: String,
    pub api_url: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Calculator nodes: the last event applied (stream sequence).
    pub applied: Option<u64>,
    /// Calculator nodes: whether this node holds the lease.
    pub active: bool,
    /// Clicks in this node's log not yet in the click stream.
    #[serde(default)]
    pub ship_lag_clicks: i64,
    /// Calculator nodes: the distinct clicks replicated from each edge.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub clicks_by_node: std::collections::BTreeMap<String, u64>,
}

impl Cluster {
    /// Keeps the lease view current; on a calculator node, holds the
    /// lease or stands by to take it. Runs for the life of the node.
    pub async fn run_lease(self: Arc<Self>, api_url: String) {
        let lease = Duration::from_secs(self.config.lease_seconds);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.lease_step(&api_url, lease).await {
                tracing::debug!(error = %e, "cluster: lease step failed");
            }
        }
    }

    async fn lease_step(&self, api_url: &str, lease: Duration) -> Result<(), ClusterError> {
        let kv = &self.parts()?.lease;
        let entry = kv.entry(LEASE_KEY).await.map_err(ClusterError::nats)?;
        let live = entry.as_ref().filter(|e| {
            e.operation == async_nats::jetstream::kv::Operation::Put && !e.value.is_empty()
        });
        let seen: Option<(Holder, u64)> = live.and_then(|e| {
            serde_json::from_slice::<Holder>(&e.value)
                .ok()
                .map(|h| (h, e.revision))
        });
        let now = Instant::now();
        // Record what was seen; a new revision restarts the standby's wait.
        self.lease.update(|s| {
            let rev = seen.as_ref().map_or(0, |(_, r)| *r);
            if rev != s.revision || s.changed.is_none() {
                s.changed = Some(now);
            }
            s.revision = rev;
            s.holder = seen.as_ref().map(|(h, _)| h.clone());
        });
        if !self.role.calculates() {
            return Ok(());
        }
        let mine = Holder {
            node_id: self.node_id.clone(),
            api_url: api_url.to_string(),
            since: chrono::Utc::now(),
        };
        match seen {
            Some((h, rev)) if h.node_id == self.node_id => {
                let renewed = Holder {
                    since: h.since,
                    ..mine
                };
                let body = serde_json::to_vec(&renewed).expect("serialises");
                match kv.update(LEASE_KEY, body.into(), rev).await {
                    Ok(new) => self.lease.update(|s| {
                        s.revision = new;
                        s.changed = Some(now);
                        s.renewed = Some(now);
                    }),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!("cluster: lost the calculator lease");
                        self.lease.update(|s| s.renewed = None);
                    }
                    Err(e) => return Err(ClusterError::nats(e)),
                }
            }
            Some((_, rev)) => {
                self.lease.update(|s| s.renewed = None);
                let stale = self
                    .lease
                    .read()
                    .changed
                    .is_some_and(|t| t.elapsed() >= lease);
                if stale {
                    let body = serde_json::to_vec(&mine).expect("serialises");
                    if let Ok(new) = kv.update(LEASE_KEY, body.into(), rev).await {
                        tracing::warn!(
                            revision = new,
                            "cluster: took over the calculator lease (the holder stopped renewing)"
                        );
                        self.took(mine, new, now);
                    }
                }
            }
            None => {
                let body = serde_json::to_vec(&mine).expect("serialises");
                let won = match entry {
                    // Never held: create, so of two starting nodes one wins.
                    None => kv.create(LEASE_KEY, body.into()).await.map_err(|e| {
                        if e.kind() == CreateErrorKind::AlreadyExists {
                            None
                        } else {
                            Some(ClusterError::nats(e))
                        }
                    }),
                    // Released (deleted) or unreadable: compare-and-set on it.
                    Some(e) => kv
                        .update(LEASE_KEY, body.into(), e.revision)
                        .await
                        .map_err(|_| None),
                };
                match won {
                    Ok(new) => {
                        tracing::info!(revision = new, "cluster: holding the calculator lease");
                        self.took(mine, new, now);
                    }
                    Err(Some(e)) => return Err(e),
                    Err(None) => {}
                }
            }
        }
        Ok(())
    }

    fn took(&self, holder: Holder, revision: u64, now: Instant) {
        self.lease.update(|s| {
            s.holder = Some(holder);
            s.revision = revision;
            s.changed = Some(now);
            s.renewed = Some(now);
        });
    }

    /// Gives the lease up at a graceful stop, so a standby takes over at
    /// once instead of after `lease_seconds`.
    pub async fn release_lease(&self) {
        let lease = Duration::from_secs(self.config.lease_seconds);
        if !self.lease.held_by_me(lease) {
            return;
        }
        if let Ok(p) = self.parts() {
            let rev = self.lease.revision();
            // Compare-and-set to an empty value: only if still ours.
            let _ = p.lease.update(LEASE_KEY, bytes::Bytes::new(), rev).await;
        }
        self.lease.update(|s| s.renewed = None);
    }

    /// Writes this node's heartbeat.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), ClusterError> {
        let kv = &self.parts()?.nodes;
        kv.put(
            &self.node_id,
            serde_json::to_vec(beat).expect("serialises").into(),
        )
        .await
        .map_err(ClusterError::nats)?;
        Ok(())
    }
}
