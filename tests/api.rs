//! The admin API over real HTTP: authentication, validation (every bad
//! input is a 4xx naming the field, and changes nothing), click paging,
//! health and metrics.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn every_api_route_needs_the_bearer_token() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("POST", "/api/v1/partners"),
        ("GET", "/api/v1/partners/p_x"),
        ("POST", "/api/v1/links"),
        ("GET", "/api/v1/links/abc"),
        ("DELETE", "/api/v1/links/abc"),
        ("GET", "/api/v1/clicks"),
        ("POST", "/api/v1/keys/rotate"),
        ("GET", "/api/v1/no-such-route"),
    ] {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(ADMIN)] {
            let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
            let r = send(s.addr(), method, path, &h, None).await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.json()["error"], "missing or wrong bearer token");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    let ok = api(s.addr(), "GET", "/api/v1/clicks", None).await;
    assert_eq!(ok.status, 200);
}

async fn partner_count(s: &TestServer) -> usize {
    s.running.app.store.partners().unwrap().len()
}

#[tokio::test]
async fn bad_partners_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let good = json!({"program": "krispcall", "name": "Ann", "email": "ann@blog.example", "website": "https://blog.example"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("program", json!("nope")), 422, "program"),
        (with("name", json!(5)), 422, "name"),
        (with("name", json!("  ")), 422, "name"),
        (without("email"), 422, "email"),
        (with("email", json!("not-an-email")), 422, "email"),
        (
            with("website", json!("javascript:alert(1)")),
            422,
            "website",
        ),
        (with("currency", json!("usd")), 422, "currency"),
        (with("currency", json!(840)), 422, "currency"),
        (with("colour", json!("blue")), 422, "colour"),
    ];
    for (body, status, field) in cases {
        let r = api(s.addr(), "POST", "/api/v1/partners", Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}");
        let j = r.json();
        assert_eq!(j["field"], field, "{body}: {j}");
        assert!(!j["error"].as_str().unwrap().is_empty());
    }
    let auth = format!("Bearer {ADMIN}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = send(
        s.addr(),
        "POST",
        "/api/v1/partners",
        &h,
        Some(b"{\"program\": "),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
    let big = vec![b' '; 2 << 20];
    let r = send(s.addr(), "POST", "/api/v1/partners", &h, Some(&big)).await;
    assert_eq!(r.status, 413);
    let form = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let r = send(
        s.addr(),
        "POST",
        "/api/v1/partners",
        &form,
        Some(good.to_string().as_bytes()),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        partner_count(&s).await,
        0,
        "a refused request created a partner"
    );

    let r = api(s.addr(), "POST", "/api/v1/partners", Some(good)).await;
    assert_eq!(r.status, 201);
    let p = r.json();
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["status"], "active");
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/partners/{id}").as_str())
    );
    let got = api(s.addr(), "GET", &format!("/api/v1/partners/{id}"), None).await;
    assert_eq!(got.json(), p);
    assert_eq!(
        api(s.addr(), "GET", "/api/v1/partners/p_missing", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn bad_links_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    let p = s.partner("krispcall", "ann@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("taken")).await;
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (
            json!({"partner_id": p, "destination": "https://evil.example/"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com.evil.example/"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "javascript:alert(1)"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "//evil.example/x"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "/pricing"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com@evil.example/"}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": 7}),
            422,
            Some("destination"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com/", "code": "has space"}),
            422,
            Some("code"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com/", "code": "a/b"}),
            422,
            Some("code"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com/", "code": "ünïcode"}),
            422,
            Some("code"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com/", "code": "x"}),
            422,
            Some("code"),
        ),
        (
            json!({"partner_id": "p_nobody", "destination": "https://krispcall.com/"}),
            422,
            Some("partner_id"),
        ),
        (
            json!({"destination": "https://krispcall.com/"}),
            422,
            Some("partner_id"),
        ),
        (
            json!({"partner_id": p, "destination": "https://krispcall.com/", "code": "taken"}),
            409,
            None,
        ),
        (json!([1, 2]), 422, Some("")),
    ];
    for (body, status, field) in cases {
        let r = api(s.addr(), "POST", "/api/v1/links", Some(body.clone())).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if let Some(f) = field {
            if !f.is_empty() {
                assert_eq!(r.json()["field"], f, "{body}");
            }
        }
    }
    assert_eq!(s.running.app.directory.link_count(), 1);
    let mut stored = 0;
    s.running.app.store.for_each_link(|_| stored += 1).unwrap();
    assert_eq!(stored, 1);
    let still = api(s.addr(), "GET", "/api/v1/links/taken", None)
        .await
        .json();
    assert_eq!(still["partner_id"], p.as_str());
}

#[tokio::test]
async fn generated_codes_are_short_unguessable_and_url_safe() {
    let s = TestServer::start().await;
    let p = s.partner("ringostat", "agency@studio.example").await;
    let mut codes = std::collections::HashSet::new();
    for _ in 0..50 {
        let l = s.link(&p, "https://www.ringostat.com/en/", None).await;
        let code = l["code"].as_str().unwrap().to_string();
        assert_eq!(code.len(), 10);
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(l["url"], format!("http://{}/r/{code}", s.addr()));
        assert_eq!(l["destination"], "https://www.ringostat.com/en/");
        assert_eq!(l["click_count"], 0);
        codes.insert(code);
    }
    assert_eq!(codes.len(), 50);
}

#[tokio::test]
async fn clicks_page_by_link_partner_time_and_cursor() {
    let s = TestServer::start().await;
    let p1 = s.partner("krispcall", "one@a.example").await;
    let p2 = s.partner("krispcall", "two@b.example").await;
    s.link(&p1, "https://krispcall.com/", Some("one-a")).await;
    s.link(&p1, "https://krispcall.com/", Some("one-b")).await;
    s.link(&p2, "https://krispcall.com/", Some("two-a")).await;
    for i in 0..5 {
        click(s.addr(), "/r/one-a", None).await;
        click(s.addr(), "/r/two-a", None).await;
        if i < 2 {
            click(s.addr(), "/r/one-b", None).await;
        }
        s.clock.advance(chrono::Duration::hours(1));
    }
    let list = |q: String| {
        let addr = s.addr();
        async move {
            let r = api(addr, "GET", &format!("/api/v1/clicks{q}"), None).await;
            assert_eq!(r.status, 200, "{q}");
            r.json()
        }
    };
    assert_eq!(
        list("".into()).await["clicks"].as_array().unwrap().len(),
        12
    );
    assert_eq!(
        list("?link=one-a".into()).await["clicks"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        list(format!("?partner={p1}")).await["clicks"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        list(format!("?partner={p2}&link=one-a")).await["clicks"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // 12:00 + 1h steps: from 13:00 to 15:00 holds two rounds.
    let window = list("?link=two-a&from=2026-03-01T13:00:00Z&to=2026-03-01T15:00:00Z".into()).await;
    assert_eq!(window["clicks"].as_array().unwrap().len(), 2);

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list(format!("?partner={p1}&limit=3{cursor}")).await;
        let clicks = page["clicks"].as_array().unwrap();
        seen.extend(clicks.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in time order without repeats");

    let link = api(s.addr(), "GET", "/api/v1/links/one-a", None)
        .await
        .json();
    assert_eq!(link["click_count"], 5);

    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
        ("?from=yesterday", "from"),
        ("?cursor=zzz", "cursor"),
        ("?colour=red", "colour"),
    ] {
        let r = api(s.addr(), "GET", &format!("/api/v1/clicks{q}"), None).await;
        assert_eq!(r.status, 422, "{q}");
        assert_eq!(r.json()["field"], field);
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let p = s.partner("aloware", "al@agency.example").await;
    s.link(&p, "https://aloware.com/", Some("al-1")).await;
    click(s.addr(), "/r/al-1", None).await;
    click(s.addr(), "/r/nope-nope", None).await;
    assert_eq!(
        send(s.addr(), "GET", "/healthz", &[], None).await.status,
        200
    );
    assert_eq!(
        send(s.addr(), "GET", "/readyz", &[], None).await.status,
        200
    );
    // Make the written-click counters settle.
    api(s.addr(), "GET", "/api/v1/links/al-1", None).await;
    let m = send(s.addr(), "GET", "/metrics", &[], None).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    for needle in [
        "refedge_clicks_served_total{program=\"aloware\"} 1",
        "refedge_redirect_duration_seconds_count 1",
        "refedge_click_queue_depth 0",
        "refedge_clicks_written_total 1",
        "refedge_click_batch_flush_seconds_count",
        "refedge_click_batch_size_count",
        "refedge_http_responses_total{route=\"/r/{code}\",status=\"302\"} 1",
        "refedge_http_responses_total{route=\"/r/{code}\",status=\"404\"} 1",
        "refedge_http_responses_total{route=\"/api/v1/links\",status=\"201\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    // Low cardinality: no code, partner id or IP appears in any label.
    for secret in ["al-1", p.as_str(), "127.0.0.1"] {
        assert!(!text.contains(secret), "metrics leak {secret}");
    }
}
