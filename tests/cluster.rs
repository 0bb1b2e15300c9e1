//! Cluster mode with real processes: a real `nats-server` with JetStream
//! on a loopback port, refedge edges and calculators as separate
//! processes, `kill -9` and a NATS restart in the middle of the traffic.

mod common;

use common::nats::{Nats, Node};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Admin request that tolerates a node or NATS being down: `None` on a
/// refused connection or a 503 (nothing was acknowledged).
async fn try_api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Option<Resp> {
    let r = try_api_as(addr, ADMIN, method, path, body).await.ok()?;
    (r.status != 503).then_some(r)
}

/// The calculator `edge` sends ledger routes to, once it is one other
/// than `not` ("" for any), waiting up to `secs` seconds.
async fn holder(edge: SocketAddr, secs: u64, what: &str, not: &str) -> String {
    until(secs, what, || async move {
        let r = try_api(edge, "GET", "/api/v1/problems", None).await?;
        r.header("x-refedge-served-by")
            .filter(|n| *n != not)
            .map(String::from)
    })
    .await
}

/// Posts an event until some node acknowledges it, as a billing system
/// retries; returns the status and the answer.
async fn deliver(nodes: &[SocketAddr], ev: &Value) -> (u16, Value) {
    let mut i = 0;
    until(60, "an acknowledgement", || {
        let addr = nodes[i % nodes.len()];
        i += 1;
        async move {
            let r = try_api(addr, "POST", "/api/v1/events", Some(ev)).await?;
            Some((r.status, r.json()))
        }
    })
    .await
}

/// The ledger's answer to a read forwarded through `edge`.
async fn read(edge: SocketAddr, path: &str) -> Value {
    until(60, path, || async move {
        let r = try_api(edge, "GET", path, None).await?;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        Some(r.json())
    })
    .await
}

/// A krispcall partner created on `node` once the cluster answers; its id.
async fn cluster_partner(node: SocketAddr, email: &str) -> String {
    let body = json!({"program": "krispcall", "name": "Partner", "email": email,
                      "website": "https://blog.example"});
    until(30, "the cluster's directory", || {
        let body = body.clone();
        async move {
            let r = try_api(node, "POST", "/api/v1/partners", Some(&body)).await?;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            Some(r.json()["id"].as_str().unwrap().to_string())
        }
    })
    .await
}

fn signup(i: usize, coupon: &str) -> Value {
    json!({"id": format!("s-{i}"), "type": "signup", "program": "krispcall",
           "occurred_at": format!("2026-01-{:02}T10:00:00Z", 2 + i % 20),
           "customer": {"id": format!("cust-{i}")}, "attribution": {"coupon": coupon}})
}

fn payment(i: usize, month: u32, amount: &str) -> Value {
    json!({"id": format!("pay-{i}-{month}"), "type": "payment", "program": "krispcall",
           "occurred_at": format!("2026-{month:02}-{:02}T11:00:00Z", 3 + i % 20),
           "customer_id": format!("cust-{i}"), "invoice_id": format!("inv-{i}-{month}"),
           "currency": "USD", "lines": [{"kind": "subscription", "amount": amount}]})
}

fn refund(i: usize) -> Value {
    json!({"id": format!("ref-{i}"), "type": "refund", "program": "krispcall",
           "occurred_at": "2026-02-25T09:00:00Z", "customer_id": format!("cust-{i}"),
           "invoice_id": format!("inv-{i}-2"), "amount": "10.00"})
}

/// Runs `refedge replay` over `lines` and returns its outcome.
fn replay(lines: &[Value], as_of: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    run_json(&["replay", file.to_str().unwrap(), "--as-of", as_of])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_applied_once_through_kills_and_a_nats_restart() {
    let mut nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let mut calc1 = Node::start(&nats, root.path(), "calc-1", "calculator", &[]);
    let calc2 = Node::start(&nats, root.path(), "calc-2", "calculator", &[]);
    let mut edge1 = Node::start(&nats, root.path(), "edge-1", "edge", &[]);
    let edge2 = Node::start(&nats, root.path(), "edge-2", "edge", &[]);
    let edge3 = Node::start(&nats, root.path(), "edge-3", "edge", &[]);
    let edges = [edge1.addr(), edge2.addr(), edge3.addr()];

    // An edge answers ledger reads once a calculator holds the lease.
    read(edges[0], "/api/v1/problems").await;

    // Partners created on the edges (the shared directory), their coupons
    // through an edge (forwarded to the calculator).
    let mut lines = Vec::new();
    let mut partners = Vec::new();
    for k in 0..3 {
        let r = api(
            edges[k % 3],
            "POST",
            "/api/v1/partners",
            Some(json!({"program": "krispcall", "name": format!("P{k}"),
                        "email": format!("p{k}@blog.example"), "website": "https://blog.example"})),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let p = r.json();
        lines.push(
            json!({"type": "partner", "id": p["id"], "program": "krispcall",
            "email": p["email"], "website": p["website"], "currency": p["currency"],
            "created_at": p["created_at"], "name": p["name"]}),
        );
        partners.push(p["id"].as_str().unwrap().to_string());
    }
    for (k, pid) in partners.iter().enumerate() {
        let c = json!({"code": format!("CPN-{k}"), "partner_id": pid});
        let r = until(30, "a coupon", || {
            let c = c.clone();
            async move { try_api(edges[k % 3], "POST", "/api/v1/coupons", Some(&c)).await }
        })
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert!(r
            .header("x-refedge-served-by")
            .is_some_and(|n| n.starts_with("calc-")));
        lines.push(json!({"type": "coupon", "code": format!("CPN-{k}"), "partner_id": pid}));
    }

    // A link on each edge, clicked on both edges during the traffic.
    let mut codes = Vec::new();
    for (k, edge) in edges.iter().enumerate() {
        let link = json!({"partner_id": partners[k], "destination": "https://krispcall.com/"});
        let r = api(*edge, "POST", "/api/v1/links", Some(link)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        codes.push(r.json()["code"].as_str().unwrap().to_string());
    }
    let mut served = [0u64; 3];

    let mut events = Vec::new();
    for i in 0..24 {
        events.push(signup(i, &format!("CPN-{}", i % 3)));
        events.push(payment(i, 1, "40.00"));
        events.push(payment(i, 2, "40.00"));
        if i % 5 == 0 {
            events.push(refund(i));
        }
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for (n, ev) in events.iter().enumerate() {
        match n {
            30 => calc1.kill(),
            45 => nats.restart(),
            60 => edge1.kill(),
            75 => calc1.restart(),
            _ => {}
        }
        let all = [
            edge1.process.as_ref().map(|p| p.addr),
            Some(edge2.addr()),
            Some(edge3.addr()),
        ];
        let live: Vec<SocketAddr> = all.into_iter().flatten().collect();
        for (k, edge) in all.into_iter().enumerate() {
            if let Some(addr) = edge {
                for code in &codes {
                    let r = click(addr, &format!("/r/{code}"), None).await;
                    assert_eq!(r.status, 302);
                    served[k] += 1;
                }
            }
        }
        let (status, body) = deliver(&live, ev).await;
        assert!(status == 201 || status == 200, "{ev}: {status} {body}");
        if status == 201 {
            accepted += 1;
        } else {
            duplicates += 1;
        }
        // Every third event is sent again to the other edge: a retry.
        if n % 3 == 0 {
            let other = [live[live.len() - 1]];
            let (status, body) = deliver(&other, ev).await;
            assert_eq!(status, 200, "a repeat is a duplicate: {body}");
            assert_eq!(body["status"], "duplicate");
        }
        lines.push(ev.clone());
    }
    // A different body under an acknowledged id: refused, on any node.
    let mut changed = events[1].clone();
    changed["lines"][0]["amount"] = json!("99.00");
    let (status, body) = deliver(&[edge2.addr()], &changed).await;
    assert_eq!(status, 409, "{body}");
    eprintln!(
        "cluster: {accepted} accepted, {duplicates} answered as duplicates after a NATS restart"
    );

    // Clicks: edge 2 was never killed: the stream holds every click it
    // served. Edge 1 was killed once: restarted, it ships what its log
    // kept; what it served and had not yet written (the click queue's
    // flush interval) is its crash window, counted here.
    edge1.restart();
    let local1 = {
        let mut n = 0;
        for code in &codes {
            let r = api(edge1.addr(), "GET", &format!("/api/v1/links/{code}"), None).await;
            n += r.json()["click_count"].as_u64().unwrap();
        }
        n
    };
    let url = nats.url();
    let in_stream = until(30, "every click in the stream", || {
        let url = url.clone();
        async move {
            let s = run_json(&["cluster", "status", "--nats", &url, "--json"]);
            let by = &s["clicks_by_node"];
            let (a, b, c) = (
                by["edge-1"].as_u64()?,
                by["edge-2"].as_u64()?,
                by["edge-3"].as_u64()?,
            );
            (a == local1 && b == served[1] && c == served[2]).then_some((a, b, c))
        }
    })
    .await;
    eprintln!(
        "clicks: edge-1 served {}, kept {} (lost in its kill -9 crash window: {}), {} in the stream; edge-2 served {}, {} in the stream; edge-3 served {}, {} in the stream",
        served[0],
        local1,
        served[0] - local1,
        in_stream.0,
        served[1],
        in_stream.1,
        served[2],
        in_stream.2
    );
    assert!(local1 <= served[0]);

    let run = json!({"program": "krispcall", "as_of": "2026-04-15T00:00:00Z"});
    let e2 = edge2.addr();
    let r = until(30, "a payout run", || {
        let run = run.clone();
        async move { try_api(e2, "POST", "/api/v1/payouts/run", Some(&run)).await }
    })
    .await;
    assert!(
        r.status == 201 || r.status == 200,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Replay counts every batch as paid: confirm it, as finance would.
    let path = format!("/api/v1/payouts/{id}/confirm");
    let r = until(30, "a confirmation", || {
        let path = path.clone();
        async move { try_api(e2, "POST", &path, None).await }
    })
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let batch = r.json();
    lines.push(
        json!({"type": "payout_run", "program": "krispcall", "as_of": "2026-04-15T00:00:00Z"}),
    );

    // The ledger, read through the surviving edge, equals one process
    // replaying the same events.
    let as_of = "2026-04-20T00:00:00Z";
    let expected = replay(&lines, as_of);
    let got = read(edge2.addr(), "/api/v1/referrals?program=krispcall").await;
    assert_eq!(got["referrals"], expected["referrals"]);
    assert_eq!(got["rejections"], expected["rejections"]);
    assert_eq!(expected["referrals"].as_array().unwrap().len(), 24);
    for pid in &partners {
        let b = read(
            edge2.addr(),
            &format!("/api/v1/partners/{pid}/balance?as_of={as_of}"),
        )
        .await;
        assert_eq!(
            b["balances"], expected["partners"][pid]["balances"],
            "{pid}"
        );
    }
    // Every month's statement lines, together, are the replay's lines.
    for pid in &partners {
        let mut lines = Vec::new();
        for month in ["2026-01", "2026-02", "2026-03", "2026-04"] {
            let st = read(
                edge2.addr(),
                &format!("/api/v1/partners/{pid}/statement?month={month}"),
            )
            .await;
            lines.extend(st["lines"].as_array().unwrap().iter().cloned());
        }
        // In ledger order (a statement lists its month's lines).
        lines.sort_by_key(|l| l["seq"].as_u64());
        assert_eq!(
            Value::Array(lines),
            expected["partners"][pid]["lines"],
            "{pid}"
        );
    }
    let want = expected["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == batch["id"])
        .unwrap();
    assert_eq!(&batch, want);

    // Both calculators hold the same ledger, whichever answers.
    for calc in [&calc1, &calc2] {
        let addr = calc.addr();
        let want = expected["referrals"].clone();
        until(30, "every calculator to catch up", || {
            let want = want.clone();
            async move {
                let r = try_api(addr, "GET", "/api/v1/referrals?program=krispcall", None).await?;
                (r.json()["referrals"] == want).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_active_calculator_dies() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let mut calc1 = Node::start(&nats, root.path(), "calc-1", "calculator", &[]);
    let edge = Node::start(&nats, root.path(), "edge-1", "edge", &[]);
    let first = holder(edge.addr(), 30, "a lease holder", "").await;
    assert_eq!(first, "calc-1");
    let mut calc2 = Node::start(&nats, root.path(), "calc-2", "calculator", &[]);
    // The standby does not take a live lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = api(edge.addr(), "GET", "/api/v1/problems", None).await;
    assert_eq!(r.header("x-refedge-served-by"), Some("calc-1"));

    calc1.kill();
    let died = Instant::now();
    let next = holder(edge.addr(), 15, "a take-over", "calc-1").await;
    assert_eq!(next, "calc-2");
    let took = died.elapsed();
    eprintln!(
        "standby take-over after kill -9: {:.1} s (lease 2 s)",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // A graceful stop hands the lease over at once.
    calc1.restart();
    let (code, _) = calc2.stop();
    assert_eq!(code, Some(0));
    let back = holder(edge.addr(), 10, "a hand-over", "").await;
    assert_eq!(back, "calc-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_custom_code_raced_on_two_nodes_is_won_exactly_once_and_redirects_everywhere() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let node_a = Node::start(&nats, root.path(), "edge-a", "all", &[]);
    let node_b = Node::start(&nats, root.path(), "edge-b", "edge", &[]);
    let (a, b) = (node_a.addr(), node_b.addr());
    let partner = cluster_partner(a, "racer@blog.example").await;
    // The partner reaches node B through its watch.
    let path = format!("/api/v1/partners/{partner}");
    until(10, "the partner on node B", || {
        let path = path.clone();
        async move { (api(b, "GET", &path, None).await.status == 200).then_some(()) }
    })
    .await;

    let mut wins = [0usize; 2];
    for i in 0..100 {
        let link = json!({"partner_id": partner, "destination": "https://krispcall.com/pricing",
                          "code": format!("race-{i}")});
        let (ra, rb) = tokio::join!(
            api(a, "POST", "/api/v1/links", Some(link.clone())),
            api(b, "POST", "/api/v1/links", Some(link.clone()))
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 409],
            "race {i}: {} / {}",
            String::from_utf8_lossy(&ra.body),
            String::from_utf8_lossy(&rb.body)
        );
        wins[usize::from(rb.status == 201)] += 1;
    }
    eprintln!(
        "100 races on one custom code: node A won {}, node B {}; every race one 201 and one 409",
        wins[0], wins[1]
    );

    // A link created on one node redirects on the other; how long that
    // takes, over 50 links.
    let mut delays = Vec::new();
    for i in 0..50 {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let link = json!({"partner_id": partner, "destination": "https://krispcall.com/"});
        let r = api(from, "POST", "/api/v1/links", Some(link)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let code = r.json()["code"].as_str().unwrap().to_string();
        let created = Instant::now();
        let path = format!("/r/{code}");
        // Polled every 5 ms: the delay measured, not the polling period.
        while click(to, &path, None).await.status != 302 {
            assert!(
                created.elapsed() < Duration::from_secs(10),
                "{code} never reached the other node"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(created.elapsed());
    }
    delays.sort();
    eprintln!(
        "link propagation to the other node (50 links, polled every 5 ms): median {:?}, p99 {:?}",
        delays[25], delays[49]
    );

    // A standing change on the edge: answered by the calculator with the
    // audit log, and seen on the other node.
    let r = api(
        b,
        "PATCH",
        &format!("/api/v1/partners/{partner}"),
        Some(json!({"status": "suspended", "reason": "review of traffic"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-refedge-served-by"), Some("edge-a"));
    assert_eq!(r.json()["audit"][0]["status"], "suspended");
    let path = format!("/api/v1/partners/{partner}");
    until(10, "the standing on node A", || {
        let path = path.clone();
        async move { (api(a, "GET", &path, None).await.json()["status"] == "suspended").then_some(()) }
    })
    .await;

    // Disabled on one node: 410 on the other.
    let r = api(b, "DELETE", "/api/v1/links/race-0", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    until(10, "the disabled link on the other node", || async move {
        (click(a, "/r/race-0", None).await.status == 410).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_on_one_edge_verifies_on_another_and_rotations_spread() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let node_a = Node::start(&nats, root.path(), "edge-a", "all", &[]);
    let node_b = Node::start(&nats, root.path(), "edge-b", "edge", &[]);
    let (a, b) = (node_a.addr(), node_b.addr());
    // Each node generated its own keyring and IP key in its data dir; the
    // cluster's replaced one of them.
    let ring = |n: &Node| std::fs::read(n.dir.join("keyring.json")).unwrap();
    let ip_key = |n: &Node| std::fs::read(n.dir.join("ip-hash-key")).unwrap();
    assert_eq!(ring(&node_a), ring(&node_b));
    assert_eq!(ip_key(&node_a), ip_key(&node_b));

    let p1 = create_partner(a, "aircall", "a1@a.example").await;
    let p2 = create_partner(a, "aircall", "a2@b.example").await;
    create_link(a, &p1, "https://aircall.io/", Some("air-one")).await;
    create_link(a, &p2, "https://aircall.io/", Some("air-two")).await;
    until(10, "the links on node B", || async move {
        (click(b, "/r/air-two", None).await.status == 302).then_some(())
    })
    .await;
    let token = click(a, "/r/air-one", None)
        .await
        .attribution_cookie()
        .unwrap();
    // First click wins in this program: node B keeps node A's cookie, so
    // it verified A's signature.
    let r = click(b, "/r/air-two", Some(&token)).await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("set-cookie").is_none(),
        "node B did not verify node A's token"
    );

    // A rotation on B reaches A: A signs with the new key.
    let r = api(b, "POST", "/api/v1/keys/rotate", None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let new_id = r.json()["id"].as_u64().unwrap();
    until(10, "the rotation on node A", || async move {
        let keys = api(a, "GET", "/api/v1/keys", None).await.json();
        keys["keys"]
            .as_array()?
            .iter()
            .any(|k| k["id"].as_u64() == Some(new_id) && k["signing"] == true)
            .then_some(())
    })
    .await;
    assert_eq!(
        ring(&node_a),
        ring(&node_b),
        "the rotation is kept on disk too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_at_one_edge_is_attributed_to_a_click_served_by_another() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let wait = [("REFEDGE_CLUSTER__ATTRIBUTION_WAIT_SECONDS", "1")];
    let _calc = Node::start(&nats, root.path(), "calc-1", "calculator", &wait);
    let e1 = Node::start(&nats, root.path(), "edge-1", "edge", &wait);
    let e2 = Node::start(&nats, root.path(), "edge-2", "edge", &wait);
    let (e1, e2) = (e1.addr(), e2.addr());
    let partner = cluster_partner(e1, "p@blog.example").await;
    create_link(e1, &partner, "https://krispcall.com/", Some("kc-far")).await;
    let r = until(10, "the link on edge 2", || async move {
        let r = click(e2, "/r/kc-far", None).await;
        (r.status == 302).then_some(r)
    })
    .await;
    let click_id = click_id_of(&r);
    // At once, to the other edge: not rejected for a click it never saw.
    let signup = |id: &str, customer: &str, click: &str| {
        json!({"id": id, "type": "signup", "program": "krispcall",
               "occurred_at": (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339(),
               "customer": {"id": customer}, "attribution": {"click_id": click}})
    };
    let (status, body) = deliver(&[e1], &signup("s-far", "cust-far", &click_id)).await;
    assert_eq!(status, 201, "{body}");
    let seq = body["seq"].as_u64().unwrap();
    let c = read(e1, &format!("/api/v1/customers/cust-far?wait_for={seq}")).await;
    assert_eq!(
        c["programs"][0]["referral"]["partner_id"],
        partner.as_str(),
        "{c}"
    );
    assert_eq!(
        c["programs"][0]["referral"]["click_id"],
        click_id.as_str(),
        "{c}"
    );

    // A click id no edge served: decided after the bound, with the reason.
    let unknown = "01J0000000000000000000000Z";
    let (status, body) = deliver(&[e2], &signup("s-none", "cust-none", unknown)).await;
    assert_eq!(status, 201, "{body}");
    let seq = body["seq"].as_u64().unwrap();
    let c = read(e2, &format!("/api/v1/customers/cust-none?wait_for={seq}")).await;
    let reason = c["programs"][0]["rejections"][0]["detail"].to_string();
    assert!(reason.contains("waited 1 s"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_fast_across_edges_but_slow_on_each_is_flagged_cluster_wide() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let limit = [(
        "REFEDGE_PROGRAMS__KRISPCALL__FRAUD__PARTNER_PER_SECOND",
        "3",
    )];
    let _calc = Node::start(&nats, root.path(), "calc-1", "calculator", &limit);
    let e1 = Node::start(&nats, root.path(), "edge-1", "edge", &limit);
    let e2 = Node::start(&nats, root.path(), "edge-2", "edge", &limit);
    let (e1, e2) = (e1.addr(), e2.addr());
    let partner = cluster_partner(e1, "fast@blog.example").await;
    create_link(e1, &partner, "https://krispcall.com/", Some("kc-fast")).await;
    until(10, "the link on edge 2", || async move {
        (click(e2, "/r/kc-fast", None).await.status == 302).then_some(())
    })
    .await;
    // One click: not flagged.
    let path = format!("/api/v1/fraud/partners/{partner}");
    let calm = read(e1, &path).await;
    assert_eq!(calm["cluster_velocity"]["flagged"], false, "{calm}");
    assert_eq!(calm["cluster_velocity"]["limit_per_second"], 3);
    // Two clicks on each edge within one second: under the limit on each,
    // four together. Retried (a second apart) until the four share a
    // second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let profile = until(30, "the cluster-wide flag", || {
        let path = path.clone();
        async move {
            let (a, b, c, d) = tokio::join!(
                click(e1, "/r/kc-fast", None),
                click(e1, "/r/kc-fast", None),
                click(e2, "/r/kc-fast", None),
                click(e2, "/r/kc-fast", None)
            );
            for r in [a, b, c, d] {
                assert_eq!(r.status, 302);
                assert!(
                    r.header("set-cookie").is_some(),
                    "a node flagged its own two clicks"
                );
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let p = read(e1, &path).await;
            (p["cluster_velocity"]["flagged"] == true).then_some(p)
        }
    })
    .await;
    assert_eq!(profile["cluster_velocity"]["limit_per_second"], 3);
    assert!(
        profile["cluster_velocity"]["seconds_over"][0]["clicks"]
            .as_u64()
            .unwrap()
            > 3
    );
    // The profile counts every edge's clicks (forwarded to the calculator).
    assert!(profile["clicks"].as_u64().unwrap() >= 5, "{profile}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_made_on_one_node_works_on_another_until_revoked_anywhere() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let node_a = Node::start(&nats, root.path(), "edge-a", "all", &[]);
    let node_b = Node::start(&nats, root.path(), "edge-b", "edge", &[]);
    let (a, b) = (node_a.addr(), node_b.addr());
    let made = until(30, "the cluster", || async move {
        let body = json!({"name": "billing", "role": "ingest"});
        let r = try_api(a, "POST", "/api/v1/api-keys", Some(&body)).await?;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        Some(r.json())
    })
    .await;
    let secret = made["secret"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let auth = format!("Bearer {secret}");
    let probe = |node: SocketAddr| {
        let auth = auth.clone();
        async move {
            send(
                node,
                "GET",
                "/api/v1/problems",
                &[("authorization", &auth)],
                None,
            )
            .await
            .status
        }
    };
    // On node B: its role's routes only (an ingest key may not read).
    until(10, "the key on node B", || async {
        (probe(b).await == 403).then_some(())
    })
    .await;
    let r = api(b, "DELETE", &format!("/api/v1/api-keys/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    until(10, "the revocation on node A", || async {
        (probe(a).await == 401).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calculator_rolls_up_every_edges_clicks_for_the_console() {
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let calc = Node::start(&nats, root.path(), "calc-1", "calculator", &[]);
    let e1 = Node::start(&nats, root.path(), "edge-1", "edge", &[]);
    let e2 = Node::start(&nats, root.path(), "edge-2", "edge", &[]);
    let (e1, e2) = (e1.addr(), e2.addr());
    let partner = cluster_partner(e1, "roll@blog.example").await;
    create_link(e1, &partner, "https://krispcall.com/", Some("kc-roll")).await;
    // Valid clicks: three on one edge, two on the other; and a bot's.
    until(10, "the link on edge 2", || async move {
        (click(e2, "/r/kc-roll", None).await.status == 302).then_some(())
    })
    .await;
    assert_eq!(click(e2, "/r/kc-roll", None).await.status, 302);
    for _ in 0..3 {
        assert_eq!(click(e1, "/r/kc-roll", None).await.status, 302);
    }
    let bot = send(
        e2,
        "GET",
        "/r/kc-roll",
        &[
            ("user-agent", "curl/8.0"),
            ("x-forwarded-for", "100.99.7.7"),
        ],
        None,
    )
    .await;
    assert_eq!(bot.status, 302);
    // Read through either edge (sent on to the calculator): the rollups
    // count every edge's clicks once.
    let totals = until(60, "the rollups of both edges' clicks", || async move {
        let v = read(e1, "/api/v1/stats/daily?link=kc-roll").await;
        let t = &v["total"];
        (t["valid"] == 5 && t["flagged"] == 1).then(|| v.clone())
    })
    .await;
    assert_eq!(totals["total"]["by_reason"]["bot"], 1, "{totals}");
    let link = read(e2, "/api/v1/links/kc-roll/stats").await;
    assert_eq!(link["referrer_hosts"]["blog.example"], 5, "{link}");
    assert_eq!(link["referrer_hosts"]["direct"], 1, "{link}");
    let partner_days = read(e2, &format!("/api/v1/partners/{partner}/clicks/daily")).await;
    let day = &partner_days["days"][0];
    assert_eq!(
        (&day["counted"], &day["not_counted"]),
        (&json!(5), &json!(1))
    );
    // The calculator (where the console and portal run) counts a link's
    // clicks on every edge; an edge its own.
    let on_calc = read(calc.addr(), "/api/v1/links/kc-roll").await;
    assert_eq!(on_calc["click_count"], 6, "{on_calc}");
    let links = read(calc.addr(), &format!("/api/v1/partners/{partner}/links")).await;
    assert_eq!(links["links"][0]["click_count"], 6, "{links}");
    let on_edge = read(e1, "/api/v1/links/kc-roll").await;
    assert_eq!(on_edge["click_count"], 3, "{on_edge}");
}

/// Webhook settings for a receiver on loopback that answers at once.
const HOOKS: &[(&str, &str)] = &[
    ("REFEDGE_WEBHOOKS__TIMEOUT_MS", "2000"),
    ("REFEDGE_WEBHOOKS__RETRY_BASE_MS", "200"),
    ("REFEDGE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
];

/// The event ids of what `rx` got, of one type.
fn ids_of(rx: &common::receiver::Receiver, kind: &str) -> Vec<String> {
    common::receiver::of_type(&rx.got(), kind)
        .iter()
        .map(|g| g.event_id.clone().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_postbacks_go_on_from_the_standby_after_the_active_calculator_dies() {
    use common::receiver::{of_type, Receiver, OK};
    let rx = Receiver::start().await;
    rx.set(OK);
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let mut calc1 = Node::start(&nats, root.path(), "calc-1", "calculator", HOOKS);
    let edge = Node::start(&nats, root.path(), "edge-1", "edge", HOOKS);
    let first = holder(edge.addr(), 30, "a lease holder", "").await;
    assert_eq!(first, "calc-1");
    let calc2 = Node::start(&nats, root.path(), "calc-2", "calculator", HOOKS);

    // A webhook and a partner's postback, made through the edge (the
    // active calculator answers), known to the standby too.
    let hook = api(
        edge.addr(),
        "POST",
        "/api/v1/webhooks",
        Some(json!({"url": format!("http://{}/hook", rx.addr),
                    "events": ["referral.created", "commission.created"]})),
    )
    .await;
    assert_eq!(hook.status, 201, "{}", String::from_utf8_lossy(&hook.body));
    let hook = hook.json();
    let (hook_id, secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap(),
    );
    let partner = cluster_partner(edge.addr(), "hooked@blog.example").await;
    let template = format!("http://{}/pb?click={{refclk}}&ev={{event}}", rx.addr);
    let r = api(
        edge.addr(),
        "PUT",
        &format!("/api/v1/partners/{partner}/postback"),
        Some(json!({"url_template": template})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let c = json!({"code": "HOOKED", "partner_id": partner});
    assert_eq!(
        api(edge.addr(), "POST", "/api/v1/coupons", Some(c))
            .await
            .status,
        201
    );
    let on_standby = until(30, "the webhook on the standby", || async {
        let r = try_api(
            calc2.addr(),
            "GET",
            &format!("/api/v1/webhooks/{hook_id}"),
            None,
        )
        .await?;
        (r.status == 200).then(|| r.json())
    })
    .await;
    assert_eq!(on_standby["url"], hook["url"]);
    let pb = read(
        calc2.addr(),
        &format!("/api/v1/partners/{partner}/postback"),
    )
    .await;
    assert_eq!(pb["url_template"], template.as_str());

    // Two customers through calc-1: a referral and a commission each, by
    // webhook and by postback.
    for i in 0..2 {
        for ev in [signup(100 + i, "HOOKED"), payment(100 + i, 1, "40.00")] {
            assert_eq!(deliver(&[edge.addr()], &ev).await.0, 201);
        }
    }
    rx.until("calc-1's deliveries", |g| {
        of_type(g, "commission.created").len() == 2
            && g.iter().filter(|g| g.path.starts_with("/pb")).count() == 4
    })
    .await;
    // Marked before calc-1's log says delivered: once the log says so,
    // the standby can know.
    until(20, "calc-1's log to say delivered", || async {
        let r = try_api(
            calc1.addr(),
            "GET",
            &format!("/api/v1/webhooks/{hook_id}/deliveries"),
            None,
        )
        .await?;
        let ds = r.json()["deliveries"].as_array()?.clone();
        (ds.len() == 4 && ds.iter().all(|d| d["state"] == "delivered")).then_some(())
    })
    .await;
    let before = rx.got().len();

    calc1.kill();
    let next = holder(edge.addr(), 15, "a take-over", "calc-1").await;
    assert_eq!(next, "calc-2");

    // A third customer: calc-2 sends, signed with the same secret.
    for ev in [signup(102, "HOOKED"), payment(102, 1, "40.00")] {
        assert_eq!(deliver(&[edge.addr()], &ev).await.0, 201);
    }
    let got = rx
        .until("calc-2's deliveries", |g| {
            of_type(g, "commission.created").len() == 3
                && g.iter().filter(|g| g.path.starts_with("/pb")).count() == 6
        })
        .await;
    for g in of_type(&got, "commission.created") {
        let sig = g.signature.as_deref().unwrap();
        let t: i64 = sig[2..sig.find(',').unwrap()].parse().unwrap();
        assert_eq!(
            refedge::signature::verify(secret, sig, g.body.as_bytes(), t),
            Ok(())
        );
    }
    // What calc-1 delivered is not sent again: give calc-2 time to have
    // sent it (it rechecks its queue every few seconds), then count.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let got = rx.got();
    assert_eq!(got.len(), before + 4, "{:#?}", &got[before..]);
    for kind in ["referral.created", "commission.created"] {
        let ids = ids_of(&rx, kind);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!((ids.len(), unique.len()), (3, 3), "{kind}: {ids:?}");
    }
    let log = read(
        calc2.addr(),
        &format!("/api/v1/webhooks/{hook_id}/deliveries"),
    )
    .await;
    let ds = log["deliveries"].as_array().unwrap();
    assert_eq!(ds.len(), 6, "{log}");
    assert!(ds.iter().all(|d| d["state"] == "delivered"), "{log}");
    // Only calc-2's own sends carry attempts in its log.
    let attempted = ds
        .iter()
        .filter(|d| !d["attempts"].as_array().unwrap().is_empty());
    assert_eq!(attempted.count(), 2, "{log}");

    // Removed through the new holder: nothing more is sent to it.
    let r = api(
        edge.addr(),
        "DELETE",
        &format!("/api/v1/webhooks/{hook_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for ev in [signup(103, "HOOKED"), payment(103, 1, "40.00")] {
        assert_eq!(deliver(&[edge.addr()], &ev).await.0, 201);
    }
    rx.until("the postbacks of the fourth customer", |g| {
        g.iter().filter(|g| g.path.starts_with("/pb")).count() == 8
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ids_of(&rx, "commission.created").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_delivery_to_an_edge_is_checked_and_applied_by_the_calculator() {
    use common::stripe::{envelope, fixture, invoice, set, SECRET, V2024};
    let env = [(
        "REFEDGE_PROGRAMS__KRISPCALL__STRIPE__WEBHOOK_SECRET",
        SECRET,
    )];
    let nats = Nats::start();
    let root = tempfile::tempdir().unwrap();
    let _calc = Node::start(&nats, root.path(), "calc-1", "calculator", &env);
    let edge = Node::start(&nats, root.path(), "edge-1", "edge", &env);
    read(edge.addr(), "/api/v1/problems").await;
    let partner = cluster_partner(edge.addr(), "striped@blog.example").await;
    let link =
        json!({"partner_id": partner, "destination": "https://krispcall.com/", "code": "st-k"});
    let r = api(edge.addr(), "POST", "/api/v1/links", Some(link)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let token = click(edge.addr(), "/r/st-k", None)
        .await
        .attribution_cookie()
        .unwrap();

    // Stripe signs with the real clock, as the nodes check it; the
    // customer signs up a minute after the click (a person, not a script).
    let now = chrono::Utc::now();
    let signed_up = now + chrono::Duration::minutes(1);
    let at = signed_up.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let post = |body: String, signature: String| {
        let addr = edge.addr();
        async move {
            let headers = [
                ("content-type", "application/json"),
                ("stripe-signature", signature.as_str()),
            ];
            let path = "/integrations/stripe/krispcall";
            send(addr, "POST", path, &headers, Some(body.as_bytes())).await
        }
    };
    let sign = |body: &str| refedge::signature::sign(SECRET, now.timestamp(), body.as_bytes());
    let mut session = fixture(V2024, "checkout.session");
    set(&mut session, "/client_reference_id", json!(token));
    set(&mut session, "/created", json!(signed_up.timestamp()));
    let first = invoice(V2024, "in_c1", 1, "price_standard", 1500, 2, &at);
    let deliveries = [
        envelope(
            "evt_cluster_1",
            V2024,
            "checkout.session.completed",
            now.timestamp(),
            session,
            None,
        ),
        envelope(
            "evt_cluster_2",
            V2024,
            "invoice.paid",
            now.timestamp(),
            first,
            None,
        ),
    ];
    // A delivery signed with another secret is refused where the secret
    // is checked, and changes nothing.
    let body = deliveries[1].to_string();
    let forged = refedge::signature::sign("whsec_not_ours", now.timestamp(), body.as_bytes());
    let r = post(body, forged).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let mut last = 0;
    for d in &deliveries {
        let body = d.to_string();
        let signature = sign(&body);
        let r = post(body, signature).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-refedge-served-by"), Some("calc-1"));
        for e in r.json()["events"].as_array().into_iter().flatten() {
            last = last.max(e["seq"].as_u64().unwrap());
        }
    }
    assert!(last > 0);
    let month = signed_up.format("%Y-%m");
    let statement = read(
        edge.addr(),
        &format!("/api/v1/partners/{partner}/statement?month={month}&wait_for={last}"),
    )
    .await;
    let lines: Vec<(&str, &str)> = statement["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    // 30% of the first invoice (two seats at 15.00).
    assert_eq!(lines, [("commission", "9.00")], "{statement}");
    // Stripe's retry of a delivery it already made changes nothing.
    let body = deliveries[1].to_string();
    let signature = sign(&body);
    assert_eq!(post(body, signature).await.status, 200);
    let again = read(
        edge.addr(),
        &format!("/api/v1/partners/{partner}/statement?month={month}"),
    )
    .await;
    assert_eq!(again["lines"], statement["lines"]);
}
