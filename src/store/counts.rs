//! Per-link click counts: in memory, split into [`PAGES`] buckets by a
//! stable hash of the link code, and written back to the `clicks` tree a
//! few pages at a time inside each click batch, so that every page is
//! rewritten once per [`ROUND`]. Each page records the key of the last
//! chunk it includes; on open, a chunk's records count only for links whose
//! page is older than the chunk.
//!
//! Writing all counts at once (20 MB for a million links) stalled the
//! server core for tens of milliseconds every snapshot; a rolling round
//! spreads the same writes over ten seconds.
//!
//! Keys (in the `clicks` tree):
//! - `N` + page (`u32` BE) → `1`, the 17-byte key of the last chunk
//!   included, then `(code length: u8, code, count: u64 BE)` pairs
//! - before pages: `n` + code → `u64` BE count as of the chunk key stored
//!   at `m`; still read, and removed once every page has been written

use super::{corrupt, StoreError};
use crate::code::ShortCode;
use smol_str::SmolStr;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Count pages: about 250 links each at a million links. Part of the
/// on-disk format (with [`page_of`]): pages are read back by number.
pub(super) const PAGES: u32 = 4096;
/// Time to rewrite every page once under steady traffic.
pub(super) const ROUND: Duration = Duration::from_secs(10);
/// Most pages rewritten with one batch. A million links' page is ~4.6 KB:
/// 256 pages in one batch (owed after a pause in traffic) held the writer
/// for ~7 ms on the server's core; 16 take well under one. Pages owed
/// beyond this carry over to the next batches (one batch every commit
/// window under load, so a round still takes `ROUND` once traffic reaches
/// a few hundred clicks a second, and longer below that, when the replay
/// a round bounds is small anyway).
pub(super) const MAX_PAGES_PER_BATCH: u32 = 16;

const PAGE_TAG: u8 = b'N';
const PAGE_FORMAT: u8 = 1;
pub(super) const LEGACY_COUNT: u8 = b'n';
pub(super) const LEGACY_MARK: &[u8] = b"m";

/// A chunk's key (`b` + first click id), which orders chunks.
pub(super) type ChunkKey = [u8; 17];

/// The page of a link code: FNV-1a, stable across runs and builds.
pub(super) fn page_of(code: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in code.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(PAGES)) as u32
}

fn page_key(page: u32) -> [u8; 5] {
    let mut k = [PAGE_TAG; 5];
    k[1..].copy_from_slice(&page.to_be_bytes());
    k
}

/// What a loaded snapshot covers: for each page, the last chunk its counts
/// include (`None`: no chunk is included, count them all).
pub(super) struct Marks(Vec<Option<ChunkKey>>);

impl Marks {
    /// Whether a record of `code` in chunk `chunk` is missing from the counts.
    pub(super) fn counts(&self, code: &str, chunk: &[u8]) -> bool {
        self.0[page_of(code) as usize].is_none_or(|m| chunk > &m[..])
    }

    /// The oldest mark: chunks at or before it are in every page.
    /// `None` when some page includes no chunk: replay from the start.
    pub(super) fn replay_after(&self) -> Option<ChunkKey> {
        let mut oldest: Option<ChunkKey> = None;
        for m in &self.0 {
            let m = (*m)?;
            oldest = Some(oldest.map_or(m, |o| o.min(m)));
        }
        oldest
    }
}

struct Rotation {
    /// Next page to write.
    next: u32,
    /// Pages owed to the round, accrued with time.
    credit: f64,
    /// When credit was last accrued.
    at: Instant,
    /// Pages written since open (legacy keys go once all have been).
    written: u32,
    /// Legacy per-code keys may still be on disk.
    legacy: bool,
}

/// Seeded fast hashing for the counts (codes come from requests).
type FastHash = foldhash::fast::RandomState;

/// One page's counts: link code → clicks on disk; codes inline as in the
/// directory (16 bytes up to 15 characters, 24 beyond).
#[derive(Default)]
struct Bucket {
    short: HashMap<ShortCode, u64, FastHash>,
    long: HashMap<SmolStr, u64, FastHash>,
}

impl Bucket {
    fn get(&self, code: &str) -> Option<u64> {
        match ShortCode::new(code) {
            Some(c) => self.short.get(&c).copied(),
            None => self.long.get(code).copied(),
        }
    }

    fn entry(&mut self, code: &str) -> &mut u64 {
        match ShortCode::new(code) {
            Some(c) => self.short.entry(c).or_default(),
            None => self.long.entry(SmolStr::new(code)).or_default(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        let short = self.short.iter().map(|(c, &n)| (c.as_str(), n));
        short.chain(self.long.iter().map(|(c, &n)| (c.as_str(), n)))
    }

    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn clear(&mut self) {
        self.short.clear();
        self.long.clear();
    }
}

/// A link's new clicks in one batch: `(page, code, clicks)`.
type Delta<'a> = (u32, &'a str, u64);

/// One batch's new clicks per link, in page order: each code's page is
/// worked out once, and a page's deltas are one run for the page written
/// with the batch and for adding them afterwards (a hash map of pages,
/// rebuilt every batch, cost the writer ~1% of the server's CPU).
pub(super) struct Deltas<'a>(Vec<Delta<'a>>);

impl<'a> Deltas<'a> {
    /// Counts the clicks of each code in `codes`.
    pub(super) fn count(codes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut per_code: HashMap<&str, u64, FastHash> = HashMap::default();
        for code in codes {
            *per_code.entry(code).or_default() += 1;
        }
        let mut deltas: Vec<Delta<'a>> = per_code
            .into_iter()
            .map(|(code, n)| (page_of(code), code, n))
            .collect();
        deltas.sort_unstable_by_key(|d| d.0);
        Self(deltas)
    }

    /// The deltas of `page`.
    fn of_page(&self, page: u32) -> &[Delta<'a>] {
        let start = self.0.partition_point(|d| d.0 < page);
        let end = start + self.0[start..].partition_point(|d| d.0 == page);
        &self.0[start..end]
    }
}

/// A decoded page: its mark and its `(code, count)` pairs.
type Page<'v> = (ChunkKey, Vec<(&'v str, u64)>);

/// The counts, in memory.
pub(super) struct ClickCounts {
    pages: Box<[Mutex<Bucket>]>,
    rotation: Mutex<Rotation>,
}

impl ClickCounts {
    /// Loads legacy counts and pages from `tree`.
    pub(super) fn load(tree: &sled::Tree) -> Result<(Self, Marks), StoreError> {
        let counts = Self {
            pages: (0..PAGES).map(|_| Mutex::default()).collect(),
            rotation: Mutex::new(Rotation {
                next: 0,
                credit: 0.0,
                at: Instant::now(),
                written: 0,
                legacy: false,
            }),
        };
        let legacy_mark = match tree.get(LEGACY_MARK)? {
            Some(m) => Some(
                ChunkKey::try_from(&m[..])
                    .map_err(|_| corrupt(LEGACY_MARK, "mark is not a chunk key"))?,
            ),
            None => None,
        };
        let mut legacy = false;
        for kv in tree.scan_prefix([LEGACY_COUNT]) {
            let (k, v) = kv?;
            legacy = true;
            let n = <[u8; 8]>::try_from(&v[..]).map_err(|_| corrupt(&k, "count is not 8 bytes"))?;
            let code =
                std::str::from_utf8(&k[1..]).map_err(|_| corrupt(&k, "code is not UTF-8"))?;
            counts.set(code, u64::from_be_bytes(n));
        }
        let mut marks = vec![legacy_mark; PAGES as usize];
        for kv in tree.scan_prefix([PAGE_TAG]) {
            let (k, v) = kv?;
            let page = <[u8; 4]>::try_from(&k[1..])
                .map(u32::from_be_bytes)
                .ok()
                .filter(|&p| p < PAGES)
                .ok_or_else(|| corrupt(&k, "not a count page key"))?;
            let (mark, pairs) = decode_page(&k, &v)?;
            marks[page as usize] = Some(mark);
            let mut bucket = counts.pages[page as usize].lock().expect("counts lock");
            // The page supersedes legacy counts of its links.
            bucket.clear();
            for (code, n) in pairs {
                // PAGES and the hash are part of the format: a code found
                // in another page than its own would be miscounted.
                if page_of(code) != page {
                    return Err(corrupt(
                        &k,
                        "a link's count is in another page than its own",
                    ));
                }
                *bucket.entry(code) = n;
            }
        }
        counts.rotation.lock().expect("rotation lock").legacy = legacy || legacy_mark.is_some();
        Ok((counts, Marks(marks)))
    }

    fn set(&self, code: &str, n: u64) {
        *self.bucket(code).entry(code) = n;
    }

    fn bucket(&self, code: &str) -> std::sync::MutexGuard<'_, Bucket> {
        self.pages[page_of(code) as usize]
            .lock()
            .expect("counts lock")
    }

    /// Clicks of `code` on disk.
    pub(super) fn get(&self, code: &str) -> u64 {
        self.bucket(code).get(code).unwrap_or(0)
    }

    /// Adds clicks (once the chunk holding them is on disk).
    pub(super) fn add(&self, code: &str, n: u64) {
        *self.bucket(code).entry(code) += n;
    }

    /// Adds a batch's clicks (once the batch is on disk), locking each
    /// page once.
    pub(super) fn add_all(&self, deltas: &Deltas<'_>) {
        for run in deltas.0.chunk_by(|a, b| a.0 == b.0) {
            let mut bucket = self.pages[run[0].0 as usize].lock().expect("counts lock");
            for &(_, code, n) in run {
                *bucket.entry(code) += n;
            }
        }
    }

    /// Links counted.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pages.iter().map(|p| p.lock().unwrap().len()).sum()
    }

    /// Makes the next batch write as many pages as one batch may.
    #[cfg(test)]
    pub(super) fn owe_pages(&self) {
        let mut r = self.rotation.lock().unwrap();
        r.credit = f64::from(MAX_PAGES_PER_BATCH);
        r.at = Instant::now();
    }

    /// Adds to `batch` the pages due now, as they will be once the batch
    /// (whose last chunk is `mark`, adding `deltas`) is applied.
    pub(super) fn rotate_into(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        mark: ChunkKey,
        deltas: &Deltas<'_>,
    ) -> Result<(), StoreError> {
        let mut r = self.rotation.lock().expect("rotation lock");
        let now = Instant::now();
        let owed = now.duration_since(r.at).as_secs_f64() / ROUND.as_secs_f64() * f64::from(PAGES);
        // Credit for at most one round is kept; a batch spends at most
        // MAX_PAGES_PER_BATCH of it.
        r.credit = (r.credit + owed).min(f64::from(PAGES));
        r.at = now;
        let n = (r.credit as u32).min(MAX_PAGES_PER_BATCH);
        r.credit -= f64::from(n);
        for _ in 0..n {
            let page = r.next;
            batch.insert(
                &page_key(page)[..],
                self.encode_page(page, mark, deltas.of_page(page)),
            );
            r.next = (page + 1) % PAGES;
            r.written = r.written.saturating_add(1);
        }
        if r.legacy && r.written >= PAGES {
            remove_legacy(tree, batch)?;
            r.legacy = false;
        }
        Ok(())
    }

    /// Adds every page to `batch` (a full snapshot at `mark`).
    pub(super) fn snapshot_into(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        mark: ChunkKey,
    ) -> Result<(), StoreError> {
        for page in 0..PAGES {
            batch.insert(&page_key(page)[..], self.encode_page(page, mark, &[]));
        }
        let mut r = self.rotation.lock().expect("rotation lock");
        if r.legacy {
            remove_legacy(tree, batch)?;
            r.legacy = false;
        }
        Ok(())
    }

    /// Page `page` at `mark`, with `deltas` (clicks of this page's links
    /// in the batch being written) added.
    fn encode_page(&self, page: u32, mark: ChunkKey, deltas: &[Delta<'_>]) -> Vec<u8> {
        let bucket = self.pages[page as usize].lock().expect("counts lock");
        let mut out = Vec::with_capacity(18 + bucket.len() * 24);
        out.push(PAGE_FORMAT);
        out.extend_from_slice(&mark);
        for (code, n) in bucket.iter() {
            let d = deltas.iter().find(|d| d.1 == code).map_or(0, |d| d.2);
            put_pair(&mut out, code, n + d);
        }
        for &(_, code, n) in deltas {
            if bucket.get(code).is_none() {
                put_pair(&mut out, code, n);
            }
        }
        out
    }
}

fn remove_legacy(tree: &sled::Tree, batch: &mut sled::Batch) -> Result<(), StoreError> {
    for k in tree.scan_prefix([LEGACY_COUNT]).keys() {
        batch.remove(k?);
    }
    batch.remove(LEGACY_MARK);
    Ok(())
}

fn put_pair(out: &mut Vec<u8>, code: &str, n: u64) {
    out.push(u8::try_from(code.len()).expect("codes are at most 64 bytes"));
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(&n.to_be_bytes());
}

fn decode_page<'v>(key: &[u8], v: &'v [u8]) -> Result<Page<'v>, StoreError> {
    let Some((&PAGE_FORMAT, rest)) = v.split_first() else {
        return Err(corrupt(key, "unknown count page format"));
    };
    if rest.len() < 17 {
        return Err(corrupt(key, "count page too short for its mark"));
    }
    let mark = ChunkKey::try_from(&rest[..17]).expect("17 bytes");
    let mut rest = &rest[17..];
    let mut pairs = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len + 8 {
            return Err(corrupt(key, "count page ends inside a pair"));
        }
        let code =
            std::str::from_utf8(&tail[..len]).map_err(|_| corrupt(key, "code is not UTF-8"))?;
        let n = u64::from_be_bytes(tail[len..len + 8].try_into().expect("8 bytes"));
        pairs.push((code, n));
        rest = &tail[len + 8..];
    }
    Ok((mark, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page keys written by one call of `rotate_into`.
    fn pages_written(counts: &ClickCounts, tree: &sled::Tree) -> usize {
        tree.clear().unwrap();
        let mut batch = sled::Batch::default();
        let deltas = Deltas::count([]);
        counts
            .rotate_into(tree, &mut batch, [b'b'; 17], &deltas)
            .unwrap();
        tree.apply_batch(batch).unwrap();
        tree.scan_prefix([PAGE_TAG]).count()
    }

    #[test]
    fn a_batch_of_deltas_is_counted_once_per_code_and_grouped_by_page() {
        // 20,000 codes over 4,096 pages: most pages hold several.
        let codes: Vec<String> = (0..20_000).map(|i| format!("lt-{i:07}")).collect();
        let clicks = codes
            .iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::repeat_n(c.as_str(), 1 + i % 3));
        let deltas = Deltas::count(clicks);
        assert_eq!(deltas.0.len(), codes.len());
        let mut seen = 0;
        for page in 0..PAGES {
            for &(p, code, n) in deltas.of_page(page) {
                assert_eq!((p, page_of(code)), (page, page));
                let i: usize = code[3..].parse().unwrap();
                assert_eq!(n, 1 + i as u64 % 3, "{code}");
                seen += 1;
            }
        }
        assert_eq!(seen, codes.len(), "every delta in its page's run");

        let db = sled::Config::new().temporary(true).open().unwrap();
        let (counts, _) = ClickCounts::load(&db.open_tree("clicks").unwrap()).unwrap();
        counts.add("lt-0000001", 10);
        counts.add_all(&deltas);
        counts.add_all(&deltas);
        assert_eq!(counts.get("lt-0000001"), 10 + 2 * 2);
        assert_eq!(counts.get("lt-0019997"), 2 * 3);
        assert_eq!(counts.len(), codes.len());
    }

    #[test]
    fn pages_owed_after_a_pause_are_spread_over_batches() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("clicks").unwrap();
        let (counts, _) = ClickCounts::load(&tree).unwrap();
        counts.add("lt-1", 3);
        // Twenty seconds without a batch: two rounds owed, one kept.
        counts.rotation.lock().unwrap().at = Instant::now() - 2 * ROUND;
        let per_batch = MAX_PAGES_PER_BATCH as usize;
        assert_eq!(pages_written(&counts, &tree), per_batch);
        // The rest of the round follows, a batch's worth at a time.
        let mut total = per_batch;
        while total < PAGES as usize {
            let n = pages_written(&counts, &tree);
            assert!((1..=per_batch).contains(&n), "{n} pages in one batch");
            total += n;
        }
        assert_eq!(counts.rotation.lock().unwrap().next, 0, "one whole round");
    }
}
