//! Webhooks and partner postbacks out.
//!
//! The calculator, as it applies each event, says what happened that
//! someone may want to hear about ([`notices`]: a referral made or refused,
//! commission earned, held, released or reversed, a payout made or
//! confirmed, a partner's standing changed). The [`Outbox`] turns each
//! notice into a [`model::Delivery`] per interested endpoint — a merchant's
//! webhook (signed JSON) or a partner's postback (a URL from the partner's
//! template) — and queues it in sled in the batch the calculator applied,
//! before the snapshot that covers it, so no restart loses one; ids are
//! derived from the event's place in the log, so a replay queues nothing
//! twice. The delivery task ([`deliver`]) sends what is due, at least once,
//! with back-off, and never holds up the calculator or the redirect.
//!
//! - [`model`]: endpoints, deliveries, attempts.
//! - [`change`]: changes to endpoints, as one node and every calculator of
//!   a cluster apply them.
//! - [`postback`]: URL templates, their macros and which targets they may
//!   name.
//! - [`send`]: one HTTP(S) request, bounded, refusing private addresses
//!   where asked.
//! - [`deliver`]: the task that sends due deliveries.

pub mod change;
pub mod deliver;
pub mod model;
pub mod postback;
pub mod send;

use crate::commission::event::Event;
use crate::commission::ledger::{Line, LineKind};
use crate::commission::Calculator;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use model::{Delivery, Endpoint, State};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::time::Duration;

/// Event types an endpoint may ask for.
pub const EVENT_TYPES: &[&str] = &[
    "referral.created",
    "referral.rejected",
    "commission.created",
    "commission.held",
    "commission.released",
    "commission.reversed",
    "payout.created",
    "payout.confirmed",
    "partner.status_changed",
];

/// A postback's event types when its partner names none.
pub const POSTBACK_DEFAULT: &[&str] = &["referral.created", "commission.created"];

/// Event types a partner's postback may ask for (its own referrals and
/// commissions).
pub const POSTBACK_TYPES: &[&str] = &[
    "referral.created",
    "commission.created",
    "commission.held",
    "commission.released",
    "commission.reversed",
];

/// `webhooks.*` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Each attempt's bound.
    pub timeout: Duration,
    /// Wait before the first retry; doubles with each.
    pub retry_base: Duration,
    /// A delivery is retried until it is this old, then failed.
    pub max_age: Duration,
    /// Failed attempts in a row that disable an endpoint.
    pub disable_after: u32,
    /// Postbacks may target loopback and private addresses (tests).
    pub allow_private_targets: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(10_000),
            retry_base: Duration::from_millis(30_000),
            max_age: Duration::from_secs(24 * 3600),
            disable_after: 20,
            allow_private_targets: false,
        }
    }
}

/// Something that happened, as the calculator saw it apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Where it comes from, unique in the log: `<seq>.<n>`.
    pub source: String,
    /// One of [`EVENT_TYPES`].
    pub kind: &'static str,
    /// When it happened (the event's time).
    pub at: DateTime<Utc>,
    pub program: String,
    /// The partner it concerns (postbacks go to this partner's only).
    pub partner_id: Option<String>,
    /// The object delivered (a referral, rejection, ledger line, payout
    /// batch, standing change).
    pub data: Value,
    /// What a postback's macros read.
    pub facts: Facts,
}

/// Values for a postback's macros.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub click_id: Option<String>,
    pub customer_id: Option<String>,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub sale_amount: Option<Decimal>,
}

/// How far the calculator's lists reached before an event.
#[derive(Debug, Clone)]
pub struct Marks {
    referrals: usize,
    rejections: usize,
    ledger: usize,
}

/// The marks before `e` is applied.
pub fn marks(calc: &Calculator) -> Marks {
    Marks {
        referrals: calc.state.referrals.len(),
        rejections: calc.state.rejections.len(),
        ledger: calc.state.ledger.len(),
    }
}

/// What applying event `e` (log seq `seq`) did, from the marks taken
/// before it. The same event applied to the same state says the same.
pub fn notices(m: &Marks, calc: &Calculator, seq: u64, e: &Event) -> Vec<Notice> {
    let mut out = Vec::new();
    let s = &calc.state;
    let mut push = |kind, at, program: &str, partner: Option<&str>, data: Value, facts: Facts| {
        let source = format!("{seq}.{}", out.len());
        out.push(Notice {
            source,
            kind,
            at,
            program: program.to_string(),
            partner_id: partner.map(str::to_string),
            data,
            facts,
        });
    };
    for r in s.referrals.get(m.referrals..).unwrap_or_default() {
        let facts = Facts {
            click_id: r.click_id.clone(),
            customer_id: Some(r.customer_id.clone()),
            ..Facts::default()
        };
        push(
            "referral.created",
            r.at,
            &r.program,
            Some(&r.partner_id),
            json!(r),
            facts,
        );
    }
    for r in s.rejections.get(m.rejections..).unwrap_or_default() {
        push(
            "referral.rejected",
            r.at,
            &r.program,
            r.partner_id.as_deref(),
            json!(r),
            Facts::default(),
        );
    }
    let sale = match e {
        Event::Payment(p) => calc.commissionable(p),
        _ => None,
    };
    for l in s.ledger.get(m.ledger..).unwrap_or_default() {
        let Some(kind) = line_type(l) else { continue };
        let click_id = l
            .customer_id
            .as_deref()
            .and_then(|c| calc.customer(&l.program, c).0)
            .and_then(|r| r.click_id.clone());
        let facts = Facts {
            click_id,
            customer_id: l.customer_id.clone(),
            amount: Some(l.amount),
            currency: Some(l.currency.clone()),
            sale_amount: sale.filter(|_| kind != "commission.reversed"),
        };
        push(kind, l.at, &l.program, Some(&l.partner_id), json!(l), facts);
    }
    match e {
        Event::PayoutRun(r) => {
            // The batch of this run (its id is the program and the date).
            if let Some(b) = s
                .payouts
                .values()
                .find(|b| b.program == r.program && b.as_of == r.as_of)
            {
                push(
                    "payout.created",
                    r.as_of,
                    &r.program,
                    None,
                    json!(b),
                    Facts::default(),
                );
            }
        }
        Event::PayoutConfirm(c) => {
            if let Some(b) = s.payouts.get(&c.payout_id) {
                push(
                    "payout.confirmed",
                    c.occurred_at,
                    &b.program,
                    None,
                    json!(b),
                    Facts::default(),
                );
            }
        }
        Event::PartnerStatus(c) => {
            let program = calc
                .partner(&c.partner_id)
                .map(|p| p.program.clone())
                .unwrap_or_default();
            push(
                "partner.status_changed",
                c.occurred_at,
                &program,
                Some(&c.partner_id),
                json!(c),
                Facts::default(),
            );
        }
        _ => {}
    }
    out
}

/// The event type of a new ledger line; `None` for payouts and credits
/// (a payout batch has its own event) and a release's held side.
fn line_type(l: &Line) -> Option<&'static str> {
    match l.kind {
        LineKind::Commission | LineKind::TierAdjustment if l.held_for_review => {
            Some("commission.held")
        }
        LineKind::Commission | LineKind::TierAdjustment => Some("commission.created"),
        LineKind::Release if l.amount > Decimal::ZERO && !l.held_for_review => {
            Some("commission.released")
        }
        LineKind::Release => None,
        LineKind::Void | LineKind::Clawback | LineKind::Forfeit => Some("commission.reversed"),
        LineKind::Payout | LineKind::Credit => None,
    }
}

/// The id of an event as one endpoint receives it: the same on every
/// replay and every node.
pub fn event_id(endpoint: &str, source: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{endpoint}\u{1f}{source}").as_bytes(),
    );
    format!("evt_{}", crate::net::to_hex(&d.as_ref()[..12]))
}

/// Queues notices for the endpoints that want them.
pub struct Outbox {
    store: Store,
    settings: Settings,
    /// Keys each partner's opaque customer references.
    refs: ring::hmac::Key,
    /// Wakes the delivery task.
    wake: tokio::sync::Notify,
    /// The clock events are received by.
    clock: crate::clock::SharedClock,
}

impl Outbox {
    /// An outbox over `store`; `refs_key` keys partners' customer
    /// references (a server secret); `clock` is the one events are
    /// received by.
    pub fn new(
        store: Store,
        settings: Settings,
        refs_key: &[u8],
        clock: crate::clock::SharedClock,
    ) -> Self {
        Self {
            store,
            settings,
            refs: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, refs_key),
            wake: tokio::sync::Notify::new(),
            clock,
        }
    }

    /// Whether an event received at `received_at` is still to be told:
    /// one received longer than `webhooks.max_age_hours` ago would only be
    /// failed — or, on a calculator replaying the stream from its start,
    /// sent again long after the delivered marks have expired.
    pub fn is_fresh(&self, received_at: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(self.settings.max_age)
            .is_ok_and(|age| received_at + age > self.clock.now())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Wakes the delivery task (new or redelivered deliveries).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// An opaque reference to a customer for one partner: the same
    /// customer is the same reference for that partner, and nothing else
    /// can be learnt from it.
    pub fn customer_ref(&self, partner: &str, customer: &str) -> String {
        let tag = ring::hmac::sign(&self.refs, format!("{partner}\u{1f}{customer}").as_bytes());
        format!("cr_{}", crate::net::to_hex(&tag.as_ref()[..8]))
    }

    /// Queues the notices of applied events (`(seq, notice)`) for every
    /// endpoint that wants them and existed before the event. Blocking.
    pub fn enqueue(
        &self,
        notices: &[(u64, Notice)],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if notices.is_empty() {
            return Ok(0);
        }
        // Merchants' webhooks are few and read once; a partner's postback
        // is looked up by the partner.
        let hooks: Vec<Endpoint> = self
            .store
            .endpoints()?
            .into_iter()
            .filter(|e| !e.is_postback())
            .collect();
        let mut ds = Vec::new();
        for (seq, n) in notices {
            let postback = match &n.partner_id {
                Some(p) => self.store.postback_of(p)?,
                None => None,
            };
            for e in hooks.iter().chain(postback.as_ref()) {
                if e.from_seq >= *seq || !e.events.iter().any(|t| t == n.kind) {
                    continue;
                }
                let event = event_id(&e.id, &n.source);
                let body = if e.is_postback() {
                    self.postback_url(e, n)
                } else {
                    webhook_body(&event, n)
                };
                ds.push(Delivery {
                    id: format!(
                        "whd_{:013x}{}",
                        now.timestamp_millis().max(0),
                        &event[4..16]
                    ),
                    endpoint_id: e.id.clone(),
                    event_id: event,
                    event_type: n.kind.to_string(),
                    body,
                    created_at: now,
                    state: State::Pending,
                    next_at: Some(now),
                    attempts: Vec::new(),
                });
            }
        }
        let new = self.store.enqueue_deliveries(&ds)?;
        if new > 0 {
            self.wake();
        }
        Ok(new)
    }

    /// A postback's URL for a notice, its macros filled in.
    fn postback_url(&self, e: &Endpoint, n: &Notice) -> String {
        let partner = e.partner_id.as_deref().unwrap_or_default();
        let query = n
            .facts
            .click_id
            .as_deref()
            .and_then(|id| id.parse::<crate::id::ClickId>().ok())
            .and_then(|id| self.store.find_click(id).ok().flatten())
            .and_then(|c| c.query);
        let values = postback::Values {
            refclk: n.facts.click_id.clone(),
            query,
            event: n.kind,
            amount: n.facts.amount,
            currency: n.facts.currency.clone(),
            sale_amount: n.facts.sale_amount,
            customer_ref: n
                .facts
                .customer_id
                .as_deref()
                .map(|c| self.customer_ref(partner, c)),
        };
        postback::render(&e.url, &values)
    }
}

/// A webhook's JSON body.
fn webhook_body(id: &str, n: &Notice) -> String {
    json!({
        "id": id, "type": n.kind,
        "created": n.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "program": n.program, "data": n.data,
    })
    .to_string()
}
