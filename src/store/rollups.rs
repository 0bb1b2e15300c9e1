//! Click rollups for the console and portal: per day, clicks by verdict
//! and fraud reason for each program, partner and link, and each link's
//! clicks by referrer host and device class. Pages read these, never the
//! raw clicks.
//!
//! They are made from the click log, not on the redirect path: a rollup
//! pass reads the chunks after its cursor and adds them to sums held in
//! memory ([`Pending`]); every [`WRITE_EVERY`] (or [`WRITE_KEYS`] keys) the
//! sums are added to the stored ones and the cursor moves — so what is
//! stored always equals the log up to the stored cursor, whatever crashes
//! (after a crash the sums since are made again from the log). A write is
//! split into sled batches of [`BATCH_KEYS`]: it first records (flushed)
//! the click id it reaches to under [`WRITING`], stamps each value it
//! writes with that id, flushes, and then moves the cursor and removes the
//! record in one batch. A start that finds the record rolls up exactly to
//! it again and adds only to the values not yet stamped with it, so a
//! crash between batches neither loses nor double-counts. Reads add
//! the pending sums to the stored ones. (Kept off the click writer's batch
//! on purpose: the writer's CPU is the redirect's, which the performance
//! goal counts; and writing each second's sums would rewrite the day's
//! keys every second.) One pass at a time; a background task runs one
//! every second and every read runs one first, so a read sees every click
//! on disk.
//!
//! In cluster mode ([`Store::use_cluster_rollups`]) the rollups are of the
//! click stream, which holds every edge's clicks (a calculator's own
//! included): they are added in the same batch that adds the stream's
//! clicks to the `cluster_clicks` tree, under the same `d` keys in that
//! tree, with the stream's cursor — so they never disagree with the
//! cluster's clicks either — and the local pass does nothing.
//!
//! Keys (in the `rollups` tree):
//! - `c` → the first click id of the last chunk rolled up
//! - `w` → the same for a write under way (see above)
//! - `d` + day (`u32` BE, days since 1970-01-01) + scope tag + name →
//!   a [`Tally`]: `g` program, `p` partner, `l` link; and `f` + partner:
//!   a copy of the partner's tally for the days it had clicks not counted
//!   (see [`super::suspicious`])
//! - `d` + day + `h` + link + `0x00` + referrer host → `u64` BE
//! - `d` + day + `v` + link + `0x00` + device class → `u64` BE
//!
//! Tallies and counts written by the local pass end in their stamp (16
//! bytes); the cluster's, written in one batch with their cursor, do not.

use super::clicks::{chunk_key, for_each_brief, CHUNK_TAG};
use super::codec::Brief;
use super::{corrupt, Store, StoreError};
use crate::fraud::Reason;
use crate::id::ClickId;
use crate::model::ClickRecord;
use chrono::NaiveDate;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Pending sums are written this often ...
pub const WRITE_EVERY: Duration = Duration::from_secs(30);
/// ... or sooner once they hold this many keys (a backfill), which bounds
/// the memory the pending sums take. In steady state the keys a write
/// holds are the scopes that had clicks since the last one, so writing by
/// time, not by count, is what keeps the sled writes per click low: at
/// 20,000 keys the 10,000-link load test wrote every second, and the
/// rollups took as much CPU as the redirects (docs/performance.md).
pub const WRITE_KEYS: usize = 200_000;
/// Keys in one sled batch of a write. `apply_batch` holds sled's
/// process-wide write lock for the whole batch (the click writer waits on
/// it) and keeps every leaf it replaces until the batch ends (a 200,000-key
/// batch grew the process past 24 GB on a backfill); a write of more keys
/// is split, which [`WRITING`] and the values' stamps make safe.
pub(super) const BATCH_KEYS: usize = 250;

const CURSOR: &[u8] = b"c";
/// Present while a write is under way: the click id its sums reach to.
const WRITING: &[u8] = b"w";
/// Length of a stamp: the click id of the chunk a written value's sums
/// reach to.
const STAMP: usize = 16;
pub(super) const DAY: u8 = b'd';
/// What a rollup counts over: one program, partner or link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Program(String),
    Partner(String),
    Link(String),
}

impl Scope {
    fn tag(&self) -> (u8, &str) {
        match self {
            Scope::Program(k) => (b'g', k),
            Scope::Partner(p) => (b'p', p),
            Scope::Link(l) => (b'l', l),
        }
    }
}

/// Clicks of one scope on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Counted (earns).
    pub valid: u64,
    /// Redirected but not counted.
    pub flagged: u64,
    /// Not redirected.
    pub blocked: u64,
    /// Clicks per fraud reason, in [`Reason::ALL`] order (a click with two
    /// reasons counts in both).
    pub reasons: [u64; 6],
}

impl Tally {
    /// Every click.
    pub fn total(&self) -> u64 {
        self.valid + self.flagged + self.blocked
    }

    /// Not counted: flagged or blocked.
    pub fn not_counted(&self) -> u64 {
        self.flagged + self.blocked
    }

    /// Clicks per reason, by the reason's name, without zeros.
    pub fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        Reason::ALL
            .iter()
            .zip(self.reasons)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.label(), n))
            .collect()
    }

    /// One click's tally.
    pub fn of(c: &crate::model::ClickRecord) -> Self {
        let b = super::codec::Brief::from(c);
        Self::one(b.verdict, b.reasons)
    }

    /// One click with this verdict and these reasons (bit `i`:
    /// `Reason::ALL[i]`).
    fn one(verdict: &str, reasons: u8) -> Self {
        let mut t = Tally::default();
        match verdict {
            "valid" => t.valid = 1,
            "blocked" => t.blocked = 1,
            _ => t.flagged = 1,
        }
        for (i, n) in t.reasons.iter_mut().enumerate() {
            *n = u64::from(reasons >> i & 1);
        }
        t
    }

    /// Adds another tally's counts.
    pub fn add(&mut self, o: &Tally) {
        self.valid += o.valid;
        self.flagged += o.flagged;
        self.blocked += o.blocked;
        for (a, b) in self.reasons.iter_mut().zip(o.reasons) {
            *a += b;
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        [self.valid, self.flagged, self.blocked]
            .iter()
            .chain(&self.reasons)
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    pub(super) fn decode(key: &[u8], v: &[u8]) -> Result<Self, StoreError> {
        if v.len() != 72 && v.len() != 72 + STAMP {
            return Err(corrupt(key, "a tally is 9 counts"));
        }
        let n = |i: usize| u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut reasons = [0; 6];
        for (i, r) in reasons.iter_mut().enumerate() {
            *r = n(3 + i);
        }
        Ok(Self {
            valid: n(0),
            flagged: n(1),
            blocked: n(2),
            reasons,
        })
    }
}

/// Days since 1970-01-01.
pub(super) fn day_number(d: NaiveDate) -> u32 {
    (d - NaiveDate::default()).num_days().max(0) as u32
}

/// The date of a day number.
pub(super) fn date_of(day: u32) -> NaiveDate {
    NaiveDate::default() + chrono::Days::new(u64::from(day))
}

pub(super) fn day_key(day: u32, tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + name.len());
    k.push(DAY);
    k.extend_from_slice(&day.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k
}

fn pair_key(day: u32, tag: u8, link: &str, sub: &str) -> Vec<u8> {
    let mut k = day_key(day, tag, link);
    k.push(0);
    k.extend_from_slice(sub.as_bytes());
    k
}

fn click_id(k: &[u8], v: &[u8]) -> Result<ClickId, StoreError> {
    let b: [u8; 16] = v.try_into().map_err(|_| corrupt(k, "not a click id"))?;
    Ok(ClickId::from_bytes(b))
}

fn read_count(k: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    let v = if v.len() == 8 + STAMP { &v[..8] } else { v };
    Ok(u64::from_be_bytes(
        v.try_into().map_err(|_| corrupt(k, "not a count"))?,
    ))
}

/// Whether a stored value already holds the sums up to click id `upto`
/// (its stamp is `upto` or later).
fn holds(v: &[u8], plain: usize, upto: &[u8]) -> bool {
    v.len() == plain + STAMP && &v[plain..] >= upto
}

/// `value` followed by `stamp`, if any.
fn stamped(mut value: Vec<u8>, stamp: Option<&[u8]>) -> Vec<u8> {
    value.extend_from_slice(stamp.unwrap_or_default());
    value
}

/// The host of a referer, lower case, without `www.`; `direct` when none.
pub fn referrer_host(referer: Option<&str>) -> String {
    referer
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .map(|h| h.strip_prefix("www.").map(str::to_string).unwrap_or(h))
        .unwrap_or_else(|| "direct".into())
}

/// A link's clicks by referrer host and by device class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breakdown {
    pub hosts: BTreeMap<String, u64>,
    pub devices: BTreeMap<String, u64>,
}

/// Sums not yet written, and the chunk they reach to.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) sums: Sums,
    /// Key of the last chunk added; `None` when nothing is pending.
    last: Option<Vec<u8>>,
    /// When the sums were last written (or the first pass ran).
    written: Option<Instant>,
    /// After a start that found a write under way: the click id it reached
    /// to, which the passes roll up to exactly and then write again.
    redo: Option<Vec<u8>>,
}

/// Sums before they are added to what is stored.
#[derive(Default)]
pub(super) struct Sums {
    pub(super) tallies: HashMap<Vec<u8>, Tally, FastHash>,
    counts: HashMap<Vec<u8>, u64, FastHash>,
    /// Device classes of the user agents seen lately.
    devices: Memo<&'static str>,
    /// Hosts of the referers seen lately.
    hosts: Memo<String>,
    /// A key being looked up (allocated only for a new one).
    key: Vec<u8>,
}

type FastHash = foldhash::fast::RandomState;

/// Texts remembered by [`Memo`] before it starts again.
const MEMO: usize = 10_000;

/// What was made of texts that repeat from click to click (user agents,
/// referers): parsing them is the dearest part of a click's sums.
struct Memo<V> {
    made: HashMap<String, V, FastHash>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self {
            made: HashMap::default(),
        }
    }
}

impl<V> Memo<V> {
    fn get(&mut self, text: &str, make: impl FnOnce(&str) -> V) -> &V {
        if !self.made.contains_key(text) {
            if self.made.len() >= MEMO {
                self.made.clear();
            }
            self.made.insert(text.to_owned(), make(text));
        }
        &self.made[text]
    }
}

/// `d` + day + tag + name (+ `0x00` + sub), into `key`.
fn set_key(key: &mut Vec<u8>, day: u32, tag: u8, name: &str, sub: Option<&str>) {
    key.clear();
    key.push(DAY);
    key.extend_from_slice(&day.to_be_bytes());
    key.push(tag);
    key.extend_from_slice(name.as_bytes());
    if let Some(sub) = sub {
        key.push(0);
        key.extend_from_slice(sub.as_bytes());
    }
}

/// The entry of `key` in `map`, made with the key's copy only when new.
fn entry<'m, V: Default>(map: &'m mut HashMap<Vec<u8>, V, FastHash>, key: &[u8]) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_vec(), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

impl Sums {
    /// Moves the parsed user agents and referers to `to`.
    fn lend_memos(&mut self, to: &mut Sums) {
        to.devices = std::mem::take(&mut self.devices);
        to.hosts = std::mem::take(&mut self.hosts);
    }

    /// Adds a click; returns its day.
    fn add(&mut self, c: &Brief<'_>) -> u32 {
        let Sums {
            tallies,
            counts,
            devices,
            hosts,
            key,
        } = self;
        let day = u32::try_from(c.at_ms.div_euclid(86_400_000)).unwrap_or(0);
        let one = Tally::one(c.verdict, c.reasons);
        for (tag, name) in [(b'g', c.program), (b'p', c.partner), (b'l', c.link)] {
            set_key(key, day, tag, name, None);
            entry(tallies, key).add(&one);
        }
        let host = match c.referer {
            Some(r) => hosts.get(r, |r| referrer_host(Some(r))).as_str(),
            None => "direct",
        };
        set_key(key, day, b'h', c.link, Some(host));
        *entry(counts, key) += 1;
        let ua = c.user_agent.unwrap_or_default();
        let device = *devices.get(ua, |ua| crate::device::class(Some(ua)).label());
        set_key(key, day, b'v', c.link, Some(device));
        *entry(counts, key) += 1;
        day
    }
}

/// Where [`add_sums`] puts its writes.
enum Dest<'a> {
    /// All in the caller's batch (the cluster's, with its clicks).
    One(&'a mut sled::Batch),
    /// Applied to the tree in batches of [`BATCH_KEYS`], each value stamped
    /// with the click id the sums reach to; values that already carry that
    /// stamp (or a later one) are left as they are.
    Split {
        stamp: &'a [u8],
        batch: sled::Batch,
        keys: usize,
    },
}

impl Dest<'_> {
    fn stamp(&self) -> Option<&[u8]> {
        match self {
            Dest::One(_) => None,
            Dest::Split { stamp, .. } => Some(stamp),
        }
    }

    fn batch(&mut self) -> &mut sled::Batch {
        match self {
            Dest::One(b) => b,
            Dest::Split { batch, .. } => batch,
        }
    }

    /// One key's writes are in the batch: applies a full split batch.
    fn key_done(&mut self, tree: &sled::Tree) -> Result<(), StoreError> {
        if let Dest::Split { batch, keys, .. } = self {
            *keys += 1;
            if *keys == BATCH_KEYS {
                *keys = 0;
                tree.apply_batch(std::mem::take(batch))?;
            }
        }
        Ok(())
    }

    fn finish(self, tree: &sled::Tree) -> Result<(), StoreError> {
        if let Dest::Split { batch, .. } = self {
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// Adds `sums` to what `tree` holds, in key order (neighbouring keys share
/// sled's leaves, which a random order would load and copy again for each
/// key). The caller is the tree's only writer of these keys while it runs.
fn add_sums(tree: &sled::Tree, sums: Sums, mut dest: Dest<'_>) -> Result<(), StoreError> {
    let mut tallies: Vec<_> = sums.tallies.into_iter().collect();
    tallies.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut counts: Vec<_> = sums.counts.into_iter().collect();
    counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (k, add) in tallies {
        let mut tally = match tree.get(&k)? {
            Some(v) if dest.stamp().is_some_and(|upto| holds(&v, 72, upto)) => continue,
            Some(v) => Tally::decode(&k, &v)?,
            None => Tally::default(),
        };
        let before = tally.valid;
        tally.add(&add);
        let value = stamped(tally.encode(), dest.stamp());
        let batch = dest.batch();
        super::top::reindex(&k, before, tally.valid, batch);
        if k[5] == b'p' && tally.not_counted() > 0 {
            batch.insert(super::suspicious::flagged_key(&k), tally.encode());
        }
        batch.insert(k, value);
        dest.key_done(tree)?;
    }
    for (k, add) in counts {
        let now = match tree.get(&k)? {
            Some(v) if dest.stamp().is_some_and(|upto| holds(&v, 8, upto)) => continue,
            Some(v) => read_count(&k, &v)?,
            None => 0,
        };
        let value = stamped((now + add).to_be_bytes().to_vec(), dest.stamp());
        dest.batch().insert(k, value);
        dest.key_done(tree)?;
    }
    dest.finish(tree)
}

/// The earlier of a day so far and another.
fn earlier(so_far: Option<u32>, day: u32) -> Option<u32> {
    Some(so_far.map_or(day, |d| d.min(day)))
}

impl Store {
    /// Counted clicks per name in the pending (unwritten) tallies of scope
    /// `tag` from day `from` to day `to`, by day: what the top index does
    /// not hold yet.
    pub(super) fn pending_counted(&self, tag: u8, from: u32, to: u32) -> Vec<(String, u64)> {
        let pending = self.pending();
        pending
            .sums
            .tallies
            .iter()
            .filter(|(k, t)| {
                k.len() > 6
                    && k[5] == tag
                    && t.valid > 0
                    && (from..=to)
                        .contains(&u32::from_be_bytes(k[1..5].try_into().expect("4 bytes")))
            })
            .map(|(k, t)| (String::from_utf8_lossy(&k[6..]).into_owned(), t.valid))
            .collect()
    }

    /// Cluster mode: rollups are made from the click stream as it is
    /// replicated ([`Store::roll_up_cluster_clicks`]); the local pass stops.
    pub fn use_cluster_rollups(&self) {
        self.cluster_rollups
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn cluster_mode(&self) -> bool {
        self.cluster_rollups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tree the rollups are read from.
    pub(super) fn rollup_tree<'a>(&self, t: &'a super::Trees) -> &'a sled::Tree {
        if self.cluster_mode() {
            &t.cluster_clicks
        } else {
            &t.rollups
        }
    }

    /// Cluster mode: adds the rollups of `clicks` (new to the cluster
    /// click index) to `batch`, which also adds the clicks themselves;
    /// returns the earliest day they add to, for
    /// [`Store::rolled_up_from`] once the batch is applied.
    pub(super) fn roll_up_cluster_clicks<'a>(
        &self,
        tree: &sled::Tree,
        clicks: impl IntoIterator<Item = &'a ClickRecord>,
        batch: &mut sled::Batch,
    ) -> Result<Option<u32>, StoreError> {
        let mut sums = Sums::default();
        // The parsed user agents and referers outlive a batch (the local
        // pass's own, unused in cluster mode).
        let mut pending = self.pending();
        pending.sums.lend_memos(&mut sums);
        let mut earliest = None;
        for c in clicks {
            earliest = earlier(earliest, sums.add(&Brief::from(c)));
        }
        sums.lend_memos(&mut pending.sums);
        drop(pending);
        add_sums(tree, sums, Dest::One(batch))?;
        Ok(earliest)
    }

    /// Says that rollups of day `day` and later changed and can be read
    /// (see [`super::closed`]).
    pub(super) fn rolled_up_from(&self, day: Option<u32>) {
        if let Some(day) = day {
            self.closed.added(day);
        }
    }

    /// Rolls up the chunks written since the last pass, at most
    /// `max_chunks` of them, and writes the pending sums when they are due;
    /// returns how many clicks it added. Blocking.
    pub fn roll_up(&self, max_chunks: usize) -> Result<usize, StoreError> {
        if self.cluster_mode() {
            return Ok(0);
        }
        let mut pending = self.pending();
        let written = *pending.written.get_or_insert_with(Instant::now);
        let (chunks, clicks, earliest) = self.with(|t| {
            let from = match &pending.last {
                Some(k) => {
                    let mut next = k.clone();
                    next.push(0);
                    next
                }
                None => {
                    if pending.redo.is_none() {
                        pending.redo = t.rollups.get(WRITING)?.map(|w| w.to_vec());
                    }
                    match t.rollups.get(CURSOR)? {
                        Some(v) => {
                            chunk_key(ClickId(click_id(CURSOR, &v)?.0.saturating_add(1))).to_vec()
                        }
                        None => chunk_key(ClickId(0)).to_vec(),
                    }
                }
            };
            let to = match &pending.redo {
                Some(w) => {
                    let mut past = chunk_key(click_id(WRITING, w)?).to_vec();
                    past.push(0);
                    past
                }
                None => vec![CHUNK_TAG + 1],
            };
            let (mut chunks, mut clicks, mut earliest) = (0, 0, None);
            for kv in t.clicks.range(from..to).take(max_chunks) {
                let (k, v) = kv?;
                for_each_brief(&k, &v, |c| {
                    earliest = earlier(earliest, pending.sums.add(&c));
                    clicks += 1;
                })?;
                pending.last = Some(k.to_vec());
                chunks += 1;
            }
            Ok((chunks, clicks, earliest))
        })?;
        let keys = pending.sums.tallies.len() + pending.sums.counts.len();
        let due = match pending.redo {
            // Everything up to the interrupted write's end is summed again.
            Some(_) => chunks < max_chunks,
            None => {
                pending.last.is_some() && (written.elapsed() >= WRITE_EVERY || keys >= WRITE_KEYS)
            }
        };
        if due {
            self.write_rollups(&mut pending)?;
        }
        self.rolled_up_from(earliest);
        Ok(clicks)
    }

    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.rollup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the pending sums to the stored ones and moves the cursor to the
    /// last chunk they hold (or, redoing an interrupted write, to where it
    /// reached): the steps in the module's description.
    fn write_rollups(&self, pending: &mut Pending) -> Result<(), StoreError> {
        let last = pending.last.take();
        let upto = match (pending.redo.take(), last) {
            (Some(w), _) => w,
            (None, Some(last)) => last[1..].to_vec(),
            (None, None) => return Ok(()),
        };
        let mut sums = std::mem::take(&mut pending.sums);
        sums.lend_memos(&mut pending.sums);
        pending.written = Some(Instant::now());
        self.with(|t| {
            let tree = &t.rollups;
            tree.insert(WRITING, &upto[..])?;
            tree.flush()?;
            let dest = Dest::Split {
                stamp: &upto,
                batch: sled::Batch::default(),
                keys: 0,
            };
            add_sums(tree, sums, dest)?;
            tree.flush()?;
            let mut b = sled::Batch::default();
            b.insert(CURSOR, &upto[..]);
            b.remove(WRITING);
            tree.apply_batch(b)?;
            Ok(())
        })
    }

    /// Writes whatever is pending now (at a graceful stop, after seeding).
    /// Blocking.
    pub fn write_pending_rollups(&self) -> Result<(), StoreError> {
        let mut pending = self.pending();
        if pending.redo.is_some() {
            // Not yet summed up to the interrupted write's end: the next
            // start redoes it.
            return Ok(());
        }
        self.write_rollups(&mut pending)
    }

    /// Rolls up everything written so far. Blocking.
    pub fn roll_up_all(&self) -> Result<(), StoreError> {
        while self.roll_up(256)? > 0 {}
        Ok(())
    }

    /// The scope's tallies for each day from `from` to `to` (inclusive),
    /// days without clicks left out. Blocking.
    pub fn daily(
        &self,
        scope: &Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, Tally)>, StoreError> {
        let (tag, name) = scope.tag();
        let pending = self.pending();
        self.with(|t| {
            let mut out = Vec::new();
            let mut d = from;
            while d <= to {
                let k = day_key(day_number(d), tag, name);
                let stored = self.rollup_tree(t).get(&k)?;
                let extra = pending.sums.tallies.get(&k);
                if stored.is_some() || extra.is_some() {
                    let mut tally = match stored {
                        Some(v) => Tally::decode(&k, &v)?,
                        None => Tally::default(),
                    };
                    if let Some(e) = extra {
                        tally.add(e);
                    }
                    out.push((d, tally));
                }
                d = d.succ_opt().expect("in range");
            }
            Ok(out)
        })
    }

    /// A link's clicks from `from` to `to` by referrer host and by device
    /// class. Blocking.
    pub fn link_breakdown(
        &self,
        code: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Breakdown, StoreError> {
        let pending = self.pending();
        self.with(|t| {
            let mut hosts = BTreeMap::new();
            let mut devices = BTreeMap::new();
            let mut prefixes = Vec::new();
            let mut d = from;
            while d <= to {
                for (tag, into) in [(b'h', &mut hosts), (b'v', &mut devices)] {
                    let prefix = pair_key(day_number(d), tag, code, "");
                    for kv in self.rollup_tree(t).scan_prefix(&prefix) {
                        let (k, v) = kv?;
                        let sub = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                        *into.entry(sub).or_default() += read_count(&k, &v)?;
                    }
                    prefixes.push((prefix, tag));
                }
                d = d.succ_opt().expect("in range");
            }
            if !pending.sums.counts.is_empty() {
                for (k, n) in &pending.sums.counts {
                    for (prefix, tag) in &prefixes {
                        if k.starts_with(prefix) {
                            let sub = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                            let into = if *tag == b'h' {
                                &mut hosts
                            } else {
                                &mut devices
                            };
                            *into.entry(sub).or_default() += n;
                        }
                    }
                }
            }
            Ok(Breakdown { hosts, devices })
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::ClickRecord;

    pub(in crate::store) fn click(
        ms: i64,
        link: &str,
        verdict: &str,
        referer: Option<&str>,
        ua: &str,
    ) -> ClickRecord {
        let mut c: ClickRecord = serde_json::from_str(&serde_json::json!({
            "id": ClickId::lower_bound(ms).to_string(), "at": crate::clock::ms_to_datetime(ms),
            "link": link, "partner_id": format!("p_{link}"), "program": "krispcall", "method": "GET",
            "ip_hash": "00", "ip_prefix": "192.0.2.0/24", "headers": {}, "cookie": "set",
            "verdict": verdict, "user_agent": ua,
        }).to_string())
        .unwrap();
        c.referer = referer.map(str::to_string);
        if verdict != "valid" {
            c.flags = vec![crate::fraud::Flag {
                reason: Reason::Bot,
                evidence: "ua".into(),
            }];
        }
        c
    }

    #[test]
    fn rollups_equal_the_log_however_the_passes_fall() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day1 = 1_772_366_400_000; // 2026-03-01T12:00Z
        let day2 = day1 + 86_400_000;
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        let mut all = Vec::new();
        for i in 0..600 {
            let at = if i < 400 { day1 + i } else { day2 + i };
            let verdict = if i % 10 == 0 { "flagged" } else { "valid" };
            let referer = (i % 3 == 0).then_some("https://www.blog.example/post");
            let link = if i % 2 == 0 { "aa1" } else { "bb2" };
            all.push(click(at, link, verdict, referer, chrome));
        }
        // Three batches, rolled up after the first (and written), then after
        // the rest (pending only: reads add it).
        for (n, part) in all.chunks(200).enumerate() {
            store.write_clicks(&crate::model::rows(part)).unwrap();
            if n == 0 {
                store.roll_up(1).unwrap();
                store.write_pending_rollups().unwrap();
            }
        }
        store.roll_up_all().unwrap();
        let d = |ms: i64| crate::clock::ms_to_datetime(ms).date_naive();
        let before = store
            .daily(&Scope::Program("krispcall".into()), d(day1), d(day2))
            .unwrap();
        assert_eq!(
            before[0].1.total() + before[1].1.total(),
            600,
            "stored + pending"
        );
        // Reopened without writing what was pending (a crash): made again
        // from the log after the stored cursor, nothing counted twice.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.roll_up_all().unwrap();
        store.write_pending_rollups().unwrap();
        let days = store
            .daily(&Scope::Program("krispcall".into()), d(day1), d(day2))
            .unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].1.valid, days[0].1.flagged), (360, 40));
        assert_eq!((days[1].1.valid, days[1].1.flagged), (180, 20));
        assert_eq!(days[0].1.by_reason()["bot"], 40);
        let link = store
            .daily(&Scope::Link("aa1".into()), d(day1), d(day2))
            .unwrap();
        assert_eq!(link.iter().map(|(_, t)| t.total()).sum::<u64>(), 300);
        let crate::store::rollups::Breakdown { hosts, devices } =
            store.link_breakdown("aa1", d(day1), d(day2)).unwrap();
        assert_eq!(hosts["blog.example"] + hosts["direct"], 300);
        assert_eq!(hosts["blog.example"], 100);
        assert_eq!(devices["desktop"], 300);
        assert_eq!(referrer_host(Some("not a url")), "direct");
        // Every flagged click (every tenth) is on aa1 (even clicks): its
        // partner alone is ranked, 40 of its 200 on day one.
        let ranked = store.suspicious_partners(d(day1), d(day1), 10).unwrap();
        assert_eq!(ranked, vec![("p_aa1".to_string(), 200, 40)]);
        // The busiest, by counted clicks, exact over the period; each
        // tally indexed once however often it changed (three writes).
        use crate::store::top::TopOf;
        let top = store.top(TopOf::Partners, d(day1), d(day2), 10).unwrap();
        let top: Vec<_> = top.iter().map(|(n, t)| (n.as_str(), t.valid)).collect();
        assert_eq!(top, [("p_bb2", 300), ("p_aa1", 240)]);
        let top = store.top(TopOf::Links, d(day1), d(day1), 1).unwrap();
        assert_eq!((top[0].0.as_str(), top[0].1.valid), ("bb2", 200));
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(&day_number(d(day1)).to_be_bytes());
        prefix.push(b'p');
        let keys = store
            .with(|t| Ok(t.rollups.scan_prefix(&prefix).count()))
            .unwrap();
        assert_eq!(keys, 2);
    }

    #[test]
    fn a_write_cut_between_its_batches_is_redone_without_counting_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = 1_772_366_400_000; // 2026-03-01T12:00Z
        let date = crate::clock::ms_to_datetime(day).date_naive();
        let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        // 1,500 links, two clicks each: 4,500 link, host and device keys,
        // more than four batches.
        let clicks: Vec<_> = (0..3_000)
            .map(|i| click(day + i, &format!("l{:04}", i % 1_500), "valid", None, ua))
            .collect();
        for part in clicks.chunks(500) {
            store.write_clicks(&crate::model::rows(part)).unwrap();
        }
        store.roll_up_all().unwrap();
        // The write of these sums is cut after its first two batches: the
        // record of the write and those batches are on disk, nothing else.
        {
            let mut pending = store.pending();
            let upto = pending.last.take().unwrap()[1..].to_vec();
            let mut sums = std::mem::take(&mut pending.sums);
            let mut keys: Vec<_> = sums.tallies.keys().cloned().collect();
            keys.sort();
            let written: HashMap<_, _, FastHash> = keys[..2 * BATCH_KEYS]
                .iter()
                .map(|k| (k.clone(), sums.tallies.remove(k).unwrap()))
                .collect();
            store
                .with(|t| {
                    t.rollups.insert(WRITING, &upto[..])?;
                    let part = Sums {
                        tallies: written,
                        ..Sums::default()
                    };
                    let dest = Dest::Split {
                        stamp: &upto,
                        batch: sled::Batch::default(),
                        keys: 0,
                    };
                    add_sums(&t.rollups, part, dest)?;
                    Ok(())
                })
                .unwrap();
        }
        drop(store);
        // Clicks after the cut write are rolled up after the redo.
        let store = Store::open(dir.path()).unwrap();
        let later: Vec<_> = (0..300)
            .map(|i| click(day + 10_000 + i, "l0000", "valid", None, ua))
            .collect();
        store.write_clicks(&crate::model::rows(&later)).unwrap();
        store.roll_up_all().unwrap();
        store.write_pending_rollups().unwrap();
        let total = |scope: Scope| store.daily(&scope, date, date).unwrap()[0].1.total();
        assert_eq!(total(Scope::Program("krispcall".into())), 3_300);
        assert_eq!(total(Scope::Link("l0000".into())), 302);
        assert_eq!(total(Scope::Link("l1499".into())), 2);
        assert_eq!(total(Scope::Partner("p_l0001".into())), 2);
        let b = store.link_breakdown("l0001", date, date).unwrap();
        assert_eq!((b.hosts["direct"], b.devices["desktop"]), (2, 2));
        let left = store.with(|t| Ok(t.rollups.get(WRITING)?)).unwrap();
        assert_eq!(left, None, "the redone write is finished");
    }
}
