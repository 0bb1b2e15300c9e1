//! One program's visitor tables: each visitor's recent clicks and limiter
//! state in one 64-byte slot with its key inside — or, for a visitor seen
//! once and never charged (most of them), in a 16-byte slot.
//!
//! At tens of thousands of new visitors a second this table holds millions
//! of entries and every click touches one of them, so its layout is the
//! verdict's largest cost. A general map (hashbrown under dashmap) keeps
//! its control bytes and its entries in two arrays: two cache misses per
//! click. Here a visitor's slot is found by linear probing from its home
//! slot, whose address can be worked out before the lock is taken — so the
//! redirect asks for both tables' slots ([`Visitors::prefetch`]) as soon as it knows the
//! visitor, and the miss overlaps the header and cookie work that comes
//! before the verdict.

use super::{FastHash, Recent, Tick};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A slot of a table: empty, or one visitor's entry.
trait Slot: Copy + Default {
    fn key(&self) -> u64;
    fn is_empty(&self) -> bool;
}

/// A visitor's key and whole state: one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Full {
    key: u64,
    /// `len == 0` marks an empty slot: a visitor is stored with at least
    /// one click.
    recent: Recent,
}

impl Slot for Full {
    fn key(&self) -> u64 {
        self.key
    }
    fn is_empty(&self) -> bool {
        self.recent.len == 0
    }
}

/// An IPv4 visitor seen once and never charged by a limiter — most
/// visitors — in 16 bytes instead of 64: the address (32 bits) and the
/// click's partner share one word. (IPv6 keys are 63-bit hashes: those
/// visitors take a full slot.)
#[derive(Clone, Copy, Default)]
struct Single {
    /// Bits 0–31: the IPv4 visitor key; 32–47: the partner; 48: in use.
    key_partner: u64,
    link: u32,
    tick: Tick,
}

const SINGLE_USED: u64 = 1 << 48;

impl Slot for Single {
    fn key(&self) -> u64 {
        self.key_partner & 0xffff_ffff
    }
    fn is_empty(&self) -> bool {
        self.key_partner & SINGLE_USED == 0
    }
}

impl Single {
    /// `recent` in 16 bytes, if it is one click and nothing else, of an
    /// IPv4 visitor.
    fn compact(key: u64, recent: &Recent) -> Option<Self> {
        (key <= 0xffff_ffff && recent.len == 1 && recent.tat == 0 && recent.over == 0).then(|| {
            Self {
                key_partner: key | u64::from(recent.partners[0]) << 32 | SINGLE_USED,
                link: recent.links[0],
                tick: recent.ticks[0],
            }
        })
    }

    fn expand(&self) -> Recent {
        let mut r = Recent::default();
        r.push((self.link, (self.key_partner >> 32) as u16, self.tick));
        r
    }
}

/// Smallest table a shard allocates, on its first visitor.
const MIN_CAPACITY: usize = 16;

/// An open-addressing table (linear probing, capacity a power of two, at
/// most 3/4 full).
struct Table<S> {
    slots: Box<[S]>,
    len: usize,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            slots: Box::new([]),
            len: 0,
        }
    }
}

impl<S: Slot> Table<S> {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `key`, or the empty slot where it would go
    /// (the table must not be unallocated).
    fn probe(&self, key: u64, home: usize) -> usize {
        let mask = self.mask();
        let mut i = home & mask;
        loop {
            let s = &self.slots[i];
            if s.is_empty() || s.key() == key {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot holding `key`.
    fn find(&self, key: u64, home: usize) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.probe(key, home);
        (!self.slots[i].is_empty()).then_some(i)
    }

    /// Stores `slot` (whose key is not in the table), growing first if
    /// needed. Returns whether the table moved.
    fn insert(&mut self, slot: S, home: usize, homes: impl Fn(u64) -> usize) -> bool {
        let grow = (self.len + 1) * 4 > self.slots.len() * 3;
        if grow {
            self.resize((self.slots.len() * 2).max(MIN_CAPACITY), homes);
        }
        let i = self.probe(slot.key(), home);
        self.slots[i] = slot;
        self.len += 1;
        grow
    }

    /// Moves every entry into a table of `capacity` slots.
    fn resize(&mut self, capacity: usize, home: impl Fn(u64) -> usize) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![S::default(); capacity].into_boxed_slice(),
        );
        for s in old.iter().filter(|s| !s.is_empty()) {
            let i = self.probe(s.key(), home(s.key()));
            self.slots[i] = *s;
        }
    }

    /// Empties slot `i`, moving later entries of its run back so that
    /// every entry stays reachable from its home slot (no tombstones).
    fn remove(&mut self, i: usize, home: impl Fn(u64) -> usize) {
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if self.slots[j].is_empty() {
                break;
            }
            // The entry at j may fill the hole unless its home lies
            // (cyclically) after the hole, up to j.
            let from_home = j.wrapping_sub(home(self.slots[j].key())) & mask;
            let from_hole = j.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = S::default();
        self.len -= 1;
    }

    /// Keeps the entries `keep` accepts; shrinks the table once mostly
    /// empty (rehashing every entry costs: not every sweep in a steady
    /// state). Returns whether the table moved.
    fn retain(&mut self, mut keep: impl FnMut(&S) -> bool, home: impl Fn(u64) -> usize) -> bool {
        let mut i = 0;
        while i < self.slots.len() {
            // A removal moves a later entry into slot i: look again.
            if !self.slots[i].is_empty() && !keep(&self.slots[i]) {
                self.remove(i, &home);
            } else {
                i += 1;
            }
        }
        if self.len * 8 < self.slots.len() && self.slots.len() > MIN_CAPACITY {
            let capacity = if self.len == 0 {
                0
            } else {
                (self.len * 2).next_power_of_two().max(MIN_CAPACITY)
            };
            self.resize(capacity, home);
            return true;
        }
        false
    }
}

/// Where a table's slots are, readable without the shard's lock for
/// [`Visitors::prefetch`]: its address (0 while unallocated) and mask as
/// of its last move.
#[derive(Default)]
struct Published {
    base: AtomicUsize,
    mask: AtomicUsize,
}

impl Published {
    fn set<S: Slot>(&self, t: &Table<S>) {
        let base = if t.slots.is_empty() {
            0
        } else {
            t.slots.as_ptr() as usize
        };
        self.base.store(base, Ordering::Relaxed);
        self.mask.store(t.mask(), Ordering::Relaxed);
    }

    fn prefetch<S>(&self, home: usize) {
        let base = self.base.load(Ordering::Relaxed);
        if base != 0 {
            let i = home & self.mask.load(Ordering::Relaxed);
            prefetch_line(base.wrapping_add(i * std::mem::size_of::<S>()));
        }
    }
}

/// A shard's two tables.
#[derive(Default)]
struct Tables {
    full: Table<Full>,
    single: Table<Single>,
}

/// A shard: its tables behind one lock, and where they are.
#[repr(align(64))]
#[derive(Default)]
struct Shard {
    tables: Mutex<Tables>,
    full: Published,
    single: Published,
}

/// One program's visitors, sharded by key hash; `parts` groups of shards
/// are swept one at a time by [`Visitors::retain_part`]. An IPv4 visitor
/// with one click and no limiter charge lives in a 16-byte slot of the
/// shard's single table, and moves to a 64-byte slot of its full table with their
/// next click.
pub(super) struct Visitors {
    shards: Box<[Shard]>,
    parts: usize,
    hasher: FastHash,
}

impl Visitors {
    /// `shards` (a power of two) split into `parts` sweep groups.
    pub(super) fn new(shards: usize, parts: usize) -> Self {
        assert!(shards.is_power_of_two() && parts > 0 && shards.is_multiple_of(parts));
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            parts,
            hasher: FastHash::default(),
        }
    }

    /// The index of `key`'s shard (from its hash's high bits) and its home
    /// slot (the low bits).
    fn place(&self, key: u64) -> (usize, usize) {
        let h = self.hasher.hash_one(key);
        ((h >> 32) as usize & (self.shards.len() - 1), h as usize)
    }

    fn home(&self) -> impl Fn(u64) -> usize + '_ {
        move |key| self.hasher.hash_one(key) as usize
    }

    /// Runs `f` on `key`'s entry, a fresh one (no clicks) if it had none.
    /// An entry `f` leaves without clicks is not kept.
    pub(super) fn with<T>(&self, key: u64, f: impl FnOnce(&mut Recent) -> T) -> T {
        let (shard, home) = self.place(key);
        let shard = &self.shards[shard];
        let mut guard = shard.tables.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut *guard;
        if let Some(i) = t.full.find(key, home) {
            let out = f(&mut t.full.slots[i].recent);
            if t.full.slots[i].is_empty() {
                // `f` stored no click: close the run behind it.
                t.full.remove(i, self.home());
            }
            return out;
        }
        let mut recent = match t.single.find(key, home) {
            Some(i) => {
                let r = t.single.slots[i].expand();
                t.single.remove(i, self.home());
                r
            }
            None => Recent::default(),
        };
        let out = f(&mut recent);
        if recent.len > 0 {
            match Single::compact(key, &recent) {
                Some(single) => {
                    if t.single.insert(single, home, self.home()) {
                        shard.single.set(&t.single);
                    }
                }
                None => {
                    if t.full.insert(Full { key, recent }, home, self.home()) {
                        shard.full.set(&t.full);
                    }
                }
            }
        }
        out
    }

    /// Asks the CPU to start loading `key`'s home slots. A hint only: a
    /// stale address (a resize in between) costs a wasted load, nothing
    /// more.
    pub(super) fn prefetch(&self, key: u64) {
        let (shard, home) = self.place(key);
        let shard = &self.shards[shard];
        shard.full.prefetch::<Full>(home);
        shard.single.prefetch::<Single>(home);
    }

    /// Keeps only the entries of sweep group `part` that `keep` accepts,
    /// and shrinks tables left mostly empty.
    pub(super) fn retain_part(&self, part: usize, mut keep: impl FnMut(&Recent) -> bool) {
        let per_part = self.shards.len() / self.parts;
        for shard in &self.shards[part * per_part..(part + 1) * per_part] {
            let mut guard = shard.tables.lock().unwrap_or_else(|e| e.into_inner());
            let t = &mut *guard;
            if t.full.retain(|s| keep(&s.recent), self.home()) {
                shard.full.set(&t.full);
            }
            if t.single.retain(|s| keep(&s.expand()), self.home()) {
                shard.single.set(&t.single);
            }
        }
    }

    /// Visitors held.
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = s.tables.lock().unwrap_or_else(|e| e.into_inner());
                t.full.len + t.single.len
            })
            .sum()
    }

    /// The sweep group holding `key`.
    #[cfg(test)]
    fn part_of(&self, key: u64) -> usize {
        self.place(key).0 / (self.shards.len() / self.parts)
    }

    /// Bytes of slots allocated, for memory accounting in tests.
    #[cfg(test)]
    fn slot_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = s.tables.lock().unwrap();
                std::mem::size_of_val(&*t.full.slots) + std::mem::size_of_val(&*t.single.slots)
            })
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
fn prefetch_line(addr: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint with no architectural effect: it never
    // faults and never reads into the program, whatever the address
    // (here possibly a freed table's). SSE is part of x86_64's baseline.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_line(_addr: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn slots_are_small() {
        assert_eq!(std::mem::size_of::<Full>(), 64);
        assert_eq!(std::mem::align_of::<Full>(), 64);
        assert_eq!(std::mem::size_of::<Single>(), 16);
    }

    fn click(r: &mut Recent, n: u32) {
        r.push((n, 0, n));
    }

    #[test]
    fn one_click_ipv4_visitors_take_16_bytes_until_they_return() {
        let v = Visitors::new(1, 1);
        for k in 0..12u64 {
            v.with(k, |r| click(r, 1));
        }
        // 12 visitors fit a 16-slot table: 16 × 16 bytes, no full table.
        assert_eq!(v.slot_bytes(), 16 * 16);
        v.with(3, |r| click(r, 2));
        assert_eq!(v.slot_bytes(), 16 * 16 + 16 * 64, "the returning one moved");
        assert_eq!(v.len(), 12);
        assert_eq!(v.with(3, |r| r.len), 2);
        // A one-click visitor a limiter has charged keeps its state.
        v.with(20, |r| {
            click(r, 1);
            r.tat = 5;
        });
        assert_eq!(v.with(20, |r| (r.len, r.tat)), (1, 5));
        // The partner survives the compact slot.
        v.with(30, |r| r.push((9, 0xbeef, 77)));
        assert_eq!(v.with(30, |r| r.iter().next()), Some((9, 0xbeef, 77)));
        // An IPv6 visitor's key does not fit: a full slot at once.
        let v6 = 1 << 63 | 12345;
        let before = v.len();
        v.with(v6, |r| click(r, 1));
        assert_eq!(v.with(v6, |r| r.len), 1);
        assert_eq!(v.len(), before + 1);
    }

    #[test]
    fn grows_shrinks_and_frees_when_emptied() {
        let v = Visitors::new(4, 2);
        for k in 0..10_000u64 {
            v.with(k, |r| click(r, k as u32));
            if k % 2 == 0 {
                v.with(k, |r| click(r, k as u32));
            }
        }
        assert_eq!(v.len(), 10_000);
        let grown = v.slot_bytes();
        assert!(grown >= 5_000 * 4 / 3 * (64 + 16), "{grown}");
        for part in 0..2 {
            v.retain_part(part, |r| r.iter().last().unwrap().0 % 100 == 0);
        }
        assert_eq!(v.len(), 100);
        assert!(v.slot_bytes() < grown / 8, "{} of {grown}", v.slot_bytes());
        for part in 0..2 {
            v.retain_part(part, |_| false);
        }
        assert_eq!((v.len(), v.slot_bytes()), (0, 0));
        // Still usable.
        v.with(7, |r| click(r, 7));
        assert_eq!(v.with(7, |r| r.links[0]), 7);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn an_entry_left_without_clicks_is_not_kept() {
        let v = Visitors::new(1, 1);
        v.with(1, |r| click(r, 1));
        let seen = v.with(2, |r| r.len);
        assert_eq!(seen, 0);
        assert_eq!(v.len(), 1);
        assert_eq!(v.with(1, |r| r.len), 1);
    }

    /// What [`Visitors::prefetch`] reads of each table: its address and
    /// mask, or nothing while unallocated (the mask is then unused).
    fn published(v: &Visitors) -> Vec<[Option<(usize, usize)>; 2]> {
        v.shards
            .iter()
            .map(|s| {
                let read = |p: &Published| {
                    let base = p.base.load(Ordering::Relaxed);
                    (base != 0).then(|| (base, p.mask.load(Ordering::Relaxed)))
                };
                [read(&s.full), read(&s.single)]
            })
            .collect()
    }

    /// The same, read from the tables themselves.
    fn actual(v: &Visitors) -> Vec<[Option<(usize, usize)>; 2]> {
        fn of<S: Slot>(t: &Table<S>) -> Option<(usize, usize)> {
            (!t.slots.is_empty()).then(|| (t.slots.as_ptr() as usize, t.mask()))
        }
        v.shards
            .iter()
            .map(|s| {
                let t = s.tables.lock().unwrap();
                [of(&t.full), of(&t.single)]
            })
            .collect()
    }

    #[test]
    fn prefetch_addresses_follow_the_tables() {
        let v = Visitors::new(8, 2);
        assert_eq!(published(&v), actual(&v), "nothing allocated");
        for k in 0..5_000 {
            v.with(k, |r| click(r, k as u32));
            if k % 3 == 0 {
                v.with(k, |r| click(r, 0));
            }
            assert_eq!(published(&v), actual(&v), "after visitor {k}");
        }
        v.retain_part(0, |r| r.links[0] % 10 == 0);
        assert_eq!(published(&v), actual(&v), "after shrinking");
        v.retain_part(1, |_| false);
        assert_eq!(published(&v), actual(&v), "after freeing");
        // Part 0's shards still hold visitors of both kinds, part 1's none.
        assert!(published(&v)[..4]
            .iter()
            .all(|t| t[0].is_some() && t[1].is_some()));
        assert!(published(&v)[4..].iter().all(|t| t == &[None, None]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A visitor's click on a link, and whether a limiter charges them.
        Click(u64, u32, bool),
        /// A sweep of one part keeping the entries whose last link is not
        /// congruent to the second value mod 3.
        Sweep(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (prop_oneof![0..300u64, (0..30u64).prop_map(|k| 1 << 63 | k)], any::<u32>(), proptest::bool::weighted(0.1))
                .prop_map(|(k, n, c)| Op::Click(k, n, c)),
            1 => (0..2usize, 0..3u32).prop_map(|(p, m)| Op::Sweep(p, m)),
        ]
    }

    proptest! {
        /// The tables agree with a `HashMap` through any sequence of
        /// clicks, charges and sweeps (two small shards, so runs wrap
        /// around a table's end, removals move entries back, and visitors
        /// move from the single table to the full one).
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..600)) {
            let v = Visitors::new(2, 2);
            // key → (clicks, last link, charged)
            let mut model: HashMap<u64, (u8, u32, bool)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Click(k, n, charge) => {
                        let before = v.with(k, |r| {
                            let before = (r.len, r.iter().last().map(|c| c.0), r.tat != 0);
                            click(r, n);
                            if charge {
                                r.tat = 1;
                            }
                            before
                        });
                        let m = model.entry(k).or_insert((0, 0, false));
                        let expected = (m.0, (m.0 > 0).then_some(m.1), m.2);
                        prop_assert_eq!(before, expected);
                        *m = ((m.0 + 1).min(RECENT_MAX), n, m.2 || charge);
                    }
                    Op::Sweep(part, m) => {
                        v.retain_part(part, |r| r.iter().last().unwrap().0 % 3 != m);
                        model.retain(|&k, e| v.part_of(k) != part || e.1 % 3 != m);
                    }
                }
                prop_assert_eq!(v.len(), model.len());
            }
            for (k, (_, n, charged)) in model {
                prop_assert_eq!(
                    v.with(k, |r| (r.iter().last().map(|c| c.0), r.tat != 0)),
                    (Some(n), charged)
                );
            }
        }
    }

    const RECENT_MAX: u8 = super::super::RECENT as u8;
}
