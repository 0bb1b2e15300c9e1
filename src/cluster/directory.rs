//! The shared directory: partners, links and API keys in the
//! `refedge_directory` bucket (keys `partner.{id}`, `link.{code}`,
//! `apikey.{id}`; one bucket so a link's
//! put always follows its partner's in the watch), applied by every node
//! into its own in-memory index and sled copy. The redirect reads only
//! that local copy and never waits for NATS.
//!
//! A write goes to the bucket first: `create` for a new partner or link
//! (of two nodes creating one custom code at once, exactly one succeeds),
//! compare-and-set on the revision for a change (a link disabled, a
//! standing changed), retried on a lost race. The writing node applies
//! its own write at once; every node applies every write from its watch,
//! from the revision it last applied (kept in its store), so a node that
//! was cut off catches up when NATS returns.

use super::{Cluster, ClusterError};
use crate::directory::{Directory, DirectoryError};
use crate::model::{Link, Partner, PartnerStatus};
use crate::store::{Store, StoreError};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Changes applied (and flushed) together while catching up.
const WATCH_BATCH: usize = 1000;
/// Attempts of a compare-and-set before giving up on a busy key.
const CAS_ATTEMPTS: usize = 16;

fn partner_key(id: &str) -> String {
    format!("partner.{id}")
}

fn link_key(code: &str) -> String {
    format!("link.{code}")
}

/// What a directory write can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Cluster {
    /// Creates a partner in the bucket (its id is fresh: a clash is a
    /// failure, not a retry).
    pub async fn create_partner(&self, p: &Partner) -> Result<(), ClusterError> {
        let kv = &self.parts()?.directory;
        let body = serde_json::to_vec(p).expect("partners serialise");
        kv.create(partner_key(&p.id), body.into())
            .await
            .map_err(ClusterError::nats)?;
        Ok(())
    }

    /// Creates a link in the bucket; `false` when its code is taken.
    pub async fn create_link(&self, l: &Link) -> Result<bool, ClusterError> {
        let kv = &self.parts()?.directory;
        let body = serde_json::to_vec(l).expect("links serialise");
        match kv.create(link_key(&l.code), body.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ClusterError::nats(e)),
        }
    }

    /// Creates an API key in the bucket (its id is fresh).
    pub async fn create_api_key(&self, k: &crate::access::ApiKey) -> Result<(), ClusterError> {
        let kv = &self.parts()?.directory;
        let body = serde_json::to_vec(k).expect("keys serialise");
        kv.create(format!("apikey.{}", k.id), body.into())
            .await
            .map_err(ClusterError::nats)?;
        Ok(())
    }

    /// Revokes an API key by compare-and-set (revoking twice keeps the
    /// first time); the key as stored after.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::access::ApiKey, WriteError> {
        self.compare_and_set(
            &format!("apikey.{id}"),
            "api key",
            |k: &crate::access::ApiKey| {
                if k.revoked_at.is_some() {
                    return Ok(None);
                }
                let mut k = k.clone();
                k.revoked_at = Some(now);
                Ok(Some(k))
            },
        )
        .await
    }

    /// Changes a partner's standing by compare-and-set; the partner as
    /// stored after.
    pub async fn set_status(&self, id: &str, status: PartnerStatus) -> Result<Partner, WriteError> {
        self.compare_and_set(&partner_key(id), "partner", |p: &Partner| {
            Ok(Some(Directory::with_status(p, status)?))
        })
        .await
    }

    /// Disables a link by compare-and-set (disabling twice keeps the
    /// first time); the link as stored after.
    pub async fn disable_link(&self, code: &str, now: DateTime<Utc>) -> Result<Link, WriteError> {
        self.compare_and_set(&link_key(code), "link", |l: &Link| {
            if l.disabled_at.is_some() {
                return Ok(None);
            }
            let mut l = l.clone();
            l.disabled_at = Some(now);
            Ok(Some(l))
        })
        .await
    }

    /// Reads `key`, lets `change` make the new value (`None`: keep it as
    /// it is) and writes it on the revision read, again on a lost race;
    /// the value as stored after. A missing key is `what` not found.
    async fn compare_and_set<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
        change: impl Fn(&T) -> Result<Option<T>, WriteError>,
    ) -> Result<T, WriteError> {
        let kv = &self.parts()?.directory;
        for _ in 0..CAS_ATTEMPTS {
            let entry = kv
                .entry(key)
                .await
                .map_err(ClusterError::nats)?
                .filter(|e| e.operation == Operation::Put)
                .ok_or(DirectoryError::NotFound(what))?;
            let current: T = serde_json::from_slice(&entry.value)
                .map_err(|e| ClusterError::Nats(format!("{key} in the bucket: {e}")))?;
            let Some(new) = change(&current)? else {
                return Ok(current);
            };
            let body = serde_json::to_vec(&new).expect("directory entries serialise");
            match kv.update(key, body.into(), entry.revision).await {
                Ok(_) => return Ok(new),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(ClusterError::nats(e).into()),
            }
        }
        Err(ClusterError::Nats(format!("{key} is changing too often; try again")).into())
    }

    /// Applies the bucket's changes to this node's directory for as long
    /// as the node runs, from the revision last applied; `apply` runs on a
    /// blocking thread. A broken watch resumes from that revision.
    pub async fn watch_directory(
        self: Arc<Self>,
        store: Store,
        apply: Arc<dyn Fn(Change) -> Result<(), StoreError> + Send + Sync>,
    ) {
        loop {
            if let Err(e) = self.watch_once(&store, &apply).await {
                tracing::warn!(error = %e, "cluster: directory watch interrupted; resuming from the last revision applied");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn watch_once(
        &self,
        store: &Store,
        apply: &Arc<dyn Fn(Change) -> Result<(), StoreError> + Send + Sync>,
    ) -> Result<(), ClusterError> {
        let kv = self.ready().await.directory.clone();
        let s = store.clone();
        let from = tokio::task::spawn_blocking(move || s.directory_cursor())
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        let watch = kv
            .watch_all_from_revision(from + 1)
            .await
            .map_err(ClusterError::nats)?;
        let mut chunks = watch.ready_chunks(WATCH_BATCH);
        while let Some(entries) = chunks.next().await {
            let mut changes = Vec::with_capacity(entries.len());
            let mut revision = 0;
            for entry in entries {
                let entry = entry.map_err(ClusterError::nats)?;
                revision = revision.max(entry.revision);
                // Nothing deletes from the directory; an operator's purge
                // leaves the local copy as it was.
                if entry.operation == Operation::Put {
                    changes.extend(decode(&entry.key, &entry.value));
                }
            }
            let apply = apply.clone();
            let s = store.clone();
            // Applied in order, then the revision, then one flush: a crash
            // in between applies them again, which changes nothing.
            tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                for c in changes {
                    apply(c)?;
                }
                s.set_directory_cursor(revision)?;
                s.flush()
            })
            .await
            .map_err(ClusterError::nats)?
            .map_err(ClusterError::nats)?;
        }
        Err(ClusterError::Nats("the directory watch ended".into()))
    }
}

/// A change to apply.
pub enum Change {
    Partner(Partner),
    Link(Link),
    ApiKey(crate::access::ApiKey),
}

fn decode(key: &str, value: &[u8]) -> Option<Change> {
    let parsed = if key.starts_with("partner.") {
        serde_json::from_slice(value).map(Change::Partner)
    } else if key.starts_with("link.") {
        serde_json::from_slice(value).map(Change::Link)
    } else if key.starts_with("apikey.") {
        serde_json::from_slice(value).map(Change::ApiKey)
    } else {
        return None;
    };
    parsed
        .map_err(
            |e| tracing::error!(key, error = %e, "cluster: unreadable directory entry skipped"),
        )
        .ok()
}
