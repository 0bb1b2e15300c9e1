//! The commission calculator: a deterministic state machine over events.
//! No I/O, no clock: the same events in the same order always give the same
//! ledger, whether applied live by the server or by `refedge replay`.

use super::event::*;
use super::ledger::{balances, Balance, FxUsed, Line, LineKind};
use super::money::{cents, percent_of, ser_money};
use super::rules::{
    BelowMinimum, Cap, CurrencyRule, Duration, LineKind as InvoiceKind, MinimumRule, Payable, Rate,
    Rules, TierMeasure,
};
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// E-mail providers whose domain says nothing about a company.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "mail.com",
    "zoho.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "ukr.net",
    "i.ua",
    "web.de",
    "qq.com",
    "163.com",
];

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
    /// Program and time of the event being applied, for its problems.
    current: (Option<String>, Option<DateTime<Utc>>),
}

fn customer_key(program: &str, customer: &str) -> String {
    format!("{program}\u{1f}{customer}")
}

fn month_key(partner: &str, at: DateTime<Utc>) -> String {
    format!("{partner}\u{1f}{:04}-{:02}", at.year(), at.month())
}

fn domain_of(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let host = match s.split_once('@') {
        Some((_, d)) => d.to_string(),
        None => {
            let no_scheme = s.split("://").last().unwrap_or(&s);
            no_scheme
                .split(['/', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        }
    };
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
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
            current: (None, None),
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
        self.current = (e.program().map(String::from), e.occurred_at());
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
            Event::Payment(p) => self.payment(event_id, p),
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
        }
    }

    fn problem(&mut self, event_id: &str, detail: String) {
        self.state.problems.push(Problem {
            event_id: event_id.to_string(),
            detail,
            program: self.current.0.clone(),
            at: self.current.1,
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

    // ---- signups -------------------------------------------------------

    fn signup(&mut self, event_id: &str, s: &Signup) {
        let Some(book) = self.programs.get(&s.program) else {
            return self.problem(event_id, format!("unknown program {}", s.program));
        };
        let cookie_days = book.cookie_days;
        let min_age = book.min_click_to_signup_seconds;
        let key = customer_key(&s.program, &s.customer.id);
        let reject =
            |me: &mut Self, partner: Option<&str>, reason: RejectReason, detail: String| {
                me.state.rejections.push(Rejection {
                    customer_id: s.customer.id.clone(),
                    program: s.program.clone(),
                    partner_id: partner.map(String::from),
                    reason,
                    detail,
                    at: s.occurred_at,
                    event_id: event_id.to_string(),
                });
            };

        // Which click (token or click id) and which coupon are claimed.
        let resolved_error = s.resolved.as_ref().and_then(|r| r.error.clone());
        let claimed_click = s
            .resolved
            .as_ref()
            .and_then(|r| r.click.clone())
            .or_else(|| {
                s.attribution
                    .click_id
                    .as_ref()
                    .and_then(|id| self.state.clicks.get(id).cloned())
            });
        let has_click_claim = s.attribution.token.is_some() || s.attribution.click_id.is_some();
        if has_click_claim && claimed_click.is_none() {
            let detail =
                resolved_error.unwrap_or_else(|| "the token or click id matches no click".into());
            return reject(self, None, RejectReason::InvalidAttribution, detail);
        }
        let coupon = match &s.attribution.coupon {
            None => None,
            Some(code) => match self.state.coupons.get(code) {
                None => {
                    let p = claimed_click.as_ref().map(|c| c.partner_id.as_str());
                    return reject(
                        self,
                        p,
                        RejectReason::CouponUnknown,
                        format!("no coupon {code:?}"),
                    );
                }
                Some(c) => Some(c.clone()),
            },
        };
        let partner_id = match (&claimed_click, &coupon) {
            (None, None) => {
                return reject(
                    self,
                    None,
                    RejectReason::NoAttribution,
                    "no token, click id or coupon".into(),
                )
            }
            (Some(c), Some(k)) if c.partner_id != k.record.partner_id => {
                return reject(
                    self,
                    Some(&c.partner_id),
                    RejectReason::CouponOtherPartner,
                    format!(
                        "coupon {} is assigned to another partner than the click",
                        k.record.code
                    ),
                );
            }
            (Some(c), _) => c.partner_id.clone(),
            (None, Some(k)) => k.record.partner_id.clone(),
        };
        let pid = Some(partner_id.as_str());
        if s.customer.existing {
            return reject(
                self,
                pid,
                RejectReason::ExistingCustomer,
                "already a customer or prospect".into(),
            );
        }
        if let Some(existing) = self
            .state
            .customers
            .get(&key)
            .and_then(|c| c.partner_id.clone())
        {
            return reject(
                self,
                pid,
                RejectReason::CurrentCustomerReferral,
                format!("already referred by {existing}; the first referral stands"),
            );
        }
        let Some(partner) = self.state.partners.get(&partner_id).cloned() else {
            return reject(
                self,
                pid,
                RejectReason::PartnerNotActive,
                "unknown partner".into(),
            );
        };
        if partner.record.program != s.program {
            return reject(
                self,
                pid,
                RejectReason::InvalidAttribution,
                "the partner is in another program".into(),
            );
        }
        if partner.standing != Standing::Active {
            return reject(
                self,
                pid,
                RejectReason::PartnerNotActive,
                format!("partner is {:?}", partner.standing).to_lowercase(),
            );
        }
        if let Some(c) = &claimed_click {
            if !c.flags.is_empty() {
                return reject(
                    self,
                    pid,
                    RejectReason::FlaggedClick,
                    format!("click {} was flagged: {}", c.id, c.flags.join(", ")),
                );
            }
            if let Some(other) = self
                .state
                .click_customers
                .get(&c.id)
                .filter(|o| *o != &s.customer.id)
            {
                return reject(
                    self,
                    pid,
                    RejectReason::AttributionReused,
                    format!("click {} already brought customer {other}", c.id),
                );
            }
            if (s.occurred_at - c.occurred_at) < chrono::Duration::seconds(min_age as i64)
                && s.occurred_at >= c.occurred_at
            {
                return reject(
                    self,
                    pid,
                    RejectReason::ScriptedLead,
                    format!(
                        "signed up {}s after the click; a person needs at least {min_age}s",
                        (s.occurred_at - c.occurred_at).num_seconds()
                    ),
                );
            }
            if c.program.as_ref().is_some_and(|p| p != &s.program) {
                return reject(
                    self,
                    pid,
                    RejectReason::InvalidAttribution,
                    "the click is for another program".into(),
                );
            }
            let age = s.occurred_at - c.occurred_at;
            if age < chrono::Duration::zero() {
                return reject(
                    self,
                    pid,
                    RejectReason::InvalidAttribution,
                    "signup before the click".into(),
                );
            }
            if age > chrono::Duration::days(i64::from(cookie_days)) {
                return reject(
                    self,
                    pid,
                    RejectReason::WindowExpired,
                    format!(
                        "click {} days before signup; window is {cookie_days} days",
                        age.num_days()
                    ),
                );
            }
        }
        if let Some(k) = &coupon {
            if k.record.expires_at.is_some_and(|e| s.occurred_at > e) {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponExpired,
                    format!("coupon {} expired", k.record.code),
                );
            }
            if k.record.single_use && k.redemptions >= 1 {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponAlreadyRedeemed,
                    format!("single-use coupon {} was already redeemed", k.record.code),
                );
            }
            if k.record.max_redemptions.is_some_and(|m| k.redemptions >= m) {
                return reject(
                    self,
                    pid,
                    RejectReason::CouponExhausted,
                    format!("coupon {} reached its redemption limit", k.record.code),
                );
            }
        }
        if let Some(detail) = self_referral(&partner.record, &s.customer) {
            return reject(self, pid, RejectReason::SelfReferral, detail);
        }

        let via_click = claimed_click.is_some();
        if let Some(c) = &claimed_click {
            self.state
                .click_customers
                .insert(c.id.clone(), s.customer.id.clone());
        }
        if let Some(k) = &coupon {
            if let Some(acct) = self.state.coupons.get_mut(&k.record.code) {
                acct.redemptions += 1;
            }
        }
        let cust = self.state.customers.entry(key).or_default();
        cust.partner_id = Some(partner_id.clone());
        cust.referred_at = Some(s.occurred_at);
        if let Some(p) = self.state.partners.get_mut(&partner_id) {
            p.last_activity = p.last_activity.max(Some(s.occurred_at));
        }
        self.state.referrals.push(Referral {
            customer_id: s.customer.id.clone(),
            program: s.program.clone(),
            partner_id,
            at: s.occurred_at,
            event_id: event_id.to_string(),
            via: if via_click { "click" } else { "coupon" }.into(),
            click_id: claimed_click.map(|c| c.id),
            coupon: coupon.map(|k| k.record.code),
        });
    }

    // ---- payments -------------------------------------------------------

    fn payment(&mut self, event_id: &str, p: &Payment) {
        let key = customer_key(&p.program, &p.customer_id);
        let Some(book) = self.programs.get(&p.program) else {
            return self.problem(event_id, format!("unknown program {}", p.program));
        };
        let Some(rules) = book.rules.clone() else {
            return;
        };
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        let Some(partner_id) = cust.partner_id.clone() else {
            return;
        };
        if cust.invoices.contains_key(&p.invoice_id) {
            return self.problem(
                event_id,
                format!("invoice {} was already paid", p.invoice_id),
            );
        }
        // Checked before anything changes: an overflow is a problem on this
        // event, never a half-applied payment.
        let total = checked_sum(p.lines.iter().map(|l| l.amount));
        let subscription = checked_sum(
            p.lines
                .iter()
                .filter(|l| l.kind == InvoiceKind::Subscription)
                .map(|l| l.amount),
        );
        let caps_fit = p.lines.iter().all(|l| {
            l.unit_price.is_none_or(|u| {
                u.checked_mul(Decimal::from(l.quantity.unwrap_or(1)))
                    .is_some()
            })
        });
        let (Some(total), Some(subscription), true) = (total, subscription, caps_fit) else {
            return self.problem(
                event_id,
                format!(
                    "invoice {}: amounts overflow; payment not applied",
                    p.invoice_id
                ),
            );
        };
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        cust.paid_invoices += 1;
        let invoice_no = cust.paid_invoices;
        let billing_month = format!("{:04}-{:02}", p.occurred_at.year(), p.occurred_at.month());
        let (month_no, new_month) = match cust.paid_months.iter().position(|m| *m == billing_month)
        {
            Some(i) => (i as u32 + 1, false),
            None => {
                cust.paid_months.push(billing_month);
                (cust.paid_months.len() as u32, true)
            }
        };
        cust.invoices.insert(
            p.invoice_id.clone(),
            InvoiceAcct {
                total,
                ..Default::default()
            },
        );
        if cust.initial.is_none() {
            cust.initial = p
                .lines
                .iter()
                .find(|l| l.kind == InvoiceKind::Subscription && l.unit_price.is_some())
                .map(|l| {
                    (
                        l.plan.clone().unwrap_or_else(|| "plan".into()),
                        l.unit_price.unwrap_or_default(),
                    )
                })
                .or_else(|| cust.current_plan.clone());
        }
        let eligible = match rules.commission.duration {
            Duration::Lifetime => true,
            Duration::WhileSubscribed => !cust.cancelled,
            Duration::FirstInvoices { count } => invoice_no <= count,
            Duration::FirstMonths { count } => month_no <= count,
        };
        let referred_at = cust.referred_at.unwrap_or(p.occurred_at);
        let initial = cust.initial.clone();

        let standing = self.state.partners.get(&partner_id).map(|a| a.standing);
        // Tier measures are kept in the pivot currency.
        let pivot = &rules.commission.pivot;
        let to_pivot = if &p.currency == pivot {
            Some(Decimal::ONE)
        } else {
            self.cross_rate(pivot, &p.currency, pivot, p.occurred_at)
                .map(|(f, t, _)| t / f)
        };
        let (sub_p, total_p) = match to_pivot {
            Some(k) => (cents(subscription * k), cents(total * k)),
            None => (subscription, total),
        };
        if !eligible || standing != Some(Standing::Active) {
            return;
        }
        // Only revenue that earns counts toward the partner's tier: a
        // cancelled account brings its partner no MRR.
        let mkey = month_key(&partner_id, p.occurred_at);
        let agg = self.state.months.entry(mkey.clone()).or_default();
        agg.referred_mrr += sub_p;
        agg.payments += total_p;

        // The base: counted line kinds, subscription capped if configured.
        let c = &rules.commission;
        let mut base = Decimal::ZERO;
        let mut parts: Vec<String> = Vec::new();
        for l in &p.lines {
            if !c.base.contains(&l.kind) {
                continue;
            }
            let kind = match l.kind {
                InvoiceKind::Subscription => "subscription",
                InvoiceKind::Usage => "usage",
                InvoiceKind::Fee => "fee",
            };
            match (c.cap, l.kind, &initial) {
                (Cap::InitialPlan, InvoiceKind::Subscription, Some((plan, price))) => {
                    let qty = Decimal::from(l.quantity.unwrap_or(1));
                    let cap = price.checked_mul(qty).unwrap_or(Decimal::MAX);
                    let counted = l.amount.min(cap);
                    base += counted;
                    let seats = l.quantity.unwrap_or(1);
                    let seat_word = if seats == 1 { "seat" } else { "seats" };
                    if counted < l.amount {
                        parts.push(format!(
                            "initial plan {plan} {} × {seats} {seat_word} (subscription {} capped)",
                            fmt2(*price),
                            fmt2(l.amount)
                        ));
                    } else {
                        parts.push(format!(
                            "{kind} {} (within initial plan {plan} {} × {seats} {seat_word})",
                            fmt2(l.amount),
                            fmt2(*price)
                        ));
                    }
                }
                _ => {
                    base += l.amount;
                    parts.push(format!("{kind} {}", fmt2(l.amount)));
                }
            }
        }
        if parts.is_empty() {
            return;
        }
        let (percent, tier_note) = match &c.rate {
            Rate::Flat { percent } => (*percent, String::new()),
            Rate::Tiered { by, tiers } => {
                let (measure, label) = match by {
                    TierMeasure::ReferredMrr => (agg.referred_mrr, "referred MRR"),
                    TierMeasure::MonthlyPayments => (agg.payments, "payments"),
                };
                let tier = tiers
                    .iter()
                    .rev()
                    .find(|t| measure >= t.from)
                    .unwrap_or(&tiers[0]);
                (
                    tier.percent,
                    format!(
                        " (tier from {}: {label} this month {})",
                        fmt2(tier.from),
                        fmt2(measure)
                    ),
                )
            }
        };
        let explanation = format!(
            "{}%{} of {} on invoice {} #{invoice_no}",
            percent.normalize(),
            tier_note,
            parts.join(" + "),
            p.invoice_id
        );
        let commission = percent_of(base, percent);
        let available_at = match c.payable {
            Payable::OnPayment => Some(p.occurred_at),
            Payable::AfterInvoices { count } => (invoice_no >= count).then_some(p.occurred_at),
            Payable::AfterMonths { count } => (month_no >= count).then_some(p.occurred_at),
            Payable::MonthsAfterClose { months } => {
                Some(p.occurred_at.max(add_months(referred_at, months)))
            }
            Payable::NextMonthDay { day } => Some(next_month_day(p.occurred_at, day)),
        };
        let Some((amount, currency, fx)) = self.convert(
            event_id,
            &rules,
            &partner_id,
            commission,
            &p.currency,
            p.occurred_at,
        ) else {
            return;
        };
        let mut explanation = explanation;
        if let Some(f) = &fx {
            explanation.push_str(&format!(
                "; {} {} → {} {} via {} (1 {} = {} {}, = {} {})",
                fmt2(f.original),
                f.from,
                fmt2(amount),
                f.to,
                f.pivot,
                f.pivot,
                f.from_rate,
                f.from,
                f.to_rate,
                f.to
            ));
        }
        let idx = self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at: p.occurred_at,
            kind: LineKind::Commission,
            partner_id: partner_id.clone(),
            program: p.program.clone(),
            amount,
            currency,
            available_at,
            customer_id: Some(p.customer_id.clone()),
            invoice_id: Some(p.invoice_id.clone()),
            explanation,
            fx,
        });
        self.invoice_lines(&key, &p.invoice_id).push(idx);

        // Tier crossed: top up this month's earlier lines.
        if matches!(c.rate, Rate::Tiered { .. }) {
            let priced = std::mem::take(
                &mut self
                    .state
                    .months
                    .get_mut(&mkey)
                    .expect("created above")
                    .priced,
            );
            let mut kept = Vec::with_capacity(priced.len() + 1);
            for (line_idx, line_base, applied) in priced {
                if applied < percent {
                    self.tier_adjustment(event_id, line_idx, line_base, applied, percent);
                }
                kept.push((line_idx, line_base, applied.max(percent)));
            }
            kept.push((idx, base, percent));
            self.state
                .months
                .get_mut(&mkey)
                .expect("created above")
                .priced = kept;
        }

        let reached = match c.payable {
            Payable::AfterInvoices { count } if invoice_no == count => {
                Some(format!("paid invoice #{count} reached"))
            }
            Payable::AfterMonths { count } if new_month && month_no == count => {
                Some(format!("billing month #{count} paid"))
            }
            _ => None,
        };
        if let Some(reached) = reached {
            self.release(
                event_id,
                &key,
                &partner_id,
                &p.program,
                &p.customer_id,
                p.occurred_at,
                &reached,
            );
        }
    }

    fn invoice_lines(&mut self, key: &str, invoice: &str) -> &mut Vec<usize> {
        &mut self
            .state
            .customers
            .get_mut(key)
            .expect("customer exists")
            .invoices
            .get_mut(invoice)
            .expect("invoice exists")
            .lines
    }

    fn tier_adjustment(
        &mut self,
        event_id: &str,
        line_idx: usize,
        base: Decimal,
        old_pct: Decimal,
        new_pct: Decimal,
    ) {
        let orig = self.state.ledger[line_idx].clone();
        // Rounded once overall: the line and its top-ups add up to the new
        // percentage of the base rounded to cents.
        let delta = percent_of(base, new_pct) - percent_of(base, old_pct);
        let delta_pct = new_pct - old_pct;
        if delta.is_zero() {
            return;
        }
        let (amount, fx) = match &orig.fx {
            Some(f) => {
                let converted = cents(delta / f.from_rate * f.to_rate);
                let mut f2 = f.clone();
                f2.original = delta;
                (converted, Some(f2))
            }
            None => (delta, None),
        };
        let idx = self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at: self.state.ledger.last().map_or(orig.at, |l| l.at),
            kind: LineKind::TierAdjustment,
            partner_id: orig.partner_id.clone(),
            program: orig.program.clone(),
            amount,
            currency: orig.currency.clone(),
            available_at: orig.available_at,
            customer_id: orig.customer_id.clone(),
            invoice_id: orig.invoice_id.clone(),
            explanation: format!(
                "tier reached {}%: +{}% of base {} of line {} (invoice {})",
                new_pct.normalize(),
                delta_pct.normalize(),
                fmt2(base),
                orig.seq,
                orig.invoice_id.as_deref().unwrap_or("-")
            ),
            fx,
        });
        if let (Some(c), Some(inv)) = (&orig.customer_id, &orig.invoice_id) {
            let key = customer_key(&orig.program, c);
            let refunded = self
                .state
                .customers
                .get_mut(&key)
                .and_then(|acct| acct.invoices.get_mut(inv))
                .map(|i| {
                    i.lines.push(idx);
                    (i.refunded, i.total)
                });
            // A top-up is commission on its invoice: what of the invoice
            // was already refunded or charged back takes its share of the
            // top-up with it.
            if let Some((refunded, total)) = refunded.filter(|(r, _)| !r.is_zero()) {
                let why =
                    format!(
                    "invoice {inv} was already {}% refunded or charged back ({} of {}): that share",
                    (refunded * Decimal::ONE_HUNDRED / total).round_dp(2).normalize(),
                    fmt2(refunded),
                    fmt2(total)
                );
                let at = self.state.ledger[idx].at;
                self.reverse_line(event_id, &key, inv, idx, at, &why);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        event_id: &str,
        key: &str,
        partner_id: &str,
        program: &str,
        customer: &str,
        at: DateTime<Utc>,
        reached: &str,
    ) {
        let mut held: BTreeMap<String, Decimal> = BTreeMap::new();
        if let Some(p) = self.state.partners.get(partner_id) {
            for &i in &p.lines {
                let l = &self.state.ledger[i];
                if l.available_at.is_none()
                    && l.customer_id.as_deref() == Some(customer)
                    && l.program == program
                {
                    *held.entry(l.currency.clone()).or_default() += l.amount;
                }
            }
        }
        if let Some(c) = self.state.customers.get_mut(key) {
            c.released_at = Some(at);
        }
        for (currency, amount) in held {
            if amount.is_zero() {
                continue;
            }
            for (sign, available_at) in [(-Decimal::ONE, None), (Decimal::ONE, Some(at))] {
                self.push_line(Line {
                    seq: 0,
                    event_id: event_id.to_string(),
                    at,
                    kind: LineKind::Release,
                    partner_id: partner_id.to_string(),
                    program: program.to_string(),
                    amount: amount * sign,
                    currency: currency.clone(),
                    available_at,
                    customer_id: Some(customer.to_string()),
                    invoice_id: None,
                    explanation: format!(
                        "held commission {} {} payable now: {reached}",
                        fmt2(amount),
                        currency
                    ),
                    fx: None,
                });
            }
        }
    }

    /// Converts an invoice-currency amount per the program's currency rule.
    fn convert(
        &mut self,
        event_id: &str,
        rules: &Rules,
        partner_id: &str,
        amount: Decimal,
        from: &str,
        at: DateTime<Utc>,
    ) -> Option<(Decimal, String, Option<FxUsed>)> {
        let to = match rules.commission.currency {
            CurrencyRule::Invoice => return Some((amount, from.to_string(), None)),
            CurrencyRule::Partner => self
                .state
                .partners
                .get(partner_id)
                .map(|p| p.record.currency.clone())
                .unwrap_or_else(|| from.to_string()),
        };
        if to == from {
            return Some((amount, to, None));
        }
        let pivot = &rules.commission.pivot;
        match self.cross_rate(pivot, from, &to, at) {
            Some((from_rate, to_rate, rates_at)) => {
                let Some(converted) = amount
                    .checked_div(from_rate)
                    .and_then(|v| v.checked_mul(to_rate))
                    .map(cents)
                else {
                    self.problem(
                        event_id,
                        format!(
                            "converting {amount} {from} to {to} overflows; commission not recorded"
                        ),
                    );
                    return None;
                };
                Some((
                    converted,
                    to.clone(),
                    Some(FxUsed {
                        original: amount,
                        from: from.to_string(),
                        to,
                        pivot: pivot.clone(),
                        from_rate,
                        to_rate,
                        rates_at,
                    }),
                ))
            }
            None => {
                self.problem(event_id, format!("no {pivot}-based exchange rate for {from} and {to} at {at}; commission not recorded"));
                None
            }
        }
    }

    /// Rates of `from` and `to` per 1 `pivot`, from the newest table at or
    /// before `at` that has both.
    fn cross_rate(
        &self,
        pivot: &str,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
    ) -> Option<(Decimal, Decimal, DateTime<Utc>)> {
        let end = self.state.fx.partition_point(|x| x.at <= at);
        self.state.fx[..end]
            .iter()
            .rev()
            .filter(|t| t.base == pivot)
            .find_map(|t| {
                let rate = |c: &str| {
                    if c == pivot {
                        Some(Decimal::ONE)
                    } else {
                        t.rates.get(c).map(|r| r.0)
                    }
                };
                Some((rate(from)?, rate(to)?, t.at))
            })
    }

    // ---- refunds and chargebacks ---------------------------------------

    fn reversal(&mut self, event_id: &str, r: &Reversal, what: &str) {
        let key = customer_key(&r.program, &r.customer_id);
        let Some(cust) = self.state.customers.get_mut(&key) else {
            return;
        };
        let Some(inv) = cust.invoices.get_mut(&r.invoice_id) else {
            if cust.partner_id.is_some() {
                self.problem(
                    event_id,
                    format!("{what} of unknown invoice {}", r.invoice_id),
                );
            }
            return;
        };
        let remaining = inv.total - inv.refunded;
        let amount = r.amount.min(remaining);
        if amount <= Decimal::ZERO || inv.total.is_zero() {
            return;
        }
        inv.refunded += amount;
        let share = (amount * Decimal::ONE_HUNDRED / inv.total)
            .round_dp(2)
            .normalize();
        let lines = inv.lines.clone();
        let why = format!(
            "{what} of {} of {} on invoice {}: {share}%",
            fmt2(amount),
            fmt2(inv.total),
            r.invoice_id
        );
        for idx in lines {
            self.reverse_line(event_id, &key, &r.invoice_id, idx, r.occurred_at, &why);
        }
    }

    /// Reverses invoice line `idx` down to the invoice's refunded share
    /// (cumulative, so rounding never adds up to more than was earned):
    /// the exact product `amount × refunded / total` rounded once. What
    /// was not yet paid is voided; what was paid is withheld from future
    /// payouts. A line already forfeited is gone and is not taken twice.
    fn reverse_line(
        &mut self,
        event_id: &str,
        key: &str,
        invoice: &str,
        idx: usize,
        at: DateTime<Utc>,
        why: &str,
    ) {
        if self.state.forfeited.contains(&idx) {
            return;
        }
        let Some(cust) = self.state.customers.get_mut(key) else {
            return;
        };
        let released_at = cust.released_at;
        let Some(inv) = cust.invoices.get_mut(invoice) else {
            return;
        };
        if inv.total.is_zero() {
            return;
        }
        let orig = self.state.ledger[idx].clone();
        let done = inv.reversed.get(&idx).copied().unwrap_or_default();
        let reverse = cents(orig.amount * inv.refunded / inv.total) - done;
        if reverse.is_zero() {
            return;
        }
        inv.reversed.insert(idx, done + reverse);
        let effective = orig.available_at.or(released_at);
        let paid_through = self
            .state
            .paid_through
            .get(&format!("{}\u{1f}{}", orig.partner_id, orig.currency))
            .copied();
        let paid = effective.is_some_and(|a| paid_through.is_some_and(|p| a <= p));
        let (kind, available_at, verb) = if paid {
            (LineKind::Clawback, Some(at), "withheld from future payouts")
        } else {
            (LineKind::Void, effective, "voided")
        };
        self.push_line(Line {
            seq: 0,
            event_id: event_id.to_string(),
            at,
            kind,
            partner_id: orig.partner_id.clone(),
            program: orig.program.clone(),
            amount: -reverse,
            currency: orig.currency.clone(),
            available_at,
            customer_id: orig.customer_id.clone(),
            invoice_id: orig.invoice_id.clone(),
            explanation: format!("{why} of line {} {verb}", orig.seq),
            fx: orig.fx.clone(),
        });
    }

    // ---- payouts --------------------------------------------------------

    /// Computes (and unless `dry_run`, records) a payout batch.
    pub fn payout_run(&mut self, event_id: &str, r: &PayoutRun) -> Option<PayoutBatch> {
        let id = format!("po_{}_{}", r.program, r.as_of.format("%Y%m%d"));
        if let Some(existing) = self.state.payouts.get(&id) {
            return Some(existing.clone());
        }
        let Some(book) = self.programs.get(&r.program) else {
            self.problem(event_id, format!("unknown program {}", r.program));
            return None;
        };
        let rules = book.rules.clone()?;
        let as_of = r.as_of;
        let partner_ids: Vec<String> = self
            .state
            .partners
            .iter()
            .filter(|(_, p)| p.record.program == r.program)
            .map(|(id, _)| id.clone())
            .collect();
        let mut items = Vec::new();
        let mut deactivated = Vec::new();
        let mut new_lines: Vec<Line> = Vec::new();
        let mut forfeited: Vec<usize> = Vec::new();
        for pid in partner_ids {
            if let Some(t) = r.last_clicks.get(&pid) {
                if !r.dry_run {
                    let p = self.state.partners.get_mut(&pid).expect("listed");
                    p.last_activity = p.last_activity.max(Some(*t));
                }
            }
            let acct = &self.state.partners[&pid];
            let last_activity = acct.last_activity.max(r.last_clicks.get(&pid).copied());
            let bals = balances(acct.lines.iter().map(|&i| &self.state.ledger[i]), as_of);
            if acct.standing == Standing::Active {
                if let Some(rule) = &rules.inactivity {
                    let dormant = last_activity.is_none_or(|t| as_of >= add_months(t, rule.months));
                    let total = self.total_in(&bals, &rule.currency, as_of);
                    if dormant && total.is_some_and(|t| t < rule.balance_below) {
                        deactivated.push(pid.clone());
                        let (lines, taken) = self.forfeit_lines(event_id, &pid, &r.program, as_of, &format!(
                            "inactive for {} months with a balance below {} {}: account deactivated, balance forfeited",
                            rule.months, fmt2(rule.balance_below), rule.currency
                        ));
                        new_lines.extend(lines);
                        forfeited.extend(taken);
                        continue;
                    }
                }
            }
            // Suspended: held. Inactive: forfeited. Terminated: what was
            // earned until the termination date is still paid (or was
            // forfeited at termination, per the program).
            if matches!(acct.standing, Standing::Suspended | Standing::Inactive) {
                continue;
            }
            for (currency, bal) in &bals {
                if bal.available <= Decimal::ZERO {
                    continue;
                }
                let minimum = match rules.payout.minimum {
                    None => Decimal::ZERO,
                    Some(m) if currency == &rules.payout.minimum_currency => m,
                    Some(m) => match self.cross_rate(
                        &rules.commission.pivot,
                        &rules.payout.minimum_currency,
                        currency,
                        as_of,
                    ) {
                        Some((f, t, _)) => cents(m / f * t),
                        None => {
                            self.problem(event_id, format!("no rate to compare {currency} with the payout minimum; {pid} skipped"));
                            continue;
                        }
                    },
                };
                let meets = match rules.payout.minimum_rule {
                    MinimumRule::AtLeast => bal.available >= minimum,
                    MinimumRule::MoreThan => bal.available > minimum,
                };
                let (kind, method) = if meets {
                    (LineKind::Payout, "cash")
                } else if rules.payout.below_minimum == BelowMinimum::Credit {
                    (LineKind::Credit, "credit")
                } else {
                    continue;
                };
                let rule_word = match rules.payout.minimum_rule {
                    MinimumRule::AtLeast => "at least",
                    MinimumRule::MoreThan => "more than",
                };
                let explanation = if meets {
                    format!("payout {id}: available {} {currency} is {rule_word} the minimum {} {currency}", fmt2(bal.available), fmt2(minimum))
                } else {
                    format!("payout {id}: available {} {currency} is not {rule_word} the minimum {} {currency}; granted as credit", fmt2(bal.available), fmt2(minimum))
                };
                items.push(PayoutItem {
                    partner_id: pid.clone(),
                    amount: bal.available,
                    currency: currency.clone(),
                    method: method.into(),
                });
                new_lines.push(Line {
                    seq: 0,
                    event_id: event_id.to_string(),
                    at: as_of,
                    kind,
                    partner_id: pid.clone(),
                    program: r.program.clone(),
                    amount: -bal.available,
                    currency: currency.clone(),
                    available_at: Some(as_of),
                    customer_id: None,
                    invoice_id: None,
                    explanation,
                    fx: None,
                });
            }
        }
        let batch = PayoutBatch {
            id: id.clone(),
            program: r.program.clone(),
            as_of,
            status: if self.auto_confirm {
                "confirmed"
            } else {
                "created"
            }
            .into(),
            items,
            deactivated,
        };
        if r.dry_run {
            return Some(batch);
        }
        self.state.forfeited.extend(forfeited);
        for l in new_lines {
            if matches!(l.kind, LineKind::Payout | LineKind::Credit) {
                self.state
                    .paid_through
                    .insert(format!("{}\u{1f}{}", l.partner_id, l.currency), as_of);
            }
            self.push_line(l);
        }
        for pid in &batch.deactivated {
            if let Some(p) = self.state.partners.get_mut(pid) {
                p.standing = Standing::Inactive;
            }
        }
        self.state.payouts.insert(id, batch.clone());
        Some(batch)
    }

    /// Lines that zero a partner's balances (pending per availability date,
    /// and available), and the lines they forfeit (a later refund of one
    /// of those cannot take its commission a second time).
    fn forfeit_lines(
        &self,
        event_id: &str,
        pid: &str,
        program: &str,
        as_of: DateTime<Utc>,
        why: &str,
    ) -> (Vec<Line>, Vec<usize>) {
        let mut groups: BTreeMap<(String, Option<DateTime<Utc>>), Decimal> = BTreeMap::new();
        let mut taken = Vec::new();
        for &i in &self.state.partners[pid].lines {
            let l = &self.state.ledger[i];
            if l.at > as_of {
                continue;
            }
            taken.push(i);
            let when = if l.available_by(as_of) {
                Some(as_of)
            } else {
                l.available_at
            };
            *groups.entry((l.currency.clone(), when)).or_default() += l.amount;
        }
        let lines = groups
            .into_iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|((currency, available_at), amount)| Line {
                seq: 0,
                event_id: event_id.to_string(),
                at: as_of,
                kind: LineKind::Forfeit,
                partner_id: pid.to_string(),
                program: program.to_string(),
                amount: -amount,
                currency,
                available_at,
                customer_id: None,
                invoice_id: None,
                explanation: why.to_string(),
                fx: None,
            })
            .collect();
        (lines, taken)
    }

    /// Sum of pending + available over currencies, in `currency`.
    fn total_in(
        &self,
        bals: &BTreeMap<String, Balance>,
        currency: &str,
        as_of: DateTime<Utc>,
    ) -> Option<Decimal> {
        let mut total = Decimal::ZERO;
        for (c, b) in bals {
            let v = b.pending + b.available;
            if c == currency {
                total += v;
            } else {
                let (f, t, _) = self.cross_rate(currency, c, currency, as_of)?;
                total += v / f * t;
            }
        }
        Some(total)
    }

    /// Forfeits the whole balance (termination for breach).
    pub fn forfeit_all(&mut self, event_id: &str, pid: &str, as_of: DateTime<Utc>, why: &str) {
        let Some(p) = self.state.partners.get(pid) else {
            return;
        };
        let program = p.record.program.clone();
        let (lines, taken) = self.forfeit_lines(event_id, pid, &program, as_of, why);
        self.state.forfeited.extend(taken);
        for l in lines {
            self.push_line(l);
        }
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

/// Self-referral: the customer's e-mail is the partner's, or the customer's
/// company domain (or e-mail domain, unless a free-mail provider) is the
/// partner's e-mail or website domain.
fn self_referral(partner: &PartnerRecord, c: &Customer) -> Option<String> {
    if partner.customer_ids.iter().any(|id| id == &c.id) {
        return Some(format!("customer {} is the partner's own account", c.id));
    }
    let ip = c.ip_hash.as_ref().or(c.ip.as_ref());
    if let Some(ip) = ip.filter(|ip| partner.ip_hashes.contains(ip)) {
        let shown = if c.ip_hash.is_some() {
            format!("hash {ip}")
        } else {
            ip.clone()
        };
        return Some(format!(
            "customer signed up from the partner's own address ({shown})"
        ));
    }
    let pmail = partner.email.trim().to_ascii_lowercase();
    if let Some(m) = &c.email {
        if !pmail.is_empty() && m.trim().to_ascii_lowercase() == pmail {
            return Some("customer e-mail is the partner's".into());
        }
    }
    let customer_domains: Vec<String> = [c.company_domain.as_deref(), c.email.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(domain_of)
        .filter(|d| !FREE_MAIL.contains(&d.as_str()))
        .collect();
    let partner_domains: Vec<String> = [Some(partner.email.as_str()), partner.website.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(domain_of)
        .filter(|d| !FREE_MAIL.contains(&d.as_str()))
        .collect();
    customer_domains
        .iter()
        .find(|d| partner_domains.contains(d))
        .map(|d| format!("customer company domain {d} is the partner's"))
}
