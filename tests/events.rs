//! The event API: validation naming fields, batches where good events
//! survive bad siblings, idempotency, signed webhooks, and durability
//! across `kill -9`.

mod common;

use common::*;
use refedge::edge::money::sign_webhook;
use serde_json::{json, Value};

fn payment(id: &str, amount: Value) -> Value {
    json!({"id": id, "type": "payment", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
           "customer_id": "c1", "invoice_id": format!("inv-{id}"), "currency": "USD",
           "lines": [{"kind": "subscription", "amount": amount}]})
}

#[tokio::test]
async fn bad_events_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let cases = [
        (payment("e1", json!(40.5)), "lines[0].amount"),
        (payment("e2", json!("forty")), "lines[0].amount"),
        (payment("e3", json!("-1.00")), "lines[0].amount"),
        (
            json!({"id": "e4", "type": "payment", "program": "krispcall", "occurred_at": "yesterday",
                "customer_id": "c", "invoice_id": "i", "currency": "USD", "lines": []}),
            "occurred_at",
        ),
        (
            json!({"id": "e5", "type": "payment", "program": "nope", "occurred_at": "2026-03-02T00:00:00Z",
                "customer_id": "c", "invoice_id": "i", "currency": "USD", "lines": [{"kind": "subscription", "amount": "1"}]}),
            "program",
        ),
        (
            json!({"id": "e6", "type": "payment", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer_id": "c", "invoice_id": "i", "currency": "usd", "lines": [{"kind": "subscription", "amount": "1"}]}),
            "currency",
        ),
        (
            json!({"id": "e7", "type": "refund", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer_id": "c", "invoice_id": "i"}),
            "amount",
        ),
        (
            json!({"id": "e8", "type": "teleport", "program": "krispcall"}),
            "type",
        ),
        (
            json!({"id": "e9", "type": "payout_run", "program": "krispcall", "as_of": "2026-03-02T00:00:00Z"}),
            "type",
        ),
        (
            json!({"id": "e10", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c", "shoe_size": 9}}),
            "customer.shoe_size",
        ),
        (
            json!({"id": "e11", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c"}, "resolved": {"error": "forged"}}),
            "resolved",
        ),
    ];
    for (body, field) in cases {
        let r = api(s.addr(), "POST", "/api/v1/events", Some(body.clone())).await;
        assert_eq!(
            r.status,
            422,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["field"], field, "{body}");
    }
    let auth = format!("Bearer {ADMIN}");
    let r = send(
        s.addr(),
        "POST",
        "/api/v1/events",
        &[("authorization", &auth)],
        Some(b"[{"),
    )
    .await;
    assert_eq!(r.status, 400);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| payment(&format!("b{i}"), json!("1.00")))
        .collect();
    let r = api(
        s.addr(),
        "POST",
        "/api/v1/events",
        Some(Value::Array(too_many)),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(s.running.app.conversions.applied(), 0, "nothing was stored");
}

#[tokio::test]
async fn a_batch_keeps_its_good_events_and_ids_are_idempotent() {
    let s = TestServer::start().await;
    let batch = json!([
        payment("ok-1", json!("10.00")),
        payment("bad", json!(1.5)),
        payment("ok-2", json!("20.00"))
    ]);
    let r = api(s.addr(), "POST", "/api/v1/events", Some(batch.clone())).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(
        (j["accepted"].as_u64(), j["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(j["results"][1]["field"], "lines[0].amount");
    assert_eq!(j["results"][2]["status"], "accepted");
    // The same batch again: the good ones are duplicates, nothing new.
    let again = api(s.addr(), "POST", "/api/v1/events", Some(batch))
        .await
        .json();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    // Same id, same body: 200 duplicate; other body: 409.
    let dup = api(
        s.addr(),
        "POST",
        "/api/v1/events",
        Some(payment("ok-1", json!("10.00"))),
    )
    .await;
    assert_eq!(dup.status, 200);
    assert_eq!(dup.json()["status"], "duplicate");
    let conflict = api(
        s.addr(),
        "POST",
        "/api/v1/events",
        Some(payment("ok-1", json!("11.00"))),
    )
    .await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["field"], "id");
}

#[tokio::test]
async fn signed_webhooks_are_checked_and_kept_to_their_program() {
    let secret = "whsec-krispcall-0123456789";
    let s = TestServer::start_with(|c| {
        c.programs.get_mut("krispcall").unwrap().webhook_secret = Some(secret.into());
    })
    .await;
    let body = payment("wh-1", json!("10.00")).to_string();
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .timestamp();
    let post = |sig: String, program: &'static str, body: String| {
        let addr = s.addr();
        async move {
            send(
                addr,
                "POST",
                "/api/v1/events",
                &[
                    ("x-refedge-program", program),
                    ("x-refedge-signature", &sig),
                    ("content-type", "application/json"),
                ],
                Some(body.as_bytes()),
            )
            .await
        }
    };
    assert_eq!(
        post(
            sign_webhook(secret, now, body.as_bytes()),
            "krispcall",
            body.clone()
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            sign_webhook("wrong-secret-0123456789", now, body.as_bytes()),
            "krispcall",
            body.clone()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        post(
            sign_webhook(secret, now - 301, body.as_bytes()),
            "krispcall",
            body.clone()
        )
        .await
        .status,
        401,
        "outside the replay window"
    );
    assert_eq!(
        post(
            sign_webhook(secret, now, b"other"),
            "krispcall",
            body.clone()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        post(
            sign_webhook(secret, now, body.as_bytes()),
            "aloware",
            body.clone()
        )
        .await
        .status,
        401,
        "aloware has no secret"
    );
    let foreign = json!({"id": "wh-2", "type": "cancellation", "program": "aloware", "occurred_at": "2026-03-02T00:00:00Z", "customer_id": "c"}).to_string();
    let r = post(
        sign_webhook(secret, now, foreign.as_bytes()),
        "krispcall",
        foreign,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "program");
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_event_and_applies_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Snapshots every 200 events, so the kill lands between snapshots and
    // the restart resumes from a saved cursor.
    let env = [("REFEDGE_CALCULATOR__SNAPSHOT_EVERY_EVENTS", "200")];
    let server = Process::spawn(&data, &env);
    let p = create_partner(server.addr, "aloware", "al@agency.example").await;
    create_coupon_and_signup(server.addr, &p).await;
    // A stream of payment batches; the server dies in the middle of it.
    let addr = server.addr;
    let stream = tokio::spawn(async move {
        let mut acked = Vec::new();
        for b in 0..3000 {
            let batch: Vec<Value> = (0..10)
                .map(|i| {
                    let n = b * 10 + i;
                    json!({"id": format!("pay-{n}"), "type": "payment", "program": "aloware",
                           "occurred_at": "2026-03-05T00:00:00Z", "customer_id": "c1",
                           "invoice_id": format!("inv-{n}"), "currency": "USD",
                           "lines": [{"kind": "subscription", "amount": "10.00"}]})
                })
                .collect();
            let auth = format!("Bearer {ADMIN}");
            let body = Value::Array(batch).to_string();
            let r = try_send(
                addr,
                "POST",
                "/api/v1/events",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(body.as_bytes()),
            )
            .await;
            match r {
                Ok(r) if r.status == 200 => acked.extend((0..10).map(|i| b * 10 + i)),
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.signal("KILL");
    let acked = stream.await.unwrap_or_default();
    server.wait();
    assert!(
        !acked.is_empty(),
        "some batches were acknowledged before the kill"
    );
    assert!(acked.len() < 30_000, "the kill must land mid-stream");
    assert!(data.join("db").exists());

    let again = Process::spawn(&data, &env);
    let last = api(
        again.addr,
        "POST",
        "/api/v1/events",
        Some(json!({"id": "after", "type": "cancellation",
        "program": "aloware", "occurred_at": "2026-03-31T00:00:00Z", "customer_id": "zz"})),
    )
    .await
    .json()["seq"]
        .as_u64()
        .unwrap();
    let st = api(
        again.addr,
        "GET",
        &format!("/api/v1/partners/{p}/statement?month=2026-03&wait_for={last}"),
        None,
    )
    .await
    .json();
    let invoices: Vec<String> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "commission")
        .map(|l| l["invoice_id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = invoices.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), invoices.len(), "an event was applied twice");
    for n in &acked {
        assert!(
            unique.contains(&format!("inv-{n}")),
            "acknowledged payment {n} was lost"
        );
    }
    again.signal("TERM");
    assert_eq!(again.wait().0, Some(0));
}

async fn create_coupon_and_signup(addr: std::net::SocketAddr, partner: &str) {
    let r = api(
        addr,
        "POST",
        "/api/v1/coupons",
        Some(json!({"code": "AL-CRASH", "partner_id": partner})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = api(addr, "POST", "/api/v1/events", Some(json!({"id": "s1", "type": "signup", "program": "aloware",
        "occurred_at": "2026-03-02T00:00:00Z", "customer": {"id": "c1"}, "attribution": {"coupon": "AL-CRASH"}}))).await;
    assert_eq!(r.status, 201);
}
