//! Directory writes: on a single node, straight to the directory; in
//! cluster mode, to the cluster's bucket first (see
//! [`crate::cluster::directory`]) and then applied here at once, so the
//! node that took the write reads it back. And the click look-up that
//! reaches across the cluster.

use super::http::{blocking, ApiError};
use super::App;
use crate::cluster::directory::{Change, WriteError};
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
        self.apply_now(Change::Partner(p.clone())).await?;
        Ok(p)
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
            let link = self.directory.check_link(&new, now)?;
            if cluster
                .create_link(&link)
                .await
                .map_err(cluster_unavailable)?
            {
                self.apply_now(Change::Link(link.clone())).await?;
                return Ok(link);
            }
            if new.code.is_some() {
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
        self.apply_now(Change::Link(link.clone())).await?;
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
        self.apply_now(Change::Partner(p.clone())).await?;
        Ok(p)
    }

    /// Applies a directory change to this node's memory and store, durable
    /// at the store's next flush (blocking): a write this node made in the
    /// cluster's bucket, or one its watch brought from another node.
    pub(super) fn apply_change(&self, c: Change) -> Result<(), crate::store::StoreError> {
        match c {
            Change::Partner(p) => self.directory.apply_partner(&p),
            Change::Link(l) => self.directory.apply_link(&l),
            Change::ApiKey(k) => self.keys.apply(&k),
        }
    }

    /// [`App::apply_change`] and a flush, off the request task.
    pub(super) async fn apply_now(self: &Arc<Self>, c: Change) -> Result<(), ApiError> {
        let a = self.clone();
        Ok(blocking(move || {
            a.apply_change(c)?;
            a.store.flush()
        })
        .await??)
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
    /// Resolves each signup's token or click id to the click it names, and
    /// keeps only the pseudonym of its address (raw addresses never reach
    /// disk). A click id is looked up with [`App::find_click`]; in cluster
    /// mode a click another edge served and has not shipped yet is waited
    /// for, up to `cluster.attribution_wait_seconds` for the whole request,
    /// after which the signup is decided on what is known, the wait in the
    /// reason.
    pub async fn resolve_signups(
        self: &Arc<Self>,
        items: &mut [crate::store::events::NewEvent],
    ) -> Result<(), ApiError> {
        // In cluster mode: how long to wait, and until when.
        let wait = self.cluster.as_ref().map(|c| {
            let w = std::time::Duration::from_secs(c.config.attribution_wait_seconds);
            (w, std::time::Instant::now() + w)
        });
        for item in items.iter_mut() {
            let crate::commission::Event::Signup(s) = &mut item.event else {
                continue;
            };
            if let Some(token) = &s.attribution.token {
                let mut resolved = {
                    let keyring = self.keyring.read().expect("keyring lock");
                    crate::conversions::resolve_token(token, &keyring)
                };
                self.add_review_flags(&mut resolved, wait).await?;
                s.resolved = Some(resolved);
            } else if let Some(raw) = &s.attribution.click_id {
                let resolved = match raw.parse::<crate::id::ClickId>() {
                    Err(e) => crate::commission::event::Resolved {
                        click: None,
                        error: Some(format!("click id {e}")),
                    },
                    Ok(id) => self.click_for_signup(id, wait).await?,
                };
                s.resolved = Some(resolved);
            }
            if let Some(ip) = s.customer.ip.take().and_then(|ip| ip.trim().parse().ok()) {
                s.customer.ip_hash = Some(crate::net::ip_hash(&self.ip_key, ip));
            }
        }
        Ok(())
    }

    /// A token carries no fraud flags: its click was attributable. In a
    /// program that reviews paid search, an attributable click may still
    /// have been a paid-search one, so its flags are read from the click
    /// log (waiting as for click ids in cluster mode).
    async fn add_review_flags(
        self: &Arc<Self>,
        resolved: &mut crate::commission::event::Resolved,
        wait: Option<(std::time::Duration, std::time::Instant)>,
    ) -> Result<(), ApiError> {
        let Some(click) = &mut resolved.click else {
            return Ok(());
        };
        let reviews = click
            .program
            .as_ref()
            .and_then(|p| self.config.programs.get(p))
            .is_some_and(crate::program::Program::reviews_paid_search);
        if let (true, Ok(id)) = (reviews, click.id.parse::<crate::id::ClickId>()) {
            if let Some(logged) = self.click_for_signup(id, wait).await?.click {
                click.flags = logged.flags;
            }
        }
        Ok(())
    }

    /// The click a signup's click id names, looked up again until the
    /// deadline of `wait` (the wait and its end), if any.
    async fn click_for_signup(
        self: &Arc<Self>,
        id: crate::id::ClickId,
        wait: Option<(std::time::Duration, std::time::Instant)>,
    ) -> Result<crate::commission::event::Resolved, ApiError> {
        loop {
            if let Some(c) = self.find_click(id).await? {
                return Ok(crate::commission::event::Resolved {
                    click: Some(crate::conversions::click_seen(c)),
                    error: None,
                });
            }
            let error = match wait {
                Some((_, until)) if std::time::Instant::now() < until => {
                    tokio::time::sleep(LOOKUP_PAUSE).await;
                    continue;
                }
                Some((w, _)) => format!(
                    "no click with this id on any edge of the cluster (waited {} s for the edges' clicks)",
                    w.as_secs()
                ),
                None => "no click with this id".to_string(),
            };
            return Ok(crate::commission::event::Resolved {
                click: None,
                error: Some(error),
            });
        }
    }
}
