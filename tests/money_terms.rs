//! Four disagreements with the programs' terms found by random scenarios
//! (issue 14, item 8), each reproduced through the real `refedge replay`.

mod common;

use common::{line_kinds, run_json};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Partner `p1` in `program`, clicks `k1`/`k2` a few days before signups of
/// `c1`/`c2`, then `events`; replays them and returns the outcome.
fn replay(program: &str, currency: &str, events: &[Value]) -> Value {
    let mut lines = vec![
        json!({"type": "partner", "id": "p1", "program": program, "email": "ann@blog.example",
               "website": "https://blog.example", "currency": currency,
               "created_at": "2025-12-01T00:00:00Z"}),
    ];
    for (k, c) in [("k1", "c1"), ("k2", "c2")] {
        lines.push(
            json!({"type": "click", "id": k, "partner_id": "p1", "program": program,
                          "occurred_at": "2026-01-01T00:00:00Z"}),
        );
        lines.push(
            json!({"type": "signup", "id": format!("s-{c}"), "program": program,
                          "occurred_at": "2026-01-03T00:00:00Z", "customer": {"id": c},
                          "attribution": {"click_id": k}}),
        );
    }
    lines.extend_from_slice(events);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let o = run_json(&["replay", file.to_str().unwrap()]);
    assert_eq!(o["referrals"].as_array().unwrap().len(), 2, "{o}");
    o
}

fn pay(program: &str, id: &str, customer: &str, at: &str, currency: &str, amount: &str) -> Value {
    json!({"type": "payment", "id": id, "program": program, "occurred_at": format!("{at}T00:00:00Z"),
           "customer_id": customer, "invoice_id": id, "currency": currency,
           "lines": [{"kind": "subscription", "amount": amount}]})
}

fn payout_run(program: &str, at: &str) -> Value {
    json!({"type": "payout_run", "program": program, "as_of": format!("{at}T00:00:00Z")})
}

/// The items paid by the payout run on `date` (`YYYYMMDD`).
fn paid(o: &Value, program: &str, date: &str) -> Vec<(String, String)> {
    let id = format!("po_{program}_{date}");
    o["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no batch {id}: {o}"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["amount"].as_str().unwrap().to_string(),
                i["currency"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn aloware_a_tier_top_up_on_a_charged_back_invoice_is_reversed_with_it() {
    let o = replay(
        "aloware",
        "USD",
        &[
            pay("aloware", "A-1", "c1", "2026-03-01", "USD", "3000.00"),
            json!({"type": "chargeback", "id": "cb-1", "program": "aloware",
                   "occurred_at": "2026-03-02T00:00:00Z", "customer_id": "c1",
                   "invoice_id": "A-1", "amount": "3000.00"}),
            pay("aloware", "B-1", "c2", "2026-03-03", "USD", "2500.00"),
            // Aloware pays a month after close: well past it. A plain date
            // is that day's midnight UTC.
            json!({"type": "payout_run", "program": "aloware", "as_of": "2026-06-15"}),
        ],
    );
    // The month's MRR counts what was paid (5,500: the 30% tier, as
    // documented); A-1's commission and its top-up are both reversed.
    assert_eq!(
        paid(&o, "aloware", "20260615"),
        [("750.00".into(), "USD".into())]
    );
    let lines = o["partners"]["p1"]["lines"].as_array().unwrap();
    let on_a1: Decimal = lines
        .iter()
        .filter(|l| l["invoice_id"] == "A-1")
        .map(|l| l["amount"].as_str().unwrap().parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(on_a1, Decimal::ZERO, "nothing is earned on A-1: {lines:?}");
}

#[test]
fn aircall_counts_billing_months_not_invoices() {
    let o = replay(
        "aircall",
        "EUR",
        &[
            pay("aircall", "E-1", "c1", "2026-07-03", "EUR", "100.00"),
            pay("aircall", "E-1b", "c1", "2026-07-19", "EUR", "40.00"),
            payout_run("aircall", "2026-07-31"),
            pay("aircall", "E-2", "c1", "2026-08-03", "EUR", "100.00"),
            payout_run("aircall", "2026-08-31"),
            pay("aircall", "E-3", "c1", "2026-09-03", "EUR", "100.00"),
            payout_run("aircall", "2026-09-30"),
        ],
    );
    assert_eq!(
        paid(&o, "aircall", "20260731"),
        [],
        "held until two months are paid"
    );
    assert_eq!(
        paid(&o, "aircall", "20260831"),
        [("120.00".into(), "EUR".into())],
        "50% of July (100 + 40) and August (100)"
    );
    assert_eq!(
        paid(&o, "aircall", "20260930"),
        [],
        "the third month earns nothing"
    );
}

#[test]
fn a_refund_reversal_is_the_exact_product_rounded_once() {
    let o = replay(
        "krispcall",
        "USD",
        &[
            json!({"type": "payment", "id": "K-1", "program": "krispcall",
                   "occurred_at": "2026-03-02T00:00:00Z", "customer_id": "c1", "invoice_id": "K-1",
                   "currency": "USD", "lines": [{"kind": "subscription", "amount": "60.00",
                   "plan": "pro", "unit_price": "30.00", "quantity": 2}]}),
            json!({"type": "refund", "id": "rf-1", "program": "krispcall",
                   "occurred_at": "2026-03-20T00:00:00Z", "customer_id": "c1",
                   "invoice_id": "K-1", "amount": "29.75"}),
            payout_run("krispcall", "2026-04-13"),
        ],
    );
    // 18.00 × 29.75 / 60 = 8.925 → 8.93 voided, 9.07 paid.
    assert_eq!(
        paid(&o, "krispcall", "20260413"),
        [("9.07".into(), "USD".into())]
    );
}

#[test]
fn krispcall_a_refund_after_forfeiture_does_not_take_the_commission_twice() {
    let o = replay(
        "krispcall",
        "USD",
        &[
            pay("krispcall", "F-1", "c1", "2026-01-20", "USD", "15.00"),
            // Six months without a click or referral since the signups.
            payout_run("krispcall", "2026-07-13"),
            json!({"type": "refund", "id": "rf-f", "program": "krispcall",
                   "occurred_at": "2026-07-20T00:00:00Z", "customer_id": "c1",
                   "invoice_id": "F-1", "amount": "15.00"}),
        ],
    );
    let p1 = &o["partners"]["p1"];
    let kinds = line_kinds(p1);
    assert!(kinds.contains(&"forfeit"), "{kinds:?}");
    assert_eq!(p1["balances"]["USD"]["available"], "0.00", "{p1}");
    assert_eq!(p1["balances"]["USD"]["pending"], "0.00", "{p1}");
}
