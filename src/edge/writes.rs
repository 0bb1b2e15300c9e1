//! Directory writes: on a single node, straight to the directory; in
//! cluster mode, to the cluster's bucket first (see
//! [`crate::cluster::directory`]) and then applied here at once, so the
//! node that took the write reads it back.

use super::http::{blocking, ApiError};
use super::App;
use crate::cluster::directory::WriteError;
use crate::directory::{DirectoryError, NewLink, NewPartner};
use crate::model::{Link, Partner, PartnerStatus};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Attempts at a free generated code (a clash is astronomically unlikely).
const CODE_ATTEMPTS: usize = 8;

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Cluster(e) => cluster_unavailable(e),
            WriteError::Directory(e) => e.into(),
            WriteError::Store(e) => e.into(),
        }
    }
}

fn cluster_unavailable(e: crate::cluster::ClusterError) -> ApiError {
    ApiError::Unavailable(format!("the cluster's directory: {e}"))
}

impl App {
    /// Creates a partner.
    pub async fn create_partner(
        self: &Arc<Self>,
        new: NewPartner,
        now: DateTime<Utc>,
    ) -> Result<Partner, ApiError> {
        let a = self.clone();
        let Some(cluster) = &self.cluster else {
            return Ok(blocking(move || a.directory.create_partner(new, now)).await??);
        };
        let p = self.directory.check_partner(new, now)?;
        cluster
            .create_partner(&p)
            .await
            .map_err(cluster_unavailable)?;
        self.apply_partner(p).await
    }

    /// Creates a link; a custom code taken anywhere in the cluster is a 409.
    pub async fn create_link(
        self: &Arc<Self>,
        new: NewLink,
        now: DateTime<Utc>,
    ) -> Result<Link, ApiError> {
        let a = self.clone();
        let Some(cluster) = &self.cluster else {
            return Ok(blocking(move || a.directory.create_link(new, now)).await??);
        };
        for _ in 0..CODE_ATTEMPTS {
            let (link, custom) = self.directory.check_link(&new, now)?;
            if cluster
                .create_link(&link)
                .await
                .map_err(cluster_unavailable)?
            {
                let a = self.clone();
                let l = link.clone();
                blocking(move || {
                    a.directory.apply_link(&l)?;
                    a.store.flush()
                })
                .await??;
                return Ok(link);
            }
            if custom {
                return Err(DirectoryError::CodeTaken(link.code).into());
            }
        }
        Err(ApiError::invalid(
            "code",
            "could not find a free code; try again",
        ))
    }

    /// Disables a link (it answers 410).
    pub async fn disable_link(
        self: &Arc<Self>,
        code: String,
        now: DateTime<Utc>,
    ) -> Result<Link, ApiError> {
        let a = self.clone();
        let Some(cluster) = &self.cluster else {
            return Ok(blocking(move || a.directory.disable_link(&code, now)).await??);
        };
        let link = cluster.disable_link(&code, now).await?;
        let l = link.clone();
        blocking(move || {
            a.directory.apply_link(&l)?;
            a.store.flush()
        })
        .await??;
        Ok(link)
    }

    /// Changes a partner's standing.
    pub async fn set_status(
        self: &Arc<Self>,
        id: String,
        status: PartnerStatus,
    ) -> Result<Partner, ApiError> {
        let a = self.clone();
        let Some(cluster) = &self.cluster else {
            return Ok(blocking(move || a.directory.set_status(&id, status)).await??);
        };
        let p = cluster.set_status(&id, status).await?;
        self.apply_partner(p).await
    }

    async fn apply_partner(self: &Arc<Self>, p: Partner) -> Result<Partner, ApiError> {
        let a = self.clone();
        blocking(move || {
            a.directory.apply_partner(&p)?;
            a.store.flush()?;
            Ok::<_, crate::store::StoreError>(p)
        })
        .await?
        .map_err(Into::into)
    }
}
