//! The busiest partners and links of a period, from the rollups: each
//! day's partner and link tallies are also indexed by their counted clicks,
//! so a day's leaders are the first keys of a prefix instead of a scan of
//! every partner that had a click.
//!
//! Keys (in the rollups' tree, beside the tallies, written in the same
//! batch): `r` + day (`u32` BE) + scope tag (`p` partner, `l` link) +
//! (`u64::MAX` − counted clicks) (`u64` BE) + name → nothing. A tally whose
//! counted clicks change moves its key in the same batch.
//!
//! A period's leaders are chosen among each day's first [`DAY_CANDIDATES`]
//! and the sums not yet written (ranked by the sum of what those show),
//! then counted exactly over the whole period; one that is never among any
//! day's first [`DAY_CANDIDATES`] is not listed even if its total would
//! place it. Closed days' candidates and exact tallies are kept between
//! reads ([`super::closed`]).

use super::closed::{today, Of, Sums};
use super::rollups::{date_of, day_number, Scope, Tally};
use super::{Store, StoreError};
use chrono::NaiveDate;
use std::collections::HashMap;
use std::sync::Mutex;

const RANK: u8 = b'r';
/// In the rollups tree: set once every stored tally is indexed.
const BUILT: &[u8] = b"r-built";
/// Leaders read from each day's index.
pub const DAY_CANDIDATES: usize = 50;

/// What a ranking is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopOf {
    Partners,
    Links,
}

impl TopOf {
    fn tag(self) -> u8 {
        match self {
            TopOf::Partners => b'p',
            TopOf::Links => b'l',
        }
    }
}

/// `k` is a tally's key: `d` + day + tag + name.
fn rank_key(k: &[u8], counted: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(k.len() + 8);
    r.push(RANK);
    r.extend_from_slice(&k[1..6]);
    r.extend_from_slice(&(u64::MAX - counted).to_be_bytes());
    r.extend_from_slice(&k[6..]);
    r
}

/// Whether a tally's key is one the index ranks (partners and links).
fn ranked(k: &[u8]) -> bool {
    k.len() > 6 && matches!(k[5], b'p' | b'l')
}

/// Moves a tally's index key from `old` to `new` counted clicks, in the
/// batch that changes the tally.
pub(super) fn reindex(k: &[u8], old: u64, new: u64, batch: &mut sled::Batch) {
    if old == new || !ranked(k) {
        return;
    }
    if old > 0 {
        batch.remove(rank_key(k, old));
    }
    if new > 0 {
        batch.insert(rank_key(k, new), &[][..]);
    }
}

/// Indexes every stored tally once (stores made before the index).
pub(super) fn build_index(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(BUILT)? {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for kv in tree.scan_prefix([b'd']) {
        let (k, v) = kv?;
        if ranked(&k) {
            let t = Tally::decode(&k, &v)?;
            reindex(&k, 0, t.valid, &mut batch);
        }
    }
    batch.insert(BUILT, &[][..]);
    tree.apply_batch(batch)?;
    Ok(())
}

impl Store {
    /// The period's `limit` partners or links with the most counted
    /// clicks, with their exact tallies over the period. The period's
    /// closed days are summed once and kept (see [`super::closed`]); today
    /// is read each time. Blocking.
    pub fn top(
        &self,
        of: TopOf,
        from: NaiveDate,
        to: NaiveDate,
        limit: usize,
    ) -> Result<Vec<(String, Tally)>, StoreError> {
        let (first, last) = (day_number(from), day_number(to));
        let today = today();
        let kept = if first < today {
            let closed_last = last.min(today - 1);
            Some(
                self.closed
                    .get(Of::Top(of.tag()), first, closed_last, |s| {
                        self.add_candidates(of, first, closed_last, &mut s.counted)
                    })?,
            )
        } else {
            None
        };
        let open = first.max(today)..=last;
        let mut score: HashMap<String, u64> = HashMap::new();
        if !open.is_empty() {
            self.add_candidates(of, *open.start(), *open.end(), &mut score)?;
        }
        if let Some(kept) = &kept {
            for (name, n) in &lock(kept).counted {
                *score.entry(name.clone()).or_default() += n;
            }
        }
        let mut candidates: Vec<(String, u64)> = score.into_iter().collect();
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates.truncate(limit.saturating_mul(2));
        let mut out = Vec::with_capacity(candidates.len());
        for (name, _) in candidates {
            let scope = match of {
                TopOf::Partners => Scope::Partner(name.clone()),
                TopOf::Links => Scope::Link(name.clone()),
            };
            let mut total = Tally::default();
            if let Some(kept) = &kept {
                let known = lock(kept).tallies.get(&name).copied();
                let closed = match known {
                    Some(t) => t,
                    None => {
                        let mut t = Tally::default();
                        let closed_last = date_of(last.min(today - 1));
                        for (_, day) in self.daily(&scope, from, closed_last)? {
                            t.add(&day);
                        }
                        lock(kept).tallies.insert(name.clone(), t);
                        t
                    }
                };
                total.add(&closed);
            }
            if !open.is_empty() {
                for (_, t) in self.daily(&scope, date_of(*open.start()), to)? {
                    total.add(&t);
                }
            }
            out.push((name, total));
        }
        out.sort_unstable_by(|a, b| {
            b.1.valid
                .cmp(&a.1.valid)
                .then(b.1.total().cmp(&a.1.total()))
                .then(a.0.cmp(&b.0))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// Adds to `score` the counted clicks of each day's first
    /// [`DAY_CANDIDATES`] from day `first` to `last` in the index, and
    /// those not written yet.
    fn add_candidates(
        &self,
        of: TopOf,
        first: u32,
        last: u32,
        score: &mut HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            let tree = self.rollup_tree(t);
            for day in first..=last {
                let mut prefix = vec![RANK];
                prefix.extend_from_slice(&day.to_be_bytes());
                prefix.push(of.tag());
                for k in tree.scan_prefix(&prefix).keys().take(DAY_CANDIDATES) {
                    let k = k?;
                    let Some(rest) = k.get(prefix.len()..) else {
                        continue;
                    };
                    if rest.len() < 8 {
                        continue;
                    }
                    let counted =
                        u64::MAX - u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
                    let name = String::from_utf8_lossy(&rest[8..]).into_owned();
                    *score.entry(name).or_default() += counted;
                }
            }
            Ok(())
        })?;
        for (name, counted) in self.pending_counted(of.tag(), first, last) {
            *score.entry(name).or_default() += counted;
        }
        Ok(())
    }
}

fn lock(sums: &Mutex<Sums>) -> std::sync::MutexGuard<'_, Sums> {
    sums.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ClickId;
    use crate::model::ClickRecord;

    fn click(ms: i64, link: &str) -> ClickRecord {
        serde_json::from_str(&serde_json::json!({
            "id": ClickId::lower_bound(ms).to_string(), "at": crate::clock::ms_to_datetime(ms),
            "link": link, "partner_id": format!("p_{link}"), "program": "krispcall", "method": "GET",
            "ip_hash": "00", "ip_prefix": "192.0.2.0/24", "headers": {}, "cookie": "set",
            "verdict": "valid", "user_agent": "Mozilla/5.0",
        }).to_string())
        .unwrap()
    }

    #[test]
    fn a_store_rolled_up_before_the_index_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_772_366_400_000; // 2026-03-01T12:00Z
        let clicks: Vec<_> = (0..30)
            .map(|i| click(day + i, if i < 20 { "aa1" } else { "bb2" }))
            .collect();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write_clicks(&crate::model::rows(&clicks)).unwrap();
            store.roll_up_all().unwrap();
            store.write_pending_rollups().unwrap();
            // As a store made before the index: no rank keys, no marker.
            store
                .with(|t| {
                    for k in t.rollups.scan_prefix([RANK]).keys() {
                        t.rollups.remove(k?)?;
                    }
                    t.rollups.flush()?;
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let d = crate::clock::ms_to_datetime(day).date_naive();
        let top = store.top(TopOf::Links, d, d, 5).unwrap();
        let top: Vec<_> = top.iter().map(|(n, t)| (n.as_str(), t.valid)).collect();
        assert_eq!(top, [("aa1", 20), ("bb2", 10)]);
    }
}
