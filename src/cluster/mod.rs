//! Cluster mode on NATS JetStream; the only module that imports
//! `async-nats`.
//!
//! - [`events`]: `POST /api/v1/events` on any node is acknowledged once the
//!   event is in the file-backed stream `REFEDGE_EVENTS`; idempotency is
//!   permanent and cluster-wide through the `refedge_event_ids` bucket.
//!   Calculator nodes replicate the stream into their own event log, at
//!   the stream's sequence numbers, and apply it as a single node does.
//! - [`lease`]: the active calculator holds a lease in the `refedge_lease`
//!   bucket, renewed by compare-and-set; a standby takes it over when it
//!   lapses. Edges forward money reads to the holder ([`forward`]).
//! - [`outbox`]: webhook endpoints changed through the event stream, so
//!   every calculator holds them; delivered events marked in the
//!   `refedge_delivered` bucket, so a take-over does not send them again.
//!
//! Nothing here is on the redirect's path, and a node starts and serves
//! while NATS is unreachable: the connection and the streams are set up
//! by a background task that retries, and cluster writes answer 503 until
//! it succeeds.

pub mod clicks;
pub mod directory;
pub mod events;
pub mod forward;
pub mod lease;
pub mod outbox;
pub mod secrets;
pub mod status;

use crate::config::{ClusterConfig, Role};
use async_nats::jetstream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Stream of accepted merchant and internal events.
pub const EVENTS_STREAM: &str = "REFEDGE_EVENTS";
/// Its subject.
pub const EVENTS_SUBJECT: &str = "refedge.events";
/// Stream of every edge's clicks.
pub const CLICKS_STREAM: &str = "REFEDGE_CLICKS";
/// Bucket: event id hash → digest and stream sequence.
pub const EVENT_IDS_BUCKET: &str = "refedge_event_ids";
/// Bucket: partners and links (`partner.{id}`, `link.{code}`).
pub const DIRECTORY_BUCKET: &str = "refedge_directory";
/// Bucket: the signing keyring and the IP-hash key (lock it down: see
/// the README's *Running a cluster*).
pub const SECRETS_BUCKET: &str = "refedge_secrets";
/// Bucket: the active calculator's lease.
pub const LEASE_BUCKET: &str = "refedge_lease";
/// Bucket: every node's last heartbeat.
pub const NODES_BUCKET: &str = "refedge_nodes";
/// Bucket: webhook event ids delivered (any calculator's sends).
pub const DELIVERED_BUCKET: &str = "refedge_delivered";
/// How long a delivered mark is kept: longer than a delivery can be
/// retried (`webhooks.max_age_hours` is at most 30 days).
const DELIVERED_MAX_AGE: Duration = Duration::from_secs(31 * 86_400);

/// How long a JetStream request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's handle on the cluster.
pub struct Cluster {
    /// This node's name.
    pub node_id: String,
    /// What this node does.
    pub role: Role,
    /// Settings.
    pub config: ClusterConfig,
    /// The connection and JetStream objects, once set up.
    parts: OnceCell<Parts>,
    /// Who holds the calculator lease, as last seen.
    pub lease: lease::LeaseView,
    /// The secrets were shared with the cluster (or taken from it).
    pub secrets_shared: std::sync::atomic::AtomicBool,
}

/// What a connected node holds.
pub(crate) struct Parts {
    pub(crate) js: jetstream::Context,
    pub(crate) events: jetstream::stream::Stream,
    pub(crate) event_ids: jetstream::kv::Store,
    pub(crate) directory: jetstream::kv::Store,
    pub(crate) secrets: jetstream::kv::Store,
    pub(crate) lease: jetstream::kv::Store,
    pub(crate) nodes: jetstream::kv::Store,
    pub(crate) delivered: jetstream::kv::Store,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("NATS is not reachable yet ({0})")]
    NotConnected(&'static str),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Setup(String),
}

impl ClusterError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

impl Cluster {
    /// The node's handle; nothing is connected until [`Cluster::connect`]
    /// runs. The node id comes from the settings or from `node-id` in the
    /// data dir, generated there on first start.
    pub fn new(config: ClusterConfig, data_dir: &Path) -> Result<Arc<Self>, ClusterError> {
        let node_id = match &config.node_id {
            Some(id) => id.clone(),
            None => node_id_file(data_dir)?,
        };
        Ok(Arc::new(Self {
            node_id,
            role: config.role,
            config,
            parts: OnceCell::new(),
            lease: lease::LeaseView::default(),
            secrets_shared: Default::default(),
        }))
    }

    /// The connection, once set up.
    pub(crate) fn parts(&self) -> Result<&Parts, ClusterError> {
        self.parts
            .get()
            .ok_or(ClusterError::NotConnected("still connecting"))
    }

    /// The connection, waiting for it to be set up.
    pub(crate) async fn ready(&self) -> &Parts {
        loop {
            if let Some(p) = self.parts.get() {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One attempt to connect, bounded by `within`; whether connected.
    pub async fn connect_within(&self, within: Duration) -> bool {
        if self.parts.get().is_some() {
            return true;
        }
        match tokio::time::timeout(within, self.try_connect()).await {
            Ok(Ok(parts)) => {
                let _ = self.parts.set(parts);
                true
            }
            _ => false,
        }
    }

    /// Connects and makes sure every stream and bucket exists, retrying
    /// once a second until it succeeds.
    pub async fn connect(self: &Arc<Self>) {
        let mut logged = false;
        loop {
            if self.parts.get().is_some() {
                return;
            }
            match self.try_connect().await {
                Ok(parts) => {
                    let _ = self.parts.set(parts);
                    tracing::info!(node = %self.node_id, role = self.role.label(), "cluster: connected, streams and buckets ready");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, url = %self.config.nats_url, "cluster: NATS not reachable; retrying every second (redirects are served meanwhile)");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<Parts, ClusterError> {
        let c = &self.config;
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("refedge-{}", self.node_id))
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .retry_on_initial_connect();
        if let Some(path) = &c.credentials_file {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| ClusterError::Setup(format!("credentials {}: {e}", path.display())))?;
        }
        if let (Some(u), Some(p)) = (&c.user, &c.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &c.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        let urls: Vec<async_nats::ServerAddr> = c
            .nats_url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(ClusterError::nats)?;
        let client = tokio::time::timeout(REQUEST_TIMEOUT, opts.connect(urls))
            .await
            .map_err(|_| ClusterError::Nats("connect timed out".into()))?
            .map_err(ClusterError::nats)?;
        let js = jetstream::new(client);
        let replicas = c.replicas;
        let events = js
            .get_or_create_stream(jetstream::stream::Config {
                name: EVENTS_STREAM.into(),
                subjects: vec![EVENTS_SUBJECT.into()],
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                // The ledger of record: kept for good.
                retention: jetstream::stream::RetentionPolicy::Limits,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(ClusterError::nats)?;
        js.get_or_create_stream(jetstream::stream::Config {
            name: CLICKS_STREAM.into(),
            subjects: vec!["refedge.clicks.>".into()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            max_age: Duration::from_secs(c.clicks_max_age_days * 86_400),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(ClusterError::nats)?;
        let forever = Duration::ZERO;
        let event_ids = kv(&js, EVENT_IDS_BUCKET, replicas, forever).await?;
        let directory = kv(&js, DIRECTORY_BUCKET, replicas, forever).await?;
        let secrets = kv(&js, SECRETS_BUCKET, replicas, forever).await?;
        let lease = kv(&js, LEASE_BUCKET, replicas, forever).await?;
        let nodes = kv(&js, NODES_BUCKET, replicas, forever).await?;
        let delivered = kv(&js, DELIVERED_BUCKET, replicas, DELIVERED_MAX_AGE).await?;
        Ok(Parts {
            js,
            events,
            event_ids,
            directory,
            secrets,
            lease,
            nodes,
            delivered,
        })
    }
}

/// Opens a key-value bucket (one value a key), creating it the first time;
/// its values expire after `max_age` (zero: never).
///
/// The client's `create_key_value` first reads the account's limits in a
/// shape a 2.9 server does not send; so the bucket's stream is created
/// here as the key-value convention (NATS ADR-8) lays it out, which is
/// what `create_key_value` sends, and then opened as a bucket.
async fn kv(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<jetstream::kv::Store, ClusterError> {
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another node created it a moment ago.
        Err(e) if js.get_key_value(bucket).await.is_ok() => {
            tracing::debug!(error = %e, bucket, "bucket created by another node");
        }
        Err(e) => return Err(ClusterError::nats(e)),
    }
    js.get_key_value(bucket).await.map_err(ClusterError::nats)
}

/// The node id kept in `node-id` in the data dir (generated once).
fn node_id_file(dir: &Path) -> Result<String, ClusterError> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if crate::config::is_node_id(s.trim()) => Ok(s.trim().to_string()),
        Ok(_) => Err(ClusterError::Setup(format!(
            "{} does not hold a node id (a-z, A-Z, 0-9, '_', '-')",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!(
                "node-{}",
                crate::id::random_base62(&ring::rand::SystemRandom::new(), 12)
            );
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| ClusterError::Setup(format!("writing {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(ClusterError::Setup(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}
