//! The background work of a cluster node: connecting, replicating the
//! event stream (calculator nodes), the lease, the heartbeat, and telling
//! the ledger of this node's partners once connected.

use super::App;
use crate::cluster::lease::Heartbeat;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often a node writes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Partner events published per batch when a node (re)connects.
const PARTNER_BATCH: usize = 500;

/// The running tasks; none when the node runs on its own.
#[derive(Default)]
pub struct Tasks {
    handles: Vec<JoinHandle<()>>,
    app: Option<Arc<App>>,
}

impl Tasks {
    /// Gives the lease up (a standby takes over at once) and stops.
    pub async fn stop(self) {
        if let Some(c) = self.app.as_ref().and_then(|a| a.cluster.as_ref()) {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.release_lease()).await;
        }
        for h in self.handles {
            h.abort();
        }
    }
}

/// Starts the cluster's tasks for a node listening on `addr`.
pub fn spawn(app: &Arc<App>, addr: SocketAddr) -> Tasks {
    let Some(cluster) = app.cluster.clone() else {
        return Tasks::default();
    };
    let api_url = cluster
        .config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut handles = Vec::new();
    {
        let cluster = cluster.clone();
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            cluster.connect().await;
            announce_partners(&app).await;
        }));
    }
    if cluster.role.calculates() {
        handles.push(tokio::spawn(
            cluster
                .clone()
                .replicate(app.store.clone(), app.conversions.clone()),
        ));
    }
    handles.push(tokio::spawn(cluster.clone().run_lease(api_url.clone())));
    {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                let lease = Duration::from_secs(cluster.config.lease_seconds);
                let beat = Heartbeat {
                    node_id: cluster.node_id.clone(),
                    role: cluster.role.label().into(),
                    api_url: api_url.clone(),
                    at: chrono::Utc::now(),
                    applied: cluster.role.calculates().then(|| app.conversions.applied()),
                    active: cluster.lease.held_by_me(lease),
                };
                if let Err(e) = cluster.heartbeat(&beat).await {
                    tracing::debug!(error = %e, "cluster: heartbeat not written");
                }
            }
        }));
    }
    Tasks {
        handles,
        app: Some(app.clone()),
    }
}

/// Publishes a partner event for every partner in this node's directory:
/// a partner created while the stream could not be reached reaches the
/// ledger this way. Repeats are answered as duplicates.
async fn announce_partners(app: &Arc<App>) {
    let store = app.store.clone();
    let partners = match tokio::task::spawn_blocking(move || store.partners()).await {
        Ok(Ok(p)) => p,
        _ => return,
    };
    for chunk in partners.chunks(PARTNER_BATCH) {
        let events = chunk.iter().map(super::partner_event).collect();
        if let Err(e) = app.append(events, app.clock.now()).await {
            tracing::warn!(error = %e, "cluster: announcing partners to the ledger failed; next connect tries again");
            return;
        }
    }
}
