//! Aloware, Aircall and Ringostat terms (shared/seeds/001..003), end to end
//! over HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

fn pay(
    program: &str,
    id: &str,
    customer: &str,
    invoice: &str,
    at: &str,
    currency: &str,
    lines: Value,
) -> Value {
    json!({"id": id, "type": "payment", "program": program, "occurred_at": at,
           "customer_id": customer, "invoice_id": invoice, "currency": currency, "lines": lines})
}

fn signup(program: &str, id: &str, customer: &str, at: &str, attribution: Value) -> Value {
    json!({"id": id, "type": "signup", "program": program, "occurred_at": at,
           "customer": {"id": customer, "email": format!("{customer}@client.example")}, "attribution": attribution})
}

#[tokio::test]
async fn aloware_tiers_by_referred_mrr_wait_a_month_and_withhold_chargebacks() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let al = s.partner("aloware", "partner@crm-agency.example").await;
    s.link(&al, "https://aloware.com/", Some("al-1")).await;
    let first = click(s.addr(), "/r/al-1", None).await;
    let second = click(s.addr(), "/r/al-1", None).await;
    m.ev(signup(
        "aloware",
        "s1",
        "c1",
        "2026-03-02T00:00:00Z",
        json!({"click_id": click_id_of(&first)}),
    ))
    .await;
    m.ev(signup(
        "aloware",
        "s2",
        "c2",
        "2026-03-03T00:00:00Z",
        json!({"click_id": click_id_of(&second)}),
    ))
    .await;

    // "The commission is only payable on subscription fees ... usage fees ...
    // is excluded" and "less than $5,000 in MRR per month, 20%".
    m.ev(pay(
        "aloware",
        "p1",
        "c1",
        "A-1",
        "2026-03-05T00:00:00Z",
        "USD",
        json!([
            {"kind": "subscription", "amount": "3000.00"}, {"kind": "usage", "amount": "500.00"}
        ]),
    ))
    .await;
    let b = m.balance(&al, "2026-03-06T00:00:00Z", "USD").await;
    assert_eq!(b["pending"], "600.00");
    // "$5,000 or more in MRR per month, 30% of generated MRR": crossing the
    // tier tops up the month's earlier line.
    m.ev(pay(
        "aloware",
        "p2",
        "c2",
        "A-2",
        "2026-03-10T00:00:00Z",
        "USD",
        json!([
            {"kind": "subscription", "amount": "2500.00"}
        ]),
    ))
    .await;
    let march = m
        .get(&format!("/api/v1/partners/{al}/statement?month=2026-03"))
        .await;
    let amounts: Vec<(&str, &str)> = march["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(
        amounts,
        [
            ("commission", "600.00"),
            ("commission", "750.00"),
            ("tier_adjustment", "300.00")
        ]
    );

    // "A 1-month waiting period after close."
    let b = m.balance(&al, "2026-04-01T23:59:59Z", "USD").await;
    assert_eq!(
        (b["available"].as_str(), b["pending"].as_str()),
        (Some("0.00"), Some("1650.00"))
    );
    let b = m.balance(&al, "2026-04-02T00:00:00Z", "USD").await;
    assert_eq!(
        (b["available"].as_str(), b["pending"].as_str()),
        (Some("900.00"), Some("750.00"))
    );

    m.ev(pay(
        "aloware",
        "p3",
        "c1",
        "A-3",
        "2026-04-05T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "3000.00"}]),
    ))
    .await;
    let run = m.payout("aloware", "2026-04-10T00:00:00Z").await;
    assert_eq!(
        run["items"],
        json!([{"partner_id": al, "amount": "2250.00", "currency": "USD", "method": "cash"}])
    );

    // "In the event of a chargeback by a client, any paid or payable
    // commissions are withheld from future payouts to the Partner."
    m.ev(json!({"id": "cb1", "type": "chargeback", "program": "aloware", "occurred_at": "2026-04-20T00:00:00Z",
                "customer_id": "c1", "invoice_id": "A-3", "amount": "3000.00"})).await;
    let b = m.balance(&al, "2026-04-21T00:00:00Z", "USD").await;
    assert_eq!(b["available"], "-600.00");
    // "Canceled referred accounts will seize to incur commission payments."
    m.ev(json!({"id": "x2", "type": "cancellation", "program": "aloware", "occurred_at": "2026-04-25T00:00:00Z", "customer_id": "c2"})).await;
    m.ev(pay(
        "aloware",
        "p4",
        "c2",
        "A-4",
        "2026-05-10T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "2500.00"}]),
    ))
    .await;
    m.ev(pay(
        "aloware",
        "p5",
        "c1",
        "A-5",
        "2026-05-05T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "3000.00"}]),
    ))
    .await;
    let b = m.balance(&al, "2026-05-31T00:00:00Z", "USD").await;
    for (k, v) in [
        ("available", "0.00"),
        ("lifetime", "2850.00"),
        ("clawed_back", "600.00"),
        ("paid", "2250.00"),
    ] {
        assert_eq!(b[k], v, "{k}: {b}");
    }
}

#[tokio::test]
async fn aircall_pays_half_of_the_first_two_months_after_the_second_in_invoice_currency() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let ac = s.partner("aircall", "freelance@consult.example").await;
    s.link(&ac, "https://aircall.io/", Some("ac-1")).await;
    let c1 = click(s.addr(), "/r/ac-1", None).await;
    let c3 = click(s.addr(), "/r/ac-1", None).await;
    m.ev(signup(
        "aircall",
        "s1",
        "c1",
        "2026-03-02T00:00:00Z",
        json!({"click_id": click_id_of(&c1)}),
    ))
    .await;
    // "the lead shouldn't be an existing lead or customer of Aircall"
    m.ev(json!({"id": "s2", "type": "signup", "program": "aircall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c2", "existing": true}, "attribution": {"click_id": click_id_of(&c1)}})).await;
    assert_eq!(m.rejection("c2").await, "existing_customer");

    // "Your total rewards amounts at 50% of the first two months paid by the
    // lead ... This payment will occur after the first two months have been
    // paid ... in the currency of the lead's invoice."
    m.ev(pay("aircall", "p1", "c1", "E-1", "2026-03-05T00:00:00Z", "EUR", json!([
        {"kind": "subscription", "amount": "100.00"}, {"kind": "usage", "amount": "20.00"}, {"kind": "fee", "amount": "10.00"}
    ]))).await;
    let b = m.balance(&ac, "2026-03-31T00:00:00Z", "EUR").await;
    assert_eq!(
        (b["pending"].as_str(), b["available"].as_str()),
        (Some("60.00"), Some("0.00"))
    );
    assert_eq!(
        m.payout("aircall", "2026-03-31T00:00:00Z").await["items"],
        json!([])
    );
    m.ev(pay(
        "aircall",
        "p2",
        "c1",
        "E-2",
        "2026-04-05T00:00:00Z",
        "EUR",
        json!([{"kind": "subscription", "amount": "100.00"}]),
    ))
    .await;
    let b = m.balance(&ac, "2026-04-05T00:00:00Z", "EUR").await;
    assert_eq!(
        (b["pending"].as_str(), b["available"].as_str()),
        (Some("0.00"), Some("110.00"))
    );
    m.ev(pay(
        "aircall",
        "p3",
        "c1",
        "E-3",
        "2026-05-05T00:00:00Z",
        "EUR",
        json!([{"kind": "subscription", "amount": "100.00"}]),
    ))
    .await;
    m.ev(signup(
        "aircall",
        "s3",
        "c3",
        "2026-03-04T00:00:00Z",
        json!({"click_id": click_id_of(&c3)}),
    ))
    .await;
    m.ev(pay(
        "aircall",
        "p4",
        "c3",
        "U-1",
        "2026-03-06T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "300.00"}]),
    ))
    .await;
    m.ev(pay(
        "aircall",
        "p5",
        "c3",
        "U-2",
        "2026-04-06T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "300.00"}]),
    ))
    .await;
    let run = m.payout("aircall", "2026-05-31T00:00:00Z").await;
    assert_eq!(
        run["items"],
        json!([
            {"partner_id": ac, "amount": "110.00", "currency": "EUR", "method": "cash"},
            {"partner_id": ac, "amount": "300.00", "currency": "USD", "method": "cash"},
        ])
    );
}

#[tokio::test]
async fn ringostat_tiers_on_total_payments_accrue_on_the_first_in_the_partners_currency() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let r = api(
        s.addr(),
        "POST",
        "/api/v1/partners",
        Some(json!({
        "program": "ringostat", "name": "Kyiv Agency", "email": "hello@agency.example",
        "website": "https://agency.example", "currency": "UAH"})),
    )
    .await;
    let rs = r.json()["id"].as_str().unwrap().to_string();
    s.link(&rs, "https://ringostat.com/", Some("rs-1")).await;
    let c1 = click(s.addr(), "/r/rs-1", None).await;
    for (at, eur, uah) in [
        ("2026-03-01T00:00:00Z", "0.92", "41.00"),
        ("2026-03-15T00:00:00Z", "0.90", "41.50"),
    ] {
        let r = m
            .post(
                "/api/v1/fx-rates",
                json!({"at": at, "base": "USD", "rates": {"EUR": eur, "UAH": uah}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    m.ev(signup(
        "ringostat",
        "s1",
        "c1",
        "2026-03-02T00:00:00Z",
        json!({"click_id": click_id_of(&c1)}),
    ))
    .await;
    // "No bonuses are accrued for payment of numbers and communication
    // services" but the tier "depends on the total amount of payments".
    m.ev(pay(
        "ringostat",
        "p1",
        "c1",
        "R-1",
        "2026-03-05T00:00:00Z",
        "EUR",
        json!([
            {"kind": "subscription", "amount": "500.00"}, {"kind": "usage", "amount": "300.00"}
        ]),
    ))
    .await;
    // 800 EUR = 869.57 USD: 10%. 50.00 EUR → 50 / 0.92 × 41.00 = 2228.26 UAH.
    m.ev(pay(
        "ringostat",
        "p2",
        "c1",
        "R-2",
        "2026-03-20T00:00:00Z",
        "EUR",
        json!([
            {"kind": "subscription", "amount": "400.00"}
        ]),
    ))
    .await;
    // +400 EUR = 444.44 USD: 1,314.01 USD this month, 15%: 60.00 EUR at the
    // rates of the 15th = 2766.67 UAH, and March's first line topped up by 5%
    // of 500 EUR = 25.00 EUR at its own rates = 1114.13 UAH.
    let march = m
        .get(&format!("/api/v1/partners/{rs}/statement?month=2026-03"))
        .await;
    let lines = march["lines"].as_array().unwrap();
    let amounts: Vec<&str> = lines
        .iter()
        .map(|l| l["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["2228.26", "2766.67", "1114.13"]);
    assert_eq!(lines[0]["currency"], "UAH");
    assert_eq!(lines[0]["fx"]["from_rate"], "0.92");
    assert_eq!(lines[1]["fx"]["to_rate"], "41.50");
    assert_eq!(march["monthly_reward"]["UAH"], "6109.06");
    // 6109.06 UAH ≈ 147 USD: below the $200 benefit tier.
    assert_eq!(march["benefit_tier"], Value::Null);

    // "The commission is accrued on the first of each month for payments made
    // in the previous month."
    let b = m.balance(&rs, "2026-03-31T23:59:59Z", "UAH").await;
    assert_eq!(
        (b["pending"].as_str(), b["available"].as_str()),
        (Some("6109.06"), Some("0.00"))
    );
    // "Commission withdrawal is possible [with] more than $100 on the agency
    // balance": 100 USD = 4150 UAH at the rates in force.
    let april = m.payout("ringostat", "2026-04-01T00:00:00Z").await;
    assert_eq!(
        april["items"],
        json!([{"partner_id": rs, "amount": "6109.06", "currency": "UAH", "method": "cash"}])
    );
    // "If the amount is less ... the funds can only be used within the service."
    m.ev(pay(
        "ringostat",
        "p3",
        "c1",
        "R-3",
        "2026-04-10T00:00:00Z",
        "EUR",
        json!([{"kind": "subscription", "amount": "300.00"}]),
    ))
    .await;
    let may = m.payout("ringostat", "2026-05-01T00:00:00Z").await;
    // 10% of 300 EUR = 30.00 EUR = 1383.33 UAH, below 4150 UAH: credit.
    assert_eq!(
        may["items"],
        json!([{"partner_id": rs, "amount": "1383.33", "currency": "UAH", "method": "credit"}])
    );
    let b = m.balance(&rs, "2026-05-01T00:00:00Z", "UAH").await;
    assert_eq!(
        (
            b["credited"].as_str(),
            b["paid"].as_str(),
            b["available"].as_str()
        ),
        (Some("1383.33"), Some("6109.06"), Some("0.00"))
    );

    // "with a license reward of $200 per month": a big month reaches it.
    m.ev(pay(
        "ringostat",
        "p4",
        "c1",
        "R-4",
        "2026-05-10T00:00:00Z",
        "USD",
        json!([{"kind": "subscription", "amount": "2000.00"}]),
    ))
    .await;
    let st = m
        .get(&format!("/api/v1/partners/{rs}/statement?month=2026-05"))
        .await;
    // 2000 USD: 15% = 300.00 USD = 12450.00 UAH ≥ $200.
    assert_eq!(st["monthly_reward"]["UAH"], "12450.00");
    assert_eq!(
        st["benefit_tier"],
        "joint case study and recommendation to Ringostat clients"
    );
}
