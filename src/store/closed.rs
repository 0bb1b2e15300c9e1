//! What a period's closed days sum to, kept between reads.
//!
//! The overview's top lists and the fraud page's ranking sum a value per
//! partner (or link) and day over up to 90 days: at 10,000,000 clicks that
//! is hundreds of thousands of rollup keys per page. Days before today
//! (UTC) are closed: clicks arrive for them only by accident (a rollup
//! pass that runs just after midnight, a cluster edge's clicks replicated
//! late, a backfill). So a read sums its period's closed days once, keeps
//! the sums here, and adds today's from the rollups on every read: the
//! page is exact and live, and costs what today costs.
//!
//! Exactness rests on one counter, [`Closed::generation`]: every addition
//! to a day before today bumps it *after* the addition is readable, and a
//! kept sum is used only while the counter still reads what it read
//! before the sum was made. A sum made while a late click landed is made
//! again on the next read.

use super::rollups::Tally;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Periods kept (the console asks for 7, 30 and 90 days, for two lists
/// and the ranking).
const KEPT: usize = 12;

/// What a kept sum is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Of {
    /// Partners (`b'p'`) or links (`b'l'`): counted clicks from the top
    /// index (candidates), and exact tallies filled as they are asked.
    Top(u8),
    /// `(all clicks, not counted)` per partner with clicks not counted.
    Suspicious,
}

/// A kept sum: its period's closed days, `from..=to` as day numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    of: Of,
    from: u32,
    to: u32,
}

/// The sums one period's closed days hold.
#[derive(Default)]
pub(super) struct Sums {
    /// [`Of::Top`]: candidates' counted clicks from the index.
    pub counted: HashMap<String, u64>,
    /// [`Of::Top`]: exact tallies of the candidates asked about so far (a
    /// later fill of a sum no longer current is dropped with it).
    pub tallies: HashMap<String, Tally>,
    /// [`Of::Suspicious`].
    pub suspicious: HashMap<String, (u64, u64)>,
}

struct Entry {
    generation: u64,
    used: u64,
    sums: Arc<Mutex<Sums>>,
}

/// The kept sums and the counter that says whether they still hold.
#[derive(Default)]
pub(super) struct Closed {
    generation: AtomicU64,
    uses: AtomicU64,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Today and the generation when the console's periods were last made
    /// ahead of a view ([`super::Store::warm_closed_sums`]).
    warmed: Mutex<Option<(u32, u64, std::time::Instant)>>,
}

/// Today's day number (UTC) by the wall clock: days before it are closed.
/// (Not the server's [`crate::clock::Clock`]: the split needs only a day
/// that never goes back — a test's clicks stamped in the past are closed
/// days whose late additions bump the generation, in the future open
/// ones read each time; either way exact.)
pub(super) fn today() -> u32 {
    use crate::clock::Clock;
    super::rollups::day_number(crate::clock::SystemClock.now().date_naive())
}

impl Closed {
    /// Called after sums for day `day` (the earliest of an addition) became
    /// readable.
    pub fn added(&self, day: u32) {
        if day < today() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The sums of `of` over closed days `from..=to`: kept ones while they
    /// hold, else made by `make` (which reads the rollups) and kept.
    pub fn get<E>(
        &self,
        of: Of,
        from: u32,
        to: u32,
        make: impl FnOnce(&mut Sums) -> Result<(), E>,
    ) -> Result<Arc<Mutex<Sums>>, E> {
        let key = Key { of, from, to };
        let generation = self.generation.load(Ordering::SeqCst);
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        {
            let mut entries = self.lock();
            if let Some(e) = entries.get_mut(&key) {
                if e.generation == generation {
                    e.used = used;
                    return Ok(e.sums.clone());
                }
            }
        }
        let mut sums = Sums::default();
        make(&mut sums)?;
        let sums = Arc::new(Mutex::new(sums));
        let mut entries = self.lock();
        entries.retain(|_, e| e.generation == generation);
        if entries.len() >= KEPT {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                generation,
                used,
                sums: sums.clone(),
            },
        );
        Ok(sums)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The periods the console shows first: the overview's 7, 30 and 90 days
/// (top partners and links, 10 each) and the fraud page's last 7 days
/// before today (its ranking).
const CONSOLE_DAYS: [u32; 3] = [7, 30, 90];
const FRAUD_DAYS: u32 = 7;
/// The least time between two makings of the same day's sums.
const REWARM_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

impl super::Store {
    /// Makes the sums of the console's default periods before anyone asks,
    /// once a day (and again when a late click changed a closed day): the
    /// first view of a period after a start or a midnight sums up to 89
    /// closed days, ~150 ms at 3,000,000 clicks; this moves that to the
    /// rollups' background thread. Returns whether it did anything.
    /// Blocking.
    pub fn warm_closed_sums(&self) -> Result<bool, super::StoreError> {
        let today = today();
        let generation = self.closed.generation.load(Ordering::SeqCst);
        let mut warmed = self
            .closed
            .warmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *warmed {
            Some((day, g, _)) if day == today && g == generation => return Ok(false),
            // Late clicks (a lagging cluster edge) can change closed days
            // often: made again then at most every few minutes; a view in
            // between makes its own.
            Some((day, _, at)) if day == today && at.elapsed() < REWARM_AFTER => return Ok(false),
            _ => {}
        }
        let date = super::rollups::date_of;
        for days in CONSOLE_DAYS {
            let (from, to) = (date(today + 1 - days), date(today));
            self.top(super::top::TopOf::Partners, from, to, 10)?;
            self.top(super::top::TopOf::Links, from, to, 10)?;
        }
        self.suspicious_partners(date(today - FRAUD_DAYS), date(today), 20)?;
        *warmed = Some((today, generation, std::time::Instant::now()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_is_made_again_after_a_closed_day_changes_and_kept_otherwise() {
        let closed = Closed::default();
        let mut made = 0;
        let mut read = |closed: &Closed| {
            closed
                .get::<()>(Of::Suspicious, 10, 20, |s| {
                    made += 1;
                    s.suspicious.insert("p".into(), (made, 0));
                    Ok(())
                })
                .unwrap()
                .lock()
                .unwrap()
                .suspicious["p"]
                .0
        };
        assert_eq!(read(&closed), 1);
        assert_eq!(read(&closed), 1, "kept");
        closed.added(today());
        assert_eq!(read(&closed), 1, "today is not closed");
        closed.added(15);
        assert_eq!(read(&closed), 2, "a closed day changed");
        assert_eq!(read(&closed), 2);
    }

    #[test]
    fn the_consoles_periods_are_made_ahead_once_a_day_and_again_after_a_late_click() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36";
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        let yesterday = now - 86_400_000;
        let clicks: Vec<_> = (0..20)
            .map(|i| {
                let v = if i % 4 == 0 { "flagged" } else { "valid" };
                super::super::rollups::tests::click(yesterday + i, "aa1", v, None, chrome)
            })
            .collect();
        store.write_clicks(&crate::model::rows(&clicks)).unwrap();
        store.roll_up_all().unwrap();
        assert!(store.warm_closed_sums().unwrap(), "made");
        // Three periods x (partners, links) and the fraud ranking.
        assert_eq!(store.closed.lock().len(), 7);
        assert!(!store.warm_closed_sums().unwrap(), "kept: nothing to do");
        // What it made is what a view reads.
        let d = |ms: i64| crate::clock::ms_to_datetime(ms).date_naive();
        let ranked = store
            .suspicious_partners(d(now - 7 * 86_400_000), d(now), 20)
            .unwrap();
        assert_eq!(ranked, vec![("p_aa1".to_string(), 20, 5)]);
        assert_eq!(store.closed.lock().len(), 7, "no new sum for the view");
        // A late click for yesterday: made again.
        let late =
            super::super::rollups::tests::click(yesterday + 100, "aa1", "valid", None, chrome);
        store.write_clicks(&crate::model::rows(&[late])).unwrap();
        store.roll_up_all().unwrap();
        assert!(!store.warm_closed_sums().unwrap(), "not again so soon");
        {
            let mut w = store.closed.warmed.lock().unwrap();
            let at = &mut w.as_mut().unwrap().2;
            *at = at
                .checked_sub(REWARM_AFTER)
                .expect("the machine is up 5 minutes");
        }
        assert!(store.warm_closed_sums().unwrap(), "made again");
    }
}
