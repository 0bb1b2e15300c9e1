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
mod closed;
pub mod cluster_clicks;
mod codec;
mod counts;
pub mod events;
pub mod rollups;
pub mod sessions;
mod suspicious;
pub mod top;
pub mod webhooks;

pub use clicks::{ClickPage, ClickQuery};
pub use suspicious::rank_suspicious;

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
    /// Writes could not be made durable (reported on shutdown).
    #[error("the store cannot write: {0}")]
    Unwritable(String),
    /// The database is being reopened after an I/O failure.
    #[error("the database is being reopened after a write failure")]
    Reopening,
}

impl StoreError {
    /// An I/O failure (disk full, device error): the store may heal once
    /// the cause is gone, unlike corruption.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Self::Db(sled::Error::Io(_)) | Self::Reopening | Self::Unwritable(_)
        )
    }
}

/// Handle to the database; cheap to clone.
///
/// sled 0.34 keeps the first I/O error it meets (a full disk) and fails
/// every later call with it, for the life of the `Db`. So the handle can
/// be reopened in place: [`Store::heal`] drops the broken `Db` and opens
/// the files again once they can be written, while every clone keeps
/// working through the shared slot. Nothing acknowledged is lost: an
/// acknowledged write was flushed before the acknowledgement.
#[derive(Clone)]
pub struct Store {
    /// The open database, `None` while it is being reopened.
    trees: std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<Trees>>>>,
    /// Where it lives, to reopen it.
    path: std::sync::Arc<std::path::PathBuf>,
    /// Set when a call failed with an I/O error: the `Db` needs reopening.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Next event seq; the lock serialises appends. Everything before it
    /// is durable: the calculator reads no further.
    next_event_seq: std::sync::Arc<std::sync::Mutex<u64>>,
    /// Per-link click counts (see [`clicks`]); kept across a reopen.
    counts: std::sync::Arc<counts::ClickCounts>,
    /// Rollup sums not yet written; its lock makes one pass at a time
    /// (see [`rollups`]).
    rollup: std::sync::Arc<std::sync::Mutex<rollups::Pending>>,
    /// Cluster mode: rollups are of the click stream, kept with the
    /// cluster's clicks (see [`rollups`]), not of the local click log.
    cluster_rollups: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Rollup sums of closed days kept between reads (see [`closed`]).
    closed: std::sync::Arc<closed::Closed>,
}

/// The trees of one open `Db`.
struct Trees {
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
    /// The calculator's snapshot and quarantined events.
    calc: sled::Tree,
    /// Cluster mode, calculator nodes: every edge's clicks from the click
    /// stream (see [`cluster_clicks`]).
    cluster_clicks: sled::Tree,
    /// API keys by id (their secrets' hashes only).
    api_keys: sled::Tree,
    /// Each partner's links: `partner id`, `0`, `code` → nothing.
    partner_links: sled::Tree,
    /// Console and portal sessions, and one-time sign-in links, by the
    /// SHA-256 of their secret (see [`sessions`]).
    sessions: sled::Tree,
    /// Click rollups by day (see [`rollups`]).
    rollups: sled::Tree,
    /// The webhook outbox (see [`webhooks`]).
    webhooks: sled::Tree,
}

impl Trees {
    /// Opens the database in `dir`, waiting up to 2 s for a handle dropped
    /// in this process to let go of the file lock.
    fn open(dir: &Path) -> Result<Self, StoreError> {
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
        Ok(Self {
            partners: db.open_tree("partners")?,
            links: db.open_tree("links")?,
            clicks: db.open_tree("clicks")?,
            events: db.open_tree("events")?,
            calc: db.open_tree("calc")?,
            cluster_clicks: db.open_tree("cluster_clicks")?,
            api_keys: db.open_tree("api_keys")?,
            partner_links: db.open_tree("partner_links")?,
            sessions: db.open_tree("sessions")?,
            rollups: db.open_tree("rollups")?,
            webhooks: db.open_tree("webhooks")?,
            db,
        })
    }
}

/// sled's page cache. Nothing on the redirect path reads sled (links and
/// counts are in memory), so the cache only speeds up API reads, which the
/// OS page cache serves well too. sled counts serialized sizes: the pages
/// it holds take about twice this in memory (measured with massif: a 64 MiB
/// cache held ~90 MB after loading 200,000 links), and it fills with the
/// click log's pages as they are written — ~40 MB of a 10,000-link
/// server's RSS after a million clicks with 16 MiB.
const CACHE_BYTES: u64 = 4 << 20;

/// In the calc tree: the directory bucket's revision applied (cluster mode).
const DIRECTORY_CURSOR: &[u8] = b"directory-cursor";

/// In the calc tree: the newest click chunk shipped to the cluster
/// (cluster mode), by its first click id.
const SHIP_CURSOR: &[u8] = b"ship-chunk-cursor";

/// The key a heal writes to prove the store takes writes again.
const PROBE: &[u8] = b"probe";

impl Store {
    /// Opens (or creates) the database in `dir`. A handle dropped in this
    /// process keeps the file lock until sled's background flusher lets go,
    /// a moment later: the open waits up to 2 s for it (another process
    /// holding the database still fails, after that wait).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let trees = Trees::open(dir)?;
        let (counts, marks) = counts::ClickCounts::load(&trees.clicks)?;
        let store = Self {
            trees: std::sync::Arc::new(std::sync::RwLock::new(Some(std::sync::Arc::new(trees)))),
            path: std::sync::Arc::new(dir.to_path_buf()),
            failed: Default::default(),
            next_event_seq: Default::default(),
            counts: std::sync::Arc::new(counts),
            rollup: Default::default(),
            cluster_rollups: Default::default(),
            closed: Default::default(),
        };
        store.replay_clicks(&marks)?;
        store.with(index_partner_links)?;
        store.with(|t| {
            for tree in [&t.rollups, &t.cluster_clicks] {
                top::build_index(tree)?;
                suspicious::mirror_flagged_partners(tree)?;
            }
            Ok(())
        })?;
        let head = store.with(events::head)?;
        *store.next_event_seq.lock().expect("event seq lock") = head + 1;
        Ok(store)
    }

    /// Runs `f` on the open trees; an I/O failure marks the store for
    /// [`Store::heal`].
    fn with<R>(&self, f: impl FnOnce(&Trees) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let trees = self
            .trees
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Reopening)?;
        let r = f(&trees);
        if r.as_ref().is_err_and(StoreError::is_io) {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// The click tree itself, for tests that write old formats.
    #[cfg(test)]
    fn clicks_tree(&self) -> sled::Tree {
        self.with(|t| Ok(t.clicks.clone())).expect("store is open")
    }

    /// Whether a call failed with an I/O error since the last heal.
    pub fn needs_heal(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reopens the database and proves it takes a durable write. On
    /// failure (the disk is still full) the store stays marked and the
    /// caller tries again later; calls meanwhile fail with
    /// [`StoreError::Reopening`]. Blocking: call from a blocking thread.
    pub fn heal(&self) -> Result<(), StoreError> {
        // Not while the disk still refuses a write: the broken Db keeps
        // serving reads meanwhile.
        probe_disk(self.path.parent().unwrap_or(&self.path)).map_err(sled::Error::Io)?;
        // Drop the broken Db first: it holds the file lock.
        let old = self
            .trees
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(old);
        let trees = Trees::open(&self.path)?;
        trees.calc.insert(PROBE, &[1u8][..])?;
        trees.db.flush()?;
        let head = events::head(&trees)?;
        // Appends are held while the seq is reset to what is on disk.
        let mut next = self.next_event_seq.lock().expect("event seq lock");
        *next = head + 1;
        *self
            .trees
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::sync::Arc::new(trees));
        drop(next);
        self.failed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with(|t| Ok(t.db.flush().map(|_| ())?))
    }

    /// A cheap read that fails if the database is unusable.
    pub fn check(&self) -> Result<(), StoreError> {
        self.with(|t| Ok(t.partners.first().map(|_| ())?))
    }

    /// Stores a partner; durable at the next flush.
    pub fn stage_partner(&self, p: &Partner) -> Result<(), StoreError> {
        self.with(|t| {
            t.partners.insert(p.id.as_bytes(), to_json(p))?;
            Ok(())
        })
    }

    /// Stores a link; durable at the next flush.
    pub fn stage_link(&self, l: &Link) -> Result<(), StoreError> {
        self.with(|t| {
            t.links.insert(l.code.as_bytes(), to_json(l))?;
            t.partner_links.insert(partner_link_key(l), &[][..])?;
            Ok(())
        })
    }

    /// Cluster mode: the directory bucket's revision applied up to.
    pub fn directory_cursor(&self) -> Result<u64, StoreError> {
        self.with(|t| {
            Ok(t.calc.get(DIRECTORY_CURSOR)?.map_or(0, |v| {
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
            }))
        })
    }

    /// Records the directory revision applied; durable at the next flush.
    pub fn set_directory_cursor(&self, revision: u64) -> Result<(), StoreError> {
        self.with(|t| {
            t.calc
                .insert(DIRECTORY_CURSOR, &revision.to_be_bytes()[..])?;
            Ok(())
        })
    }

    /// Cluster mode: the first click id of the newest chunk of the local
    /// click log acknowledged by the cluster's click stream.
    pub fn ship_cursor(&self) -> Result<Option<crate::id::ClickId>, StoreError> {
        self.with(|t| {
            Ok(t.calc.get(SHIP_CURSOR)?.and_then(|v| {
                let b: [u8; 16] = v.as_ref().try_into().ok()?;
                Some(crate::id::ClickId::from_bytes(b))
            }))
        })
    }

    /// Records the newest chunk shipped, durably.
    pub fn set_ship_cursor(&self, id: crate::id::ClickId) -> Result<(), StoreError> {
        self.with(|t| {
            t.calc.insert(SHIP_CURSOR, &id.to_bytes()[..])?;
            Ok(t.db.flush().map(|_| ())?)
        })
    }

    /// Stores an API key; durable at the next flush.
    pub fn stage_api_key(&self, k: &crate::access::ApiKey) -> Result<(), StoreError> {
        self.with(|t| {
            t.api_keys.insert(k.id.as_bytes(), to_json(k))?;
            Ok(())
        })
    }

    /// Every API key.
    pub fn api_keys(&self) -> Result<Vec<crate::access::ApiKey>, StoreError> {
        self.with(|t| all_json(&t.api_keys))
    }

    /// A partner by id.
    pub fn partner(&self, id: &str) -> Result<Option<Partner>, StoreError> {
        self.with(|t| get_json(&t.partners, id))
    }

    /// Every partner.
    pub fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        self.with(|t| all_json(&t.partners))
    }

    /// Stores a new link durably; `false` if the code is already taken.
    pub fn insert_link(&self, l: &Link) -> Result<bool, StoreError> {
        self.with(|t| {
            let swapped =
                t.links
                    .compare_and_swap(l.code.as_bytes(), None::<&[u8]>, Some(to_json(l)))?;
            if swapped.is_err() {
                return Ok(false);
            }
            t.partner_links.insert(partner_link_key(l), &[][..])?;
            t.db.flush()?;
            Ok(true)
        })
    }

    /// A link by code.
    pub fn link(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.with(|t| get_json(&t.links, code))
    }

    /// A page of a partner's links, by code, after the code `after`.
    pub fn links_of(
        &self,
        partner_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        self.with(|t| {
            let mut prefix = partner_id.as_bytes().to_vec();
            prefix.push(0);
            let mut start = prefix.clone();
            if let Some(a) = after {
                start.extend_from_slice(a.as_bytes());
                start.push(0);
            }
            let mut out = Vec::new();
            for kv in t.partner_links.range(start..) {
                let (k, _) = kv?;
                if !k.starts_with(&prefix) || out.len() == limit {
                    break;
                }
                let code = &k[prefix.len()..];
                if let Some(v) = t.links.get(code)? {
                    out.push(from_json(code, &v)?);
                }
            }
            Ok(out)
        })
    }

    /// Every link, one at a time (a million links never sit in one `Vec`).
    pub fn for_each_link(&self, mut f: impl FnMut(Link)) -> Result<(), StoreError> {
        self.with(|t| {
            for kv in t.links.iter() {
                let (k, v) = kv?;
                f(from_json(&k, &v)?);
            }
            Ok(())
        })
    }
}

fn partner_link_key(l: &Link) -> Vec<u8> {
    let mut k = Vec::with_capacity(l.partner_id.len() + 1 + l.code.len());
    k.extend_from_slice(l.partner_id.as_bytes());
    k.push(0);
    k.extend_from_slice(l.code.as_bytes());
    k
}

/// Builds the partner → links index once, for a store written before it
/// existed (a link stored since is indexed when it is written).
fn index_partner_links(t: &Trees) -> Result<(), StoreError> {
    if !t.partner_links.is_empty() || t.links.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for kv in t.links.iter() {
        let (k, v) = kv?;
        let l: Link = from_json(&k, &v)?;
        batch.insert(partner_link_key(&l), &[][..]);
    }
    t.partner_links.apply_batch(batch)?;
    t.db.flush()?;
    Ok(())
}

/// Writes, syncs and removes a 64 KiB file in `dir`: whether the disk
/// takes a durable write of about what a batch needs.
fn probe_disk(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".refedge-write-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
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
