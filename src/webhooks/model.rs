//! What the outbox keeps: endpoints (a merchant's webhook or a partner's
//! postback), deliveries and their attempts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where refedge sends events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `we_` + 16 hex digits.
    pub id: String,
    /// The receiver's URL; for a postback, the URL template.
    pub url: String,
    /// Event types it wants.
    pub events: Vec<String>,
    /// Signs each delivery (`X-Refedge-Signature`); empty for a postback,
    /// which the partner's tracker receives unsigned, as trackers expect.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// Events applied before it existed (log seq) are not sent to it.
    pub from_seq: u64,
    /// A partner's postback: whose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// Set when refedge stopped sending (too many failures in a row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
}

impl Endpoint {
    /// Whether it is a partner's postback.
    pub fn is_postback(&self) -> bool {
        self.partner_id.is_some()
    }
}

/// Why and when an endpoint was disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its next attempt (`next_at`).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Retried until `webhooks.max_age_hours` without a 2xx.
    Failed,
}

/// One event for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `whd_` + a time-ordered id (listing order).
    pub id: String,
    pub endpoint_id: String,
    /// The event's id, the same on every attempt and every node:
    /// receivers de-duplicate on it.
    pub event_id: String,
    pub event_type: String,
    /// A webhook's JSON body; a postback's URL.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub state: State,
    /// Next attempt, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

/// One try at delivering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there was no answer (refused, timed out, a private address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Attempt {
    /// A 2xx.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}
