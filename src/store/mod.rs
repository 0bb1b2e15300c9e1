//! Durable storage on sled; the only module that imports it. Key layout
//! lives here and nowhere else.
//!
//! Trees:
//! - `partners`: partner id → JSON [`Partner`]
//! - `links`: code → JSON [`Link`]
//! - `clicks`: the append-only click log, its partner index and per-link
//!   count snapshots in one tree, so a group commit is one atomic batch
//!   (layout in [`clicks`]).
//!
//! Methods block (sled I/O and fsync): call them from a blocking thread.

pub mod clicks;
mod codec;
mod counts;
pub mod events;

pub use clicks::{ClickPage, ClickQuery};

use crate::model::{Link, Partner};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("stored record under {key:?} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

impl StoreError {
    /// An I/O failure (disk full, device error): the store may heal once
    /// the cause is gone, unlike corruption.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Db(sled::Error::Io(_)))
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The sled database (for flushes).
    db: sled::Db,
    /// Partners by id.
    partners: sled::Tree,
    /// Links by code.
    links: sled::Tree,
    /// Clicks, their index and count snapshots.
    clicks: sled::Tree,
    /// The event log and idempotency index (see [`events`]).
    events: sled::Tree,
    /// The calculator's snapshot.
    calc: sled::Tree,
    /// Next event seq; the lock serialises appends.
    next_event_seq: std::sync::Arc<std::sync::Mutex<u64>>,
    /// Per-link click counts (see [`clicks`]).
    counts: std::sync::Arc<counts::ClickCounts>,
}

/// sled's page cache. Nothing on the redirect path reads sled (links and
/// counts are in memory), so the cache only speeds up API reads, which the
/// OS page cache serves well too. sled counts serialized sizes: the pages
/// it holds take about twice this in memory (measured with massif: a 64 MiB
/// cache held ~90 MB after loading 200,000 links), and it fills with the
/// click log's pages as they are written — ~40 MB of a 10,000-link
/// server's RSS after a million clicks with 16 MiB.
const CACHE_BYTES: u64 = 4 << 20;

impl Store {
    /// Opens (or creates) the database in `dir`. A handle dropped in this
    /// process keeps the file lock until sled's background flusher lets go,
    /// a moment later: the open waits up to 2 s for it (another process
    /// holding the database still fails, after that wait).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        let mut waited = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if waited < 100 && e.to_string().contains("acquire lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += 1;
                }
                other => break other?,
            }
        };
        let clicks = db.open_tree("clicks")?;
        let (counts, marks) = counts::ClickCounts::load(&clicks)?;
        let store = Self {
            partners: db.open_tree("partners")?,
            links: db.open_tree("links")?,
            clicks,
            events: db.open_tree("events")?,
            calc: db.open_tree("calc")?,
            next_event_seq: Default::default(),
            counts: std::sync::Arc::new(counts),
            db,
        };
        store.replay_clicks(&marks)?;
        *store.next_event_seq.lock().expect("event seq lock") = store.last_event_seq()? + 1;
        Ok(store)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A cheap read that fails if the database is unusable.
    pub fn check(&self) -> Result<(), StoreError> {
        self.partners.first()?;
        Ok(())
    }

    /// Stores a partner durably.
    pub fn put_partner(&self, p: &Partner) -> Result<(), StoreError> {
        self.partners.insert(p.id.as_bytes(), to_json(p))?;
        self.flush()
    }

    /// A partner by id.
    pub fn partner(&self, id: &str) -> Result<Option<Partner>, StoreError> {
        get_json(&self.partners, id)
    }

    /// Every partner.
    pub fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        all_json(&self.partners)
    }

    /// Stores a new link durably; `false` if the code is already taken.
    pub fn insert_link(&self, l: &Link) -> Result<bool, StoreError> {
        let swapped =
            self.links
                .compare_and_swap(l.code.as_bytes(), None::<&[u8]>, Some(to_json(l)))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Replaces an existing link durably.
    pub fn put_link(&self, l: &Link) -> Result<(), StoreError> {
        self.links.insert(l.code.as_bytes(), to_json(l))?;
        self.flush()
    }

    /// A link by code.
    pub fn link(&self, code: &str) -> Result<Option<Link>, StoreError> {
        get_json(&self.links, code)
    }

    /// Every link, one at a time (a million links never sit in one `Vec`).
    pub fn for_each_link(&self, mut f: impl FnMut(Link)) -> Result<(), StoreError> {
        for kv in self.links.iter() {
            let (k, v) = kv?;
            f(from_json(&k, &v)?);
        }
        Ok(())
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn from_json<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()))
}

/// A value under `key` that cannot be read back.
fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn get_json<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
    tree.get(key.as_bytes())?
        .map(|v| from_json(key.as_bytes(), &v))
        .transpose()
}

fn all_json<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            from_json(&k, &v)
        })
        .collect()
}
