//! Directory writes: on a single node, straight to the directory; in
//! cluster mode, to the cluster's bucket first (see
//! [`crate::cluster::directory`]) and then applied here at once, so the
//! node that took the write reads it back. And the click look-up that
//! reaches across the cluster.

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

impl App {
    /// A click by id: this node's log; on a cluster calculator, every
    /// edge's shipped clicks too; on a cluster edge, the active
    /// calculator's answer.
    pub async fn find_click(
        self: &Arc<Self>,
        id: crate::id::ClickId,
    ) -> Result<Option<crate::model::ClickRecord>, ApiError> {
        let a = self.clone();
        let calculates = self.calculates();
        let found = blocking(move || -> Result<_, crate::store::StoreError> {
            match a.store.find_click(id)? {
                Some(c) => Ok(Some(c)),
                None if calculates && a.cluster.is_some() => a.store.cluster_click(id),
                None => Ok(None),
            }
        })
        .await??;
        if found.is_some() || calculates {
            return Ok(found);
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let holder = cluster
            .lease
            .holder()
            .ok_or_else(|| ApiError::Unavailable("no calculator holds the lease".into()))?;
        let (status, body) = super::client::call(
            &holder.api_url,
            &self.node_token,
            "GET",
            &format!("/api/v1/clicks/{id}"),
            None,
        )
        .await
        .map_err(|e| ApiError::Unavailable(format!("the active calculator: {e}")))?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| ApiError::Internal(format!("the calculator's click: {e}"))),
            404 => Ok(None),
            s => Err(ApiError::Unavailable(format!(
                "the active calculator answered {s} to a click look-up"
            ))),
        }
    }
}

/// Pause between look-ups of a click not shipped yet.
const LOOKUP_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl App {
    /// Cluster mode: a signup's click id that this edge did not serve is
    /// looked up across the cluster; a click another edge served and has
    /// not shipped yet is waited for, up to `cluster.attribution_wait_seconds`
    /// for the whole request, after which the signup is decided on what is
    /// known, the wait recorded in the reason.
    pub async fn resolve_across_cluster(
        self: &Arc<Self>,
        items: &mut [crate::store::events::NewEvent],
    ) -> Result<(), ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let wait = std::time::Duration::from_secs(cluster.config.attribution_wait_seconds);
        let deadline = std::time::Instant::now() + wait;
        for item in items.iter_mut() {
            let crate::commission::Event::Signup(s) = &mut item.event else {
                continue;
            };
            let Some(r) = s.resolved.as_mut() else {
                continue;
            };
            if r.error.as_deref() != Some(crate::conversions::NO_CLICK) {
                continue;
            }
            let Some(id) = s
                .attribution
                .click_id
                .as_deref()
                .and_then(|c| c.parse::<crate::id::ClickId>().ok())
            else {
                continue;
            };
            loop {
                if let Some(c) = self.find_click(id).await? {
                    r.click = Some(crate::conversions::click_seen(c));
                    r.error = None;
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    r.error = Some(format!(
                        "{} on any edge of the cluster (waited {} s for the edges' clicks)",
                        crate::conversions::NO_CLICK,
                        wait.as_secs()
                    ));
                    break;
                }
                tokio::time::sleep(LOOKUP_PAUSE).await;
            }
        }
        Ok(())
    }
}
