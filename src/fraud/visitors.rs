//! One program's visitor table: each visitor's recent clicks and limiter
//! state in one 64-byte slot, the key inside the slot.
//!
//! At tens of thousands of new visitors a second this table holds millions
//! of entries and every click touches one of them, so its layout is the
//! verdict's largest cost. A general map (hashbrown under dashmap) keeps
//! its control bytes and its entries in two arrays: two cache misses per
//! click. Here a visitor's slot is found by linear probing from its home
//! slot, whose address can be worked out before the lock is taken — so the
//! redirect asks for it ([`Visitors::prefetch`]) as soon as it knows the
//! visitor, and the miss overlaps the header and cookie work that comes
//! before the verdict.

use super::{FastHash, Recent};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A visitor's key and state: one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot {
    key: u64,
    /// `len == 0` marks an empty slot: a visitor is stored with at least
    /// one click.
    recent: Recent,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.recent.len == 0
    }
}

/// Smallest table a shard allocates, on its first visitor.
const MIN_CAPACITY: usize = 16;

/// One shard's open-addressing table (linear probing, capacity a power of
/// two, at most 3/4 full).
#[derive(Default)]
struct Table {
    slots: Box<[Slot]>,
    len: usize,
}

impl Table {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: u64, home: usize) -> usize {
        let mask = self.mask();
        let mut i = home & mask;
        loop {
            let s = &self.slots[i];
            if s.is_empty() || s.key == key {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Moves every entry into a table of `capacity` slots.
    fn resize(&mut self, capacity: usize, home: impl Fn(u64) -> usize) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![Slot::default(); capacity].into_boxed_slice(),
        );
        for s in old.iter().filter(|s| !s.is_empty()) {
            let i = self.probe(s.key, home(s.key));
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
            let from_home = j.wrapping_sub(home(self.slots[j].key)) & mask;
            let from_hole = j.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }
}

/// A shard: its table behind a lock, and the table's address and mask as
/// of its last resize, readable without the lock for [`Visitors::prefetch`].
#[repr(align(64))]
struct Shard {
    table: Mutex<Table>,
    /// Address of `table.slots` (0 while unallocated).
    base: AtomicUsize,
    /// `table.slots.len() - 1`.
    mask: AtomicUsize,
}

impl Shard {
    fn publish(&self, t: &Table) {
        let base = if t.slots.is_empty() {
            0
        } else {
            t.slots.as_ptr() as usize
        };
        self.base.store(base, Ordering::Relaxed);
        self.mask.store(t.mask(), Ordering::Relaxed);
    }
}

/// One program's visitors, sharded by key hash; `parts` groups of shards
/// are swept one at a time by [`Visitors::retain_part`].
pub(super) struct Visitors {
    shards: Box<[Shard]>,
    parts: usize,
    hasher: FastHash,
}

impl Visitors {
    /// `shards` (a power of two) split into `parts` sweep groups.
    pub(super) fn new(shards: usize, parts: usize) -> Self {
        assert!(shards.is_power_of_two() && parts > 0 && shards % parts == 0);
        Self {
            shards: (0..shards)
                .map(|_| Shard {
                    table: Mutex::new(Table::default()),
                    base: AtomicUsize::new(0),
                    mask: AtomicUsize::new(0),
                })
                .collect(),
            parts,
            hasher: FastHash::default(),
        }
    }

    /// The shard (from the hash's high bits) and home slot (its low bits).
    fn place(&self, key: u64) -> (&Shard, usize) {
        let h = self.hasher.hash_one(key);
        let shard = (h >> 32) as usize & (self.shards.len() - 1);
        (&self.shards[shard], h as usize)
    }

    fn home(&self) -> impl Fn(u64) -> usize + '_ {
        move |key| self.hasher.hash_one(key) as usize
    }

    /// Runs `f` on `key`'s entry, a fresh one (no clicks) if it had none.
    /// An entry `f` leaves without clicks is not kept.
    pub(super) fn with<T>(&self, key: u64, f: impl FnOnce(&mut Recent) -> T) -> T {
        let (shard, home) = self.place(key);
        let mut t = shard.table.lock().unwrap_or_else(|e| e.into_inner());
        if (t.len + 1) * 4 > t.slots.len() * 3 {
            let capacity = (t.slots.len() * 2).max(MIN_CAPACITY);
            t.resize(capacity, self.home());
            shard.publish(&t);
        }
        let i = t.probe(key, home);
        let fresh = t.slots[i].is_empty();
        if fresh {
            t.slots[i].key = key;
            t.len += 1;
        }
        let out = f(&mut t.slots[i].recent);
        if t.slots[i].is_empty() {
            // Slot i is empty again (`f` stored no click): `remove` accounts
            // for it and closes the run behind it.
            t.remove(i, self.home());
        }
        out
    }

    /// Asks the CPU to start loading `key`'s home slot. A hint only: a
    /// stale address (a resize in between) costs a wasted load, nothing
    /// more.
    pub(super) fn prefetch(&self, key: u64) {
        let (shard, home) = self.place(key);
        let base = shard.base.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        let slot = base.wrapping_add((home & shard.mask.load(Ordering::Relaxed)) * 64);
        prefetch_line(slot);
    }

    /// Keeps only the entries of sweep group `part` that `keep` accepts,
    /// and shrinks tables left mostly empty.
    pub(super) fn retain_part(&self, part: usize, mut keep: impl FnMut(&Recent) -> bool) {
        let per_part = self.shards.len() / self.parts;
        for shard in &self.shards[part * per_part..(part + 1) * per_part] {
            let mut t = shard.table.lock().unwrap_or_else(|e| e.into_inner());
            let mut i = 0;
            while i < t.slots.len() {
                // A removal moves a later entry into slot i: look again.
                if !t.slots[i].is_empty() && !keep(&t.slots[i].recent) {
                    t.remove(i, self.home());
                } else {
                    i += 1;
                }
            }
            // Rehashing every entry costs: only when mostly empty, not
            // every sweep in a steady state.
            if t.len * 8 < t.slots.len() && t.slots.len() > MIN_CAPACITY {
                let capacity = if t.len == 0 {
                    0
                } else {
                    (t.len * 2).next_power_of_two().max(MIN_CAPACITY)
                };
                t.resize(capacity, self.home());
                shard.publish(&t);
            }
        }
    }

    /// Visitors held.
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.table.lock().unwrap_or_else(|e| e.into_inner()).len)
            .sum()
    }

    /// The sweep group holding `key`.
    #[cfg(test)]
    fn part_of(&self, key: u64) -> usize {
        let shard = (self.hasher.hash_one(key) >> 32) as usize & (self.shards.len() - 1);
        shard / (self.shards.len() / self.parts)
    }

    /// Slots allocated, for memory accounting in tests.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.table.lock().unwrap().slots.len())
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
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    fn click(r: &mut Recent, n: u32) {
        r.push((n, 0, n));
    }

    #[test]
    fn grows_shrinks_and_frees_when_emptied() {
        let v = Visitors::new(4, 2);
        for k in 0..10_000u64 {
            v.with(k, |r| click(r, k as u32));
        }
        assert_eq!(v.len(), 10_000);
        let grown = v.capacity();
        assert!(grown >= 10_000 * 4 / 3, "{grown}");
        for part in 0..2 {
            v.retain_part(part, |r| r.links[0] % 100 == 0);
        }
        assert_eq!(v.len(), 100);
        assert!(v.capacity() < grown / 8, "{} of {grown}", v.capacity());
        for part in 0..2 {
            v.retain_part(part, |_| false);
        }
        assert_eq!((v.len(), v.capacity()), (0, 0));
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

    #[test]
    fn prefetch_of_any_key_is_harmless() {
        let v = Visitors::new(8, 1);
        v.prefetch(42); // nothing allocated yet
        for k in 0..1_000 {
            v.with(k, |r| click(r, 1));
            v.prefetch(k.wrapping_mul(0x9e37_79b9));
        }
        v.retain_part(0, |_| false);
        v.prefetch(3); // the freed table's address
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A visitor's click on a link.
        Click(u64, u32),
        /// A sweep of one part keeping the entries whose link is not
        /// congruent to the second value mod 3.
        Sweep(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..300u64, any::<u32>()).prop_map(|(k, n)| Op::Click(k, n)),
            1 => (0..2usize, 0..3u32).prop_map(|(p, m)| Op::Sweep(p, m)),
        ]
    }

    proptest! {
        /// The table agrees with a `HashMap` through any sequence of clicks
        /// and sweeps (two small shards, so runs wrap around the table's
        /// end and removals move entries back).
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..600)) {
            let v = Visitors::new(2, 2);
            let mut model: HashMap<u64, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Click(k, n) => {
                        let before = v.with(k, |r| {
                            let before = r.iter().last().map(|c| c.0);
                            click(r, n);
                            before
                        });
                        prop_assert_eq!(before, model.insert(k, n));
                    }
                    Op::Sweep(part, m) => {
                        v.retain_part(part, |r| r.iter().last().unwrap().0 % 3 != m);
                        model.retain(|&k, n| v.part_of(k) != part || *n % 3 != m);
                    }
                }
                prop_assert_eq!(v.len(), model.len());
            }
            for (k, n) in model {
                prop_assert_eq!(v.with(k, |r| r.iter().last().map(|c| c.0)), Some(n));
            }
        }
    }
}
