//! Stripe in, over HTTP: deliveries in the shapes of Stripe's API reference
//! (tests/fixtures/stripe), signed as Stripe signs them, posted to
//! `/integrations/stripe/{program}`. A KrispCall month sent through Stripe
//! (both API versions) must leave the same ledger as the same month sent
//! as native events.

mod common;

use common::stripe::*;
use common::*;
use refedge::clock::Clock;
use serde_json::{json, Value};

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.programs.get_mut("krispcall").unwrap().stripe = Some(refedge::program::Stripe {
            webhook_secret: SECRET.into(),
        });
    })
    .await
}

/// Sends Stripe deliveries of one API version to one server.
struct Stripe<'a> {
    s: &'a TestServer,
    version: &'static str,
    sent: u32,
    /// Highest event seq the deliveries were given.
    last: u64,
}

impl<'a> Stripe<'a> {
    fn new(s: &'a TestServer, version: &'static str) -> Self {
        Self {
            s,
            version,
            sent: 0,
            last: 0,
        }
    }

    /// The event envelope Stripe sends, with a new event id.
    fn event(&mut self, kind: &str, at: &str, object: Value, previous: Option<Value>) -> Value {
        self.sent += 1;
        let id = format!("evt_1PB{}{:04}", self.version.len(), self.sent);
        envelope(&id, self.version, kind, unix(at), object, previous)
    }

    /// Posts an event body signed with `secret` at the server's time.
    async fn post_signed(&self, body: &str, signature: Option<String>) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        let sig = signature.unwrap_or_else(|| {
            refedge::signature::sign(SECRET, self.s.clock.now_s(), body.as_bytes())
        });
        headers.push(("stripe-signature", sig.as_str()));
        send(
            self.s.addr(),
            "POST",
            "/integrations/stripe/krispcall",
            &headers,
            Some(body.as_bytes()),
        )
        .await
    }

    /// Delivers an event; it must be answered 200.
    async fn deliver(
        &mut self,
        kind: &str,
        at: &str,
        object: Value,
        previous: Option<Value>,
    ) -> Value {
        let e = self.event(kind, at, object, previous);
        let r = self.post_signed(&e.to_string(), None).await;
        assert_eq!(
            r.status,
            200,
            "{kind}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        for e in v["events"].as_array().into_iter().flatten() {
            self.last = self.last.max(e["seq"].as_u64().unwrap());
        }
        v
    }
}

/// Delivers an invoice's payment: `invoice.paid` and, from basil on, the
/// `invoice_payment.paid` that names its payment intent.
async fn pay(st: &mut Stripe<'_>, invoice: Value, n: u32, at: &str) {
    st.deliver("invoice.paid", at, invoice.clone(), None).await;
    if st.version == BASIL {
        let mut p = fixture(BASIL, "invoice_payment");
        set(&mut p, "/invoice", invoice["id"].clone());
        set(&mut p, "/payment/payment_intent", json!(format!("pi_{n}")));
        set(&mut p, "/status_transitions/paid_at", json!(unix(at)));
        st.deliver("invoice_payment.paid", at, p, None).await;
    }
}

fn charge(version: &str, n: u32, amount: i64, refunded: i64) -> Value {
    let mut c = fixture(version, "charge");
    set(&mut c, "/id", json!(format!("ch_{n}")));
    set(&mut c, "/payment_intent", json!(format!("pi_{n}")));
    set(&mut c, "/amount", json!(amount));
    set(&mut c, "/amount_captured", json!(amount));
    set(&mut c, "/amount_refunded", json!(refunded));
    set(&mut c, "/refunded", json!(refunded == amount));
    if version == V2024 {
        set(&mut c, "/invoice", json!(format!("in_{n}")));
    }
    c
}

/// The KrispCall month through Stripe: checkout with a token (two seats),
/// the first invoice, an upgrade, the second invoice, two partial refunds,
/// a dispute of the first charge, the cancellation.
async fn month_through_stripe(s: &TestServer, version: &'static str, token: &str) -> u64 {
    let mut st = Stripe::new(s, version);
    let customer = fixture(version, "customer");
    // Made by Checkout, without refedge's metadata: nothing to do.
    let r = st
        .deliver("customer.created", "2026-03-02T12:00:00Z", customer, None)
        .await;
    assert!(
        r["ignored"].as_str().unwrap().contains("no refedge token"),
        "{r}"
    );
    let mut session = fixture(version, "checkout.session");
    set(&mut session, "/client_reference_id", json!(token));
    st.deliver(
        "checkout.session.completed",
        "2026-03-02T12:00:00Z",
        session,
        None,
    )
    .await;
    let first = invoice(
        version,
        "in_1",
        1,
        "price_standard",
        1500,
        2,
        "2026-03-02T12:00:05Z",
    );
    pay(&mut st, first, 1, "2026-03-02T12:00:05Z").await;
    let mut sub = fixture(version, "subscription");
    set(
        &mut sub,
        "/items/data/0/price/id",
        json!("price_enterprise"),
    );
    set(&mut sub, "/items/data/0/price/unit_amount", json!(4000));
    set(
        &mut sub,
        "/items/data/0/price/unit_amount_decimal",
        json!("4000"),
    );
    let before = fixture(version, "subscription")["items"].clone();
    st.deliver(
        "customer.subscription.updated",
        "2026-03-20T00:00:00Z",
        sub.clone(),
        Some(json!({"items": before})),
    )
    .await;
    let second = invoice(
        version,
        "in_2",
        2,
        "price_enterprise",
        4000,
        2,
        "2026-04-02T12:00:05Z",
    );
    pay(&mut st, second, 2, "2026-04-02T12:00:05Z").await;
    // Two partial refunds of the second charge: each delivery carries the
    // charge's refunded total and what it was before.
    st.deliver(
        "charge.refunded",
        "2026-04-05T00:00:00Z",
        charge(version, 2, 8000, 2000),
        Some(json!({"amount_refunded": 0, "refunded": false})),
    )
    .await;
    st.deliver(
        "charge.refunded",
        "2026-04-06T00:00:00Z",
        charge(version, 2, 8000, 3000),
        Some(json!({"amount_refunded": 2000})),
    )
    .await;
    let mut dispute = fixture(version, "dispute");
    set(&mut dispute, "/charge", json!("ch_1"));
    set(&mut dispute, "/payment_intent", json!("pi_1"));
    set(
        &mut dispute,
        "/created",
        json!(unix("2026-04-10T00:00:00Z")),
    );
    st.deliver(
        "charge.dispute.created",
        "2026-04-10T00:00:00Z",
        dispute,
        None,
    )
    .await;
    set(&mut sub, "/status", json!("canceled"));
    set(
        &mut sub,
        "/canceled_at",
        json!(unix("2026-04-20T00:00:00Z")),
    );
    set(&mut sub, "/ended_at", json!(unix("2026-04-20T00:00:00Z")));
    st.deliver(
        "customer.subscription.deleted",
        "2026-04-20T00:00:00Z",
        sub,
        None,
    )
    .await;
    st.last
}

/// The same month as native events.
async fn month_as_events(s: &TestServer, token: &str) -> u64 {
    let mut m = Money::new(s);
    let c = "cus_QK1SjT3bwN4mQy";
    let ev = |id: &str, kind: &str, at: &str, rest: Value| {
        let mut e = json!({"id": id, "type": kind, "program": "krispcall", "occurred_at": at});
        e.as_object_mut()
            .unwrap()
            .extend(rest.as_object().unwrap().clone());
        e
    };
    let line = |plan: &str, unit: &str, amount: &str| json!([{"kind": "subscription", "amount": amount, "plan": plan, "unit_price": unit, "quantity": 2}]);
    for e in [
        ev(
            "n1",
            "signup",
            "2026-03-02T12:00:00Z",
            json!({"customer": {"id": c, "email": "bob@acme.example"}, "attribution": {"token": token}}),
        ),
        ev(
            "n2",
            "payment",
            "2026-03-02T12:00:05Z",
            json!({"customer_id": c, "invoice_id": "in_1", "currency": "USD", "lines": line("price_standard", "15.00", "30.00")}),
        ),
        ev(
            "n3",
            "plan_change",
            "2026-03-20T00:00:00Z",
            json!({"customer_id": c, "plan": "price_enterprise", "unit_price": "40.00"}),
        ),
        ev(
            "n4",
            "payment",
            "2026-04-02T12:00:05Z",
            json!({"customer_id": c, "invoice_id": "in_2", "currency": "USD", "lines": line("price_enterprise", "40.00", "80.00")}),
        ),
        ev(
            "n5",
            "refund",
            "2026-04-05T00:00:00Z",
            json!({"customer_id": c, "invoice_id": "in_2", "amount": "20.00"}),
        ),
        ev(
            "n6",
            "refund",
            "2026-04-06T00:00:00Z",
            json!({"customer_id": c, "invoice_id": "in_2", "amount": "10.00"}),
        ),
        ev(
            "n7",
            "chargeback",
            "2026-04-10T00:00:00Z",
            json!({"customer_id": c, "invoice_id": "in_1", "amount": "30.00"}),
        ),
        ev(
            "n8",
            "cancellation",
            "2026-04-20T00:00:00Z",
            json!({"customer_id": c}),
        ),
    ] {
        m.ev(e).await;
    }
    m.last
}

/// A partner's ledger lines of March to May, without what names the
/// event or the partner (ids differ between the runs).
async fn ledger(s: &TestServer, partner: &str, seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for month in ["2026-03", "2026-04", "2026-05"] {
        let r = api(
            s.addr(),
            "GET",
            &format!("/api/v1/partners/{partner}/statement?month={month}&wait_for={seq}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        for mut l in r.json()["lines"].as_array().unwrap().clone() {
            for k in ["event_id", "partner_id", "seq"] {
                l.as_object_mut().unwrap().remove(k);
            }
            out.push(l);
        }
    }
    out
}

/// A server with a partner, its link and a visitor's token.
async fn partner_with_token(s: &TestServer) -> (String, String) {
    let ann = s.partner("krispcall", "ann@blog.example").await;
    s.link(&ann, "https://krispcall.com/pricing", Some("ann-k"))
        .await;
    let token = click(s.addr(), "/r/ann-k", None)
        .await
        .attribution_cookie()
        .unwrap();
    (ann, token)
}

#[tokio::test]
async fn a_krispcall_month_through_stripe_leaves_the_ledger_native_events_leave() {
    let native = server().await;
    let (ann, token) = partner_with_token(&native).await;
    let seq = month_as_events(&native, &token).await;
    let expected = ledger(&native, &ann, seq).await;
    // 30% of the initial plan × seats on each invoice; the partial refunds
    // and the dispute void their share.
    let lines: Vec<(&str, &str)> = expected
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            ("commission", "9.00"),
            ("commission", "9.00"),
            ("void", "-2.25"),
            ("void", "-1.13"),
            ("void", "-9.00")
        ]
    );
    for version in [V2024, BASIL] {
        let s = server().await;
        let (ann, token) = partner_with_token(&s).await;
        let seq = month_through_stripe(&s, version, &token).await;
        assert_eq!(ledger(&s, &ann, seq).await, expected, "{version}");
        assert_eq!(
            s.metric("refedge_stripe_deliveries_total{outcome=\"applied\",program=\"krispcall\"}")
                .await,
            if version == V2024 { 8.0 } else { 10.0 },
            "{version}"
        );
    }
}

#[tokio::test]
async fn refused_deliveries_change_nothing_and_say_why() {
    let s = server().await;
    let (ann, token) = partner_with_token(&s).await;
    let mut st = Stripe::new(&s, V2024);
    let mut customer = fixture(V2024, "customer");
    set(&mut customer, "/metadata", json!({"refedge_token": token}));
    let e = st.event("customer.created", "2026-03-02T12:00:00Z", customer, None);
    let body = e.to_string();
    let now = s.clock.now_s();
    let refused = |r: &Resp, field: &str| {
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["field"], field);
    };
    let wrong = refedge::signature::sign("whsec_someone_else_0123456789", now, body.as_bytes());
    refused(
        &st.post_signed(&body, Some(wrong)).await,
        "Stripe-Signature",
    );
    let stale = refedge::signature::sign(SECRET, now - 301, body.as_bytes());
    refused(
        &st.post_signed(&body, Some(stale)).await,
        "Stripe-Signature",
    );
    refused(
        &st.post_signed(&body, Some("t=1,v0=ab".into())).await,
        "Stripe-Signature",
    );
    let r = send(
        s.addr(),
        "POST",
        "/integrations/stripe/krispcall",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
    .await;
    refused(&r, "Stripe-Signature");
    let mut old = e.clone();
    old["api_version"] = json!("2023-10-16");
    let r = st.post_signed(&old.to_string(), None).await;
    refused(&r, "api_version");
    assert!(r.json()["error"].as_str().unwrap().contains("2023-10-16"));
    let metric = |outcome: &str| {
        format!("refedge_stripe_deliveries_total{{outcome=\"{outcome}\",program=\"krispcall\"}}")
    };
    assert_eq!(s.metric(&metric("bad_signature")).await, 4.0);
    assert_eq!(s.metric(&metric("unknown_version")).await, 1.0);
    let r = api(
        s.addr(),
        "GET",
        "/api/v1/customers/cus_QK1SjT3bwN4mQy",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "nothing was recorded");

    // While Stripe rolls the endpoint's secret it signs with both.
    let old_sig = refedge::signature::sign("whsec_previous_0123456789", now, body.as_bytes());
    let new_sig = refedge::signature::sign(SECRET, now, body.as_bytes());
    let both = format!("{old_sig},{}", &new_sig[new_sig.find("v1=").unwrap()..]);
    let r = st.post_signed(&body, Some(both)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["events"][0]["status"], "accepted");
    let seq = r.json()["events"][0]["seq"].as_u64().unwrap();
    let c = api(
        s.addr(),
        "GET",
        &format!("/api/v1/customers/cus_QK1SjT3bwN4mQy?wait_for={seq}"),
        None,
    )
    .await;
    assert_eq!(
        c.json()["programs"][0]["referral"]["partner_id"],
        ann.as_str()
    );
    // A repeat delivery is a duplicate, not a second signup.
    let r = st.post_signed(&body, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["events"][0]["status"], "duplicate");
    assert_eq!(s.metric(&metric("duplicate")).await, 1.0);
    // Event types refedge does not use are answered and counted.
    let e = st.event(
        "payment_intent.created",
        "2026-03-02T12:00:00Z",
        json!({"id": "pi_9"}),
        None,
    );
    let r = st.post_signed(&e.to_string(), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["ignored"]
        .as_str()
        .unwrap()
        .contains("payment_intent.created"));
    assert_eq!(s.metric(&metric("ignored")).await, 1.0);
    // A delivery without a field refedge needs names it.
    let mut i = invoice(
        V2024,
        "in_7",
        7,
        "price_standard",
        1500,
        1,
        "2026-03-03T00:00:00Z",
    );
    i.as_object_mut().unwrap().remove("customer");
    let e = st.event("invoice.paid", "2026-03-03T00:00:00Z", i, None);
    let r = st.post_signed(&e.to_string(), None).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "data.object.customer");
    // A program without a Stripe endpoint has none.
    let r = send(
        s.addr(),
        "POST",
        "/integrations/stripe/aloware",
        &[("stripe-signature", "t=1,v1=00")],
        Some(b"{}"),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_refund_before_stripe_links_its_payment_is_refused_until_retried() {
    let s = server().await;
    let (ann, token) = partner_with_token(&s).await;
    let mut st = Stripe::new(&s, BASIL);
    let mut customer = fixture(BASIL, "customer");
    set(&mut customer, "/metadata", json!({"refedge_token": token}));
    st.deliver("customer.created", "2026-03-02T12:00:00Z", customer, None)
        .await;
    let first = invoice(
        BASIL,
        "in_1",
        1,
        "price_standard",
        1500,
        2,
        "2026-03-02T12:00:05Z",
    );
    st.deliver("invoice.paid", "2026-03-02T12:00:05Z", first, None)
        .await;
    // A current-version charge names no invoice, and the invoice payment
    // that links them has not arrived: Stripe is told to retry.
    let refund = st.event(
        "charge.refunded",
        "2026-03-05T00:00:00Z",
        charge(BASIL, 1, 3000, 3000),
        Some(json!({"amount_refunded": 0})),
    );
    let r = st.post_signed(&refund.to_string(), None).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].as_str().unwrap().contains("retries"));
    let mut p = fixture(BASIL, "invoice_payment");
    set(&mut p, "/invoice", json!("in_1"));
    set(&mut p, "/payment/payment_intent", json!("pi_1"));
    st.deliver("invoice_payment.paid", "2026-03-02T12:00:05Z", p, None)
        .await;
    // Stripe's retry of the same event now applies.
    let r = st.post_signed(&refund.to_string(), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seq = r.json()["events"][0]["seq"].as_u64().unwrap();
    let lines = ledger(&s, &ann, seq).await;
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("commission", "9.00"), ("void", "-9.00")]);
    // A dispute of a charge refedge never saw paid is no one's: answered.
    let mut dispute = fixture(BASIL, "dispute");
    set(&mut dispute, "/charge", json!("ch_unknown"));
    set(&mut dispute, "/payment_intent", json!("pi_unknown"));
    let r = st
        .deliver(
            "charge.dispute.created",
            "2026-03-06T00:00:00Z",
            dispute,
            None,
        )
        .await;
    assert!(r["ignored"]
        .as_str()
        .unwrap()
        .contains("paid no invoice refedge has seen"));
}
