//! The background work of a cluster node: connecting, replicating the
//! event stream (calculator nodes), the lease, the heartbeat, and telling
//! the ledger of this node's partners once connected.

use super::App;
use crate::cluster::directory::Change;
use crate::cluster::lease::Heartbeat;
use crate::cluster::secrets::Adopted;
use crate::cluster::Cluster;
use crate::secrets::KeyringSource;
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
    cluster: Option<Arc<Cluster>>,
}

impl Tasks {
    /// Gives the lease up (a standby takes over at once) and stops.
    pub async fn stop(self) {
        if let Some(c) = &self.cluster {
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
            share_secrets_late(&app, &cluster).await;
            if cluster.role.calculates() {
                announce_partners(&app, &cluster).await;
            }
        }));
    }
    if matches!(app.keyring_source, KeyringSource::File(_)) {
        let app = app.clone();
        let cluster = cluster.clone();
        handles.push(tokio::spawn(async move {
            cluster
                .watch_keyring(|bytes| adopt_keyring(&app, bytes))
                .await;
        }));
    }
    {
        let a = app.clone();
        let apply = Arc::new(move |c: Change| a.apply_change(c));
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
        handles.push(tokio::spawn(
            cluster.clone().replicate_clicks(app.store.clone()),
        ));
    }
    handles.push(tokio::spawn(
        cluster
            .clone()
            .ship_clicks(app.store.clone(), app.metrics.clone()),
    ));
    handles.push(tokio::spawn(cluster.clone().run_lease(api_url.clone())));
    {
        let app = app.clone();
        let cluster = cluster.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                let lease = Duration::from_secs(cluster.config.lease_seconds);
                let clicks_by_node = if cluster.role.calculates() {
                    let store = app.store.clone();
                    tokio::task::spawn_blocking(move || store.cluster_clicks_by_node())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default()
                } else {
                    Default::default()
                };
                let beat = Heartbeat {
                    node_id: cluster.node_id.clone(),
                    role: cluster.role.label().into(),
                    api_url: api_url.clone(),
                    at: chrono::Utc::now(),
                    applied: cluster.role.calculates().then(|| app.conversions.applied()),
                    active: cluster.lease.held_by_me(lease),
                    ship_lag_clicks: app.metrics.ship_lag_clicks.get(),
                    clicks_by_node,
                };
                if let Err(e) = cluster.heartbeat(&beat).await {
                    tracing::debug!(error = %e, "cluster: heartbeat not written");
                }
            }
        }));
    }
    Tasks {
        handles,
        cluster: Some(cluster),
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

/// How long a starting node waits for NATS before loading its secrets.
const SECRETS_WAIT: Duration = Duration::from_secs(5);

/// At start: shares this node's secret files with the cluster or takes
/// the cluster's over them; `None` when NATS did not answer in time (the
/// connect task shares them later).
pub async fn share_secrets_at_start(
    cluster: &Cluster,
    dir: &std::path::Path,
    source: &KeyringSource,
) -> Option<Adopted> {
    if !cluster.connect_within(SECRETS_WAIT).await {
        tracing::warn!("cluster: NATS did not answer within 5 s; starting with this node's own keyring and IP key until it does");
        return None;
    }
    match cluster
        .share_secrets(dir, matches!(source, KeyringSource::File(_)))
        .await
    {
        Ok(a) => {
            cluster
                .secrets_shared
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Some(a)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster: sharing secrets failed; retried once connected");
            None
        }
    }
}

/// After a late connect: shares the secrets; a keyring taken from the
/// cluster is used at once (the keyring watch starts with it), an IP key
/// at the next start.
async fn share_secrets_late(app: &Arc<App>, cluster: &Cluster) {
    if cluster
        .secrets_shared
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let file = matches!(app.keyring_source, KeyringSource::File(_));
    match cluster.share_secrets(&app.config.data_dir, file).await {
        Ok(a) => {
            cluster
                .secrets_shared
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if a.ip_key {
                tracing::error!("cluster: this node started with its own IP-hash key; the cluster's is now in its data dir and is used from the next start (restart this node)");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cluster: sharing secrets failed"),
    }
}

/// Uses a keyring (the file form) from the cluster, and keeps its file.
pub(super) async fn adopt_keyring(app: &Arc<App>, bytes: Vec<u8>) {
    let ring = match crate::secrets::decode_keyring(&bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cluster: the shared keyring is unreadable; keeping this node's");
            return;
        }
    };
    let _serialised = app.keyring_write.lock().await;
    let same = crate::secrets::encode_keyring(&app.keyring.read().expect("keyring lock")) == bytes;
    if same {
        return;
    }
    if let KeyringSource::File(path) = &app.keyring_source {
        if let Err(e) = crate::secrets::write_private(path, &bytes) {
            tracing::error!(error = %e, "cluster: saving the shared keyring failed");
        }
    }
    *app.keyring.write().expect("keyring lock") = ring;
    tracing::info!("cluster: keyring changed by another node, adopted");
}
