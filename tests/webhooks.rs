//! Webhooks and partner postbacks out, against a real HTTP receiver started
//! here: it fails the first attempts, goes silent, and comes back; every
//! event arrives, signed, retried with growing waits, and the outbox
//! survives a `kill -9` of the real binary.

mod common;

use common::receiver::*;
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ENV: &[(&str, &str)] = &[
    ("REFEDGE_WEBHOOKS__TIMEOUT_MS", "300"),
    ("REFEDGE_WEBHOOKS__RETRY_BASE_MS", "150"),
    ("REFEDGE_WEBHOOKS__DISABLE_AFTER_FAILURES", "1000"),
    ("REFEDGE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
];

async fn ok(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = api(addr, method, path, body).await;
    assert!(
        r.status < 300,
        "{method} {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

#[tokio::test]
async fn every_event_arrives_signed_after_failures_silence_and_a_kill() {
    let rx = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let server = Process::spawn(data.path(), ENV);
    let addr = server.addr;
    let hook = ok(
        addr,
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": format!("http://{}/hook", rx.addr),
                    "events": ["referral.created", "commission.created", "partner.status_changed"]})),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let listed = ok(addr, "GET", "/api/v1/webhooks", None).await;
    assert!(
        listed.to_string().find("whsec_").is_none(),
        "the secret is shown once"
    );

    let ann = create_partner(addr, "krispcall", "ann@blog.example").await;
    create_link(addr, &ann, "https://krispcall.com/pricing", Some("ann-k")).await;
    // The partner's own tracker takes postbacks.
    let template = format!(
        "http://{}/pb?c={{refclk}}&s1={{sub1}}&e={{event}}&a={{amount}}&cur={{currency}}&sale={{sale_amount}}&r={{customer_ref}}",
        rx.addr
    );
    let pb = api(
        addr,
        "PUT",
        &format!("/api/v1/partners/{ann}/postback"),
        Some(json!({"url_template": template})),
    )
    .await;
    assert_eq!(pb.status, 201, "{}", String::from_utf8_lossy(&pb.body));
    let visit = click(addr, "/r/ann-k?sub1=camp%2042", None).await;
    let token = visit.attribution_cookie().unwrap();
    let at = |s: i64| (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339();
    for e in [
        json!({"id": "s1", "type": "signup", "program": "krispcall", "occurred_at": at(30),
               "customer": {"id": "cus_secret_42", "email": "bob@acme.example"}, "attribution": {"token": token}}),
        json!({"id": "p1", "type": "payment", "program": "krispcall", "occurred_at": at(40),
               "customer_id": "cus_secret_42", "invoice_id": "INV-1", "currency": "USD",
               "lines": [{"kind": "subscription", "amount": "30.00", "plan": "standard", "unit_price": "15.00", "quantity": 2}]}),
    ] {
        let r = api(addr, "POST", "/api/v1/events", Some(e)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    // Failing: each event is tried again and again, further apart.
    let got = rx
        .until("four tries of each webhook event", |g| {
            of_type(g, "referral.created").len() >= 4 && of_type(g, "commission.created").len() >= 4
        })
        .await;
    let tries = of_type(&got, "commission.created");
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[2] > gaps[0], "the waits grow: {gaps:?}");
    let ids: Vec<_> = tries.iter().map(|g| g.event_id.clone().unwrap()).collect();
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "one event id on every attempt"
    );

    // Silent: attempts time out (logged as such); nothing else waits on
    // the receiver meanwhile.
    rx.set(SILENT);
    let r = api(
        addr,
        "GET",
        &format!("/api/v1/partners/{ann}/balance?wait_for=2"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    loop {
        let log = ok(
            addr,
            "GET",
            &format!("/api/v1/webhooks/{hook_id}/deliveries"),
            None,
        )
        .await;
        let attempts: Vec<Value> = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["attempts"].as_array().unwrap().clone())
            .collect();
        let timed_out = attempts.iter().any(|a| {
            a["error"]
                .as_str()
                .is_some_and(|e| e.contains("no answer within 300 ms"))
        });
        if timed_out {
            assert!(attempts.iter().any(|a| a["status"] == 500), "{attempts:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kill -9 while deliveries wait; the outbox is on disk. (Attempt
    // records are written unflushed and reach disk with sled's next
    // periodic flush, within 500 ms: waited out, so the log below still
    // shows the timeout. A record lost to a crash would only mean a resend.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.signal("KILL");
    let _ = server.wait();
    rx.set(OK);
    let server = Process::spawn(data.path(), ENV);
    let addr = server.addr;
    let got = rx
        .until("each webhook event answered 200 after the restart", |g| {
            let delivered = |kind: &str| of_type(g, kind).len() > 4;
            delivered("referral.created") && delivered("commission.created")
        })
        .await;
    // Every delivery verifies with the endpoint's secret.
    for g in of_type(&got, "commission.created") {
        let sig = g.signature.as_deref().unwrap();
        let t: i64 = sig[2..sig.find(',').unwrap()].parse().unwrap();
        assert_eq!(
            refedge::signature::verify(&secret, sig, g.body.as_bytes(), t),
            Ok(())
        );
    }
    let c = of_type(&got, "commission.created")[0];
    let body: Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(body["data"]["amount"], "9.00");
    assert_eq!(body["data"]["partner_id"], ann.as_str());
    assert_eq!(body["id"], c.event_id.clone().unwrap().as_str());
    // The log shows the failures and the success.
    let t0 = Instant::now();
    loop {
        let log = ok(
            addr,
            "GET",
            &format!("/api/v1/webhooks/{hook_id}/deliveries"),
            None,
        )
        .await;
        let ds = log["deliveries"].as_array().unwrap();
        if ds.iter().all(|d| d["state"] == "delivered") {
            // Each ends with its 200; the silence shows as a timeout in
            // the log (of whichever delivery was tried during it: their
            // back-offs differ, so not necessarily every one).
            for d in ds {
                let a = d["attempts"].as_array().unwrap();
                assert_eq!(a.last().unwrap()["status"], 200, "{a:?}");
            }
            assert!(
                ds.iter()
                    .flat_map(|d| d["attempts"].as_array().unwrap())
                    .any(|x| x["error"].as_str().is_some_and(|e| e.contains("no answer"))),
                "{ds:?}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Postbacks: a GET per referral and commission, macros filled, the
    // customer never named.
    let pbs: Vec<Got> = got
        .iter()
        .filter(|g| g.path.starts_with("/pb?"))
        .cloned()
        .collect();
    let commission = pbs
        .iter()
        .find(|g| g.path.contains("e=commission.created"))
        .expect("a commission postback");
    assert!(
        commission.path.contains("&s1=camp+42&"),
        "{}",
        commission.path
    );
    assert!(
        commission.path.contains("&a=9.00&cur=USD&sale=30.00&"),
        "{}",
        commission.path
    );
    assert!(
        !commission.path.contains("cus_secret_42") && !commission.path.contains("bob"),
        "{}",
        commission.path
    );
    let referral = pbs
        .iter()
        .find(|g| g.path.contains("e=referral.created"))
        .expect("a referral postback");
    let r_ref = &referral.path[referral.path.find("&r=").unwrap()..];
    let c_ref = &commission.path[commission.path.find("&r=").unwrap()..];
    assert_eq!(r_ref, c_ref, "one customer, one reference");
    assert!(r_ref.len() > 5);

    // A delivered event can be sent again by hand.
    let first = ok(
        addr,
        "GET",
        &format!("/api/v1/webhooks/{hook_id}/deliveries"),
        None,
    )
    .await;
    let d = &first["deliveries"][0];
    let before = of_type(&rx.got(), d["event_type"].as_str().unwrap()).len();
    let r = api(
        addr,
        "POST",
        &format!(
            "/api/v1/webhooks/{hook_id}/deliveries/{}/redeliver",
            d["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(r.status, 202);
    rx.until("the redelivery", |g| {
        of_type(g, d["event_type"].as_str().unwrap()).len() > before
    })
    .await;
    server.signal("TERM");
    let _ = server.wait();
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_with_the_reason() {
    let s = TestServer::start_with(|c| {
        c.webhooks.timeout = Duration::from_millis(300);
        c.webhooks.retry_base = Duration::from_millis(20);
        c.webhooks.disable_after = 3;
    })
    .await;
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hook = ok(
        s.addr(),
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": format!("http://{closed}/hook"), "events": ["partner.status_changed"]})),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let ann = s.partner("krispcall", "ann@blog.example").await;
    let r = api(
        s.addr(),
        "PATCH",
        &format!("/api/v1/partners/{ann}"),
        Some(json!({"status": "suspended", "reason": "cookie stuffing"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t0 = Instant::now();
    let disabled = loop {
        let e = ok(s.addr(), "GET", &format!("/api/v1/webhooks/{id}"), None).await;
        if e["enabled"] == false {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.starts_with("3 failed attempts in a row"), "{reason}");
    assert!(reason.contains("connecting to"), "{reason}");
    let log = ok(
        s.addr(),
        "GET",
        &format!("/api/v1/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(
        log["deliveries"][0]["state"], "pending",
        "kept for when it is enabled"
    );
    assert_eq!(
        log["deliveries"][0]["attempts"].as_array().unwrap().len(),
        3
    );
    let e = ok(
        s.addr(),
        "POST",
        &format!("/api/v1/webhooks/{id}/enable"),
        None,
    )
    .await;
    assert_eq!(e["enabled"], true);
}

#[tokio::test]
async fn endpoints_and_templates_are_checked_and_kept_to_their_owners() {
    let s = TestServer::start().await;
    for (body, field) in [
        (
            json!({"url": "http://hooks.example/x", "events": ["commission.created"]}),
            "url",
        ),
        (
            json!({"url": "https://hooks.example/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example/x", "events": ["commission.paid"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://u:p@hooks.example/x", "events": ["payout.created"]}),
            "url",
        ),
    ] {
        let r = api(s.addr(), "POST", "/api/v1/webhooks", Some(body)).await;
        assert_eq!(r.status, 422);
        assert_eq!(r.json()["field"], field);
    }
    let ann = s.partner("krispcall", "ann@blog.example").await;
    let joe = s.partner("krispcall", "joe@blog.example").await;
    for t in [
        "http://127.0.0.1:9/pb?c={refclk}",
        "http://169.254.169.254/latest",
        "https://t.example/pb?c={clickid}",
    ] {
        let r = api(
            s.addr(),
            "PUT",
            &format!("/api/v1/partners/{ann}/postback"),
            Some(json!({"url_template": t})),
        )
        .await;
        assert_eq!(r.status, 422, "{t}");
        assert_eq!(r.json()["field"], "url_template");
    }
    // A partner keeps its own postback; another partner's is not there.
    let key = api_key(s.addr(), "partner", Some(&ann)).await;
    let t = json!({"url_template": "https://track.ann.example/pb?c={refclk}&a={amount}", "events": ["commission.created"]});
    let r = api_as(
        s.addr(),
        &key,
        "PUT",
        &format!("/api/v1/partners/{ann}/postback"),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = api_as(
        s.addr(),
        &key,
        "PUT",
        &format!("/api/v1/partners/{joe}/postback"),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = api_as(s.addr(), &key, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(r.status, 403);
    let r = api_as(
        s.addr(),
        &key,
        "GET",
        &format!("/api/v1/partners/{ann}/postback"),
        None,
    )
    .await;
    assert_eq!(r.json()["events"], json!(["commission.created"]));
    let r = api_as(
        s.addr(),
        &key,
        "DELETE",
        &format!("/api/v1/partners/{ann}/postback"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = api_as(
        s.addr(),
        &key,
        "GET",
        &format!("/api/v1/partners/{ann}/postback"),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_healthy_receiver_gets_each_delivery_once_and_a_backlog_resumes_on_enable() {
    let rx = Receiver::start().await;
    rx.set(OK);
    let s = TestServer::start_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_base = Duration::from_millis(100);
        c.webhooks.disable_after = 1;
    })
    .await;
    let hook = ok(
        s.addr(),
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": format!("http://{}/hook", rx.addr), "events": ["referral.created"]})),
    )
    .await;
    let id = hook["id"].as_str().unwrap().to_string();
    let ann = s.partner("krispcall", "ann@blog.example").await;
    ok(
        s.addr(),
        "POST",
        "/api/v1/coupons",
        Some(json!({"code": "ANN", "partner_id": ann})),
    )
    .await;
    let signups = |tag: &str, n: usize| -> Value {
        let at = chrono::Utc::now().to_rfc3339();
        (0..n)
            .map(|i| {
                json!({"id": format!("{tag}{i}"), "type": "signup", "program": "krispcall",
                       "occurred_at": at, "customer": {"id": format!("cus_{tag}{i}")},
                       "attribution": {"coupon": "ANN"}})
            })
            .collect()
    };
    // More than one read of the queue (128) and than the slots (32): each
    // is sent once — the queue is read again while earlier attempts are
    // still finishing, and none of those may go out a second time.
    let r = api(s.addr(), "POST", "/api/v1/events", Some(signups("a", 600))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ids = |got: &[Got]| {
        got.iter()
            .filter_map(|g| g.event_id.clone())
            .collect::<Vec<_>>()
    };
    let got = rx.until("600 referrals", |g| g.len() >= 600).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if rx.got().len() > got.len() {
        rx.got()
    } else {
        got
    };
    let mut all = ids(&got);
    all.sort();
    all.dedup();
    assert_eq!((all.len(), got.len()), (600, 600), "each once");

    // The receiver fails once: the endpoint is disabled, the next 300 wait
    // in the outbox; enabled, they all go, once each.
    rx.set(FAIL);
    let r = api(s.addr(), "POST", "/api/v1/events", Some(signups("b", 300))).await;
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    while ok(s.addr(), "GET", &format!("/api/v1/webhooks/{id}"), None).await["enabled"] == true {
        assert!(t0.elapsed() < Duration::from_secs(20), "not disabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    rx.clear();
    rx.set(OK);
    ok(
        s.addr(),
        "POST",
        &format!("/api/v1/webhooks/{id}/enable"),
        None,
    )
    .await;
    let got = rx
        .until("300 referrals after enable", |g| {
            g.iter().filter(|x| x.path == "/hook").count() >= 300
        })
        .await;
    let mut b = ids(&got);
    b.sort();
    b.dedup();
    assert_eq!(b.len(), 300, "every waiting delivery sent");
}
