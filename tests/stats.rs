//! Click statistics from the rollups over HTTP: per day by verdict and
//! reason for staff, counted and not for partners, and a link's referrer
//! hosts and device classes; equal to the clicks served, across a restart.

mod common;

use common::*;
use serde_json::json;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[tokio::test]
async fn stats_count_every_click_served_by_day_host_and_device() {
    let s = TestServer::start().await;
    let a = s.partner("krispcall", "a@blog.example").await;
    let b = s.partner("krispcall", "b@blog.example").await;
    s.link(&a, "https://krispcall.com/", Some("a-link")).await;
    s.link(&b, "https://krispcall.com/", Some("b-link")).await;
    // Day one: 6 phone clicks from the partner's blog, 3 desktop direct,
    // 2 from a bot; day two: 4 more.
    let hit = |code: &'static str, ua: &'static str, referer: Option<&'static str>| {
        let ip = next_visitor();
        let s = &s;
        async move {
            let mut h = vec![
                ("user-agent", ua),
                ("x-forwarded-for", ip.as_str()),
                (
                    "accept",
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                ),
                ("accept-language", "en-US,en;q=0.9"),
                ("sec-fetch-dest", "document"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-site", "cross-site"),
            ];
            if let Some(r) = referer {
                h.push(("referer", r));
            }
            send(s.addr(), "GET", &format!("/r/{code}"), &h, None)
                .await
                .status
        }
    };
    for _ in 0..6 {
        assert_eq!(
            hit("a-link", IPHONE, Some("https://www.blog.example/post")).await,
            302
        );
    }
    for _ in 0..3 {
        assert_eq!(hit("a-link", DESKTOP, None).await, 302);
    }
    for _ in 0..2 {
        hit("a-link", "curl/8.5.0", None).await;
    }
    hit("b-link", DESKTOP, None).await;
    s.clock.advance(chrono::Duration::days(1));
    for _ in 0..4 {
        hit("a-link", DESKTOP, None).await;
    }
    let daily = api(
        s.addr(),
        "GET",
        "/api/v1/stats/daily?program=krispcall&from=2026-03-01",
        None,
    )
    .await;
    assert_eq!(
        daily.status,
        200,
        "{}",
        String::from_utf8_lossy(&daily.body)
    );
    let d = daily.json();
    assert_eq!(d["days"][0]["date"], "2026-03-01", "{d}");
    assert_eq!(d["days"][0]["valid"], 10, "{d}");
    assert_eq!(
        d["days"][0]["flagged"].as_u64().unwrap() + d["days"][0]["blocked"].as_u64().unwrap(),
        2
    );
    assert_eq!(d["days"][0]["by_reason"]["bot"], 2);
    assert_eq!(d["days"][1]["valid"], 4);
    assert_eq!(d["total"]["valid"], 14);

    let link = api(
        s.addr(),
        "GET",
        "/api/v1/links/a-link/stats?from=2026-03-01",
        None,
    )
    .await
    .json();
    assert_eq!(
        link["referrer_hosts"],
        json!({"blog.example": 6, "direct": 9})
    );
    assert_eq!(link["devices"]["mobile"], 6);
    assert_eq!(link["devices"]["desktop"], 7);
    assert_eq!(
        link["days"][0],
        json!({"date": "2026-03-01", "counted": 9, "not_counted": 2})
    );

    // The period's busiest, by counted clicks: a (13 counted, 2 not)
    // before b (1); links alike; one day alone.
    let top = api(s.addr(), "GET", "/api/v1/stats/top?from=2026-03-01", None)
        .await
        .json();
    assert_eq!(
        top["top"],
        json!([
            {"partner_id": a, "name": "Test Partner", "counted": 13, "not_counted": 2},
            {"partner_id": b, "name": "Test Partner", "counted": 1, "not_counted": 0}
        ]),
        "{top}"
    );
    let links = api(
        s.addr(),
        "GET",
        "/api/v1/stats/top?by=link&from=2026-03-02&limit=1",
        None,
    )
    .await
    .json();
    assert_eq!(
        links["top"],
        json!([{"code": "a-link", "partner_id": a, "counted": 4, "not_counted": 0}])
    );
    let bad = api(s.addr(), "GET", "/api/v1/stats/top?by=program", None).await;
    assert_eq!(bad.status, 422);

    // A partner key reads its own clicks, without the fraud evidence.
    let r = api(
        s.addr(),
        "POST",
        "/api/v1/api-keys",
        Some(json!({"name": "a", "role": "partner", "partner_id": a})),
    )
    .await;
    let key = r.json()["secret"].as_str().unwrap().to_string();
    let mine = api_as(
        s.addr(),
        &key,
        "GET",
        &format!("/api/v1/partners/{a}/clicks/daily?from=2026-03-01"),
        None,
    )
    .await;
    assert_eq!(mine.status, 200);
    let text = String::from_utf8(mine.body.clone()).unwrap();
    assert!(
        !text.contains("bot") && !text.contains("by_reason"),
        "{text}"
    );
    assert_eq!(
        mine.json()["days"][1],
        json!({"date": "2026-03-02", "counted": 4, "not_counted": 0})
    );
    let theirs = api_as(
        s.addr(),
        &key,
        "GET",
        &format!("/api/v1/partners/{b}/clicks/daily"),
        None,
    )
    .await;
    assert_eq!(theirs.status, 404);

    // Bad periods name the field.
    for (q, field) in [
        ("from=2026-03-05&to=2026-03-01", "from"),
        ("from=2024-01-01", "from"),
        ("to=tomorrow", "to"),
    ] {
        let r = api(
            s.addr(),
            "GET",
            &format!("/api/v1/stats/daily?program=krispcall&{q}"),
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.json()["field"].as_str()),
            (422, Some(field)),
            "{q}"
        );
    }
    let r = api(
        s.addr(),
        "GET",
        "/api/v1/stats/daily?program=krispcall&partner=x",
        None,
    )
    .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn rollups_survive_a_restart_without_counting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = Process::spawn(&data, &[]);
    let pid = create_partner(p.addr, "krispcall", "a@blog.example").await;
    create_link(p.addr, &pid, "https://krispcall.com/", Some("r-link")).await;
    for i in 0..30 {
        let ip = format!("203.0.113.{i}");
        send(
            p.addr,
            "GET",
            "/r/r-link",
            &[("x-forwarded-for", &ip)],
            None,
        )
        .await;
    }
    let first = api(p.addr, "GET", "/api/v1/links/r-link/stats", None)
        .await
        .json();
    let total = |v: &serde_json::Value| -> u64 {
        v["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["counted"].as_u64().unwrap() + d["not_counted"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&first), 30);
    p.signal("KILL");
    let _ = p.wait();
    let p = Process::spawn(&data, &[]);
    for i in 30..40 {
        let ip = format!("203.0.113.{i}");
        send(
            p.addr,
            "GET",
            "/r/r-link",
            &[("x-forwarded-for", &ip)],
            None,
        )
        .await;
    }
    let after = api(p.addr, "GET", "/api/v1/links/r-link/stats", None)
        .await
        .json();
    assert_eq!(total(&after), 40);
    p.signal("TERM");
    let _ = p.wait();
}
