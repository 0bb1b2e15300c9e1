//! Applying one event so that its failure never takes the calculator down:
//! a panic inside `apply` (an overflow that got past the ingestion bounds,
//! a defect) is caught and reported as a [`Quarantined`] event. The
//! calculator may have been half-way through the event, so the caller
//! rebuilds its state without it (from a snapshot or from scratch) before
//! applying the next one.

use super::{Calculator, Event};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// An event that failed to apply and was set aside; money untouched by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Position in the event log (none in a replay file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The event's id.
    pub event_id: String,
    /// Its program, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// What went wrong.
    pub error: String,
    /// When it was set aside (the event's own time in a replay).
    pub at: DateTime<Utc>,
}

/// Applies `e`; `Err` carries what went wrong when the calculator failed
/// on it. After an `Err` the state must be rebuilt without this event.
pub fn try_apply(calc: &mut Calculator, id: &str, e: &Event) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| calc.apply(id, e))).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the calculator failed on this event".into())
    })
}
