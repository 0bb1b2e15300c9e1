//! The commission calculator: a deterministic state machine over events.
//! No I/O, no clock: the same events in the same order always give the same
//! ledger, whether applied live by the server or by `refedge replay`.
//!
//! This file holds the state and dispatches each event; the rules live by
//! concern: `attribution` (signups to referrals), `accrual` (payments
//! to commissions, holds and conversions), `reversals` (refunds and
//! chargebacks), `payouts` (payout runs and forfeiture).

mod accrual;
mod attribution;
mod payouts;
mod reversals;
mod review;

use super::event::*;
use super::ledger::{balances, Balance, FxUsed, Line, LineKind};
use super::money::{cents, percent_of, ser_money};
use super::review::{Review, ReviewPolicy, ReviewStatus};
use super::rules::{
    BelowMinimum, Cap, CurrencyRule, Duration, LineKind as InvoiceKind, MinimumRule, Payable, Rate,
    Rules, TierMeasure,
};
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What the calculator knows of a program.
#[derive(Debug, Clone)]
pub struct ProgramBook {
    /// Program key.
    pub key: String,
    /// Cookie window, for click-to-signup checks.
    pub cookie_days: u32,
    /// Signups sooner than this after their click are scripted leads.
    pub min_click_to_signup_seconds: u64,
    /// Money rules; `None` tracks referrals but pays nothing.
    pub rules: Option<Rules>,
    /// Soft signals that hold a new referral for review.
    pub review: ReviewPolicy,
}

/// Why a signup did not become a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    NoAttribution,
    InvalidAttribution,
    WindowExpired,
    ExistingCustomer,
    CurrentCustomerReferral,
    PartnerNotActive,
    SelfReferral,
    CouponUnknown,
    CouponExpired,
    CouponAlreadyRedeemed,
    CouponExhausted,
    CouponOtherPartner,
    /// The click was flagged by a fraud rule.
    FlaggedClick,
    /// Signed up sooner after the click than a person could.
    ScriptedLead,
    /// The same click already brought another customer.
    AttributionReused,
    /// Held for review, and an analyst rejected it.
    RejectedInReview,
}

/// A customer bound to a partner for life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    pub customer_id: String,
    pub program: String,
    pub partner_id: String,
    pub at: DateTime<Utc>,
    pub event_id: String,
    /// `click` or `coupon`.
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

/// A signup that was refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub customer_id: String,
    pub program: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    pub reason: RejectReason,
    pub detail: String,
    pub at: DateTime<Utc>,
    pub event_id: String,
}

/// Something an event could not do (kept for operators; money untouched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub event_id: String,
    pub detail: String,
    /// The event's program, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// One item of a payout batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutItem {
    pub partner_id: String,
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
    pub currency: String,
    /// `cash` or `credit`.
    pub method: String,
}

/// A payout batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutBatch {
    pub id: String,
    pub program: String,
    pub as_of: DateTime<Utc>,
    /// `created` or `confirmed`.
    pub status: String,
    pub items: Vec<PayoutItem>,
    /// Partners deactivated for inactivity in this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deactivated: Vec<String>,
}

/// Partner standing as the calculator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Active,
    Suspended,
    Terminated,
    /// Deactivated for inactivity.
    Inactive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartnerAcct {
    record: PartnerRecord,
    /// Every standing change, oldest first: the audit log.
    #[serde(default)]
    history: Vec<PartnerStatusChange>,
    standing: Standing,
    /// Last click or referral (or creation).
    last_activity: Option<DateTime<Utc>>,
    /// Indices of this partner's ledger lines.
    lines: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InvoiceAcct {
    total: Decimal,
    refunded: Decimal,
    /// Ledger lines earned on this invoice (commission and adjustments).
    lines: Vec<usize>,
    /// Per earning line, how much has been reversed so far. Reversals are
    /// prorated on the cumulative refunded amount, so rounding never adds
    /// up to more than was earned.
    #[serde(default)]
    reversed: HashMap<usize, Decimal>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CustomerAcct {
    partner_id: Option<String>,
    referred_at: Option<DateTime<Utc>>,
    cancelled: bool,
    paid_invoices: u32,
    /// Calendar months (`YYYY-MM`, UTC) in which the customer paid, in
    /// order: its billing months.
    #[serde(default)]
    paid_months: Vec<String>,
    /// Initial plan name and unit price (the KrispCall cap).
    initial: Option<(String, Decimal)>,
    current_plan: Option<(String, Decimal)>,
    invoices: HashMap<String, InvoiceAcct>,
    /// When held lines were released (after the N-th paid invoice).
    released_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CouponAcct {
    record: CouponRecord,
    redemptions: u32,
}

/// Per partner and month: the tier measures and the lines they priced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MonthAgg {
    referred_mrr: Decimal,
    payments: Decimal,
    /// (line index, base in invoice currency, percent applied so far).
    priced: Vec<(usize, Decimal, Decimal)>,
}

/// Everything the calculator has learnt; serialisable for snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    partners: BTreeMap<String, PartnerAcct>,
    customers: HashMap<String, CustomerAcct>,
    coupons: HashMap<String, CouponAcct>,
    clicks: HashMap<String, ClickSeen>,
    /// Click id → the customer it brought.
    #[serde(default)]
    click_customers: HashMap<String, String>,
    /// Rate tables, by publication time.
    fx: Vec<FxRates>,
    months: HashMap<String, MonthAgg>,
    paid_through: HashMap<String, DateTime<Utc>>,
    /// The ledger, append-only.
    pub ledger: Vec<Line>,
    pub referrals: Vec<Referral>,
    pub rejections: Vec<Rejection>,
    pub payouts: BTreeMap<String, PayoutBatch>,
    pub problems: Vec<Problem>,
    /// Ledger lines whose commission was forfeited.
    #[serde(default)]
    forfeited: std::collections::HashSet<usize>,
    /// Referrals held for review, by customer (`customer_key`): where a
    /// customer's review stands is read here, nowhere else.
    #[serde(default)]
    pub reviews: BTreeMap<String, Review>,
    /// Recent signups per program and address (hash), for `shared_ip`:
    /// (when, customer), pruned to 30 days as new signups arrive.
    #[serde(default)]
    signup_addresses: HashMap<String, Vec<(DateTime<Utc>, String)>>,
    /// Billing payment id (program-qualified, `customer_key`) → the
    /// invoice it paid ([`Event::BillingRefs`]).
    #[serde(default)]
    payment_refs: HashMap<String, String>,
    /// Invoice (program-qualified) → its customer, from every payment
    /// (referred or not): with `payment_refs`, what a refund or dispute
    /// naming only a payment needs. ~100 bytes an invoice.
    #[serde(default)]
    invoice_customers: HashMap<String, String>,
    /// Events applied.
    pub applied: u64,
}

/// The calculator: programs plus state.
#[derive(Debug, Clone)]
pub struct Calculator {
    programs: HashMap<String, ProgramBook>,
    /// Mutable state (public for snapshots and reads).
    pub state: State,
    /// Confirm payout batches as soon as they are made (replay).
    pub auto_confirm: bool,
}

fn customer_key(program: &str, customer: &str) -> String {
    format!("{program}\u{1f}{customer}")
}

fn month_key(partner: &str, at: DateTime<Utc>) -> String {
    format!("{partner}\u{1f}{:04}-{:02}", at.year(), at.month())
}

/// First instant of day `day` of the month after `at` (UTC).
fn next_month_day(at: DateTime<Utc>, day: u32) -> DateTime<Utc> {
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, day, 0, 0, 0)
        .single()
        .expect("day 1..=28 exists")
}

fn add_months(at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    at.checked_add_months(Months::new(months)).unwrap_or(at)
}

/// Sum that reports an overflow instead of panicking.
fn checked_sum(values: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    values
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v))
}

fn fmt2(d: Decimal) -> String {
    format!("{:.2}", d)
}

impl Calculator {
    /// A fresh calculator for these programs.
    pub fn new(programs: impl IntoIterator<Item = ProgramBook>) -> Self {
        Self {
            programs: programs.into_iter().map(|p| (p.key.clone(), p)).collect(),
            state: State::default(),
            auto_confirm: false,
        }
    }

    /// Continues from a snapshot.
    pub fn with_state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// Applies one event. Never fails: what cannot be done is recorded as a
    /// rejection or a problem.
    pub fn apply(&mut self, event_id: &str, e: &Event) {
        self.state.applied += 1;
        let problems_before = self.state.problems.len();
        match e {
            Event::Partner(p) => self.upsert_partner(p),
            Event::PartnerStatus(s) => self.partner_status(event_id, s),
            Event::Coupon(c) => {
                self.state
                    .coupons
                    .entry(c.code.clone())
                    .and_modify(|a| a.record = c.clone())
                    .or_insert_with(|| CouponAcct {
                        record: c.clone(),
                        redemptions: 0,
                    });
            }
            Event::FxRates(r) => {
                let pos = self.state.fx.partition_point(|x| x.at <= r.at);
                self.state.fx.insert(pos, r.clone());
            }
            Event::Click(c) => {
                if let Some(p) = self.state.partners.get_mut(&c.partner_id) {
                    p.last_activity = p.last_activity.max(Some(c.occurred_at));
                }
                self.state.clicks.insert(c.id.clone(), c.clone());
            }
            Event::Signup(s) => self.signup(event_id, s),
            Event::Payment(p) => {
                self.state.invoice_customers.insert(
                    customer_key(&p.program, &p.invoice_id),
                    p.customer_id.clone(),
                );
                self.payment(event_id, p)
            }
            Event::Refund(r) => self.reversal(event_id, r, "refund"),
            Event::Chargeback(r) => self.reversal(event_id, r, "chargeback"),
            Event::Cancellation(c) => {
                let key = customer_key(&c.program, &c.customer_id);
                self.state.customers.entry(key).or_default().cancelled = true;
            }
            Event::PlanChange(c) => {
                let key = customer_key(&c.program, &c.customer_id);
                self.state.customers.entry(key).or_default().current_plan =
                    Some((c.plan.clone(), c.unit_price));
            }
            Event::PayoutRun(r) => {
                self.payout_run(event_id, r);
            }
            Event::PayoutConfirm(c) => match self.state.payouts.get_mut(&c.payout_id) {
                Some(b) => b.status = "confirmed".into(),
                None => self.problem(event_id, format!("no payout batch {}", c.payout_id)),
            },
            Event::ReviewDecision(d) => self.review_decision(event_id, d),
            Event::BillingRefs(r) => {
                for id in &r.refs {
                    self.state
                        .payment_refs
                        .insert(customer_key(&r.program, id), r.invoice_id.clone());
                }
            }
        }
        // The event's program and time, on the problems it left (only then
        // is anything copied).
        for p in &mut self.state.problems[problems_before..] {
            p.program = e.program().map(String::from);
            p.at = e.occurred_at();
        }
    }

    fn problem(&mut self, event_id: &str, detail: String) {
        self.state.problems.push(Problem {
            event_id: event_id.to_string(),
            detail,
            program: None,
            at: None,
        });
    }

    fn upsert_partner(&mut self, p: &PartnerRecord) {
        match self.state.partners.get_mut(&p.id) {
            Some(acct) => acct.record = p.clone(),
            None => {
                self.state.partners.insert(
                    p.id.clone(),
                    PartnerAcct {
                        record: p.clone(),
                        history: Vec::new(),
                        standing: Standing::Active,
                        last_activity: p.created_at,
                        lines: Vec::new(),
                    },
                );
            }
        }
    }

    fn partner_status(&mut self, event_id: &str, s: &PartnerStatusChange) {
        let Some(p) = self.state.partners.get_mut(&s.partner_id) else {
            return self.problem(event_id, format!("no partner {}", s.partner_id));
        };
        p.standing = match s.status.as_str() {
            "suspended" => Standing::Suspended,
            "terminated" => Standing::Terminated,
            _ => Standing::Active,
        };
        p.history.push(s.clone());
        let program = p.record.program.clone();
        let forfeits = self
            .programs
            .get(&program)
            .and_then(|b| b.rules.as_ref())
            .is_some_and(|r| r.termination.forfeit_balance);
        if s.status == "terminated" && forfeits {
            let why = format!(
                "terminated by {}: {}; the accrued balance is forfeited",
                s.actor, s.reason
            );
            self.forfeit_all(event_id, &s.partner_id, s.occurred_at, &why);
        }
    }

    /// A partner's standing changes, oldest first.
    pub fn history(&self, pid: &str) -> &[PartnerStatusChange] {
        self.state.partners.get(pid).map_or(&[], |p| &p.history)
    }

    fn push_line(&mut self, line: Line) -> usize {
        let idx = self.state.ledger.len();
        let mut line = line;
        line.seq = idx as u64 + 1;
        if let Some(p) = self.state.partners.get_mut(&line.partner_id) {
            p.lines.push(idx);
        }
        self.state.ledger.push(line);
        idx
    }

    // ---- reads ----------------------------------------------------------

    /// A partner's balances per currency as of a date.
    pub fn balances(&self, pid: &str, as_of: DateTime<Utc>) -> Option<BTreeMap<String, Balance>> {
        let p = self.state.partners.get(pid)?;
        Some(balances(
            p.lines.iter().map(|&i| &self.state.ledger[i]),
            as_of,
        ))
    }

    /// A partner's ledger lines, oldest first.
    pub fn lines(&self, pid: &str) -> Vec<&Line> {
        self.state
            .partners
            .get(pid)
            .map(|p| p.lines.iter().map(|&i| &self.state.ledger[i]).collect())
            .unwrap_or_default()
    }

    /// Partner ids known to the calculator.
    pub fn partner_ids(&self) -> impl Iterator<Item = &String> {
        self.state.partners.keys()
    }

    /// A partner's standing.
    pub fn standing(&self, pid: &str) -> Option<Standing> {
        self.state.partners.get(pid).map(|p| p.standing)
    }

    /// A coupon and how often it was redeemed.
    pub fn coupon(&self, code: &str) -> Option<(&CouponRecord, u32)> {
        self.state
            .coupons
            .get(code)
            .map(|c| (&c.record, c.redemptions))
    }

    /// A partner's record as the calculator knows it.
    pub fn partner(&self, pid: &str) -> Option<&PartnerRecord> {
        self.state.partners.get(pid).map(|p| &p.record)
    }

    /// A program's benefit tier for a month's rewards (per currency),
    /// converted to each tier's currency at `at`.
    pub fn benefit_tier(
        &self,
        program: &str,
        rewards: &BTreeMap<String, Decimal>,
        at: DateTime<Utc>,
    ) -> Option<String> {
        let rules = self.programs.get(program)?.rules.as_ref()?;
        let pivot = &rules.commission.pivot;
        rules
            .benefit_tiers
            .iter()
            .filter(|t| {
                let total: Option<Decimal> = rewards
                    .iter()
                    .map(|(c, v)| {
                        if c == &t.currency {
                            Some(*v)
                        } else {
                            self.cross_rate(pivot, c, &t.currency, at)
                                .map(|(f, r, _)| *v / f * r)
                        }
                    })
                    .sum();
                total.is_some_and(|r| r >= t.monthly_reward)
            })
            .max_by_key(|t| t.monthly_reward)
            .map(|t| t.name.clone())
    }

    /// Commission earned (commission and tier lines) and reversed (voids
    /// and clawbacks) per currency by lines dated from `from` (inclusive)
    /// to `to` (exclusive). Reads the whole ledger.
    pub fn earned_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<String, (Decimal, Decimal)> {
        let mut out: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for l in &self.state.ledger {
            if l.at < from || l.at >= to {
                continue;
            }
            match l.kind {
                LineKind::Commission | LineKind::TierAdjustment => {
                    out.entry(l.currency.clone()).or_default().0 += l.amount;
                }
                LineKind::Void | LineKind::Clawback => {
                    out.entry(l.currency.clone()).or_default().1 -= l.amount;
                }
                _ => {}
            }
        }
        out
    }

    /// The customer and invoice a billing payment id (`ch_…`, `pi_…`) paid,
    /// once both its [`Event::BillingRefs`] and its payment are applied.
    pub fn paid_by(&self, program: &str, payment: &str) -> Option<(&str, &str)> {
        let invoice = self
            .state
            .payment_refs
            .get(&customer_key(program, payment))?;
        let customer = self
            .state
            .invoice_customers
            .get(&customer_key(program, invoice))?;
        Some((customer, invoice))
    }

    /// What of a payment the program's commission is figured on: the
    /// lines of the kinds its rules count (before any initial-plan cap).
    /// `None` for a program that pays nothing.
    pub fn commissionable(&self, p: &Payment) -> Option<Decimal> {
        let rules = self.programs.get(&p.program)?.rules.as_ref()?;
        checked_sum(
            p.lines
                .iter()
                .filter(|l| rules.commission.base.contains(&l.kind))
                .map(|l| l.amount),
        )
    }

    /// Whether an invoice's payment was seen (referred customer or not).
    pub fn invoice_customer(&self, program: &str, invoice: &str) -> Option<&str> {
        self.state
            .invoice_customers
            .get(&customer_key(program, invoice))
            .map(String::as_str)
    }

    /// The referral of a customer, or the rejections of its signups.
    pub fn customer(&self, program: &str, customer: &str) -> (Option<&Referral>, Vec<&Rejection>) {
        let referral = self
            .state
            .referrals
            .iter()
            .find(|r| r.program == program && r.customer_id == customer);
        let rejections = self
            .state
            .rejections
            .iter()
            .filter(|r| r.program == program && r.customer_id == customer)
            .collect();
        (referral, rejections)
    }
}
