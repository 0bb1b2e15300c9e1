//! Stripe's webhook events as refedge events.
//!
//! A delivery is an Event object (`id`, `type`, `api_version`, `created`,
//! `data.object`, `data.previous_attributes`). Its objects are read in the
//! shape of the delivery's API version: `2024-06-20`, or `2025-03-31.basil`
//! and later (`basil`, `clover`), where an invoice line's price moved under
//! `pricing.price_details` and its kind under `parent`, and an invoice no
//! longer names its charge or payment intent (an `invoice_payment.paid`
//! event links them). Other versions are refused by name.
//!
//! | Stripe event | refedge event |
//! |---|---|
//! | `customer.created` (metadata `refedge_token` / `refedge_click_id` / `refedge_coupon`, or the customer's coupon) | `signup` |
//! | `checkout.session.completed` (`client_reference_id` = token, or metadata) | `signup` |
//! | `invoice.paid` | `payment` (and `billing_refs`; a `signup` by the first invoice's coupon) |
//! | `invoice_payment.paid` | `billing_refs` |
//! | `charge.refunded` | `refund` of what this refund added |
//! | `charge.dispute.created` | `chargeback` |
//! | `customer.subscription.deleted` | `cancellation` |
//! | `customer.subscription.updated` with a new price | `plan_change` |
//!
//! Every event made from a delivery has the id `stripe:<event id>` (with a
//! suffix when one delivery makes several), so a repeated delivery is a
//! duplicate, never a second payment.

use super::currency::{from_minor, from_minor_str};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Object shapes by API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `2024-06-20`.
    V2024,
    /// `2025-03-31.basil` and later releases (`basil`, `clover`).
    Basil,
}

/// Releases read in the [`Shape::Basil`] shape (from 2025-03-31 on).
const BASIL_RELEASES: &[&str] = &["basil", "clover"];

impl Shape {
    /// The shape of an API version; `None` for one refedge does not know.
    pub fn of(version: &str) -> Option<Shape> {
        if version == "2024-06-20" {
            return Some(Shape::V2024);
        }
        let (date, release) = version.split_once('.')?;
        let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let first = chrono::NaiveDate::from_ymd_opt(2025, 3, 31).expect("a date");
        (date >= first && BASIL_RELEASES.contains(&release)).then_some(Shape::Basil)
    }
}

/// One webhook delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stripe's event id (`evt_…`).
    pub id: String,
    /// Event type (`invoice.paid`).
    pub kind: String,
    pub shape: Shape,
    /// When Stripe made the event.
    pub created: DateTime<Utc>,
    /// `data.object`.
    pub object: Value,
    /// `data.previous_attributes` (updates only).
    pub previous: Value,
}

/// Why a delivery is not turned into events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field at fault, dotted (`data.object.customer`).
    pub field: String,
    pub reason: String,
    pub kind: RefusalKind,
}

/// What refusing means for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not a delivery refedge can read (a 400): the API version, the JSON.
    Unreadable,
    /// Read, but a field is missing or wrong (a 422).
    Invalid,
    /// Not yet: it names a payment whose invoice refedge has not seen; a
    /// later retry by Stripe will find it (a 409).
    NotYet,
}

fn refuse(kind: RefusalKind, field: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        field: field.to_string(),
        reason: reason.into(),
        kind,
    }
}

/// What refedge does with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Events for the events pipeline, in order.
    Events(Vec<Value>),
    /// Nothing to do, and why (answered 200, counted).
    Ignored(String),
}

/// What the ledger already knows, for events that name only a payment.
pub trait Known {
    /// The customer and invoice a charge (`ch_…`) or payment intent
    /// (`pi_…`) paid.
    fn paid_by(&self, payment: &str) -> Option<(String, String)>;
    /// Whether the customer is referred (bound to a partner).
    fn referred(&self, customer: &str) -> bool;
}

/// Reads a delivery's envelope.
pub fn parse(body: &[u8]) -> Result<Delivery, Refusal> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        refuse(
            RefusalKind::Unreadable,
            "",
            format!("not a JSON Stripe event: {e}"),
        )
    })?;
    let text = |f: &str| -> Result<String, Refusal> {
        v.get(f)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| refuse(RefusalKind::Unreadable, f, "is required (a string)"))
    };
    let id = text("id")?;
    let kind = text("type")?;
    let version = text("api_version")?;
    let shape = Shape::of(&version).ok_or_else(|| {
        refuse(
            RefusalKind::Unreadable,
            "api_version",
            format!("{version:?} is not a Stripe API version refedge reads (2024-06-20, or 2025-03-31.basil and later basil/clover releases); set the webhook endpoint's version in Stripe"),
        )
    })?;
    let created = v
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| {
            refuse(
                RefusalKind::Unreadable,
                "created",
                "is required (unix seconds)",
            )
        })?;
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    let object = data
        .get("object")
        .filter(|o| o.is_object())
        .cloned()
        .ok_or_else(|| {
            refuse(
                RefusalKind::Unreadable,
                "data.object",
                "is required (an object)",
            )
        })?;
    let previous = data
        .get("previous_attributes")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Delivery {
        id,
        kind,
        shape,
        created,
        object,
        previous,
    })
}

/// The events a delivery means for `program`.
pub fn translate(program: &str, d: &Delivery, known: &dyn Known) -> Result<Outcome, Refusal> {
    let r = Reader { d, program };
    match d.kind.as_str() {
        "customer.created" => r.customer_created(),
        "checkout.session.completed" => r.checkout_completed(),
        "invoice.paid" => r.invoice_paid(known),
        "invoice_payment.paid" => r.invoice_payment_paid(),
        "charge.refunded" => r.charge_refunded(known),
        "charge.dispute.created" => r.dispute_created(known),
        "customer.subscription.deleted" => r.subscription_deleted(),
        "customer.subscription.updated" => r.subscription_updated(),
        other => Ok(Outcome::Ignored(format!(
            "refedge does not use {other} events"
        ))),
    }
}

/// Reads one delivery's object, naming fields as `data.object.…`.
struct Reader<'a> {
    d: &'a Delivery,
    program: &'a str,
}

/// A path into a JSON value: `"lines.data"` → `v["lines"]["data"]`.
fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// A string or an expanded object's `id` at `path`.
fn id_at(v: &Value, path: &str) -> Option<String> {
    match at(v, path)? {
        Value::String(s) => Some(s.clone()),
        o @ Value::Object(_) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Reader<'_> {
    fn obj(&self) -> &Value {
        &self.d.object
    }

    fn field(path: &str) -> String {
        format!("data.object.{path}")
    }

    fn need_str(&self, path: &str) -> Result<String, Refusal> {
        id_at(self.obj(), path).ok_or_else(|| {
            refuse(
                RefusalKind::Invalid,
                &Self::field(path),
                "is required (an id)",
            )
        })
    }

    fn need_int(&self, path: &str) -> Result<i64, Refusal> {
        at(self.obj(), path).and_then(Value::as_i64).ok_or_else(|| {
            refuse(
                RefusalKind::Invalid,
                &Self::field(path),
                "is required (an integer amount in minor units)",
            )
        })
    }

    fn currency(&self) -> Result<String, Refusal> {
        let c = self.need_str("currency")?;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(refuse(
                RefusalKind::Invalid,
                &Self::field("currency"),
                format!("{c:?} is not a 3-letter currency code"),
            ));
        }
        Ok(c.to_ascii_uppercase())
    }

    /// The object's time at `path` (unix seconds), else the event's.
    fn time(&self, path: &str) -> String {
        let t = at(self.obj(), path)
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(self.d.created);
        rfc3339(t)
    }

    fn event_id(&self, suffix: &str) -> String {
        format!("stripe:{}{suffix}", self.d.id)
    }

    fn customer_created(&self) -> Result<Outcome, Refusal> {
        let customer = self.need_str("id")?;
        let o = self.obj();
        let meta = |k: &str| {
            at(o, &format!("metadata.{k}"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let coupon = meta("refedge_coupon").or_else(|| coupon_of(at(o, "discount")));
        let attribution = attribution(meta("refedge_token"), meta("refedge_click_id"), coupon);
        let Some(attribution) = attribution else {
            return Ok(Outcome::Ignored(
                "the customer carries no refedge token, click id or coupon".into(),
            ));
        };
        let email = at(o, "email").and_then(Value::as_str);
        Ok(Outcome::Events(vec![self.signup(
            "",
            &customer,
            email,
            attribution,
            self.time("created"),
        )]))
    }

    fn checkout_completed(&self) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let Some(customer) = id_at(o, "customer") else {
            return Ok(Outcome::Ignored(
                "the checkout session made no customer".into(),
            ));
        };
        let text = |path: &str| {
            at(o, path)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let token = text("client_reference_id").or_else(|| text("metadata.refedge_token"));
        let attribution = attribution(token, text("metadata.refedge_click_id"), None);
        let Some(attribution) = attribution else {
            return Ok(Outcome::Ignored(
                "the checkout session carries no refedge token or click id".into(),
            ));
        };
        let email = at(o, "customer_details.email")
            .or_else(|| at(o, "customer_email"))
            .and_then(Value::as_str);
        Ok(Outcome::Events(vec![self.signup(
            "",
            &customer,
            email,
            attribution,
            self.time("created"),
        )]))
    }

    fn signup(
        &self,
        suffix: &str,
        customer: &str,
        email: Option<&str>,
        attribution: Value,
        at: String,
    ) -> Value {
        let mut c = json!({"id": customer});
        if let Some(e) = email.filter(|e| e.contains('@')) {
            c["email"] = json!(e);
        }
        json!({"id": self.event_id(suffix), "type": "signup", "program": self.program,
               "occurred_at": at, "customer": c, "attribution": attribution})
    }

    fn invoice_paid(&self, known: &dyn Known) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let invoice = self.need_str("id")?;
        let customer = self.need_str("customer")?;
        let currency = self.currency()?;
        if self.need_int("amount_paid")? <= 0 {
            return Ok(Outcome::Ignored("nothing was paid on this invoice".into()));
        }
        let lines = at(o, "lines.data")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                refuse(
                    RefusalKind::Invalid,
                    &Self::field("lines.data"),
                    "is required (the invoice's lines)",
                )
            })?;
        if at(o, "lines.has_more").and_then(Value::as_bool) == Some(true) {
            return Err(refuse(
                RefusalKind::Invalid,
                &Self::field("lines.has_more"),
                "the delivery does not hold every line of the invoice (more than Stripe sends in a webhook); send it as a payment event instead",
            ));
        }
        let mut read = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            read.push(self.line(i, l, &currency)?);
        }
        let lines = net_credits(read);
        if lines.is_empty() {
            return Ok(Outcome::Ignored(
                "the invoice's lines net to nothing".into(),
            ));
        }
        let paid_at = self.time("status_transitions.paid_at");
        let mut events = Vec::new();
        // A coupon on the subscription's first invoice attributes a
        // customer the signup did not.
        let first = at(o, "billing_reason").and_then(Value::as_str) == Some("subscription_create");
        if first && !known.referred(&customer) {
            let coupon = coupon_of(at(o, "discount")).or_else(|| {
                at(o, "discounts")
                    .and_then(Value::as_array)
                    .and_then(|ds| ds.iter().find_map(|d| coupon_of(Some(d))))
            });
            if let Some(coupon) = coupon {
                let email = at(o, "customer_email").and_then(Value::as_str);
                events.push(self.signup(
                    ":signup",
                    &customer,
                    email,
                    json!({"coupon": coupon}),
                    self.time("created"),
                ));
            }
        }
        events.push(json!({
            "id": self.event_id(""), "type": "payment", "program": self.program,
            "occurred_at": paid_at, "customer_id": customer, "invoice_id": invoice,
            "currency": currency, "lines": lines,
        }));
        let mut refs = Vec::new();
        if self.d.shape == Shape::V2024 {
            refs.extend(id_at(o, "charge"));
            refs.extend(id_at(o, "payment_intent"));
        }
        for p in at(o, "payments.data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            refs.extend(id_at(p, "payment.payment_intent"));
            refs.extend(id_at(p, "payment.charge"));
        }
        if !refs.is_empty() {
            events.push(self.billing_refs(":refs", &invoice, refs, paid_at));
        }
        Ok(Outcome::Events(events))
    }

    fn billing_refs(&self, suffix: &str, invoice: &str, refs: Vec<String>, at: String) -> Value {
        json!({"id": self.event_id(suffix), "type": "billing_refs", "program": self.program,
               "occurred_at": at, "invoice_id": invoice, "refs": refs})
    }

    /// One invoice line: `(kind, amount, plan, unit price, quantity)`.
    fn line(&self, i: usize, l: &Value, currency: &str) -> Result<Line, Refusal> {
        let field = |f: &str| Self::field(&format!("lines.data[{i}].{f}"));
        let amount = l.get("amount").and_then(Value::as_i64).ok_or_else(|| {
            refuse(
                RefusalKind::Invalid,
                &field("amount"),
                "is required (an integer amount in minor units)",
            )
        })?;
        let quantity = l
            .get("quantity")
            .and_then(Value::as_u64)
            .filter(|q| *q > 0)
            .map(|q| q.min(u64::from(u32::MAX)) as u32);
        let (kind, plan, unit) = match self.d.shape {
            Shape::V2024 => {
                let metered =
                    at(l, "price.recurring.usage_type").and_then(Value::as_str) == Some("metered");
                let kind = match l.get("type").and_then(Value::as_str) {
                    _ if metered => "usage",
                    Some("subscription") => "subscription",
                    _ => "fee",
                };
                let unit = at(l, "price.unit_amount")
                    .and_then(Value::as_i64)
                    .map(|m| from_minor(m, currency))
                    .or_else(|| {
                        at(l, "price.unit_amount_decimal")
                            .and_then(Value::as_str)
                            .and_then(|s| from_minor_str(s, currency))
                    });
                (kind, id_at(l, "price.id"), unit)
            }
            Shape::Basil => {
                let kind = match at(l, "parent.type").and_then(Value::as_str) {
                    Some("subscription_item_details") => "subscription",
                    _ => "fee",
                };
                let unit = at(l, "pricing.unit_amount_decimal")
                    .and_then(Value::as_str)
                    .and_then(|s| from_minor_str(s, currency));
                (kind, id_at(l, "pricing.price_details.price"), unit)
            }
        };
        // The merchant may say what a line is (metered usage is not told
        // apart by a current-version line).
        let kind = match at(l, "metadata.refedge_kind").and_then(Value::as_str) {
            Some("subscription") => "subscription",
            Some("usage") => "usage",
            Some("fee") => "fee",
            Some(other) => {
                return Err(refuse(
                    RefusalKind::Invalid,
                    &field("metadata.refedge_kind"),
                    format!("{other:?} is not subscription, usage or fee"),
                ))
            }
            None => kind,
        };
        Ok(Line {
            kind,
            amount: from_minor(amount, currency),
            plan,
            unit: unit.filter(|u| *u >= Decimal::ZERO),
            quantity,
        })
    }

    fn invoice_payment_paid(&self) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let invoice = self.need_str("invoice")?;
        let refs: Vec<String> = id_at(o, "payment.payment_intent")
            .into_iter()
            .chain(id_at(o, "payment.charge"))
            .collect();
        if refs.is_empty() {
            return Ok(Outcome::Ignored(
                "the invoice payment names no charge or payment intent".into(),
            ));
        }
        let at = self.time("status_transitions.paid_at");
        Ok(Outcome::Events(vec![
            self.billing_refs("", &invoice, refs, at)
        ]))
    }

    /// The customer and invoice a charge (or its payment intent) paid.
    fn paid_by(&self, known: &dyn Known, o: &Value, charge_path: &str) -> Option<(String, String)> {
        id_at(o, charge_path)
            .and_then(|c| known.paid_by(&c))
            .or_else(|| id_at(o, "payment_intent").and_then(|p| known.paid_by(&p)))
    }

    fn charge_refunded(&self, known: &dyn Known) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let currency = self.currency()?;
        let total = self.need_int("amount_refunded")?;
        let before = at(&self.d.previous, "amount_refunded")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if total <= before {
            return Ok(Outcome::Ignored(
                "the charge's refunded amount did not grow".into(),
            ));
        }
        let customer = id_at(o, "customer");
        let found = match (self.d.shape, id_at(o, "invoice"), &customer) {
            (Shape::V2024, Some(invoice), Some(c)) => Some((c.clone(), invoice)),
            _ => self.paid_by(known, o, "id"),
        };
        let Some((customer, invoice)) = found else {
            return match customer.filter(|c| known.referred(c)) {
                Some(c) => Err(refuse(
                    RefusalKind::NotYet,
                    &Self::field("payment_intent"),
                    format!("the charge of referred customer {c} names no invoice refedge has seen paid yet; Stripe retries the delivery"),
                )),
                None => Ok(Outcome::Ignored(
                    "the charge is not an invoice payment of a referred customer".into(),
                )),
            };
        };
        Ok(Outcome::Events(vec![json!({
            "id": self.event_id(""), "type": "refund", "program": self.program,
            "occurred_at": rfc3339(self.d.created), "customer_id": customer,
            "invoice_id": invoice, "amount": from_minor(total - before, &currency).to_string(),
        })]))
    }

    fn dispute_created(&self, known: &dyn Known) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let currency = self.currency()?;
        let amount = self.need_int("amount")?;
        let Some((customer, invoice)) = self.paid_by(known, o, "charge") else {
            return Ok(Outcome::Ignored(
                "the disputed charge paid no invoice refedge has seen".into(),
            ));
        };
        Ok(Outcome::Events(vec![json!({
            "id": self.event_id(""), "type": "chargeback", "program": self.program,
            "occurred_at": self.time("created"), "customer_id": customer,
            "invoice_id": invoice, "amount": from_minor(amount, &currency).to_string(),
        })]))
    }

    fn subscription_deleted(&self) -> Result<Outcome, Refusal> {
        let customer = self.need_str("customer")?;
        let when = if at(self.obj(), "ended_at").is_some() {
            self.time("ended_at")
        } else {
            self.time("canceled_at")
        };
        Ok(Outcome::Events(vec![json!({
            "id": self.event_id(""), "type": "cancellation", "program": self.program,
            "occurred_at": when, "customer_id": customer,
        })]))
    }

    fn subscription_updated(&self) -> Result<Outcome, Refusal> {
        let o = self.obj();
        let prices = |v: &Value| -> Vec<String> {
            at(v, "items.data")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|i| id_at(i, "price.id")).collect())
                .unwrap_or_default()
        };
        let before = prices(&self.d.previous);
        if before.is_empty() {
            return Ok(Outcome::Ignored(
                "the subscription's price did not change".into(),
            ));
        }
        let items = at(o, "items.data").and_then(Value::as_array);
        let changed = items
            .into_iter()
            .flatten()
            .find(|i| id_at(i, "price.id").is_some_and(|p| !before.contains(&p)));
        let Some(item) = changed else {
            return Ok(Outcome::Ignored(
                "the subscription's price did not change".into(),
            ));
        };
        let customer = self.need_str("customer")?;
        let plan = id_at(item, "price.id").expect("found by its price id");
        let currency = at(item, "price.currency")
            .and_then(Value::as_str)
            .or_else(|| at(o, "currency").and_then(Value::as_str))
            .unwrap_or("usd");
        let unit = at(item, "price.unit_amount")
            .and_then(Value::as_i64)
            .map(|m| from_minor(m, currency))
            .or_else(|| {
                at(item, "price.unit_amount_decimal")
                    .and_then(Value::as_str)
                    .and_then(|s| from_minor_str(s, currency))
            })
            .ok_or_else(|| {
                refuse(
                    RefusalKind::Invalid,
                    &Self::field("items.data.price.unit_amount"),
                    "is required to know the new plan's unit price",
                )
            })?;
        Ok(Outcome::Events(vec![json!({
            "id": self.event_id(""), "type": "plan_change", "program": self.program,
            "occurred_at": rfc3339(self.d.created), "customer_id": customer,
            "plan": plan, "unit_price": unit.to_string(),
        })]))
    }
}

/// `{"token"}`, `{"click_id"}` and/or `{"coupon"}`; `None` without any.
fn attribution(
    token: Option<String>,
    click: Option<String>,
    coupon: Option<String>,
) -> Option<Value> {
    let mut a = serde_json::Map::new();
    if let Some(t) = token {
        a.insert("token".into(), json!(t));
    } else if let Some(c) = click {
        a.insert("click_id".into(), json!(c));
    }
    if let Some(c) = coupon {
        a.insert("coupon".into(), json!(c));
    }
    (!a.is_empty()).then_some(Value::Object(a))
}

/// The coupon id of a Discount object (`coupon` in 2024-06-20,
/// `source.coupon` from basil), expanded or not.
fn coupon_of(discount: Option<&Value>) -> Option<String> {
    let d = discount?;
    id_at(d, "coupon").or_else(|| id_at(d, "source.coupon"))
}

/// An invoice line as read.
#[derive(Debug, Clone)]
struct Line {
    kind: &'static str,
    amount: Decimal,
    plan: Option<String>,
    unit: Option<Decimal>,
    quantity: Option<u32>,
}

/// Credit lines (negative: proration for unused time, a credit note's
/// line) reduce the invoice's other lines — those of the same kind first,
/// largest first — so that what is commissioned is what was paid; lines
/// reduced to nothing are left out. As the events API's lines.
fn net_credits(lines: Vec<Line>) -> Vec<Value> {
    let (credits, mut lines): (Vec<Line>, Vec<Line>) =
        lines.into_iter().partition(|l| l.amount < Decimal::ZERO);
    for credit in credits {
        let mut left = -credit.amount;
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (&lines[*a], &lines[*b]);
            (b.kind == credit.kind)
                .cmp(&(a.kind == credit.kind))
                .then(b.amount.cmp(&a.amount))
        });
        for i in order {
            let take = left.min(lines[i].amount);
            lines[i].amount -= take;
            left -= take;
            if left.is_zero() {
                break;
            }
        }
    }
    lines
        .into_iter()
        .filter(|l| l.amount > Decimal::ZERO)
        .map(|l| {
            let mut v = json!({"kind": l.kind, "amount": l.amount.to_string()});
            if let Some(p) = l.plan {
                v["plan"] = json!(p);
            }
            if let Some(u) = l.unit {
                v["unit_price"] = json!(u.to_string());
            }
            if let Some(q) = l.quantity {
                v["quantity"] = json!(q);
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Ledger {
        paid: HashMap<String, (String, String)>,
        referred: Vec<String>,
    }

    impl Known for Ledger {
        fn paid_by(&self, payment: &str) -> Option<(String, String)> {
            self.paid.get(payment).cloned()
        }
        fn referred(&self, customer: &str) -> bool {
            self.referred.iter().any(|c| c == customer)
        }
    }

    fn fixture(version: &str, name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/stripe/{version}/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn delivery(version: &str, kind: &str, object: Value, previous: Value) -> Delivery {
        let body = json!({"id": "evt_1", "object": "event", "api_version": version,
            "created": 1_772_452_800, "type": kind,
            "data": {"object": object, "previous_attributes": previous}});
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn events(o: Outcome) -> Vec<Value> {
        match o {
            Outcome::Events(e) => e,
            Outcome::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    #[test]
    fn versions_are_read_by_their_shape_or_refused() {
        assert_eq!(Shape::of("2024-06-20"), Some(Shape::V2024));
        assert_eq!(Shape::of("2025-03-31.basil"), Some(Shape::Basil));
        assert_eq!(Shape::of("2025-08-27.basil"), Some(Shape::Basil));
        assert_eq!(Shape::of("2025-10-29.clover"), Some(Shape::Basil));
        for v in [
            "2023-10-16",
            "2024-09-30.acacia",
            "2025-02-30.basil",
            "2026-01-28.dahlia",
            "latest",
        ] {
            assert_eq!(Shape::of(v), None, "{v}");
        }
        let body = json!({"id": "evt_1", "type": "invoice.paid", "api_version": "2022-11-15",
            "created": 1, "data": {"object": {}}});
        let r = parse(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            (r.field.as_str(), r.kind),
            ("api_version", RefusalKind::Unreadable)
        );
    }

    #[test]
    fn invoice_amounts_follow_the_currency_and_credits_net_out() {
        for (version, line) in [
            ("2024-06-20", "/lines/data/0"),
            ("2025-03-31.basil", "/lines/data/0"),
        ] {
            // 2 seats of ¥1,500: JPY has no minor unit.
            let mut i = fixture(version, "invoice");
            *i.pointer_mut("/currency").unwrap() = json!("jpy");
            *i.pointer_mut(&format!("{line}/amount")).unwrap() = json!(3000);
            let e = events(
                translate(
                    "p",
                    &delivery(version, "invoice.paid", i.clone(), Value::Null),
                    &Ledger::default(),
                )
                .unwrap(),
            );
            let pay = e.iter().find(|e| e["type"] == "payment").unwrap();
            assert_eq!(pay["currency"], "JPY");
            assert_eq!(pay["lines"][0]["amount"], "3000", "{version}");
            assert_eq!(pay["lines"][0]["unit_price"], "1500", "{version}");
            assert_eq!(pay["lines"][0]["quantity"], 2);
            assert_eq!(pay["lines"][0]["plan"], "price_standard");
            assert_eq!(pay["lines"][0]["kind"], "subscription");
            assert_eq!(pay["id"], "stripe:evt_1");
            // BHD has thousandths; a proration credit for unused time
            // reduces the new plan's line.
            *i.pointer_mut("/currency").unwrap() = json!("bhd");
            *i.pointer_mut(&format!("{line}/amount")).unwrap() = json!(12_345);
            let mut credit = i.pointer(line).unwrap().clone();
            credit["amount"] = json!(-2_345);
            credit["quantity"] = json!(1);
            i["lines"]["data"].as_array_mut().unwrap().push(credit);
            let e = events(
                translate(
                    "p",
                    &delivery(version, "invoice.paid", i, Value::Null),
                    &Ledger::default(),
                )
                .unwrap(),
            );
            let pay = e.iter().find(|e| e["type"] == "payment").unwrap();
            assert_eq!(
                pay["lines"].as_array().unwrap().len(),
                1,
                "{version}: {pay}"
            );
            assert_eq!(pay["lines"][0]["amount"], "10.000", "{version}");
            assert_eq!(pay["lines"][0]["unit_price"], "1.500");
        }
    }

    #[test]
    fn line_kinds_come_from_each_versions_shape() {
        let mut i = fixture("2024-06-20", "invoice");
        let mut usage = i["lines"]["data"][0].clone();
        usage["price"]["recurring"]["usage_type"] = json!("metered");
        usage["amount"] = json!(740);
        let mut fee = i["lines"]["data"][0].clone();
        fee["type"] = json!("invoiceitem");
        fee["price"]["recurring"] = Value::Null;
        fee["amount"] = json!(500);
        i["lines"]["data"]
            .as_array_mut()
            .unwrap()
            .extend([usage, fee]);
        let e = events(
            translate(
                "p",
                &delivery("2024-06-20", "invoice.paid", i, Value::Null),
                &Ledger::default(),
            )
            .unwrap(),
        );
        let kinds: Vec<&str> = e[0]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["subscription", "usage", "fee"]);
        // The current shape: the parent says subscription or invoice item;
        // the merchant's line metadata may say usage.
        let mut i = fixture("2025-03-31.basil", "invoice");
        let mut usage = i["lines"]["data"][0].clone();
        usage["metadata"] = json!({"refedge_kind": "usage"});
        let mut fee = i["lines"]["data"][0].clone();
        fee["parent"] = json!({"type": "invoice_item_details", "invoice_item_details": {"invoice_item": "ii_1"}, "subscription_item_details": null});
        i["lines"]["data"]
            .as_array_mut()
            .unwrap()
            .extend([usage, fee]);
        let e = events(
            translate(
                "p",
                &delivery("2025-03-31.basil", "invoice.paid", i.clone(), Value::Null),
                &Ledger::default(),
            )
            .unwrap(),
        );
        let kinds: Vec<&str> = e[0]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["subscription", "usage", "fee"]);
        assert_eq!(e.len(), 1, "a current-version invoice names no payment");
        i["lines"]["data"][1]["metadata"] = json!({"refedge_kind": "seats"});
        let r = translate(
            "p",
            &delivery("2025-03-31.basil", "invoice.paid", i, Value::Null),
            &Ledger::default(),
        )
        .unwrap_err();
        assert_eq!(r.field, "data.object.lines.data[1].metadata.refedge_kind");
    }

    #[test]
    fn a_coupon_attributes_the_customer_or_its_first_invoice() {
        let mut c = fixture("2024-06-20", "customer");
        c["discount"] = json!({"id": "di_1", "object": "discount", "coupon": {"id": "ANN20", "object": "coupon"}, "promotion_code": null});
        let e = events(
            translate(
                "p",
                &delivery("2024-06-20", "customer.created", c, Value::Null),
                &Ledger::default(),
            )
            .unwrap(),
        );
        assert_eq!(e[0]["attribution"], json!({"coupon": "ANN20"}));
        assert_eq!(
            e[0]["customer"],
            json!({"id": "cus_QK1SjT3bwN4mQy", "email": "bob@acme.example"})
        );
        // From basil a discount's coupon is under `source`.
        let mut i = fixture("2025-03-31.basil", "invoice");
        i["discounts"] = json!([{"id": "di_2", "object": "discount", "source": {"type": "coupon", "coupon": "ANN20"}}]);
        let d = delivery("2025-03-31.basil", "invoice.paid", i, Value::Null);
        let e = events(translate("p", &d, &Ledger::default()).unwrap());
        let types: Vec<&str> = e.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["signup", "payment"]);
        assert_eq!(e[0]["id"], "stripe:evt_1:signup");
        assert_eq!(e[0]["attribution"], json!({"coupon": "ANN20"}));
        // ... unless the customer is already referred.
        let known = Ledger {
            referred: vec!["cus_QK1SjT3bwN4mQy".into()],
            ..Default::default()
        };
        let e = events(translate("p", &d, &known).unwrap());
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn refunds_take_what_each_refund_added_and_disputes_find_their_invoice() {
        let mut known = Ledger::default();
        known.paid.insert(
            "pi_3PB1aaQK1SjT3bwN0".into(),
            ("cus_A".into(), "in_9".into()),
        );
        let mut ch = fixture("2025-03-31.basil", "charge");
        ch["amount_refunded"] = json!(1250);
        let d = delivery(
            "2025-03-31.basil",
            "charge.refunded",
            ch.clone(),
            json!({"amount_refunded": 500}),
        );
        let e = events(translate("p", &d, &known).unwrap());
        assert_eq!(
            (e[0]["amount"].as_str(), e[0]["invoice_id"].as_str()),
            (Some("7.50"), Some("in_9"))
        );
        let d = delivery(
            "2025-03-31.basil",
            "charge.refunded",
            ch,
            json!({"amount_refunded": 1250}),
        );
        assert!(matches!(
            translate("p", &d, &known).unwrap(),
            Outcome::Ignored(_)
        ));
        // 2024-06-20: the charge names its invoice and customer.
        let mut ch = fixture("2024-06-20", "charge");
        ch["amount_refunded"] = json!(3000);
        let e = events(
            translate(
                "p",
                &delivery("2024-06-20", "charge.refunded", ch, Value::Null),
                &Ledger::default(),
            )
            .unwrap(),
        );
        assert_eq!(
            (
                e[0]["amount"].as_str(),
                e[0]["invoice_id"].as_str(),
                e[0]["customer_id"].as_str()
            ),
            (
                Some("30.00"),
                Some("in_1PB1aaQK1SjT3bwN"),
                Some("cus_QK1SjT3bwN4mQy")
            )
        );
        let dp = fixture("2024-06-20", "dispute");
        let e = events(
            translate(
                "p",
                &delivery("2024-06-20", "charge.dispute.created", dp, Value::Null),
                &known,
            )
            .unwrap(),
        );
        assert_eq!(
            (
                e[0]["type"].as_str(),
                e[0]["amount"].as_str(),
                e[0]["customer_id"].as_str()
            ),
            (Some("chargeback"), Some("30.00"), Some("cus_A"))
        );
    }

    #[test]
    fn only_a_new_price_is_a_plan_change() {
        let sub = fixture("2024-06-20", "subscription");
        let quantity_only = json!({"items": {"object": "list", "data": [{"id": "si_QK1Standard", "price": {"id": "price_standard"}, "quantity": 1}]}});
        let d = delivery(
            "2024-06-20",
            "customer.subscription.updated",
            sub.clone(),
            quantity_only,
        );
        assert!(matches!(
            translate("p", &d, &Ledger::default()).unwrap(),
            Outcome::Ignored(_)
        ));
        let d = delivery(
            "2024-06-20",
            "customer.subscription.updated",
            sub.clone(),
            json!({"cancel_at_period_end": true}),
        );
        assert!(matches!(
            translate("p", &d, &Ledger::default()).unwrap(),
            Outcome::Ignored(_)
        ));
        let old = json!({"items": {"object": "list", "data": [{"id": "si_QK1Standard", "price": {"id": "price_basic"}}]}});
        let d = delivery("2024-06-20", "customer.subscription.updated", sub, old);
        let e = events(translate("p", &d, &Ledger::default()).unwrap());
        assert_eq!(
            (e[0]["plan"].as_str(), e[0]["unit_price"].as_str()),
            (Some("price_standard"), Some("15.00"))
        );
    }
}
