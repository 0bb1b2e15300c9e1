//! Events the calculator applies, in the JSON the API and replay files use.
//! Merchant events (`signup`, `payment`, `refund`, `chargeback`,
//! `cancellation`, `plan_change`) and the records that set the stage
//! (`partner`, `coupon`, `fx_rates`, `click`, `payout_run`,
//! `payout_confirm`). Amounts are decimal strings; floats are refused.

use super::money::decimal_str;
use super::rules::LineKind;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One event.
// A signup is the largest variant; events are handled one at a time or in
// short batches, so boxing it would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Signup(Signup),
    Payment(Payment),
    Refund(Reversal),
    Chargeback(Reversal),
    Cancellation(Cancellation),
    PlanChange(PlanChange),
    Partner(PartnerRecord),
    PartnerStatus(PartnerStatusChange),
    Coupon(CouponRecord),
    FxRates(FxRates),
    Click(ClickSeen),
    PayoutRun(PayoutRun),
    PayoutConfirm(PayoutConfirm),
    ReviewDecision(super::review::ReviewDecision),
    BillingRefs(BillingRefs),
}

/// Which invoice a payment at the billing system paid (its charge and
/// payment-intent ids), so a later refund or dispute that names only the
/// payment finds its invoice (and, through the invoice's payment event,
/// its customer). Made by the Stripe integration
/// (`invoice.paid`, `invoice_payment.paid`); in the log, so every
/// calculator knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingRefs {
    pub id: String,
    pub program: String,
    #[serde(deserialize_with = "instant")]
    pub occurred_at: DateTime<Utc>,
    pub invoice_id: String,
    /// Payment ids (`ch_…`, `pi_…`) that paid the invoice.
    pub refs: Vec<String>,
}

/// Most payment ids one [`BillingRefs`] names.
pub const MAX_REFS: usize = 20;

/// A customer signed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    pub id: String,
    pub program: String,
    pub occurred_at: DateTime<Utc>,
    pub customer: Customer,
    #[serde(default)]
    pub attribution: AttributionClaim,
    /// Filled in by refedge on ingestion: what the token or click id
    /// resolved to. Never sent by clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub resolved: Option<Resolved>,
}

/// The customer in a signup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Set by refedge on ingestion: the keyed hash of `ip`, which is then
    /// dropped (raw addresses are never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ip_hash: Option<String>,
    /// Already a customer or prospect of the merchant.
    #[serde(default)]
    pub existing: bool,
}

/// What the merchant captured as attribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributionClaim {
    /// The `refedge_attr` cookie value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The `refclk` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    /// A partner's coupon code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

/// Attribution as resolved at ingestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The click the token or click id points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<ClickSeen>,
    /// Why the token or click id did not resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A click, as far as money is concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickSeen {
    pub id: String,
    pub partner_id: String,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Fraud reasons the click was flagged with (empty: a valid click).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// A paid invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub id: String,
    pub program: String,
    pub occurred_at: DateTime<Utc>,
    pub customer_id: String,
    pub invoice_id: String,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLine {
    pub kind: LineKind,
    #[serde(deserialize_with = "decimal_str", serialize_with = "ser_decimal")]
    #[schemars(with = "String")]
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_decimal_str",
        serialize_with = "ser_opt_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

/// A refund or chargeback of (part of) an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reversal {
    pub id: String,
    pub program: String,
    pub occurred_at: DateTime<Utc>,
    pub customer_id: String,
    pub invoice_id: String,
    #[serde(deserialize_with = "decimal_str", serialize_with = "ser_decimal")]
    #[schemars(with = "String")]
    pub amount: Decimal,
}

/// The customer cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    pub id: String,
    pub program: String,
    pub occurred_at: DateTime<Utc>,
    pub customer_id: String,
}

/// The customer moved to another plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub id: String,
    pub program: String,
    pub occurred_at: DateTime<Utc>,
    pub customer_id: String,
    pub plan: String,
    #[serde(deserialize_with = "decimal_str", serialize_with = "ser_decimal")]
    #[schemars(with = "String")]
    pub unit_price: Decimal,
}

/// A partner, as the calculator needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerRecord {
    pub id: String,
    pub program: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub name: Option<String>,
    /// The partner's own customer ids at the merchant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_ids: Vec<String>,
    /// Pseudonyms of the partner's known addresses (replay files may give
    /// raw addresses: they are compared as given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_hashes: Vec<String>,
}

fn default_currency() -> String {
    "USD".into()
}

/// A partner's standing changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerStatusChange {
    pub partner_id: String,
    /// `active`, `suspended` or `terminated`.
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    /// Who made the change.
    #[serde(default)]
    pub actor: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A coupon assigned to a partner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponRecord {
    pub code: String,
    pub partner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub single_use: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redemptions: Option<u32>,
}

/// Exchange rates: 1 `base` = `rates[CUR]` CUR, from `at` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxRates {
    pub at: DateTime<Utc>,
    pub base: String,
    pub rates: BTreeMap<String, FxRate>,
}

/// A rate, as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct FxRate(
    #[serde(deserialize_with = "decimal_str", serialize_with = "ser_decimal")]
    #[schemars(with = "String")]
    pub Decimal,
);

/// Pay out what is due in a program on a date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutRun {
    pub program: String,
    /// The payout date; a plain `YYYY-MM-DD` means midnight UTC.
    #[serde(deserialize_with = "instant")]
    pub as_of: DateTime<Utc>,
    /// Last click per partner up to `as_of` (filled in by the server from
    /// the click log; replay files send `click` records instead).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_clicks: BTreeMap<String, DateTime<Utc>>,
    /// Compute and show, record nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A payout batch was paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutConfirm {
    pub payout_id: String,
    pub occurred_at: DateTime<Utc>,
}

/// An instant given as RFC 3339 (`2026-12-13T00:00:00Z`) or as a plain
/// date (`2026-12-13`), which means that day's first instant, midnight UTC.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Serde: [`parse_instant`].
pub fn instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    parse_instant(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{s:?} is not an RFC 3339 time or a YYYY-MM-DD date"
        ))
    })
}

fn opt_decimal_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    decimal_str(d).map(Some)
}

/// Decimals are written as strings.
pub fn ser_decimal<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

fn ser_opt_decimal<S: serde::Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(d),
        None => s.serialize_none(),
    }
}

/// Largest amount (invoice line, unit price, refund) accepted: a
/// billion in the invoice's currency. With at most [`MAX_LINES`] lines an
/// invoice and rates bounded by [`MAX_RATE`], every product, conversion and
/// sum the calculator makes stays many orders of magnitude inside
/// `Decimal`'s 7.9 × 10^28.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Most seats (quantity) on one invoice line.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// Most lines on one invoice.
pub const MAX_LINES: usize = 100;
/// Largest exchange rate (units of a currency per one base unit).
pub const MAX_RATE: Decimal = Decimal::from_parts(10_000_000, 0, 0, false, 0);
/// Most rates in one table.
pub const MAX_RATES: usize = 200;

fn amount_ok(field: &str, d: Decimal, zero_ok: bool) -> Result<(), (String, String)> {
    let low_ok = if zero_ok {
        d >= Decimal::ZERO
    } else {
        d > Decimal::ZERO
    };
    if !low_ok {
        let what = if zero_ok {
            "must not be negative"
        } else {
            "must be more than 0"
        };
        return Err((field.to_string(), what.to_string()));
    }
    if d > MAX_AMOUNT {
        return Err((
            field.to_string(),
            format!("must be at most {MAX_AMOUNT} (refedge's bound on one amount)"),
        ));
    }
    Ok(())
}

impl Event {
    /// The program a merchant event belongs to.
    pub fn program(&self) -> Option<&str> {
        match self {
            Event::Signup(e) => Some(&e.program),
            Event::Payment(e) => Some(&e.program),
            Event::Refund(e) | Event::Chargeback(e) => Some(&e.program),
            Event::Cancellation(e) => Some(&e.program),
            Event::PlanChange(e) => Some(&e.program),
            Event::Partner(e) => Some(&e.program),
            Event::PayoutRun(e) => Some(&e.program),
            Event::ReviewDecision(e) => Some(&e.program),
            Event::BillingRefs(e) => Some(&e.program),
            _ => None,
        }
    }

    /// Checks what the types cannot: returns `(field, reason)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, r: &str| Err((f.to_string(), r.to_string()));
        let id_ok = |s: &str| !s.trim().is_empty() && s.len() <= 200;
        let cur_ok = crate::config::is_currency;
        match self {
            Event::Signup(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.customer.id) {
                    return bad("customer.id", "must be 1 to 200 characters");
                }
                if e.customer
                    .email
                    .as_deref()
                    .is_some_and(|m| !m.contains('@'))
                {
                    return bad("customer.email", "must be an e-mail address");
                }
            }
            Event::Payment(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.customer_id) {
                    return bad("customer_id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.invoice_id) {
                    return bad("invoice_id", "must be 1 to 200 characters");
                }
                if !cur_ok(&e.currency) {
                    return bad("currency", "must be a 3-letter ISO 4217 code like USD");
                }
                if e.lines.is_empty() {
                    return bad("lines", "needs at least one line");
                }
                if e.lines.len() > MAX_LINES {
                    return bad("lines", &format!("holds at most {MAX_LINES} lines"));
                }
                for (i, l) in e.lines.iter().enumerate() {
                    amount_ok(&format!("lines[{i}].amount"), l.amount, true)?;
                    if let Some(p) = l.unit_price {
                        amount_ok(&format!("lines[{i}].unit_price"), p, true)?;
                    }
                    if l.quantity == Some(0) {
                        return bad(&format!("lines[{i}].quantity"), "must be at least 1");
                    }
                    if l.quantity.is_some_and(|q| q > MAX_QUANTITY) {
                        return bad(
                            &format!("lines[{i}].quantity"),
                            &format!("must be at most {MAX_QUANTITY}"),
                        );
                    }
                }
            }
            Event::Refund(e) | Event::Chargeback(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.customer_id) {
                    return bad("customer_id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.invoice_id) {
                    return bad("invoice_id", "must be 1 to 200 characters");
                }
                amount_ok("amount", e.amount, false)?;
            }
            Event::Cancellation(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.customer_id) {
                    return bad("customer_id", "must be 1 to 200 characters");
                }
            }
            Event::BillingRefs(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.invoice_id) {
                    return bad("invoice_id", "must be 1 to 200 characters");
                }
                if e.refs.is_empty() || e.refs.len() > MAX_REFS {
                    return bad("refs", &format!("names 1 to {MAX_REFS} payments"));
                }
                if let Some(i) = e.refs.iter().position(|r| !id_ok(r)) {
                    return bad(&format!("refs[{i}]"), "must be 1 to 200 characters");
                }
            }
            Event::PlanChange(e) => {
                if !id_ok(&e.id) {
                    return bad("id", "must be 1 to 200 characters");
                }
                if !id_ok(&e.customer_id) {
                    return bad("customer_id", "must be 1 to 200 characters");
                }
                amount_ok("unit_price", e.unit_price, true)?
            }
            Event::FxRates(e) => {
                if !cur_ok(&e.base) {
                    return bad("base", "must be a 3-letter ISO 4217 code");
                }
                if e.rates.len() > MAX_RATES {
                    return bad("rates", &format!("holds at most {MAX_RATES} currencies"));
                }
                for (c, r) in &e.rates {
                    if !cur_ok(c) {
                        return bad(
                            &format!("rates.{c}"),
                            "keys must be 3-letter ISO 4217 codes",
                        );
                    }
                    if r.0 <= Decimal::ZERO || r.0 > MAX_RATE {
                        return bad(
                            &format!("rates.{c}"),
                            &format!("must be more than 0 and at most {MAX_RATE}"),
                        );
                    }
                }
            }
            Event::Coupon(c) => {
                if c.code.trim().is_empty() {
                    return bad("code", "must not be empty");
                }
                if c.max_redemptions == Some(0) {
                    return bad("max_redemptions", "must be at least 1");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why a JSON event was refused: the field at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// Dotted path (`lines[0].amount`); empty for the whole event.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl Event {
    /// Parses and checks one event from a JSON value, naming the field at
    /// fault. The `type` is looked at first so that errors point inside the
    /// right shape.
    pub fn from_value(v: serde_json::Value) -> Result<Event, EventError> {
        let err = |field: &str, reason: String| EventError {
            field: field.to_string(),
            reason,
        };
        let serde_json::Value::Object(mut map) = v else {
            return Err(err("", "an event must be a JSON object".into()));
        };
        let Some(kind) = map.remove("type") else {
            return Err(err("type", "is required".into()));
        };
        let Some(kind) = kind.as_str().map(String::from) else {
            return Err(err("type", "must be a string".into()));
        };
        let body = serde_json::Value::Object(map);
        fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, EventError> {
            crate::json::decode(crate::json::Strict(v)).map_err(|e| match e {
                Ok(f) => EventError {
                    field: f.field,
                    reason: f.reason,
                },
                Err(reason) => EventError {
                    field: String::new(),
                    reason,
                },
            })
        }
        let event = match kind.as_str() {
            "signup" => {
                let s: Signup = de(body)?;
                if s.resolved.is_some() {
                    return Err(err("resolved", "is set by refedge, not by clients".into()));
                }
                if s.customer.ip_hash.is_some() {
                    return Err(err("customer.ip_hash", "is set by refedge, not by clients".into()));
                }
                if let Some(ip) = &s.customer.ip {
                    if ip.trim().parse::<std::net::IpAddr>().is_err() {
                        return Err(err("customer.ip", format!("{ip:?} is not an IP address")));
                    }
                }
                Event::Signup(s)
            }
            "payment" => Event::Payment(de(body)?),
            "refund" => Event::Refund(de(body)?),
            "chargeback" => Event::Chargeback(de(body)?),
            "cancellation" => Event::Cancellation(de(body)?),
            "plan_change" => Event::PlanChange(de(body)?),
            "partner" => Event::Partner(de(body)?),
            "coupon" => Event::Coupon(de(body)?),
            "fx_rates" => Event::FxRates(de(body)?),
            "click" => Event::Click(de(body)?),
            "payout_run" => Event::PayoutRun(de(body)?),
            "billing_refs" => Event::BillingRefs(de(body)?),
            other => {
                return Err(err(
                    "type",
                    format!("unknown event type {other:?}; expected signup, payment, refund, chargeback, cancellation or plan_change"),
                ))
            }
        };
        event
            .check()
            .map_err(|(field, reason)| EventError { field, reason })?;
        Ok(event)
    }

    /// When the event happened (the time money is computed at).
    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        Some(match self {
            Event::Signup(x) => x.occurred_at,
            Event::Payment(x) => x.occurred_at,
            Event::Refund(x) | Event::Chargeback(x) => x.occurred_at,
            Event::Cancellation(x) => x.occurred_at,
            Event::PlanChange(x) => x.occurred_at,
            Event::FxRates(x) => x.at,
            Event::Click(x) => x.occurred_at,
            Event::PayoutRun(x) => x.as_of,
            Event::PartnerStatus(x) => x.occurred_at,
            Event::PayoutConfirm(x) => x.occurred_at,
            Event::ReviewDecision(x) => x.occurred_at,
            Event::BillingRefs(x) => x.occurred_at,
            Event::Partner(_) | Event::Coupon(_) => return None,
        })
    }

    /// The event's own id, for events that carry one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Event::Signup(e) => Some(&e.id),
            Event::Payment(e) => Some(&e.id),
            Event::Refund(e) | Event::Chargeback(e) => Some(&e.id),
            Event::Cancellation(e) => Some(&e.id),
            Event::PlanChange(e) => Some(&e.id),
            Event::BillingRefs(e) => Some(&e.id),
            _ => None,
        }
    }
}
