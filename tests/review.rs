//! The review queue over HTTP: soft signals hold a new referral's
//! commissions in their own balance bucket; an analyst's approval puts them
//! on the program's schedule, a rejection voids them with the reason.

mod common;

use common::*;
use refedge::commission::review::{ReviewFlag, ReviewPolicy};
use serde_json::{json, Value};

fn reviewing(flags: &[ReviewFlag]) -> impl FnOnce(&mut refedge::config::Config) + '_ {
    move |c| {
        c.programs.get_mut("krispcall").unwrap().review = ReviewPolicy {
            flags: flags.to_vec(),
            fast_signup_seconds: 60,
        };
    }
}

fn signup(id: &str, customer: &str, at: &str, ip: &str, attribution: Value) -> Value {
    json!({"id": id, "type": "signup", "program": "krispcall", "occurred_at": at,
           "customer": {"id": customer, "email": format!("{customer}@client.example"), "ip": ip},
           "attribution": attribution})
}

fn pay(id: &str, customer: &str, invoice: &str, at: &str, amount: &str) -> Value {
    json!({"id": id, "type": "payment", "program": "krispcall", "occurred_at": at,
           "customer_id": customer, "invoice_id": invoice, "currency": "USD",
           "lines": [{"kind": "subscription", "amount": amount, "plan": "pro",
                      "unit_price": amount, "quantity": 1}]})
}

async fn queue(m: &Money<'_>, status: &str) -> Vec<Value> {
    m.get(&format!("/api/v1/reviews?status={status}")).await["reviews"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_fast_signup_is_held_until_an_analyst_approves_it() {
    let s = TestServer::start_with(reviewing(&[ReviewFlag::FastSignup])).await;
    let mut m = Money::new(&s);
    let p = s.partner("krispcall", "ann@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("ann")).await;
    let c = click(s.addr(), "/r/ann", None).await;
    // The click is at 12:00:00 (the test clock); 30 s later is under the
    // program's 60 s but over the 5 s that refuses a signup as scripted.
    m.ev(signup(
        "s1",
        "c1",
        "2026-03-01T12:00:30Z",
        "203.0.113.7",
        json!({"click_id": click_id_of(&c)}),
    ))
    .await;
    m.ev(pay("p1", "c1", "INV-1", "2026-03-05T00:00:00Z", "100.00"))
        .await;

    let b = m.balance(&p, "2026-04-20T00:00:00Z", "USD").await;
    assert_eq!(
        (&b["held"], &b["pending"], &b["available"], &b["lifetime"]),
        (
            &json!("30.00"),
            &json!("0.00"),
            &json!("0.00"),
            &json!("30.00")
        )
    );
    let held = queue(&m, "held").await;
    assert_eq!(held.len(), 1);
    let r = &held[0];
    assert_eq!(
        (&r["customer_id"], &r["partner_id"]),
        (&json!("c1"), &json!(p))
    );
    assert_eq!(r["signals"][0]["flag"], "fast_signup");
    assert!(r["signals"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("30s after the click"));
    assert_eq!(r["held"]["USD"], "30.00");
    let referral = m.get("/api/v1/referrals").await;
    assert_eq!(referral["referrals"][0]["review"], "held");

    // Nothing held is paid out.
    let batch = m.payout("krispcall", "2026-04-13T00:00:00Z").await;
    assert!(batch["items"].as_array().unwrap().is_empty(), "{batch}");

    // The analyst approves: the commission follows the program's schedule
    // (March earnings payable on April 13th, already passed).
    let key = api_key(s.addr(), "fraud", None).await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/api/v1/reviews/{id}");
    let approve = json!({"decision": "approve", "reason": "called the customer: real office"});
    let ok = api_as(s.addr(), &key, "POST", &path, Some(&approve)).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let v = ok.json();
    assert_eq!(v["status"], "approved");
    assert_eq!(v["reason"], "called the customer: real office");
    assert!(v["actor"].as_str().unwrap().starts_with("key "));
    assert_eq!(v["held"], json!({}));
    let b = m.balance(&p, "2026-04-20T00:00:00Z", "USD").await;
    assert_eq!(
        (&b["held"], &b["available"]),
        (&json!("0.00"), &json!("30.00"))
    );
    let batch = m.payout("krispcall", "2026-05-13T00:00:00Z").await;
    assert_eq!(batch["items"][0]["amount"], "30.00");
    let statement = m
        .get(&format!("/api/v1/partners/{p}/statement?month=2026-03"))
        .await;
    assert!(
        statement.to_string().contains("approved in review by key "),
        "{statement}"
    );
    assert_eq!(statement["lines"][0]["customer_id"], "c1");
    // The partner reads its own statement with the customer masked.
    let own = api_key(s.addr(), "partner", Some(&p)).await;
    let mine = api_as(
        s.addr(),
        &own,
        "GET",
        &format!("/api/v1/partners/{p}/statement?month=2026-03"),
        None,
    )
    .await
    .json();
    let lines = mine["lines"].as_array().unwrap();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["customer_id"] == "c***"), "{mine}");

    // Decided once: the same decision again is answered again, another is
    // refused; unknown reviews are 404.
    let again = api_as(s.addr(), &key, "POST", &path, Some(&approve)).await;
    assert_eq!(again.status, 200);
    let reject = json!({"decision": "reject", "reason": "changed my mind"});
    let no = api_as(s.addr(), &key, "POST", &path, Some(&reject)).await;
    assert_eq!(no.status, 409, "{}", String::from_utf8_lossy(&no.body));
    assert!(String::from_utf8_lossy(&no.body).contains("already approved"));
    let none = api_as(
        s.addr(),
        &key,
        "POST",
        "/api/v1/reviews/rv_0123456789abcdef",
        Some(&approve),
    )
    .await;
    assert_eq!(none.status, 404);
    assert!(queue(&m, "held").await.is_empty());
    assert_eq!(queue(&m, "approved").await.len(), 1);
}

#[tokio::test]
async fn a_rejected_review_voids_what_was_held_with_the_analysts_reason() {
    let s = TestServer::start_with(reviewing(&[ReviewFlag::SharedIp])).await;
    let mut m = Money::new(&s);
    let p = s.partner("krispcall", "bob@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("bob")).await;
    let c1 = click(s.addr(), "/r/bob", None).await;
    let c2 = click(s.addr(), "/r/bob", None).await;
    let office = "198.51.100.9";
    m.ev(signup(
        "s1",
        "c1",
        "2026-03-01T13:00:00Z",
        office,
        json!({"click_id": click_id_of(&c1)}),
    ))
    .await;
    m.ev(signup(
        "s2",
        "c2",
        "2026-03-03T13:00:00Z",
        office,
        json!({"click_id": click_id_of(&c2)}),
    ))
    .await;
    // The first signup from the address is referred as usual; the second
    // is held, naming the first.
    let held = queue(&m, "held").await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["customer_id"], "c2");
    assert_eq!(held[0]["signals"][0]["flag"], "shared_ip");
    assert!(held[0]["signals"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("same address as customer c1, 2 days earlier"));

    m.ev(pay("p1", "c1", "INV-1", "2026-03-05T00:00:00Z", "40.00"))
        .await;
    m.ev(pay("p2", "c2", "INV-2", "2026-03-05T00:00:00Z", "50.00"))
        .await;
    // A partial refund while held comes out of the held bucket.
    m.ev(json!({"id": "r1", "type": "refund", "program": "krispcall",
                "occurred_at": "2026-03-06T00:00:00Z", "customer_id": "c2",
                "invoice_id": "INV-2", "amount": "20.00"}))
        .await;
    let b = m.balance(&p, "2026-03-07T00:00:00Z", "USD").await;
    assert_eq!(
        (&b["held"], &b["pending"], &b["clawed_back"]),
        (&json!("9.00"), &json!("12.00"), &json!("6.00"))
    );

    let key = api_key(s.addr(), "fraud", None).await;
    let path = format!("/api/v1/reviews/{}", held[0]["id"].as_str().unwrap());
    // A decision needs a reason, and only these two words.
    for (body, field) in [
        (json!({"decision": "reject", "reason": " "}), "reason"),
        (json!({"decision": "ban", "reason": "x"}), "decision"),
        (
            json!({"decision": "reject", "reason": "x", "extra": 1}),
            "extra",
        ),
    ] {
        let r = api_as(s.addr(), &key, "POST", &path, Some(&body)).await;
        assert_eq!(r.status, 422, "{body}");
        assert!(String::from_utf8_lossy(&r.body).contains(field), "{body}");
    }
    let reason = "same office as c1: the reseller's own staff";
    let r = api_as(
        s.addr(),
        &key,
        "POST",
        &path,
        Some(&json!({"decision": "reject", "reason": reason, "actor": "dana"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "rejected");

    // Later money of the rejected customer earns and takes nothing.
    m.ev(pay("p3", "c2", "INV-3", "2026-04-05T00:00:00Z", "50.00"))
        .await;
    m.ev(
        json!({"id": "cb1", "type": "chargeback", "program": "krispcall",
                "occurred_at": "2026-04-07T00:00:00Z", "customer_id": "c2",
                "invoice_id": "INV-2", "amount": "30.00"}),
    )
    .await;
    let b = m.balance(&p, "2026-04-20T00:00:00Z", "USD").await;
    assert_eq!(
        (
            &b["held"],
            &b["available"],
            &b["clawed_back"],
            &b["lifetime"]
        ),
        (
            &json!("0.00"),
            &json!("12.00"),
            &json!("15.00"),
            &json!("27.00")
        )
    );
    let statement = m
        .get(&format!("/api/v1/partners/{p}/statement?month=2026-03"))
        .await
        .to_string();
    assert!(
        statement.contains(&format!("rejected in review by dana: {reason}")),
        "{statement}"
    );
    let refs = m.get("/api/v1/referrals").await;
    let rejection = refs["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["customer_id"] == "c2")
        .cloned()
        .unwrap();
    assert_eq!(rejection["reason"], "rejected_in_review");
    // The period's commission, earned and reversed (refund and rejection).
    let money = m
        .get("/api/v1/stats/commissions?from=2026-03-01&to=2026-04-30")
        .await;
    assert_eq!(
        money["currencies"]["USD"],
        json!({"earned": "27.00", "reversed": "15.00"})
    );
    // The newest of each, with the counts; or from a time on.
    let newest = m.get("/api/v1/referrals?limit=1").await;
    assert_eq!(newest["counts"], json!({"referrals": 2, "rejections": 1}));
    assert_eq!(newest["referrals"].as_array().unwrap().len(), 1);
    assert_eq!(newest["referrals"][0]["customer_id"], "c2");
    let later = m
        .get("/api/v1/referrals?since=2026-03-02T00:00:00Z&limit=0")
        .await;
    assert_eq!(later["counts"], json!({"referrals": 1, "rejections": 0}));
    assert_eq!(later["referrals"], json!([]));
    assert!(rejection["detail"].as_str().unwrap().contains(reason));
    // A finance key sees the queue but may not decide.
    let finance = api_key(s.addr(), "finance", None).await;
    let seen = api_as(
        s.addr(),
        &finance,
        "GET",
        "/api/v1/reviews?status=all",
        None,
    )
    .await;
    assert_eq!(seen.json()["total"], 1);
    let denied = api_as(
        s.addr(),
        &finance,
        "POST",
        &path,
        Some(&json!({"decision": "approve", "reason": "x"})),
    )
    .await;
    assert_eq!(denied.status, 403);
}

#[tokio::test]
async fn paid_search_clicks_attribute_for_review_only_where_the_program_reviews_them() {
    let s = TestServer::start_with(reviewing(&[ReviewFlag::PaidSearch])).await;
    let mut m = Money::new(&s);
    let p = s.partner("krispcall", "cy@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("cyk")).await;
    let q = s.partner("aloware", "cy@blog.example").await;
    s.link(&q, "https://aloware.com/", Some("cy-al")).await;

    // Aloware does not review paid search: the click is flagged and sets
    // no cookie, as before.
    let flagged = click(s.addr(), "/r/cy-al?gclid=Cj0KCQiA", None).await;
    assert_eq!(flagged.status, 302);
    assert!(flagged.attribution_cookie().is_none());
    // KrispCall does: the click attributes and its referral is held.
    let r = click(s.addr(), "/r/cyk?gclid=Cj0KCQiA", None).await;
    let token = r.attribution_cookie().expect("attributed for review");
    m.ev(signup(
        "s1",
        "c1",
        "2026-03-01T12:10:00Z",
        "203.0.113.50",
        json!({"token": token}),
    ))
    .await;
    let held = queue(&m, "held").await;
    assert_eq!(held.len(), 1, "{}", m.get("/api/v1/referrals").await);
    assert_eq!(held[0]["signals"][0]["flag"], "paid_search");
    // A click with another flag besides is still refused.
    let bot = send(
        s.addr(),
        "GET",
        "/r/cyk?gclid=Cj0KCQiA",
        &[
            ("x-forwarded-for", "100.99.1.1"),
            ("user-agent", "curl/8.0"),
        ],
        None,
    )
    .await;
    assert!(bot.attribution_cookie().is_none());
    m.ev(signup(
        "s2",
        "c2",
        "2026-03-01T12:10:00Z",
        "203.0.113.51",
        json!({"click_id": click_id_of(&bot)}),
    ))
    .await;
    assert_eq!(m.rejection("c2").await, "flagged_click");
}
