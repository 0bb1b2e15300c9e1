//! The append-only ledger: every money movement is a line with the rule
//! that produced it. Balances are derived from lines, never stored.
//!
//! A line's `available_at` says when it can be paid out (`None`: held until
//! a condition, e.g. Aircall's second paid month). As of a date, a line
//! counts as *available* if `available_at <= as_of`, else *pending* — unless
//! it is *held for review* (its referral awaits an analyst), when it counts
//! as *held* whatever its date; so for every partner and currency, by
//! construction,
//! `lifetime − clawed_back − forfeited − paid − credited = pending + available + held`.

use super::event::ser_decimal;
use super::money::ser_money;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Earned on a payment.
    Commission,
    /// Top-up of earlier lines of the month when a tier was crossed.
    TierAdjustment,
    /// Moves held commission to payable (a −held / +available pair).
    Release,
    /// Refund or chargeback of commission not yet paid out.
    Void,
    /// Refund or chargeback of commission already paid out: withheld from
    /// future payouts (the balance may go negative).
    Clawback,
    /// Lost to inactivity or termination.
    Forfeit,
    /// Paid out in cash.
    Payout,
    /// Granted as credit against the partner's own bills.
    Credit,
}

/// Exchange rates used for a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FxUsed {
    /// Amount before conversion, in `from`.
    #[serde(serialize_with = "ser_decimal")]
    pub original: Decimal,
    pub from: String,
    pub to: String,
    pub pivot: String,
    /// 1 pivot = `from_rate` from.
    #[serde(serialize_with = "ser_decimal")]
    pub from_rate: Decimal,
    /// 1 pivot = `to_rate` to.
    #[serde(serialize_with = "ser_decimal")]
    pub to_rate: Decimal,
    /// When the rates used were published.
    pub rates_at: DateTime<Utc>,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Position in the ledger.
    pub seq: u64,
    /// The event that produced it.
    pub event_id: String,
    /// When it happened (the event's time).
    pub at: DateTime<Utc>,
    pub kind: LineKind,
    pub partner_id: String,
    pub program: String,
    /// Signed amount in `currency`.
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
    pub currency: String,
    /// When it becomes payable; `None` while held.
    pub available_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    /// The rule that produced the line, in words.
    pub explanation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fx: Option<FxUsed>,
    /// In the held-for-review bucket: its referral awaits an analyst's
    /// decision (`available_at` is the schedule it follows once approved).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_for_review: bool,
}

impl Line {
    /// Whether the line is payable as of `as_of`.
    pub fn available_by(&self, as_of: DateTime<Utc>) -> bool {
        self.available_at.is_some_and(|a| a <= as_of)
    }
}

/// A partner's balance in one currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Balance {
    /// Earned but not yet payable.
    #[serde(serialize_with = "ser_money")]
    pub pending: Decimal,
    /// Payable now (negative when clawbacks exceed earnings).
    #[serde(serialize_with = "ser_money")]
    pub available: Decimal,
    /// Earned by referrals held for review: payable only once approved.
    #[serde(serialize_with = "ser_money")]
    pub held: Decimal,
    /// Paid out in cash.
    #[serde(serialize_with = "ser_money")]
    pub paid: Decimal,
    /// Granted as credit.
    #[serde(serialize_with = "ser_money")]
    pub credited: Decimal,
    /// Lost to inactivity or termination.
    #[serde(serialize_with = "ser_money")]
    pub forfeited: Decimal,
    /// Voided or withheld because of refunds and chargebacks.
    #[serde(serialize_with = "ser_money")]
    pub clawed_back: Decimal,
    /// Everything ever earned (commission and tier adjustments).
    #[serde(serialize_with = "ser_money")]
    pub lifetime: Decimal,
}

impl Balance {
    /// Adds one line as of `as_of` (lines after `as_of` must be skipped by
    /// the caller).
    pub fn add(&mut self, l: &Line, as_of: DateTime<Utc>) {
        match l.kind {
            LineKind::Commission | LineKind::TierAdjustment => self.lifetime += l.amount,
            LineKind::Void | LineKind::Clawback => self.clawed_back -= l.amount,
            LineKind::Forfeit => self.forfeited -= l.amount,
            LineKind::Payout => self.paid -= l.amount,
            LineKind::Credit => self.credited -= l.amount,
            LineKind::Release => {}
        }
        if l.held_for_review {
            self.held += l.amount;
        } else if l.available_by(as_of) {
            self.available += l.amount;
        } else {
            self.pending += l.amount;
        }
    }

    /// The ledger identity every balance satisfies.
    pub fn is_consistent(&self) -> bool {
        self.lifetime - self.clawed_back - self.forfeited - self.paid - self.credited
            == self.pending + self.available + self.held
    }
}

/// Balances per currency of `lines` as of `as_of`.
pub fn balances<'a>(
    lines: impl IntoIterator<Item = &'a Line>,
    as_of: DateTime<Utc>,
) -> BTreeMap<String, Balance> {
    let mut out: BTreeMap<String, Balance> = BTreeMap::new();
    for l in lines {
        if l.at <= as_of {
            out.entry(l.currency.clone()).or_default().add(l, as_of);
        }
    }
    out
}
