//! KrispCall's terms (shared/seeds/000_c469e9dc942a30cb.txt), end to end over
//! HTTP: clicks → signups → months of payments, an upgrade, extra seats, a
//! refund after payout, payouts on the 13th, coupons, and inactivity.

mod common;

use common::*;
use serde_json::json;

fn payment(
    id: &str,
    customer: &str,
    invoice: &str,
    at: &str,
    lines: serde_json::Value,
) -> serde_json::Value {
    json!({"id": id, "type": "payment", "program": "krispcall", "occurred_at": at,
           "customer_id": customer, "invoice_id": invoice, "currency": "USD", "lines": lines})
}

fn signup(
    id: &str,
    customer: &str,
    at: &str,
    email: &str,
    attribution: serde_json::Value,
) -> serde_json::Value {
    json!({"id": id, "type": "signup", "program": "krispcall", "occurred_at": at,
           "customer": {"id": customer, "email": email}, "attribution": attribution})
}

#[tokio::test]
async fn krispcall_lifetime_on_the_initial_plan_paid_on_the_13th() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let ann = s.partner("krispcall", "ann@blog.example").await;
    s.link(&ann, "https://krispcall.com/pricing", Some("ann-k"))
        .await;
    // The click happens at the fake clock's 2026-03-01T12:00Z.
    let token = click(s.addr(), "/r/ann-k", None)
        .await
        .attribution_cookie()
        .unwrap();

    // "Partners will receive a commission payment of 30% for a lifetime on
    // each new customer referred through their unique referral link."
    m.ev(signup(
        "s1",
        "c1",
        "2026-03-02T09:00:00Z",
        "bob@acme.example",
        json!({"token": token}),
    ))
    .await;
    assert_eq!(m.referred_to("c1").await.as_deref(), Some(ann.as_str()));
    m.ev(payment("p1", "c1", "INV-1", "2026-03-02T09:05:00Z", json!([
        {"kind": "subscription", "amount": "15.00", "plan": "standard", "unit_price": "15.00", "quantity": 1},
        {"kind": "usage", "amount": "7.40"}
    ]))).await;
    // "The commission percentage will solely be calculated based on the
    // initial subscription plan ... regardless of any future upgrades" and
    // "they can earn extra earnings for every additional member".
    m.ev(json!({"id": "u1", "type": "plan_change", "program": "krispcall", "occurred_at": "2026-03-20T00:00:00Z",
                "customer_id": "c1", "plan": "enterprise", "unit_price": "40.00"})).await;
    m.ev(payment("p2", "c1", "INV-2", "2026-04-02T09:05:00Z", json!([
        {"kind": "subscription", "amount": "80.00", "plan": "enterprise", "unit_price": "40.00", "quantity": 2}
    ]))).await;
    let st = m
        .get(&format!("/api/v1/partners/{ann}/statement?month=2026-04"))
        .await;
    let line = &st["lines"][0];
    assert_eq!(line["amount"], "9.00");
    assert!(
        line["explanation"]
            .as_str()
            .unwrap()
            .contains("30% of initial plan standard 15.00 × 2 seats"),
        "{line}"
    );

    // "any commissions earned in February will be available on March 13th."
    let b = m.balance(&ann, "2026-04-12T23:59:59Z", "USD").await;
    assert_eq!(
        (b["pending"].as_str(), b["available"].as_str()),
        (Some("13.50"), Some("0.00"))
    );
    let b = m.balance(&ann, "2026-04-13T00:00:00Z", "USD").await;
    assert_eq!(
        (b["pending"].as_str(), b["available"].as_str()),
        (Some("9.00"), Some("4.50"))
    );

    // "the minimum payout threshold is $5. Commission earnings will
    // accumulate in the partner's account until this threshold is reached."
    let april = m.payout("krispcall", "2026-04-13T00:00:00Z").await;
    assert_eq!(april["items"], json!([]));
    let may = m.payout("krispcall", "2026-05-13T00:00:00Z").await;
    assert_eq!(
        may["items"],
        json!([{"partner_id": ann, "amount": "13.50", "currency": "USD", "method": "cash"}])
    );
    // Idempotent per program and date.
    let again = m.payout("krispcall", "2026-05-13T00:00:00Z").await;
    assert_eq!(again, may);
    let csv = api(
        s.addr(),
        "GET",
        &format!("/api/v1/payouts/{}/csv", may["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(String::from_utf8(csv.body).unwrap().contains(&format!(
        "{ann},\"Test Partner\",\"ann@blog.example\",13.50,USD,cash"
    )));
    let confirmed = api(
        s.addr(),
        "POST",
        &format!("/api/v1/payouts/{}/confirm", may["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(confirmed.json()["status"], "confirmed");

    // "Refunded accounts will not be eligible for partner commissions": the
    // 9.00 already paid is withheld from future payouts.
    m.ev(json!({"id": "r1", "type": "refund", "program": "krispcall", "occurred_at": "2026-05-20T00:00:00Z",
                "customer_id": "c1", "invoice_id": "INV-2", "amount": "80.00"})).await;
    let b = m.balance(&ann, "2026-05-21T00:00:00Z", "USD").await;
    assert_eq!(b["available"], "-9.00");
    assert_eq!(b["clawed_back"], "9.00");
    m.ev(payment("p3", "c1", "INV-3", "2026-06-02T09:05:00Z", json!([
        {"kind": "subscription", "amount": "80.00", "plan": "enterprise", "unit_price": "40.00", "quantity": 2}
    ]))).await;
    let july = m.payout("krispcall", "2026-07-13T00:00:00Z").await;
    assert_eq!(
        july["items"],
        json!([]),
        "the clawback absorbed July's 9.00"
    );
    let b = m.balance(&ann, "2026-07-13T00:00:00Z", "USD").await;
    for (k, v) in [
        ("lifetime", "22.50"),
        ("clawed_back", "9.00"),
        ("paid", "13.50"),
        ("available", "0.00"),
        ("pending", "0.00"),
    ] {
        assert_eq!(b[k], v, "{k} in {b}");
    }
    let may_st = m
        .get(&format!("/api/v1/partners/{ann}/statement?month=2026-05"))
        .await;
    // April's 4.50 was carried (below $5); May's 9.00 was still pending.
    assert_eq!(may_st["opening"]["USD"]["available"], "4.50");
    assert_eq!(may_st["opening"]["USD"]["pending"], "9.00");
    let kinds: Vec<&str> = may_st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["payout", "clawback"]);
    assert_eq!(may_st["closing"]["USD"]["available"], "-9.00");
}

#[tokio::test]
async fn krispcall_refuses_what_its_terms_refuse() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let ann = s.partner("krispcall", "ann@blog.example").await;
    let joe = s.partner("krispcall", "joe@deals.example").await;
    s.link(&ann, "https://krispcall.com/", Some("ann-k")).await;
    s.link(&joe, "https://krispcall.com/", Some("joe-k")).await;
    let ann_click = click(s.addr(), "/r/ann-k", None).await;
    let ann_token = ann_click.attribution_cookie().unwrap();
    // Every other customer comes through a click of their own (one click
    // bringing several customers is `attribution_reused`, tested below).
    let fresh = || async { click(s.addr(), "/r/ann-k", None).await };
    let joe_token = click(s.addr(), "/r/joe-k", None)
        .await
        .attribution_cookie()
        .unwrap();

    m.ev(signup(
        "s1",
        "c1",
        "2026-03-02T00:00:00Z",
        "bob@acme.example",
        json!({"token": ann_token}),
    ))
    .await;
    // "A referral made to an already existing Qualified Referral referred by a
    // third party will be considered a 'Current Customer Referral'."
    m.ev(signup(
        "s2",
        "c1",
        "2026-03-03T00:00:00Z",
        "bob@acme.example",
        json!({"token": joe_token}),
    ))
    .await;
    assert_eq!(m.rejection("c1").await, "current_customer_referral");
    assert_eq!(m.referred_to("c1").await.as_deref(), Some(ann.as_str()));
    // "Partners cannot refer themselves ... or use their partner referral links
    // for their purchases."
    m.ev(signup(
        "s3",
        "c2",
        "2026-03-02T00:00:00Z",
        "ann@blog.example",
        json!({"token": fresh().await.attribution_cookie().unwrap()}),
    ))
    .await;
    assert_eq!(m.rejection("c2").await, "self_referral");
    m.ev(json!({"id": "s4", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c3", "email": "it@blog.example", "company_domain": "blog.example"},
                "attribution": {"click_id": click_id_of(&fresh().await)}})).await;
    assert_eq!(m.rejection("c3").await, "self_referral");
    // "The tracking cookie's duration is set to 90 days."
    m.ev(signup(
        "s5",
        "c4",
        "2026-05-30T11:59:59Z",
        "x@late.example",
        json!({"token": fresh().await.attribution_cookie().unwrap()}),
    ))
    .await;
    assert_eq!(
        m.referred_to("c4").await.as_deref(),
        Some(ann.as_str()),
        "90 days less a second is inside the window"
    );
    m.ev(signup(
        "s6",
        "c5",
        "2026-05-30T12:00:01Z",
        "y@late.example",
        json!({"token": fresh().await.attribution_cookie().unwrap()}),
    ))
    .await;
    assert_eq!(m.rejection("c5").await, "window_expired");
    // "Not be an existing KrispCall customer" / a tampered token.
    m.ev(json!({"id": "s7", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c6", "existing": true}, "attribution": {"token": fresh().await.attribution_cookie().unwrap()}})).await;
    assert_eq!(m.rejection("c6").await, "existing_customer");
    let mut forged = fresh().await.attribution_cookie().unwrap().into_bytes();
    forged[12] ^= 1;
    m.ev(signup(
        "s8",
        "c7",
        "2026-03-02T00:00:00Z",
        "z@acme.example",
        json!({"token": String::from_utf8(forged).unwrap()}),
    ))
    .await;
    assert_eq!(m.rejection("c7").await, "invalid_attribution");
    m.ev(signup(
        "s9",
        "c8",
        "2026-03-02T00:00:00Z",
        "z@acme.example",
        json!({}),
    ))
    .await;
    assert_eq!(m.rejection("c8").await, "no_attribution");

    // Coupons: "single-use ... can only be redeemed once", "expiration dates",
    // "Non-Transferable ... intended for use by the assigned partner only",
    // "Usage Tracking".
    let r = m
        .post(
            "/api/v1/coupons",
            json!({"code": "ANN-SPRING", "partner_id": ann, "single_use": true,
                                               "expires_at": "2026-04-30T23:59:59Z"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    m.post(
        "/api/v1/coupons",
        json!({"code": "JOE-10", "partner_id": joe}),
    )
    .await;
    m.ev(signup(
        "c-1",
        "k1",
        "2026-04-01T00:00:00Z",
        "a@one.example",
        json!({"coupon": "ANN-SPRING"}),
    ))
    .await;
    assert_eq!(m.referred_to("k1").await.as_deref(), Some(ann.as_str()));
    m.ev(signup(
        "c-2",
        "k2",
        "2026-04-02T00:00:00Z",
        "b@two.example",
        json!({"coupon": "ANN-SPRING"}),
    ))
    .await;
    assert_eq!(m.rejection("k2").await, "coupon_already_redeemed");
    m.ev(signup(
        "c-3",
        "k3",
        "2026-04-02T00:00:00Z",
        "c@three.example",
        json!({"coupon": "NOPE"}),
    ))
    .await;
    assert_eq!(m.rejection("k3").await, "coupon_unknown");
    m.ev(signup(
        "c-4",
        "k4",
        "2026-04-02T00:00:00Z",
        "d@four.example",
        json!({"coupon": "JOE-10", "token": fresh().await.attribution_cookie().unwrap()}),
    ))
    .await;
    assert_eq!(m.rejection("k4").await, "coupon_other_partner");
    let r = m
        .post(
            "/api/v1/coupons",
            json!({"code": "ANN-LATE", "partner_id": ann, "expires_at": "2026-03-31T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 201);
    m.ev(signup(
        "c-5",
        "k5",
        "2026-04-02T00:00:00Z",
        "e@five.example",
        json!({"coupon": "ANN-LATE"}),
    ))
    .await;
    assert_eq!(m.rejection("k5").await, "coupon_expired");
    let coupon = m.get("/api/v1/coupons/ANN-SPRING").await;
    assert_eq!(coupon["redemptions"], 1);

    let refs = m.get(&format!("/api/v1/referrals?partner={ann}")).await;
    let customers: Vec<&str> = refs["referrals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(customers, ["c1", "c4", "k1"]);
    // One click, several customers: only the first earns.
    m.ev(signup(
        "r1",
        "k9",
        "2026-03-03T00:00:00Z",
        "r@nine.example",
        json!({"token": ann_token}),
    ))
    .await;
    assert_eq!(m.rejection("k9").await, "attribution_reused");
}

#[tokio::test]
async fn krispcall_forfeits_small_balances_after_six_inactive_months() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let quiet = s.partner("krispcall", "quiet@site.example").await;
    s.link(&quiet, "https://krispcall.com/", Some("quiet-k"))
        .await;
    let token = click(s.addr(), "/r/quiet-k", None)
        .await
        .attribution_cookie()
        .unwrap();
    m.ev(signup(
        "s1",
        "c1",
        "2026-03-02T00:00:00Z",
        "bob@acme.example",
        json!({"token": token}),
    ))
    .await;
    m.ev(payment("p1", "c1", "INV-1", "2026-03-02T00:00:00Z", json!([
        {"kind": "subscription", "amount": "5.00", "plan": "mini", "unit_price": "5.00", "quantity": 1}
    ]))).await;
    // "Partner's account remains inactive for a continuous period of 6 months
    // and the account balance is less than $5 ... any commissions accrued ...
    // will be lost"
    let august = m.payout("krispcall", "2026-08-13T00:00:00Z").await;
    assert_eq!(august["items"], json!([]));
    assert_eq!(august.get("deactivated"), None, "5 months is not yet 6");
    let sept = m.payout("krispcall", "2026-09-13T00:00:00Z").await;
    assert_eq!(sept["deactivated"], json!([quiet]));
    let b = m
        .get(&format!(
            "/api/v1/partners/{quiet}/balance?as_of=2026-09-13"
        ))
        .await;
    assert_eq!(b["standing"], "inactive");
    assert_eq!(b["balances"]["USD"]["forfeited"], "1.50");
    assert_eq!(b["balances"]["USD"]["available"], "0.00");
}
