//! The click log on disk, append-only: each group commit writes its clicks
//! as a few chunk values (≤ [`CHUNK`] records each), one index entry per
//! partner per chunk, and nothing per click. Per-link click counts live in
//! memory and reach disk as rolling count pages written inside the same
//! batches (see `store::counts`); on open, chunks newer than a link's
//! page are replayed.
//!
//! Keys in the `clicks` tree:
//! - `b` + first click id (16 bytes BE) → the chunk's records, in the
//!   binary format of `store::codec` (older chunks: a JSON array)
//! - `p` + partner id + `0x00` + chunk's first click id → `u32` BE clicks
//!   of that partner in the chunk
//! - `N`, `n`, `m`: click counts (see `store::counts`)

use super::codec::Brief;
use super::counts::{ChunkKey, Deltas, Marks};
use super::{codec, corrupt, Store, StoreError};
use crate::id::ClickId;
use crate::model::{ClickRecord, ClickRow};
use std::collections::HashMap;

/// Most records in one chunk value.
pub const CHUNK: usize = 256;
/// A chunk is closed once its encoding reaches this size. sled writes a
/// whole leaf (up to 17 entries) as one log item, and an item over a
/// quarter of its 512 KiB segment becomes a separate blob file: 17 chunks
/// of about 6 KiB keep every leaf inline.
pub const CHUNK_BYTES: usize = 6 << 10;
pub(super) const CHUNK_TAG: u8 = b'b';
const BY_PARTNER: u8 = b'p';

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

impl ClickQuery {
    /// The click ids the query can match (`from`, `after`, `to`), `None`
    /// when it can match none.
    pub(super) fn id_range(&self) -> Option<(ClickId, ClickId)> {
        let mut lo = self.from_ms.map_or(ClickId(0), ClickId::lower_bound);
        if let Some(after) = self.after {
            lo = lo.max(ClickId(after.0.saturating_add(1)));
        }
        let hi = self.to_ms.map_or(ClickId(u128::MAX), |t| {
            ClickId(ClickId::lower_bound(t).0.saturating_sub(1))
        });
        (lo <= hi && self.limit > 0).then_some((lo, hi))
    }
}

/// One page of clicks, oldest first.
#[derive(Debug, Clone)]
pub struct ClickPage {
    /// The clicks.
    pub clicks: Vec<ClickRecord>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<ClickId>,
}

pub(super) fn chunk_key(first: ClickId) -> ChunkKey {
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

pub(super) fn decode_chunk(key: &[u8], bytes: &[u8]) -> Result<Vec<ClickRecord>, StoreError> {
    if bytes.first() == Some(&b'[') {
        return serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()));
    }
    codec::decode(bytes).map_err(|e| corrupt(key, e))
}

/// Calls `f` with each click of a chunk as a [`Brief`]: what the rollups
/// read, without building the records of a binary chunk.
pub(super) fn for_each_brief(
    key: &[u8],
    bytes: &[u8],
    mut f: impl FnMut(Brief<'_>),
) -> Result<(), StoreError> {
    if bytes.first() == Some(&b'[') {
        for c in decode_chunk(key, bytes)? {
            f(Brief::from(&c));
        }
        return Ok(());
    }
    codec::for_each_brief(bytes, f).map_err(|e| corrupt(key, e))
}

impl Store {
    /// Replays the chunks newer than the loaded count pages.
    pub(super) fn replay_clicks(&self, marks: &Marks) -> Result<(), StoreError> {
        self.with(|t| {
            let replay = match marks.replay_after() {
                Some(m) => t.clicks.range::<&[u8], _>((
                    std::ops::Bound::Excluded(&m[..]),
                    std::ops::Bound::Excluded(&[CHUNK_TAG + 1][..]),
                )),
                None => t.clicks.scan_prefix([CHUNK_TAG]),
            };
            for kv in replay {
                let (k, v) = kv?;
                for r in decode_chunk(&k, &v)? {
                    if marks.counts(&r.link, &k) {
                        self.counts.add(&r.link, 1);
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes a batch of clicks (in id order) as one atomic sled batch, then
    /// flushes once: the group commit.
    pub fn write_clicks(&self, batch: &[ClickRow<'_>]) -> Result<(), StoreError> {
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
                *per_partner.entry(r.partner_id).or_default() += 1;
            }
            for (partner, n) in per_partner {
                let mut k = partner_prefix(partner);
                k.extend_from_slice(&chunk[0].id.to_bytes());
                b.insert(k, &n.to_be_bytes()[..]);
            }
            last_chunk = Some(key);
        }
        let Some(mark) = last_chunk else {
            return Ok(());
        };
        let deltas = Deltas::count(batch.iter().map(|r| r.link));
        self.with(|t| {
            self.counts.rotate_into(&t.clicks, &mut b, mark, &deltas)?;
            t.clicks.apply_batch(b)?;
            t.db.flush()?;
            Ok(())
        })?;
        self.counts.add_all(&deltas);
        Ok(())
    }

    /// Writes every link's count at once (at shutdown: the next start
    /// replays nothing).
    pub fn snapshot_click_counts(&self) -> Result<(), StoreError> {
        self.with(|t| {
            let Some(newest) = t.clicks.scan_prefix([CHUNK_TAG]).keys().next_back() else {
                return Ok(());
            };
            let newest = newest?;
            let mark =
                ChunkKey::try_from(&newest[..]).map_err(|_| corrupt(&newest, "not a chunk key"))?;
            let mut b = sled::Batch::default();
            self.counts.snapshot_into(&t.clicks, &mut b, mark)?;
            t.clicks.apply_batch(b)?;
            t.db.flush()?;
            Ok(())
        })
    }

    /// How many clicks a link has in this node's log.
    pub fn click_count(&self, code: &str) -> u64 {
        self.counts.get(code)
    }

    /// The newest stored click id, to seed the id generator after a restart.
    pub fn newest_click_id(&self) -> Result<Option<ClickId>, StoreError> {
        self.with(|t| {
            let Some((k, v)) = t.clicks.scan_prefix([CHUNK_TAG]).next_back().transpose()? else {
                return Ok(None);
            };
            Ok(decode_chunk(&k, &v)?.iter().map(|r| r.id).max())
        })
    }

    /// One page of clicks matching `q`, oldest first.
    pub fn clicks(&self, q: &ClickQuery) -> Result<ClickPage, StoreError> {
        let page = ClickPage {
            clicks: Vec::new(),
            next: None,
        };
        let Some((lo, hi)) = q.id_range() else {
            return Ok(page);
        };
        // Chunks are keyed by their first id: the chunk holding `lo` may
        // start before it, so begin at the last chunk starting at or before.
        let prefix = match &q.partner {
            Some(p) => partner_prefix(p),
            None => vec![CHUNK_TAG],
        };
        self.with(|t| page_from(t, q, &prefix, lo, hi, page))
    }
}

/// The page of `q` between `lo` and `hi` from the chunks under `prefix`.
fn page_from(
    t: &super::Trees,
    q: &ClickQuery,
    prefix: &[u8],
    lo: ClickId,
    hi: ClickId,
    mut page: ClickPage,
) -> Result<ClickPage, StoreError> {
    let key = |id: ClickId| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&id.to_bytes());
        k
    };
    let start = t
        .clicks
        .range(prefix.to_vec()..=key(lo))
        .next_back()
        .transpose()?
        .map_or_else(|| key(lo), |(k, _)| k.to_vec());
    for kv in t.clicks.range(start..=key(hi)) {
        let (k, v) = kv?;
        let first = <[u8; 16]>::try_from(&k[prefix.len()..])
            .map(ClickId::from_bytes)
            .map_err(|_| corrupt(&k, "key has no click id"))?;
        let records = if q.partner.is_some() {
            match t.clicks.get(chunk_key(first))? {
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

/// A chunk of the click log as stored: what cluster mode ships.
#[derive(Debug, Clone)]
pub struct RawChunk {
    /// Its first click's id (its key).
    pub first: ClickId,
    /// Its value, in the log's encoding.
    pub bytes: Vec<u8>,
    /// How many clicks it holds.
    pub clicks: usize,
}

/// The clicks of a chunk shipped by another node.
pub fn decode_raw_chunk(bytes: &[u8]) -> Result<Vec<ClickRecord>, StoreError> {
    decode_chunk(b"shipped", bytes)
}

impl Store {
    /// The chunks after the one starting at `after`, oldest first, until
    /// they hold `max_clicks` (at least one chunk when there is one).
    /// Chunks never change once written: the same call gives the same
    /// chunks.
    pub fn chunks_after(
        &self,
        after: Option<ClickId>,
        max_clicks: usize,
    ) -> Result<Vec<RawChunk>, StoreError> {
        let from = after.map_or(chunk_key(ClickId(0)), |a| {
            chunk_key(ClickId(a.0.saturating_add(1)))
        });
        self.with(|t| {
            let mut out = Vec::new();
            let mut clicks = 0;
            for kv in t.clicks.range(from.to_vec()..[CHUNK_TAG + 1].to_vec()) {
                let (k, v) = kv?;
                let first = <[u8; 16]>::try_from(&k[1..])
                    .map(ClickId::from_bytes)
                    .map_err(|_| corrupt(&k, "key has no click id"))?;
                let n = decode_chunk(&k, &v)?.len();
                clicks += n;
                out.push(RawChunk {
                    first,
                    bytes: v.to_vec(),
                    clicks: n,
                });
                if clicks >= max_clicks {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// A click by id (reads the one chunk that can hold it).
    pub fn find_click(&self, id: ClickId) -> Result<Option<ClickRecord>, StoreError> {
        self.with(|t| {
            let Some((k, v)) = t
                .clicks
                .range([CHUNK_TAG].to_vec()..=chunk_key(id).to_vec())
                .next_back()
                .transpose()?
            else {
                return Ok(None);
            };
            Ok(decode_chunk(&k, &v)?.into_iter().find(|r| r.id == id))
        })
    }

    /// Roughly when a partner last had a click: the start of the newest
    /// chunk holding one (chunks span milliseconds).
    pub fn last_click_of(&self, partner: &str) -> Result<Option<ClickId>, StoreError> {
        let prefix = partner_prefix(partner);
        let last = self.with(|t| Ok(t.clicks.scan_prefix(&prefix).next_back().transpose()?))?;
        Ok(last.and_then(|(k, _)| {
            <[u8; 16]>::try_from(&k[prefix.len()..])
                .ok()
                .map(ClickId::from_bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::counts::{LEGACY_COUNT, LEGACY_MARK, MAX_PAGES_PER_BATCH, PAGES};
    use super::*;
    use crate::model::{rows, ClickHeaders, CookieOutcome};

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
            store.clicks_tree().insert(chunk_key(old.id), json).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.click_count("old"), 1, "replayed from the JSON chunk");
        let new = record(ClickId::lower_bound(1_790_000_000_001), "new");
        store.write_clicks(&[new.row()]).unwrap();
        let page = store
            .clicks(&ClickQuery {
                limit: 10,
                ..ClickQuery::default()
            })
            .unwrap();
        assert_eq!(page.clicks, vec![old, new]);
    }

    #[test]
    fn chunks_after_a_cursor_are_the_same_chunks_every_time_and_hold_every_click() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for b in 0..3u64 {
            let batch: Vec<_> = (0..300)
                .map(|i| {
                    record(
                        ClickId::lower_bound(1_790_000_000_000 + (b * 1000 + i) as i64),
                        "l",
                    )
                })
                .collect();
            store.write_clicks(&rows(&batch)).unwrap();
        }
        let first = store.chunks_after(None, 500).unwrap();
        assert_eq!(first.len(), store.chunks_after(None, 500).unwrap().len());
        assert!(first.iter().map(|c| c.clicks).sum::<usize>() >= 500);
        // From each round's last chunk on, until nothing is left: every
        // click once, in order.
        let mut cursor = None;
        let mut ids = Vec::new();
        loop {
            let chunks = store.chunks_after(cursor, 500).unwrap();
            let Some(last) = chunks.last() else { break };
            cursor = Some(last.first);
            for c in &chunks {
                let clicks = decode_raw_chunk(&c.bytes).unwrap();
                assert_eq!(clicks.len(), c.clicks);
                assert_eq!(clicks[0].id, c.first);
                ids.extend(clicks.into_iter().map(|r| r.id));
            }
        }
        assert_eq!(ids.len(), 900);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
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
        store.write_clicks(&rows(&batch)).unwrap();
        let mut chunks = 0;
        for kv in store.clicks_tree().scan_prefix([CHUNK_TAG]) {
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

    /// `n` clicks, one a millisecond from `start`, over 500 links.
    fn batch(start: i64, n: usize) -> Vec<ClickRecord> {
        (0..n)
            .map(|i| {
                let id = ClickId::lower_bound(1_790_000_000_000 + start + i as i64);
                // Codes on both sides of the 15-byte inline key.
                let code = match i % 7 {
                    0 => format!("a-long-custom-campaign-code-{}", i % 500),
                    _ => format!("link-{}", i % 500),
                };
                record(id, &code)
            })
            .collect()
    }

    #[test]
    fn rolling_pages_legacy_counts_and_crashes_all_reload_exactly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // Clicks counted in the layout before pages: one chunk, a
            // per-code count and the mark.
            let old = batch(0, 10);
            let mut enc = codec::ChunkEncoder::new();
            for r in &old {
                enc.push(&r.row());
            }
            let key = chunk_key(old[0].id);
            store.clicks_tree().insert(key, enc.finish()).unwrap();
            let mut legacy = vec![LEGACY_COUNT];
            legacy.extend_from_slice(b"link-3");
            store
                .clicks_tree()
                .insert(legacy, &1u64.to_be_bytes()[..])
                .unwrap();
            store.clicks_tree().insert(LEGACY_MARK, &key[..]).unwrap();
            // A legacy count with no chunk behind it (older, compacted).
            let mut gone = vec![LEGACY_COUNT];
            gone.extend_from_slice(b"gone");
            store
                .clicks_tree()
                .insert(gone, &5u64.to_be_bytes()[..])
                .unwrap();
            store.flush().unwrap();
        }
        let mut expected: HashMap<String, u64> = HashMap::new();
        *expected.entry("link-3".into()).or_default() += 1;
        *expected.entry("gone".into()).or_default() += 5;
        {
            let store = Store::open(dir.path()).unwrap();
            for (code, n) in &expected {
                assert_eq!(store.click_count(code), *n, "{code} after the legacy load");
            }
            // Enough batches for more than a full round of pages, each
            // written with the batch it belongs to; then a "crash" (no
            // shutdown snapshot).
            let rounds = PAGES.div_ceil(MAX_PAGES_PER_BATCH) as usize + 2;
            for k in 0..rounds {
                store.counts.owe_pages();
                let b = batch(1_000 + 1_000 * k as i64, 100);
                for r in &b {
                    *expected.entry(r.link.clone()).or_default() += 1;
                }
                store.write_clicks(&rows(&b)).unwrap();
            }
            assert_eq!(
                store.clicks_tree().scan_prefix([LEGACY_COUNT]).count(),
                0,
                "legacy counts go once every page is written"
            );
            assert!(store.clicks_tree().get(LEGACY_MARK).unwrap().is_none());
        }
        let store = Store::open(dir.path()).unwrap();
        for (code, n) in &expected {
            assert_eq!(store.click_count(code), *n, "{code} after the crash");
        }
        // A few more clicks without page writes, a clean stop, a reopen.
        let b = batch(900_000, 50);
        for r in &b {
            *expected.entry(r.link.clone()).or_default() += 1;
        }
        store.write_clicks(&rows(&b)).unwrap();
        store.snapshot_click_counts().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        for (code, n) in &expected {
            assert_eq!(store.click_count(code), *n, "{code} after the snapshot");
        }
        assert_eq!(store.counts.len(), expected.len());
    }
}
