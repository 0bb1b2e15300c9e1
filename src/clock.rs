//! The only reader of the system clock; everything else asks a [`Clock`].
//!
//! Tests hand the server a [`FakeClock`] so that cookie expiry, click windows
//! and time-ordered ids can be driven without sleeping.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of "now", in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch.
    fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// The same instant as a UTC timestamp.
    fn now(&self) -> DateTime<Utc> {
        ms_to_datetime(self.now_ms())
    }
}

/// Shared, dynamically chosen clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // Straight from the OS clock: this is read several times per click,
        // and going through a calendar date costs more than the read.
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        }
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock {
    /// Current time in ms since the epoch.
    ms: AtomicI64,
}

impl FakeClock {
    /// A fake clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            ms: AtomicI64::new(start.timestamp_millis()),
        }
    }

    /// Moves the clock forward (or back, with a negative amount).
    pub fn advance(&self, by: chrono::Duration) {
        self.ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    /// Puts the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        self.ms.store(at.timestamp_millis(), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// Converts epoch milliseconds to a UTC timestamp, saturating at the
/// representable range.
pub fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
