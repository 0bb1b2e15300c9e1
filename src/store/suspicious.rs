//! The fraud page's ranking: partners by the share of their clicks not
//! counted, from the rollups.
//!
//! Each partner and day with a click not counted has a copy of the
//! partner's day tally under `d` + day + `f` + partner, written in the
//! rollup batch that writes the `p` tally once that tally holds a click
//! not counted; so a period's suspicious partners are one scan per day
//! with their whole day's clicks, never a read per partner. Closed days
//! are summed once and kept ([`super::closed`]).

use super::closed::{today, Of};
use super::rollups::{day_key, day_number, Tally, BATCH_KEYS, DAY};
use super::{Store, StoreError};
use chrono::NaiveDate;
use std::collections::{HashMap, HashSet};

/// Set once the `f` copies are made (stores made before them kept only
/// the clicks not counted, under `s`).
const MIRRORED: &[u8] = b"f-built";

/// A partner tally's key (`d` + day + `p` + partner) as its `f` copy.
pub(super) fn flagged_key(k: &[u8]) -> Vec<u8> {
    let mut f = k.to_vec();
    f[5] = b'f';
    f
}

/// Makes the `f` copies of a store made before them, once: every partner
/// and day under the old `s` keys gets its `p` tally copied, and the `s`
/// key goes, in batches of [`BATCH_KEYS`].
pub(super) fn mirror_flagged_partners(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(MIRRORED)? {
        return Ok(());
    }
    let days = |k: Option<(sled::IVec, sled::IVec)>| {
        k.filter(|(k, _)| k.len() >= 5)
            .map(|(k, _)| u32::from_be_bytes(k[1..5].try_into().expect("4 bytes")))
    };
    let first = days(tree.scan_prefix([DAY]).next().transpose()?);
    let last = days(tree.scan_prefix([DAY]).next_back().transpose()?);
    if let (Some(first), Some(last)) = (first, last) {
        for day in first..=last {
            let prefix = day_key(day, b's', "");
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in tree.scan_prefix(&prefix).keys() {
                let k = k?;
                let mut p = k.to_vec();
                p[5] = b'p';
                if let Some(v) = tree.get(&p)? {
                    batch.insert(flagged_key(&p), v);
                }
                batch.remove(k);
                n += 1;
                if n == BATCH_KEYS {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    n = 0;
                }
            }
            tree.apply_batch(batch)?;
        }
    }
    tree.insert(MIRRORED, &[][..])?;
    Ok(())
}
/// Keeps the `limit` partners `(id, all clicks, not counted)` with the
/// largest share not counted, in that order: partners with none not
/// counted left out; the share compared exactly (a/b > c/d as a·d > c·b),
/// then the most not counted, then the id.
pub fn rank_suspicious(ranked: &mut Vec<(&str, u64, u64)>, limit: usize) {
    ranked.retain(|(_, _, bad)| *bad > 0);
    let order = |a: &(&str, u64, u64), b: &(&str, u64, u64)| {
        (u128::from(b.2) * u128::from(a.1))
            .cmp(&(u128::from(a.2) * u128::from(b.1)))
            .then(b.2.cmp(&a.2))
            .then(a.0.cmp(b.0))
    };
    if ranked.len() > limit && limit > 0 {
        ranked.select_nth_unstable_by(limit - 1, order);
    }
    ranked.truncate(limit);
    ranked.sort_by(order);
}

impl Store {
    /// Partners with clicks not counted from `from` to `to`, ranked by the
    /// share of their clicks not counted (then by how many), at most
    /// `limit`: `(partner, all clicks, not counted)`. The share is of the
    /// days on which the partner had clicks not counted (its clicks on
    /// clean days are not read: at 100,000 partners that would be a read
    /// per partner and day). The period's closed days are summed once and
    /// kept (see [`super::closed`]); today is read each time. Blocking.
    pub fn suspicious_partners(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        limit: usize,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let (first, last) = (day_number(from), day_number(to));
        let today = today();
        let kept = if first < today {
            let closed_last = last.min(today - 1);
            Some(self.closed.get(Of::Suspicious, first, closed_last, |s| {
                self.add_suspicious(first, closed_last, &mut s.suspicious)
            })?)
        } else {
            None
        };
        let mut live = HashMap::new();
        if first.max(today) <= last {
            self.add_suspicious(first.max(today), last, &mut live)?;
        }
        let kept = kept
            .as_ref()
            .map(|k| k.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut ranked: Vec<(&str, u64, u64)> = Vec::new();
        if let Some(kept) = &kept {
            for (p, (all, bad)) in &kept.suspicious {
                let (more, worse) = live.get(p).copied().unwrap_or_default();
                ranked.push((p, all + more, bad + worse));
            }
        }
        for (p, (all, bad)) in &live {
            if !kept.as_ref().is_some_and(|k| k.suspicious.contains_key(p)) {
                ranked.push((p, *all, *bad));
            }
        }
        rank_suspicious(&mut ranked, limit);
        Ok(ranked
            .into_iter()
            .map(|(p, all, bad)| (p.to_string(), all, bad))
            .collect())
    }

    /// Adds to `per` each partner's `(all clicks, not counted)` over the
    /// days from `first` to `last` on which it had clicks not counted:
    /// the stored `f` copies, and the pending sums.
    fn add_suspicious(
        &self,
        first: u32,
        last: u32,
        per: &mut HashMap<String, (u64, u64)>,
    ) -> Result<(), StoreError> {
        let pending = self.pending();
        self.with(|t| {
            let tree = self.rollup_tree(t);
            // Partner and day of every stored copy: pending sums add to
            // those; others are read only if they hold clicks not counted.
            let mut stored: HashSet<Vec<u8>> = Default::default();
            for day in first..=last {
                let prefix = day_key(day, b'f', "");
                for kv in tree.scan_prefix(&prefix) {
                    let (k, v) = kv?;
                    let tally = Tally::decode(&k, &v)?;
                    let partner = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    let e = per.entry(partner).or_default();
                    e.0 += tally.total();
                    e.1 += tally.not_counted();
                    if !pending.sums.tallies.is_empty() {
                        stored.insert(k.to_vec());
                    }
                }
            }
            for (k, add) in &pending.sums.tallies {
                if k.len() < 6 || k[5] != b'p' {
                    continue;
                }
                let day = u32::from_be_bytes(k[1..5].try_into().expect("4 bytes"));
                if !(first..=last).contains(&day) {
                    continue;
                }
                let mut tally = *add;
                if !stored.contains(&flagged_key(k)) {
                    if add.not_counted() == 0 {
                        continue;
                    }
                    if let Some(v) = tree.get(k)? {
                        tally.add(&Tally::decode(k, &v)?);
                    }
                }
                let partner = String::from_utf8_lossy(&k[6..]).into_owned();
                let e = per.entry(partner).or_default();
                e.0 += tally.total();
                e.1 += tally.not_counted();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollups::tests::click;

    #[test]
    fn kept_sums_of_closed_days_see_late_clicks_and_today_is_live() {
        use crate::store::top::TopOf;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ua = "Mozilla/5.0";
        let past = 1_772_366_400_000; // 2026-03-01T12:00Z, closed
        let now = chrono::Utc::now().timestamp_millis();
        let d = |ms: i64| crate::clock::ms_to_datetime(ms).date_naive();
        let (from, to) = (d(past), d(now));
        let mut clicks = vec![
            click(past, "aa1", "valid", None, ua),
            click(past + 1, "aa1", "flagged", None, ua),
            click(past + 2, "bb2", "valid", None, ua),
        ];
        clicks.sort_by_key(|c| c.id);
        store.write_clicks(&crate::model::rows(&clicks)).unwrap();
        store.roll_up_all().unwrap();
        store.write_pending_rollups().unwrap();
        let ranked = store.suspicious_partners(from, to, 10).unwrap();
        assert_eq!(ranked, [("p_aa1".to_string(), 2, 1)]);
        let top = |store: &Store| -> Vec<(String, u64)> {
            store
                .top(TopOf::Links, from, to, 10)
                .unwrap()
                .into_iter()
                .map(|(n, t)| (n, t.valid))
                .collect()
        };
        assert_eq!(top(&store), [("aa1".into(), 1), ("bb2".into(), 1)]);
        // A late click for the closed day (pending only), and today's.
        let late = [
            click(past + 3, "bb2", "flagged", None, ua),
            click(past + 4, "bb2", "valid", None, ua),
        ];
        store.write_clicks(&crate::model::rows(&late)).unwrap();
        store.roll_up_all().unwrap();
        let ranked = store.suspicious_partners(from, to, 10).unwrap();
        assert_eq!(
            ranked,
            [("p_aa1".to_string(), 2, 1), ("p_bb2".to_string(), 3, 1)]
        );
        assert_eq!(top(&store), [("bb2".into(), 2), ("aa1".into(), 1)]);
        let today = [
            click(now, "aa1", "valid", None, ua),
            click(now + 1, "aa1", "valid", None, ua),
            click(now + 2, "cc3", "blocked", None, ua),
        ];
        store.write_clicks(&crate::model::rows(&today)).unwrap();
        store.roll_up_all().unwrap();
        assert_eq!(top(&store), [("aa1".into(), 3), ("bb2".into(), 2)]);
        // aa1's clicks today are all counted: not read (the share is of
        // the days a partner had clicks not counted).
        let ranked = store.suspicious_partners(from, to, 2).unwrap();
        assert_eq!(
            ranked,
            [("p_cc3".to_string(), 1, 1), ("p_aa1".to_string(), 2, 1)]
        );
        // The same once written: nothing counted twice.
        store.write_pending_rollups().unwrap();
        assert_eq!(top(&store), [("aa1".into(), 3), ("bb2".into(), 2)]);
        let ranked = store.suspicious_partners(from, to, 10).unwrap();
        assert_eq!(ranked.len(), 3);
        assert_eq!(ranked[1], ("p_aa1".to_string(), 2, 1));
    }

    #[test]
    fn a_store_made_before_the_flagged_copies_is_copied_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_772_366_400_000;
        let ua = "Mozilla/5.0";
        let clicks: Vec<_> = (0..5)
            .map(|i| {
                click(
                    day + i,
                    "aa1",
                    if i == 4 { "flagged" } else { "valid" },
                    None,
                    ua,
                )
            })
            .collect();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write_clicks(&crate::model::rows(&clicks)).unwrap();
            store.roll_up_all().unwrap();
            store.write_pending_rollups().unwrap();
            // As the store was: an `s` key with the clicks not counted, no
            // copy, no marker.
            store
                .with(|t| {
                    let p = day_key(
                        day_number(crate::clock::ms_to_datetime(day).date_naive()),
                        b'p',
                        "p_aa1",
                    );
                    let not_counted = Tally {
                        flagged: 1,
                        ..Default::default()
                    };
                    t.rollups.remove(flagged_key(&p))?;
                    let mut s = p.clone();
                    s[5] = b's';
                    t.rollups.insert(s, not_counted.encode())?;
                    t.rollups.remove(MIRRORED)?;
                    t.rollups.flush()?;
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let d = crate::clock::ms_to_datetime(day).date_naive();
        let ranked = store.suspicious_partners(d, d, 10).unwrap();
        assert_eq!(ranked, [("p_aa1".to_string(), 5, 1)]);
        let left = store
            .with(|t| {
                Ok(t.rollups
                    .iter()
                    .keys()
                    .filter(|k| {
                        k.as_ref()
                            .is_ok_and(|k| k.len() > 5 && k[0] == DAY && k[5] == b's')
                    })
                    .count())
            })
            .unwrap();
        assert_eq!(left, 0);
    }
}
