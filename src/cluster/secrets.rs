//! The signing keyring and the IP-hash key, shared through the
//! `refedge_secrets` bucket so that a token signed on one edge verifies on
//! every other and a visitor's pseudonym is the same everywhere.
//!
//! The first node to reach the bucket puts its own files' contents there
//! (create: of two first nodes, one wins); every other node takes the
//! bucket's and writes them over its files. A node reaches the bucket
//! before it loads its secrets when NATS answers within a few seconds of
//! its start; otherwise it starts with its own, and on connecting adopts
//! the cluster's keyring at once (from the watch, which starts with the
//! keyring as it is) and its IP key at the next start (the click writer
//! holds the key; the log says so). A rotation or retirement is a
//! compare-and-set on the keyring, applied by every node from the watch.

use super::{Cluster, ClusterError};
use crate::secrets::{write_private, IP_KEY_FILE, KEYRING_FILE};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;

/// Bucket key of the keyring (the keyring file's JSON).
pub const KEYRING_KEY: &str = "keyring";
/// Bucket key of the IP-hash key (its 32 bytes).
pub const IP_KEY_KEY: &str = "ip-hash-key";
/// Attempts of a keyring compare-and-set.
const CAS_ATTEMPTS: usize = 8;

/// Which of this node's secret files now hold the cluster's, different
/// from before.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub keyring: bool,
    pub ip_key: bool,
}

impl Cluster {
    /// Shares this node's secret files with the cluster, or takes the
    /// cluster's over them (see the module). `keyring` is false when the
    /// keys come from configuration (then configuration is their source on
    /// every node).
    pub async fn share_secrets(&self, dir: &Path, keyring: bool) -> Result<Adopted, ClusterError> {
        let mut adopted = Adopted::default();
        if keyring {
            adopted.keyring = self.share(dir, KEYRING_KEY, KEYRING_FILE).await?;
        }
        adopted.ip_key = self.share(dir, IP_KEY_KEY, IP_KEY_FILE).await?;
        Ok(adopted)
    }

    async fn share(&self, dir: &Path, key: &str, file: &str) -> Result<bool, ClusterError> {
        let kv = &self.parts()?.secrets;
        let path = dir.join(file);
        let local = std::fs::read(&path)
            .map_err(|e| ClusterError::Setup(format!("reading {}: {e}", path.display())))?;
        match kv.create(key, local.clone().into()).await {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let remote = kv
                    .get(key)
                    .await
                    .map_err(ClusterError::nats)?
                    .ok_or_else(|| ClusterError::Nats(format!("{key} vanished from the bucket")))?;
                if remote.as_ref() == local.as_slice() {
                    return Ok(false);
                }
                write_private(&path, &remote).map_err(|e| ClusterError::Setup(e.to_string()))?;
                tracing::info!(secret = key, "cluster: adopted the cluster's {key}");
                Ok(true)
            }
            Err(e) => Err(ClusterError::nats(e)),
        }
    }

    /// Changes the shared keyring by compare-and-set: `change` gets the
    /// bucket's keyring file and returns the new one (or its own error).
    pub async fn change_keyring<E>(
        &self,
        change: impl Fn(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Result<Vec<u8>, E>, ClusterError> {
        let kv = &self.parts()?.secrets;
        for _ in 0..CAS_ATTEMPTS {
            let entry = kv
                .entry(KEYRING_KEY)
                .await
                .map_err(ClusterError::nats)?
                .ok_or_else(|| ClusterError::Nats("the cluster has no keyring yet".into()))?;
            let new = match change(&entry.value) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            match kv
                .update(KEYRING_KEY, new.clone().into(), entry.revision)
                .await
            {
                Ok(_) => return Ok(Ok(new)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(ClusterError::nats(e)),
            }
        }
        Err(ClusterError::Nats(
            "the keyring is changing too often; try again".into(),
        ))
    }

    /// Calls `adopt` with the bucket's keyring, first as it is now and then
    /// on every change, for as long as the node runs. A watch that breaks
    /// starts again with the keyring as it is then, so a rotation made
    /// while this node was cut off is adopted when it reconnects.
    pub async fn watch_keyring<F, Fut>(&self, adopt: F)
    where
        F: Fn(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            match self
                .ready()
                .await
                .secrets
                .watch_with_history(KEYRING_KEY)
                .await
            {
                Ok(mut w) => {
                    while let Some(Ok(e)) = w.next().await {
                        if e.operation == Operation::Put {
                            adopt(e.value.to_vec()).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cluster: keyring watch failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
