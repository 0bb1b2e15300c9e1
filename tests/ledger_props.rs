//! Property tests of the calculator on random event sequences: every cent
//! is accounted for, refunds never reverse more than was earned, a snapshot
//! resumed gives what an uninterrupted run gives, and the order of
//! independent partners' events does not matter.

use proptest::prelude::*;
use refedge::commission::calculator::State;
use refedge::commission::ledger::LineKind;
use refedge::commission::review::{review_id, ReviewFlag, ReviewPolicy, ReviewStatus};
use refedge::commission::{Calculator, Event};
use refedge::config::Config;
use refedge::replay::books;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::HashMap;

const PROGRAMS: [&str; 4] = ["krispcall", "aloware", "aircall", "ringostat"];

fn calculator() -> Calculator {
    let c = Config::defaults("unused");
    Calculator::new(books(&c.programs))
}

/// A calculator whose programs hold referrals from a shared address.
fn reviewing_calculator() -> Calculator {
    let c = Config::defaults("unused");
    let mut books = books(&c.programs);
    for b in &mut books {
        b.review = ReviewPolicy {
            flags: vec![ReviewFlag::SharedIp],
            fast_signup_seconds: 60,
        };
    }
    Calculator::new(books)
}

fn day(d: u32) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    (base + chrono::Duration::days(i64::from(d)))
        .with_timezone(&chrono::Utc)
        .to_rfc3339()
}

/// One partner's story: setup, then random payments, refunds, chargebacks,
/// plan changes and cancellations of its customers.
fn story(
    partner: usize,
    program: &'static str,
    ops: Vec<(u8, u32, u32, u8)>,
) -> Vec<(String, Value)> {
    let pid = format!("p{partner}");
    let mut out = vec![
        (
            format!("partner-{pid}"),
            json!({"type": "partner", "id": pid, "program": program,
            "email": format!("{pid}@partner{partner}.example"), "currency": if program == "ringostat" { "EUR" } else { "USD" },
            "created_at": day(0)}),
        ),
        (
            format!("coupon-{pid}"),
            json!({"type": "coupon", "code": format!("C-{pid}"), "partner_id": pid}),
        ),
    ];
    for c in 0..3 {
        out.push((format!("s-{pid}-{c}"), json!({"type": "signup", "id": format!("s-{pid}-{c}"), "program": program,
            "occurred_at": day(1), "customer": {"id": format!("{pid}-c{c}")}, "attribution": {"coupon": format!("C-{pid}")}})));
    }
    let mut invoices: Vec<(String, String, u32)> = Vec::new();
    for (i, (op, a, b, c)) in ops.into_iter().enumerate() {
        let customer = format!("{pid}-c{}", c % 3);
        let id = format!("{pid}-e{i}");
        let at = day(2 + i as u32 * 3);
        let v = match op % 6 {
            0..=2 => {
                let inv = format!("{pid}-inv{i}");
                let cents = 100 + a % 900_000;
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                invoices.push((customer.clone(), inv.clone(), cents));
                let currency = if b % 4 == 0 { "EUR" } else { "USD" };
                json!({"type": "payment", "id": id, "program": program, "occurred_at": at, "customer_id": customer,
                       "invoice_id": inv, "currency": currency, "lines": [
                    {"kind": "subscription", "amount": amount, "plan": "p", "unit_price": format!("{}.00", 1 + b % 90), "quantity": 1 + b % 4},
                    {"kind": "usage", "amount": format!("{}.{:02}", b % 500, b % 100)}]})
            }
            3 if !invoices.is_empty() => {
                let (cust, inv, total) = invoices[(a as usize) % invoices.len()].clone();
                let part = 1 + b % total.max(1);
                let kind = if c % 2 == 0 { "refund" } else { "chargeback" };
                json!({"type": kind, "id": id, "program": program, "occurred_at": at, "customer_id": cust,
                       "invoice_id": inv, "amount": format!("{}.{:02}", part / 100, part % 100)})
            }
            4 => json!({"type": "plan_change", "id": id, "program": program, "occurred_at": at,
                        "customer_id": customer, "plan": "up", "unit_price": format!("{}.00", 10 + a % 100)}),
            _ => {
                json!({"type": "cancellation", "id": id, "program": program, "occurred_at": at, "customer_id": customer})
            }
        };
        out.push((format!("{pid}-e{i}"), v));
    }
    out
}

fn setup() -> Vec<(String, Value)> {
    vec![
        (
            "fx-1".into(),
            json!({"type": "fx_rates", "at": day(0), "base": "USD", "rates": {"EUR": "0.9", "UAH": "41.25"}}),
        ),
        (
            "fx-2".into(),
            json!({"type": "fx_rates", "at": day(60), "base": "USD", "rates": {"EUR": "0.95", "UAH": "40.5"}}),
        ),
    ]
}

fn apply(calc: &mut Calculator, events: &[(String, Value)]) {
    let mut seen = std::collections::HashSet::new();
    for (id, v) in events {
        if !seen.insert(id.clone()) {
            continue; // the event log's idempotency
        }
        // Review decisions are internal events, made by the API.
        let e = if v["type"] == "review_decision" {
            serde_json::from_value(v.clone()).unwrap()
        } else {
            Event::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
        };
        calc.apply(id, &e);
    }
}

fn payouts(program: &str, days: &[u32]) -> Vec<(String, Value)> {
    days.iter()
        .map(|d| {
            (
                format!("po-{program}-{d}"),
                json!({"type": "payout_run", "program": program, "as_of": day(*d)}),
            )
        })
        .collect()
}

fn ops() -> impl Strategy<Value = Vec<(u8, u32, u32, u8)>> {
    prop::collection::vec(
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u8>()),
        0..40,
    )
}

fn check_accounts(calc: &Calculator) {
    let end = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for pid in calc.partner_ids() {
        for as_of in [day(30), day(90), day(200)]
            .iter()
            .map(|d| d.parse().unwrap())
            .chain([end])
        {
            for (cur, b) in calc.balances(pid, as_of).unwrap() {
                assert!(b.is_consistent(), "{pid} {cur} at {as_of}: {b:?}");
            }
        }
        // Per invoice: reversals never exceed what was earned on it.
        let mut per_invoice: HashMap<String, (Decimal, Decimal)> = HashMap::new();
        for l in calc.lines(pid) {
            let Some(inv) = &l.invoice_id else { continue };
            let e = per_invoice.entry(inv.clone()).or_default();
            match l.kind {
                LineKind::Commission | LineKind::TierAdjustment => e.0 += l.amount,
                LineKind::Void | LineKind::Clawback => e.1 -= l.amount,
                _ => {}
            }
        }
        for (inv, (earned, reversed)) in per_invoice {
            assert!(
                reversed >= Decimal::ZERO && reversed <= earned,
                "{pid} {inv}: earned {earned}, reversed {reversed}"
            );
        }
        // Payout items equal the paid and credited totals.
        let paid_items: Decimal = calc
            .state
            .payouts
            .values()
            .flat_map(|b| &b.items)
            .filter(|i| &i.partner_id == pid)
            .map(|i| i.amount)
            .sum();
        let paid_lines: Decimal = calc
            .lines(pid)
            .iter()
            .filter(|l| matches!(l.kind, LineKind::Payout | LineKind::Credit))
            .map(|l| -l.amount)
            .sum();
        assert_eq!(paid_items, paid_lines);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_cent_is_accounted_for(a in ops(), b in ops(), dup in any::<prop::sample::Index>()) {
        let mut events = setup();
        events.extend(story(0, "krispcall", a));
        events.extend(story(1, "ringostat", b.clone()));
        events.extend(story(2, "aloware", b.clone()));
        events.extend(story(3, "aircall", b));
        for p in PROGRAMS {
            events.extend(payouts(p, &[45, 120, 400]));
        }
        // A duplicate delivery of some event.
        let d = events[dup.index(events.len())].clone();
        events.push(d);
        let mut calc = calculator();
        apply(&mut calc, &events);
        check_accounts(&calc);
    }

    #[test]
    fn held_reviews_account_for_every_cent(
        a in ops(),
        decisions in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 2),
    ) {
        // Every customer signs up from one address: the first is referred,
        // the next two are held for review (shared_ip).
        let mut events = setup();
        let mut s = story(0, "aloware", a);
        for (_, v) in &mut s {
            if v["type"] == "signup" {
                v["customer"]["ip"] = json!("192.0.2.1");
            }
        }
        events.extend(s);
        events.extend(payouts("aloware", &[45, 120]));
        // Each held customer decided at a random point.
        for (c, (at, approve)) in decisions.iter().enumerate() {
            let customer = format!("p0-c{}", c + 1);
            let decision = json!({"type": "review_decision", "review_id": review_id("aloware", &customer),
                "program": "aloware", "customer_id": customer, "decision": if *approve { "approve" } else { "reject" },
                "occurred_at": day(400), "actor": "analyst", "reason": "checked"});
            let pos = 7 + at.index(events.len() - 6);
            events.insert(pos, (format!("review-{customer}"), decision));
        }
        events.extend(payouts("aloware", &[500]));
        let mut calc = reviewing_calculator();
        apply(&mut calc, &events);
        check_accounts(&calc);
        let held = calc.reviews(None, None, None);
        prop_assert_eq!(held.len(), 2);
        let end = day(600).parse().unwrap();
        for (cur, b) in calc.balances("p0", end).unwrap() {
            prop_assert!(b.held.is_zero(), "{} held {} after every decision", cur, b.held);
        }
        for r in held {
            prop_assert!(r.status != ReviewStatus::Held);
            let total: Decimal = calc
                .lines("p0")
                .iter()
                .filter(|l| l.customer_id.as_deref() == Some(r.customer_id.as_str()))
                .map(|l| l.amount)
                .sum();
            if r.status == ReviewStatus::Rejected {
                prop_assert!(total.is_zero(), "{} rejected but keeps {}", r.customer_id, total);
            } else {
                prop_assert!(total >= Decimal::ZERO);
            }
        }
    }

    #[test]
    fn a_resumed_snapshot_equals_an_uninterrupted_run(a in ops(), cut in any::<prop::sample::Index>()) {
        let mut events = setup();
        events.extend(story(0, "aloware", a.clone()));
        events.extend(story(1, "krispcall", a));
        events.extend(payouts("aloware", &[100]));
        let mut whole = calculator();
        apply(&mut whole, &events);

        let at = cut.index(events.len() + 1);
        let mut first = calculator();
        apply(&mut first, &events[..at]);
        let saved = serde_json::to_vec(&first.state).unwrap();
        let state: State = serde_json::from_slice(&saved).unwrap();
        let mut resumed = calculator().with_state(state);
        apply(&mut resumed, &events[at..]);
        prop_assert_eq!(&resumed.state.ledger, &whole.state.ledger);
        prop_assert_eq!(&resumed.state.referrals, &whole.state.referrals);
        prop_assert_eq!(&resumed.state.payouts, &whole.state.payouts);
    }

    #[test]
    fn independent_partners_events_commute(a in ops(), b in ops(), picks in prop::collection::vec(any::<bool>(), 0..200)) {
        let sa = story(0, "krispcall", a);
        let sb = story(1, "krispcall", b);
        // Interleave the two stories in a random order, keeping each in order.
        let (mut i, mut j) = (0, 0);
        let mut mixed = setup();
        for pick in picks.iter().copied().chain(std::iter::repeat_n(true, sa.len() + sb.len())) {
            if (pick && i < sa.len()) || j >= sb.len() {
                if i < sa.len() { mixed.push(sa[i].clone()); i += 1; }
            } else {
                mixed.push(sb[j].clone());
                j += 1;
            }
        }
        let mut serial = setup();
        serial.extend(sa);
        serial.extend(sb);
        let end = payouts("krispcall", &[300]);
        mixed.extend(end.clone());
        serial.extend(end);
        let (mut x, mut y) = (calculator(), calculator());
        apply(&mut x, &mixed);
        apply(&mut y, &serial);
        let as_of = day(400).parse().unwrap();
        for pid in ["p0", "p1"] {
            prop_assert_eq!(x.balances(pid, as_of), y.balances(pid, as_of));
        }
        prop_assert_eq!(&x.state.payouts, &y.state.payouts);
    }
}
