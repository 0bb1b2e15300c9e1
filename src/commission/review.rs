//! The review queue's vocabulary: the soft signals a program may hold a new
//! referral for (`review_flags`), the hold itself, and an analyst's
//! decision. A held referral's commissions are recorded as usual but sit in
//! their own balance bucket (`held`) until an analyst approves them (they
//! follow the program's normal schedule) or rejects them (they are voided,
//! the analyst's reason in the line's explanation).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest stretch between two signups from one address that counts as a
/// shared address.
pub const SHARED_IP_DAYS: i64 = 30;

/// A soft signal: enough to look, not enough to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewFlag {
    /// The click came from a paid-search ad (an ad click id, or a search
    /// engine with the program's brand terms).
    PaidSearch,
    /// Signed up sooner after the click than the program's
    /// `review_fast_signup_seconds` (but not so soon that it is refused as
    /// scripted).
    FastSignup,
    /// The signup's address was used by another signup of the program
    /// within 30 days.
    SharedIp,
}

impl ReviewFlag {
    /// Every flag, in the order they are documented.
    pub const ALL: [ReviewFlag; 3] = [Self::PaidSearch, Self::FastSignup, Self::SharedIp];

    /// The config and API spelling.
    pub fn label(self) -> &'static str {
        match self {
            Self::PaidSearch => "paid_search",
            Self::FastSignup => "fast_signup",
            Self::SharedIp => "shared_ip",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.label() == s)
    }
}

/// A program's review settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReviewPolicy {
    /// Signals that hold a new referral for review (none: nothing is held).
    pub flags: Vec<ReviewFlag>,
    /// `fast_signup` below this many seconds from click to signup.
    pub fast_signup_seconds: u64,
}

impl ReviewPolicy {
    /// Whether the program holds referrals for `flag`.
    pub fn holds(&self, flag: ReviewFlag) -> bool {
        self.flags.contains(&flag)
    }
}

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Held,
    Approved,
    Rejected,
}

impl ReviewStatus {
    /// The API spelling.
    pub fn label(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

/// One signal a referral was held for, with what showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub flag: ReviewFlag,
    pub detail: String,
}

/// A referral held for review, and its decision once made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// Stable, URL-safe id (`rv_` + 16 hex digits of the customer's key).
    pub id: String,
    pub program: String,
    pub customer_id: String,
    pub partner_id: String,
    /// The signup event that made the referral.
    pub event_id: String,
    pub held_at: DateTime<Utc>,
    pub signals: Vec<Signal>,
    pub status: ReviewStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The review id of a program's customer: stable across replays and
/// nodes, and free of whatever characters the merchant's ids hold.
pub fn review_id(program: &str, customer: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{program}\u{1f}{customer}").as_bytes(),
    );
    let mut out = String::with_capacity(19);
    out.push_str("rv_");
    for b in &d.as_ref()[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What an analyst decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// An analyst's decision on a held referral (an internal event, made by
/// `POST /api/v1/reviews/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    pub review_id: String,
    pub program: String,
    pub customer_id: String,
    pub decision: Decision,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_ids_are_stable_url_safe_and_distinct() {
        let a = review_id("krispcall", "c/1?x=y");
        assert_eq!(a, review_id("krispcall", "c/1?x=y"));
        assert_eq!(a.len(), 19);
        assert!(a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, review_id("aloware", "c/1?x=y"));
        assert_ne!(a, review_id("krispcall", "c/2?x=y"));
    }

    #[test]
    fn flags_parse_their_labels_only() {
        for f in ReviewFlag::ALL {
            assert_eq!(ReviewFlag::parse(f.label()), Some(f));
        }
        assert_eq!(ReviewFlag::parse("bot"), None);
    }
}
