//! The click log on disk, append-only: each group commit writes its clicks
//! as a few chunk values (≤ [`CHUNK`] records each), one index entry per
//! partner per chunk, and nothing per click. Per-link click counts live in
//! memory and are snapshotted atomically (every [`SNAPSHOT_EVERY`] clicks,
//! at most every [`SNAPSHOT_MIN_INTERVAL`], and at shutdown) as a few pages
//! of packed counts; on open, the chunks after the last snapshot are
//! replayed.
//!
//! Keys in the `clicks` tree:
//! - `b` + first click id (16 bytes BE) → the chunk's records, in the
//!   binary format of [`super::codec`] (older chunks: a JSON array)
//! - `p` + partner id + `0x00` + chunk's first click id → `u32` BE clicks
//!   of that partner in the chunk
//! - `N` + page number (`u32` BE) → packed `(code, count)` pairs: the
//!   counts as of the last snapshot (`n` + code → `u64` BE was the layout
//!   before; still read, removed by the next snapshot)
//! - `m` → key of the last chunk the count snapshot includes

use super::{codec, Store, StoreError};
use crate::id::ClickId;
use crate::model::ClickRecord;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most records in one chunk value.
pub const CHUNK: usize = 256;
/// A chunk is closed once its encoding reaches this size. sled writes a
/// whole leaf (up to 17 entries) as one log item, and an item over a
/// quarter of its 512 KiB segment becomes a separate blob file: 17 chunks
/// of about 6 KiB keep every leaf inline.
pub const CHUNK_BYTES: usize = 6 << 10;
/// Clicks between two count snapshots (bounds the replay on open).
pub const SNAPSHOT_EVERY: u64 = 100_000;
/// Least time between two count snapshots: a snapshot rewrites every
/// link's count (20 MB for a million links), so under heavy load it is
/// paced by time, not only by clicks.
pub const SNAPSHOT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Target size of one count page (below sled's blob threshold, like chunks).
const COUNT_PAGE_BYTES: usize = 6 << 10;

const CHUNK_TAG: u8 = b'b';
const BY_PARTNER: u8 = b'p';
const LEGACY_COUNT: u8 = b'n';
const COUNT_PAGE: u8 = b'N';
const MARK: &[u8] = b"m";

/// Which clicks to list.
#[derive(Debug, Clone, Default)]
pub struct ClickQuery {
    /// Only this link's clicks.
    pub link: Option<String>,
    /// Only this partner's clicks (with `link`, give the link's partner:
    /// the partner index makes the scan short).
    pub partner: Option<String>,
    /// Clicks at or after this time (epoch ms).
    pub from_ms: Option<i64>,
    /// Clicks before this time (epoch ms).
    pub to_ms: Option<i64>,
    /// Continue after this click id.
    pub after: Option<ClickId>,
    /// Page size.
    pub limit: usize,
}

/// One page of clicks, oldest first.
#[derive(Debug, Clone)]
pub struct ClickPage {
    /// The clicks.
    pub clicks: Vec<ClickRecord>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<ClickId>,
}

/// Per-link click counts in memory, with what changed since the snapshot.
#[derive(Default)]
pub(super) struct ClickCounts {
    /// Code → clicks on disk.
    counts: DashMap<Box<str>, u64>,
    /// Snapshot bookkeeping, touched only by the writer.
    pending: Mutex<Pending>,
}

struct Pending {
    /// Clicks written since the last snapshot.
    clicks: u64,
    /// Key of the newest chunk written.
    last_chunk: Option<[u8; 17]>,
    /// When the last snapshot was written.
    last_snapshot: std::time::Instant,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            clicks: 0,
            last_chunk: None,
            last_snapshot: std::time::Instant::now(),
        }
    }
}

fn chunk_key(first: ClickId) -> [u8; 17] {
    let mut k = [CHUNK_TAG; 17];
    k[1..].copy_from_slice(&first.to_bytes());
    k
}

fn partner_prefix(partner: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + partner.len() + 16);
    k.push(BY_PARTNER);
    k.extend_from_slice(partner.as_bytes());
    k.push(0);
    k
}

fn count_page_key(page: u32) -> [u8; 5] {
    let mut k = [COUNT_PAGE; 5];
    k[1..].copy_from_slice(&page.to_be_bytes());
    k
}

/// Appends one `(code, count)` pair to a count page.
fn put_count(page: &mut Vec<u8>, code: &str, n: u64) {
    page.push(u8::try_from(code.len()).expect("codes are at most 64 bytes"));
    page.extend_from_slice(code.as_bytes());
    page.extend_from_slice(&n.to_be_bytes());
}

/// Decodes a count page.
fn read_counts(
    key: &[u8],
    mut page: &[u8],
    mut f: impl FnMut(&str, u64),
) -> Result<(), StoreError> {
    while let Some((&len, rest)) = page.split_first() {
        let len = usize::from(len);
        if rest.len() < len + 8 {
            return Err(corrupt(key, "count page ends inside a pair"));
        }
        let code =
            std::str::from_utf8(&rest[..len]).map_err(|_| corrupt(key, "code is not UTF-8"))?;
        let n = u64::from_be_bytes(rest[len..len + 8].try_into().expect("8 bytes"));
        f(code, n);
        page = &rest[len + 8..];
    }
    Ok(())
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn decode_chunk(key: &[u8], bytes: &[u8]) -> Result<Vec<ClickRecord>, StoreError> {
    if bytes.first() == Some(&b'[') {
        return serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()));
    }
    codec::decode(bytes).map_err(|e| corrupt(key, e))
}

impl Store {
    /// Loads the count snapshot and replays the chunks written after it.
    pub(super) fn load_click_counts(&self) -> Result<(), StoreError> {
        for kv in self.clicks.scan_prefix([LEGACY_COUNT]) {
            let (k, v) = kv?;
            let n = <[u8; 8]>::try_from(&v[..]).map_err(|_| corrupt(&k, "count is not 8 bytes"))?;
            let code =
                std::str::from_utf8(&k[1..]).map_err(|_| corrupt(&k, "code is not UTF-8"))?;
            self.counts
                .counts
                .insert(code.into(), u64::from_be_bytes(n));
        }
        for kv in self.clicks.scan_prefix([COUNT_PAGE]) {
            let (k, v) = kv?;
            read_counts(&k, &v, |code, n| {
                self.counts.counts.insert(code.into(), n);
            })?;
        }
        let mark = self.clicks.get(MARK)?;
        let replay = match &mark {
            Some(m) => self.clicks.range::<&[u8], _>((
                std::ops::Bound::Excluded(&m[..]),
                std::ops::Bound::Excluded(&[CHUNK_TAG + 1][..]),
            )),
            None => self.clicks.scan_prefix([CHUNK_TAG]),
        };
        let mut pending = self.counts.pending.lock().expect("counts lock");
        for kv in replay {
            let (k, v) = kv?;
            for r in decode_chunk(&k, &v)? {
                *self
                    .counts
                    .counts
                    .entry(r.link.as_str().into())
                    .or_default() += 1;
                pending.clicks += 1;
            }
            pending.last_chunk = <[u8; 17]>::try_from(&k[..]).ok();
        }
        Ok(())
    }

    /// Writes a batch of clicks (in id order) as one atomic sled batch, then
    /// flushes once: the group commit.
    pub fn write_clicks(&self, batch: &[ClickRecord]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        let mut last_chunk = None;
        let mut rest = batch;
        while !rest.is_empty() {
            let mut enc = codec::ChunkEncoder::new();
            for r in rest {
                if enc.records() == CHUNK || enc.len() >= CHUNK_BYTES {
                    break;
                }
                enc.push(r);
            }
            let (chunk, tail) = rest.split_at(enc.records());
            rest = tail;
            let key = chunk_key(chunk[0].id);
            b.insert(&key[..], enc.finish());
            let mut per_partner: HashMap<&str, u32> = HashMap::new();
            for r in chunk {
                *per_partner.entry(r.partner_id.as_str()).or_default() += 1;
            }
            for (partner, n) in per_partner {
                let mut k = partner_prefix(partner);
                k.extend_from_slice(&chunk[0].id.to_bytes());
                b.insert(k, &n.to_be_bytes()[..]);
            }
            last_chunk = Some(key);
        }
        self.clicks.apply_batch(b)?;
        self.flush()?;

        let snapshot_due = {
            let mut pending = self.counts.pending.lock().expect("counts lock");
            for r in batch {
                // Look up before inserting: an owned key per click is an
                // allocation the common case (a known link) does not need.
                match self.counts.counts.get_mut(r.link.as_str()) {
                    Some(mut n) => *n += 1,
                    None => {
                        *self
                            .counts
                            .counts
                            .entry(r.link.as_str().into())
                            .or_default() += 1
                    }
                }
            }
            pending.clicks += batch.len() as u64;
            pending.last_chunk = last_chunk.or(pending.last_chunk);
            pending.clicks >= SNAPSHOT_EVERY
                && pending.last_snapshot.elapsed() >= SNAPSHOT_MIN_INTERVAL
        };
        if snapshot_due {
            self.snapshot_click_counts()?;
        }
        Ok(())
    }

    /// Writes the changed per-link counts and the replay mark atomically.
    pub fn snapshot_click_counts(&self) -> Result<(), StoreError> {
        let mut pending = self.counts.pending.lock().expect("counts lock");
        let Some(mark) = pending.last_chunk else {
            return Ok(());
        };
        if pending.clicks == 0 {
            return Ok(());
        }
        // Every count, packed into pages; pages left from a bigger snapshot
        // and counts in the old one-key-per-link layout are removed in the
        // same atomic batch.
        let mut b = sled::Batch::default();
        let mut pages = 0u32;
        let mut page = Vec::with_capacity(COUNT_PAGE_BYTES + 80);
        for e in self.counts.counts.iter() {
            put_count(&mut page, e.key(), *e.value());
            if page.len() >= COUNT_PAGE_BYTES {
                b.insert(&count_page_key(pages)[..], std::mem::take(&mut page));
                pages += 1;
            }
        }
        if !page.is_empty() {
            b.insert(&count_page_key(pages)[..], page);
            pages += 1;
        }
        for kv in self
            .clicks
            .range(count_page_key(pages)..=count_page_key(u32::MAX))
            .keys()
            .chain(self.clicks.scan_prefix([LEGACY_COUNT]).keys())
        {
            b.remove(kv?);
        }
        b.insert(MARK, &mark[..]);
        self.clicks.apply_batch(b)?;
        self.flush()?;
        pending.clicks = 0;
        pending.last_snapshot = std::time::Instant::now();
        Ok(())
    }

    /// How many clicks a link has on disk.
    pub fn click_count(&self, code: &str) -> u64 {
        self.counts.counts.get(code).map_or(0, |c| *c)
    }

    /// The newest stored click id, to seed the id generator after a restart.
    pub fn newest_click_id(&self) -> Result<Option<ClickId>, StoreError> {
        let Some((k, v)) = self
            .clicks
            .scan_prefix([CHUNK_TAG])
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(decode_chunk(&k, &v)?.iter().map(|r| r.id).max())
    }

    /// One page of clicks matching `q`, oldest first.
    pub fn clicks(&self, q: &ClickQuery) -> Result<ClickPage, StoreError> {
        let mut lo = q.from_ms.map_or(ClickId(0), ClickId::lower_bound);
        if let Some(after) = q.after {
            lo = lo.max(ClickId(after.0.saturating_add(1)));
        }
        let hi = q.to_ms.map_or(ClickId(u128::MAX), |t| {
            ClickId(ClickId::lower_bound(t).0.saturating_sub(1))
        });
        let mut page = ClickPage {
            clicks: Vec::new(),
            next: None,
        };
        if lo > hi || q.limit == 0 {
            return Ok(page);
        }
        // Chunks are keyed by their first id: the chunk holding `lo` may
        // start before it, so begin at the last chunk starting at or before.
        let prefix = match &q.partner {
            Some(p) => partner_prefix(p),
            None => vec![CHUNK_TAG],
        };
        let key = |id: ClickId| {
            let mut k = prefix.clone();
            k.extend_from_slice(&id.to_bytes());
            k
        };
        let start = self
            .clicks
            .range(prefix.clone()..=key(lo))
            .next_back()
            .transpose()?
            .map_or_else(|| key(lo), |(k, _)| k.to_vec());
        for kv in self.clicks.range(start..=key(hi)) {
            let (k, v) = kv?;
            let first = <[u8; 16]>::try_from(&k[prefix.len()..])
                .map(ClickId::from_bytes)
                .map_err(|_| corrupt(&k, "key has no click id"))?;
            let records = if q.partner.is_some() {
                match self.clicks.get(chunk_key(first))? {
                    Some(bytes) => decode_chunk(&k, &bytes)?,
                    None => continue,
                }
            } else {
                decode_chunk(&k, &v)?
            };
            for r in records {
                let wanted = r.id >= lo
                    && r.id <= hi
                    && q.partner.as_ref().is_none_or(|p| &r.partner_id == p)
                    && q.link.as_ref().is_none_or(|l| &r.link == l);
                if !wanted {
                    continue;
                }
                if page.clicks.len() == q.limit {
                    page.next = page.clicks.last().map(|c| c.id);
                    return Ok(page);
                }
                page.clicks.push(r);
            }
        }
        Ok(page)
    }
}

impl Store {
    /// A click by id (reads the one chunk that can hold it).
    pub fn find_click(&self, id: ClickId) -> Result<Option<ClickRecord>, StoreError> {
        let Some((k, v)) = self
            .clicks
            .range([CHUNK_TAG].to_vec()..=chunk_key(id).to_vec())
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(decode_chunk(&k, &v)?.into_iter().find(|r| r.id == id))
    }

    /// Roughly when a partner last had a click: the start of the newest
    /// chunk holding one (chunks span milliseconds).
    pub fn last_click_of(&self, partner: &str) -> Result<Option<ClickId>, StoreError> {
        let prefix = partner_prefix(partner);
        let last = self.clicks.scan_prefix(&prefix).next_back().transpose()?;
        Ok(last.and_then(|(k, _)| {
            <[u8; 16]>::try_from(&k[prefix.len()..])
                .ok()
                .map(ClickId::from_bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClickHeaders, CookieOutcome};

    fn record(id: ClickId, link: &str) -> ClickRecord {
        ClickRecord {
            id,
            at: crate::clock::ms_to_datetime(id.timestamp_ms()),
            link: link.into(),
            partner_id: "p_one".into(),
            program: "krispcall".into(),
            method: "GET".into(),
            ip_hash: "00".into(),
            ip_prefix: "203.0.113.0/24".into(),
            user_agent: Some("Mozilla/5.0".into()),
            referer: None,
            query: None,
            headers: ClickHeaders::default(),
            cookie: CookieOutcome::Set,
            prior_token_error: None,
            verdict: "valid".into(),
            flags: Vec::new(),
        }
    }

    #[test]
    fn json_chunks_from_before_the_binary_format_still_read_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let old = record(ClickId::lower_bound(1_790_000_000_000), "old");
        {
            let store = Store::open(dir.path()).unwrap();
            let json = serde_json::to_vec(&[&old]).unwrap();
            store.clicks.insert(chunk_key(old.id), json).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.click_count("old"), 1, "replayed from the JSON chunk");
        let new = record(ClickId::lower_bound(1_790_000_000_001), "new");
        store.write_clicks(std::slice::from_ref(&new)).unwrap();
        let page = store
            .clicks(&ClickQuery {
                limit: 10,
                ..ClickQuery::default()
            })
            .unwrap();
        assert_eq!(page.clicks, vec![old, new]);
    }

    #[test]
    fn big_batches_split_into_chunks_below_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..2_000)
            .map(|i| {
                let mut r = record(ClickId::lower_bound(1_790_000_000_000 + i), "l");
                r.user_agent = Some(format!("agent {i} {}", "x".repeat(200)));
                r
            })
            .collect();
        store.write_clicks(&batch).unwrap();
        let mut chunks = 0;
        for kv in store.clicks.scan_prefix([CHUNK_TAG]) {
            let (_, v) = kv.unwrap();
            // One record may cross the bound: it is checked before a push.
            assert!(v.len() < CHUNK_BYTES + 512, "chunk of {} bytes", v.len());
            chunks += 1;
        }
        assert!(chunks > 2_000 / CHUNK, "{chunks} chunks");
        assert_eq!(store.click_count("l"), 2_000);
        let all = store
            .clicks(&ClickQuery {
                limit: 5_000,
                ..ClickQuery::default()
            })
            .unwrap();
        assert_eq!(all.clicks, batch);
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;

    #[test]
    fn count_snapshots_span_pages_replace_old_layouts_and_reload_exactly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // A count in the layout before count pages.
            let mut legacy = vec![LEGACY_COUNT];
            legacy.extend_from_slice(b"old-link");
            store
                .clicks
                .insert(legacy, &7u64.to_be_bytes()[..])
                .unwrap();
            // Stale pages far beyond what the next snapshot needs.
            store
                .clicks
                .insert(count_page_key(9_999), &b""[..])
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.click_count("old-link"), 7);
        // Enough links for several pages, then a snapshot.
        for i in 0..3_000u64 {
            store.counts.counts.insert(format!("link-{i:05}").into(), i);
        }
        {
            let mut p = store.counts.pending.lock().unwrap();
            p.clicks = 1;
            p.last_chunk = Some(chunk_key(ClickId(1)));
        }
        store.snapshot_click_counts().unwrap();
        let pages = store.clicks.scan_prefix([COUNT_PAGE]).count();
        assert!(pages > 1, "{pages} pages");
        assert_eq!(store.clicks.scan_prefix([LEGACY_COUNT]).count(), 0);
        assert!(store.clicks.get(count_page_key(9_999)).unwrap().is_none());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.click_count("old-link"), 7);
        assert_eq!(store.click_count("link-02999"), 2_999);
        assert_eq!(store.counts.counts.len(), 3_001);
    }
}
