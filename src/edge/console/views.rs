//! The API's answers as the pages read them (strings as the API writes
//! them: amounts keep their two decimals).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
pub struct PartnerPage {
    pub partners: Vec<crate::model::Partner>,
    pub next: Option<String>,
    pub total: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinkView {
    pub code: String,
    pub url: String,
    pub destination: String,
    pub partner_id: String,
    pub program: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub click_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinkPage {
    pub links: Vec<LinkView>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BalanceView {
    pub pending: String,
    pub available: String,
    /// Held for review.
    pub held: String,
    pub paid: String,
    pub credited: String,
    pub forfeited: String,
    pub clawed_back: String,
    pub lifetime: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Balances {
    pub standing: serde_json::Value,
    pub balances: BTreeMap<String, BalanceView>,
}

impl Balances {
    pub fn standing(&self) -> String {
        self.standing.as_str().unwrap_or("unknown").to_string()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LineView {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub available_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub explanation: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Statement {
    pub lines: Vec<LineView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditEntry {
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Audit {
    pub audit: Vec<AuditEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReferralView {
    pub customer_id: String,
    pub at: DateTime<Utc>,
    pub via: String,
    /// Where a review of the referral stands, if it was held.
    #[serde(default)]
    pub review: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RejectionView {
    pub customer_id: String,
    pub at: DateTime<Utc>,
    pub reason: serde_json::Value,
    pub detail: String,
}

impl RejectionView {
    pub fn reason(&self) -> String {
        self.reason.as_str().unwrap_or_default().to_string()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Referrals {
    pub referrals: Vec<ReferralView>,
    pub rejections: Vec<RejectionView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PartnerPayout {
    pub payout_id: String,
    pub as_of: DateTime<Utc>,
    pub status: String,
    pub amount: String,
    pub currency: String,
    pub method: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PartnerPayouts {
    pub payouts: Vec<PartnerPayout>,
}

/// A day of `GET /api/v1/partners/{id}/clicks/daily` or a link's stats.
#[derive(Debug, Clone, Deserialize)]
pub struct CountedDay {
    pub date: chrono::NaiveDate,
    pub counted: u64,
    pub not_counted: u64,
}

/// `GET /api/v1/partners/{id}/clicks/daily`.
#[derive(Debug, Clone, Deserialize)]
pub struct CountedDays {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub days: Vec<CountedDay>,
}

impl CountedDays {
    /// The days as an SVG chart (every day of the period, zeros included).
    pub fn chart(&self, title: &str) -> String {
        let by_day: std::collections::HashMap<_, _> = self
            .days
            .iter()
            .map(|d| (d.date, (d.counted, d.not_counted)))
            .collect();
        let days = super::chart::fill(self.from, self.to, |d| {
            by_day.get(&d).copied().unwrap_or((0, 0))
        });
        super::chart::daily(&days, title)
    }
}
