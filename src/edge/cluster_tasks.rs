//! The background work of a cluster node: connecting, replicating the
//! event stream (calculator nodes), the lease, the heartbeat, and telling
//! the ledger of this node's partners once connected.

use super::App;
use crate::cluster::directory::Change;
use crate::cluster::lease::Heartbeat;
use crate::cluster::Cluster;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often a node writes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Half-seconds a calculator waits to catch up before announcing partners.
const CATCH_UP_POLLS: usize = 120;
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
            if cluster.role.calculates() {
                announce_partners(&app, &cluster).await;
            }
        }));
    }
    {
        let a = app.clone();
        let apply = Arc::new(move |c: Change| match c {
            Change::Partner(p) => a.directory.apply_partner(&p),
            Change::Link(l) => a.directory.apply_link(&l),
        });
        handles.push(tokio::spawn(
            cluster.clone().watch_directory(app.store.clone(), apply),
        ));
    }
    if cluster.role.calculates() {
        handles.push(tokio::spawn(
            cluster
                .clone()
                .replicate(app.store.clone(), app.conversions.clone()),
        ));
    }
    {
        handles.push(tokio::spawn(
            cluster
                .clone()
                .ship_clicks(app.store.clone(), app.metrics.clone()),
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
                    ship_lag_clicks: app.metrics.ship_lag_clicks.get(),
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

/// Once this calculator has caught up with the stream, publishes a partner
/// event for each partner in the directory the ledger does not know: a
/// partner whose node died between the directory write and the event
/// reaches the ledger this way. Repeats are answered as duplicates.
async fn announce_partners(app: &Arc<App>, cluster: &Cluster) {
    for _ in 0..CATCH_UP_POLLS {
        match cluster.stream_head().await {
            Ok(head) if app.conversions.applied() >= head => break,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let store = app.store.clone();
    let partners = match tokio::task::spawn_blocking(move || store.partners()).await {
        Ok(Ok(p)) => p,
        _ => return,
    };
    let partners: Vec<_> = partners
        .into_iter()
        .filter(|p| app.conversions.read(|c| c.partner(&p.id).is_none()))
        .collect();
    for chunk in partners.chunks(PARTNER_BATCH) {
        let events = chunk.iter().map(super::partner_event).collect();
        if let Err(e) = app.append(events, app.clock.now()).await {
            tracing::warn!(error = %e, "cluster: announcing partners to the ledger failed; next connect tries again");
            return;
        }
    }
}
