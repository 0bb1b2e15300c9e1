//! Fraud verdicts over real HTTP with header sets taken from real browsers
//! and crawlers: each rule flags, nothing flagged sets or overwrites a
//! cookie, flagged clicks never become referrals, and the fraud API shows it.

mod common;

use common::*;
use serde_json::{json, Value};

const CHROME: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("sec-ch-ua", "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Windows\""),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "cross-site"),
    ("sec-fetch-user", "?1"),
    ("upgrade-insecure-requests", "1"),
];

/// The same Chrome loading the link as an `<img>` on a stuffing page.
const CHROME_IMG: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("sec-fetch-dest", "image"),
    ("sec-fetch-mode", "no-cors"),
    ("sec-fetch-site", "cross-site"),
];

/// ... and in a hidden `<iframe>`.
const CHROME_IFRAME: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("sec-fetch-dest", "iframe"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "cross-site"),
];

/// Chrome's speculative prefetch of a link.
const CHROME_PREFETCH: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("sec-purpose", "prefetch;prerender"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
];

const GOOGLEBOT: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/131.0.6778.204 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/signed-exchange;v=b3,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-encoding", "gzip, deflate, br"),
];
const SLACK_PREVIEW: &[(&str, &str)] = &[
    (
        "user-agent",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ),
    ("accept", "*/*"),
];
const CURL: &[(&str, &str)] = &[("user-agent", "curl/8.5.0"), ("accept", "*/*")];
const PYTHON: &[(&str, &str)] = &[
    ("user-agent", "python-requests/2.32.3"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
];
const HEADLESS: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml"),
    ("accept-language", "en-US"),
    ("sec-fetch-dest", "document"),
];
/// A browser user agent without the headers every browser sends.
const SPOOFED: &[(&str, &str)] = &[(
    "user-agent",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
)];

async fn hit(
    s: &TestServer,
    path: &str,
    shape: &[(&str, &str)],
    visitor: &str,
    cookie: Option<&str>,
    referer: Option<&str>,
) -> Resp {
    let cookie = cookie.map(|c| format!("refedge_attr={c}"));
    let mut h: Vec<(&str, &str)> = shape.to_vec();
    h.push(("x-forwarded-for", visitor));
    if let Some(c) = &cookie {
        h.push(("cookie", c));
    }
    if let Some(r) = referer {
        h.push(("referer", r));
    }
    send(s.addr(), "GET", path, &h, None).await
}

async fn last_click(s: &TestServer, code: &str) -> Value {
    let page = api(
        s.addr(),
        "GET",
        &format!("/api/v1/clicks?link={code}&limit=1000"),
        None,
    )
    .await
    .json();
    page["clicks"].as_array().unwrap().last().unwrap().clone()
}

/// The distinct reasons a click was flagged with.
fn reasons(click: &Value) -> Vec<String> {
    let mut r: Vec<String> = click["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap().to_string())
        .collect();
    r.dedup();
    r
}

async fn setup(s: &TestServer) -> (String, String) {
    let a = s.partner("krispcall", "ann@blog.example").await;
    let b = s.partner("krispcall", "ben@reviews.example").await;
    s.link(&a, "https://krispcall.com/", Some("ann-link")).await;
    s.link(&b, "https://krispcall.com/", Some("ben-link")).await;
    (a, b)
}

#[tokio::test]
async fn real_browsers_are_valid_and_set_the_cookie() {
    let s = TestServer::start().await;
    setup(&s).await;
    let r = hit(&s, "/r/ann-link", CHROME, &next_visitor(), None, None).await;
    assert_eq!(r.status, 302);
    assert!(r.attribution_cookie().is_some());
    let c = last_click(&s, "ann-link").await;
    assert_eq!(c["verdict"], "valid");
    assert!(c.get("flags").is_none());
}

#[tokio::test]
async fn bots_redirect_without_a_cookie_and_never_overwrite_one() {
    let s = TestServer::start().await;
    setup(&s).await;
    let visitor = next_visitor();
    let ann_cookie = hit(&s, "/r/ann-link", CHROME, &visitor, None, None)
        .await
        .attribution_cookie()
        .unwrap();
    for (name, shape) in [
        ("googlebot", GOOGLEBOT),
        ("slack", SLACK_PREVIEW),
        ("curl", CURL),
        ("python", PYTHON),
        ("headless", HEADLESS),
        ("spoofed", SPOOFED),
    ] {
        let r = hit(
            &s,
            "/r/ben-link",
            shape,
            &next_visitor(),
            Some(&ann_cookie),
            None,
        )
        .await;
        assert_eq!(r.status, 302, "{name}");
        assert!(
            r.header("set-cookie").is_none(),
            "{name} set or replaced a cookie"
        );
        let c = last_click(&s, "ben-link").await;
        assert_eq!(c["verdict"], "flagged", "{name}");
        assert!(reasons(&c).contains(&"bot".to_string()), "{name}: {c}");
        assert!(!c["flags"][0]["evidence"].as_str().unwrap().is_empty());
    }
    // A data-centre source network (an AWS address from the shipped list).
    let r = hit(&s, "/r/ben-link", CHROME, "3.5.140.2", None, None).await;
    assert!(r.header("set-cookie").is_none());
    let c = last_click(&s, "ben-link").await;
    assert!(
        c["flags"]
            .to_string()
            .contains("source network belongs to amazon"),
        "{c}"
    );
}

#[tokio::test]
async fn stuffing_shapes_never_attribute() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    setup(&s).await;
    for (name, shape, evidence) in [
        ("img", CHROME_IMG, "sec-fetch-dest: image"),
        ("iframe", CHROME_IFRAME, "sec-fetch-dest: iframe"),
        (
            "prefetch",
            CHROME_PREFETCH,
            "sec-purpose: prefetch;prerender",
        ),
    ] {
        let r = hit(&s, "/r/ann-link", shape, &next_visitor(), None, None).await;
        assert_eq!(r.status, 302, "{name}");
        assert!(r.header("set-cookie").is_none(), "{name}");
        let c = last_click(&s, "ann-link").await;
        assert_eq!(reasons(&c), ["stuffing"], "{name}: {c}");
        assert!(c["flags"].to_string().contains(evidence), "{name}: {c}");
        // The merchant captured the refclk anyway: the signup is refused.
        let click_id = c["id"].as_str().unwrap().to_string();
        m.ev(json!({"id": format!("s-{name}"), "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                    "customer": {"id": format!("c-{name}")}, "attribution": {"click_id": click_id}})).await;
        assert_eq!(m.rejection(&format!("c-{name}")).await, "flagged_click");
    }
    // One visitor on three partners' links within seconds.
    let c = s.partner("krispcall", "cat@coupons.example").await;
    s.link(&c, "https://krispcall.com/", Some("cat-link")).await;
    let v = next_visitor();
    for code in ["ann-link", "ben-link"] {
        assert!(hit(&s, &format!("/r/{code}"), CHROME, &v, None, None)
            .await
            .attribution_cookie()
            .is_some());
    }
    let r = hit(&s, "/r/cat-link", CHROME, &v, None, None).await;
    assert!(r.header("set-cookie").is_none());
    assert_eq!(reasons(&last_click(&s, "cat-link").await), ["stuffing"]);
}

#[tokio::test]
async fn referer_must_be_the_partners_site_when_the_program_says_so() {
    let s = TestServer::start_with(|c| {
        c.programs
            .get_mut("krispcall")
            .unwrap()
            .fraud
            .require_partner_referer = true
    })
    .await;
    setup(&s).await;
    let ok = hit(
        &s,
        "/r/ann-link",
        CHROME,
        &next_visitor(),
        None,
        Some("https://www.blog.example/review"),
    )
    .await;
    assert!(ok.attribution_cookie().is_some());
    let bad = hit(
        &s,
        "/r/ann-link",
        CHROME,
        &next_visitor(),
        None,
        Some("https://spam.example/"),
    )
    .await;
    assert!(bad.header("set-cookie").is_none());
    assert_eq!(reasons(&last_click(&s, "ann-link").await), ["stuffing"]);
}

#[tokio::test]
async fn duplicates_and_rate_limits() {
    let s = TestServer::start().await;
    setup(&s).await;
    let v = next_visitor();
    assert!(hit(&s, "/r/ann-link", CHROME, &v, None, None)
        .await
        .attribution_cookie()
        .is_some());
    let again = hit(&s, "/r/ann-link", CHROME, &v, None, None).await;
    assert_eq!(again.status, 302);
    assert!(again.header("set-cookie").is_none());
    assert_eq!(reasons(&last_click(&s, "ann-link").await), ["duplicate"]);
    s.clock.advance(chrono::Duration::seconds(31));
    assert!(
        hit(&s, "/r/ann-link", CHROME, &v, None, None)
            .await
            .attribution_cookie()
            .is_some(),
        "outside the window"
    );

    // 10 per minute per visitor and link; far beyond (×5) is a 429.
    let w = next_visitor();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(hit(&s, "/r/ben-link", CHROME, &w, None, None).await.status);
    }
    assert!(statuses[..50].iter().all(|&st| st == 302));
    assert!(statuses[50..].iter().all(|&st| st == 429), "{statuses:?}");
    let flagged = api(
        s.addr(),
        "GET",
        "/api/v1/fraud/clicks?reason=rate_limited&limit=1000",
        None,
    )
    .await
    .json();
    assert_eq!(flagged["clicks"].as_array().unwrap().len(), 40);
    let text = String::from_utf8(send(s.addr(), "GET", "/metrics", &[], None).await.body).unwrap();
    assert!(text.contains("refedge_clicks_total{program=\"krispcall\",reason=\"rate_limited\",verdict=\"blocked\"} 10"), "{text}");
}

#[tokio::test]
async fn paid_search_is_flagged_or_blocked_as_the_program_decides() {
    let s = TestServer::start().await;
    setup(&s).await;
    let r = hit(
        &s,
        "/r/ann-link?gclid=Cj0KCQiA",
        CHROME,
        &next_visitor(),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 302);
    assert!(r.header("set-cookie").is_none());
    assert!(last_click(&s, "ann-link").await["flags"]
        .to_string()
        .contains("ad click id gclid"));
    let r = hit(
        &s,
        "/r/ann-link",
        CHROME,
        &next_visitor(),
        None,
        Some("https://www.google.com/search?q=krispcall+pricing"),
    )
    .await;
    assert!(r.header("set-cookie").is_none());
    assert!(last_click(&s, "ann-link").await["flags"]
        .to_string()
        .contains("search for \\\"krispcall\\\""));
    // A search without the brand is fine.
    let r = hit(
        &s,
        "/r/ann-link",
        CHROME,
        &next_visitor(),
        None,
        Some("https://www.google.com/search?q=cloud+phone+system"),
    )
    .await;
    assert!(r.attribution_cookie().is_some());

    let strict = TestServer::start_with(|c| {
        c.programs.get_mut("krispcall").unwrap().fraud.paid_search =
            refedge::fraud::PaidSearchPolicy::Block;
    })
    .await;
    setup(&strict).await;
    let r = hit(
        &strict,
        "/r/ann-link?msclkid=abc",
        CHROME,
        &next_visitor(),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        String::from_utf8(r.body)
            .unwrap()
            .contains("href=\"https://krispcall.com/\""),
        "the visitor can still go on"
    );
}

#[tokio::test]
async fn scripted_leads_and_suspended_partners_earn_nothing() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let (ann, _) = setup(&s).await;
    // Clicked at 12:00:00 (the fake clock); signed up two seconds later.
    let token = hit(&s, "/r/ann-link", CHROME, &next_visitor(), None, None)
        .await
        .attribution_cookie()
        .unwrap();
    m.ev(json!({"id": "s1", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-01T12:00:02Z",
                "customer": {"id": "fast"}, "attribution": {"token": token}})).await;
    assert_eq!(m.rejection("fast").await, "scripted_lead");

    let token = hit(&s, "/r/ann-link", CHROME, &next_visitor(), None, None)
        .await
        .attribution_cookie()
        .unwrap();
    m.ev(json!({"id": "s2", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c2"}, "attribution": {"token": token}})).await;
    let pay = |id: &str, inv: &str, at: &str| {
        json!({"id": id, "type": "payment", "program": "krispcall", "occurred_at": at,
        "customer_id": "c2", "invoice_id": inv, "currency": "USD", "lines": [{"kind": "subscription", "amount": "100.00"}]})
    };
    m.ev(pay("p1", "i1", "2026-03-05T00:00:00Z")).await;
    s.clock.set("2026-03-20T00:00:00Z".parse().unwrap());
    let r = api(
        s.addr(),
        "PATCH",
        &format!("/api/v1/partners/{ann}"),
        Some(json!({"status": "suspended", "reason": "review of traffic", "actor": "fraud-team"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["audit"][0]["actor"], "fraud-team");
    // Clicks still redirect, but earn nothing.
    let r = hit(&s, "/r/ann-link", CHROME, &next_visitor(), None, None).await;
    assert_eq!(r.status, 302);
    assert!(r.header("set-cookie").is_none());
    m.ev(pay("p2", "i2", "2026-04-05T00:00:00Z")).await;
    assert_eq!(
        m.payout("krispcall", "2026-05-13T00:00:00Z").await["items"],
        json!([]),
        "held while suspended"
    );
    let b = m.balance(&ann, "2026-05-13", "USD").await;
    assert_eq!(b["lifetime"], "30.00", "the suspended month earned nothing");

    // "terminate for Partner's breach ... without payment of the accrued balance"
    s.clock.set("2026-05-20T00:00:00Z".parse().unwrap());
    let r = api(
        s.addr(),
        "PATCH",
        &format!("/api/v1/partners/{ann}"),
        Some(json!({"status": "terminated", "reason": "brand bidding"})),
    )
    .await;
    assert_eq!(r.status, 200);
    let b = m.balance(&ann, "2026-12-31", "USD").await;
    assert_eq!(
        (b["forfeited"].as_str(), b["available"].as_str()),
        (Some("30.00"), Some("0.00"))
    );
    let audit = api(
        s.addr(),
        "GET",
        &format!("/api/v1/partners/{ann}/audit"),
        None,
    )
    .await
    .json();
    let statuses: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["suspended", "terminated"]);
    let again = api(
        s.addr(),
        "PATCH",
        &format!("/api/v1/partners/{ann}"),
        Some(json!({"status": "active", "reason": "oops"})),
    )
    .await;
    assert_eq!(again.status, 422);
}

#[tokio::test]
async fn aloware_pays_a_terminated_partner_until_the_termination_date() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let al = s.partner("aloware", "al@agency.example").await;
    s.link(&al, "https://aloware.com/", Some("al-link")).await;
    let token = hit(&s, "/r/al-link", CHROME, &next_visitor(), None, None)
        .await
        .attribution_cookie()
        .unwrap();
    m.ev(json!({"id": "s1", "type": "signup", "program": "aloware", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "c1"}, "attribution": {"token": token}})).await;
    m.ev(json!({"id": "p1", "type": "payment", "program": "aloware", "occurred_at": "2026-03-05T00:00:00Z",
                "customer_id": "c1", "invoice_id": "i1", "currency": "USD", "lines": [{"kind": "subscription", "amount": "1000.00"}]})).await;
    // "Partner will be paid for any qualifying referral until the date of termination."
    s.clock.set("2026-03-20T00:00:00Z".parse().unwrap());
    api(
        s.addr(),
        "PATCH",
        &format!("/api/v1/partners/{al}"),
        Some(json!({"status": "terminated", "reason": "partner left"})),
    )
    .await;
    m.ev(json!({"id": "p2", "type": "payment", "program": "aloware", "occurred_at": "2026-04-05T00:00:00Z",
                "customer_id": "c1", "invoice_id": "i2", "currency": "USD", "lines": [{"kind": "subscription", "amount": "1000.00"}]})).await;
    let run = m.payout("aloware", "2026-04-10T00:00:00Z").await;
    assert_eq!(
        run["items"],
        json!([{"partner_id": al, "amount": "200.00", "currency": "USD", "method": "cash"}])
    );
}

#[tokio::test]
async fn the_fraud_api_summarises_and_profiles() {
    let s = TestServer::start().await;
    let (ann, ben) = setup(&s).await;
    for _ in 0..3 {
        hit(&s, "/r/ann-link", CHROME, &next_visitor(), None, None).await;
    }
    hit(&s, "/r/ben-link", CHROME, &next_visitor(), None, None).await;
    hit(&s, "/r/ben-link", CURL, &next_visitor(), None, None).await;
    hit(&s, "/r/ben-link", CHROME_IMG, &next_visitor(), None, None).await;
    let sum = api(
        s.addr(),
        "GET",
        "/api/v1/fraud/summary?program=krispcall",
        None,
    )
    .await
    .json();
    assert_eq!(sum["clicks"], 6);
    assert_eq!(sum["by_verdict"], json!({"flagged": 2, "valid": 4}));
    assert_eq!(sum["by_reason"], json!({"bot": 1, "stuffing": 1}));
    assert_eq!(sum["top_partners"][0]["partner_id"], ben.as_str());
    assert_eq!(sum["top_partners"][0]["suspicious_share"], "0.6667");
    let bots = api(
        s.addr(),
        "GET",
        &format!("/api/v1/fraud/clicks?partner={ben}&reason=bot"),
        None,
    )
    .await
    .json();
    assert_eq!(bots["clicks"].as_array().unwrap().len(), 1);
    assert_eq!(bots["clicks"][0]["user_agent"], "curl/8.5.0");
    let profile = api(
        s.addr(),
        "GET",
        &format!("/api/v1/fraud/partners/{ann}"),
        None,
    )
    .await
    .json();
    assert_eq!(
        (
            profile["clicks"].as_u64(),
            profile["flagged"].as_u64(),
            profile["distinct_visitors"].as_u64()
        ),
        (Some(3), Some(0), Some(3))
    );
    assert_eq!(
        api(s.addr(), "GET", "/api/v1/fraud/clicks?reason=aliens", None)
            .await
            .status,
        422
    );
}

#[tokio::test]
async fn the_fraud_summary_is_exact_over_whole_days_and_the_part_days_at_its_ends() {
    let s = TestServer::start().await;
    let (_, ben) = setup(&s).await;
    let cy = s.partner("aircall", "cy@calls.example").await;
    s.link(&cy, "https://aircall.io/", Some("cy-link")).await;
    let at = |t: &str| s.clock.set(t.parse().unwrap());
    type Headers = &'static [(&'static str, &'static str)];
    let clicks: &[(&str, &str, Headers)] = &[
        ("2026-03-01T10:00:00Z", "/r/ann-link", CHROME),
        ("2026-03-01T10:00:01Z", "/r/ann-link", CHROME),
        ("2026-03-01T10:00:02Z", "/r/ben-link", CURL),
        // Either side of midnight.
        ("2026-03-01T23:59:59.999Z", "/r/ann-link", CHROME),
        ("2026-03-02T00:00:00Z", "/r/ann-link", CHROME),
        ("2026-03-02T06:00:00Z", "/r/ann-link", CHROME),
        ("2026-03-02T06:00:01Z", "/r/ben-link", CHROME_IMG),
        ("2026-03-02T06:00:02Z", "/r/cy-link", CHROME),
        ("2026-03-02T18:00:00Z", "/r/ben-link", CURL),
        ("2026-03-03T09:00:00Z", "/r/ann-link", CHROME),
        ("2026-03-03T09:00:01Z", "/r/ben-link", CHROME),
    ];
    for (t, path, shape) in clicks {
        at(t);
        assert_eq!(
            hit(&s, path, shape, &next_visitor(), None, None)
                .await
                .status,
            302
        );
    }
    let summary = |q: &'static str| {
        let addr = s.addr();
        async move {
            let r = api(addr, "GET", &format!("/api/v1/fraud/summary?{q}"), None).await;
            assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            let top: Vec<(String, u64, u64)> = v["top_partners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap();
                    (
                        p["partner_id"].as_str().unwrap().to_string(),
                        n("clicks"),
                        n("flagged"),
                    )
                })
                .collect();
            (
                v["clicks"].as_u64().unwrap(),
                v["by_verdict"].clone(),
                v["by_reason"].clone(),
                top,
            )
        }
    };
    let ben_all = |all: u64, bad: u64| vec![(ben.clone(), all, bad)];
    // Since the first click: its day's remainder and today's part read
    // click by click, the whole day between from the rollups.
    let all = summary("program=krispcall").await;
    assert_eq!(
        all,
        (
            10,
            json!({"flagged": 3, "valid": 7}),
            json!({"bot": 2, "stuffing": 1}),
            ben_all(3, 3)
        )
    );
    // Any period reads only the days that have clicks.
    let widest =
        summary("program=krispcall&from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z").await;
    assert_eq!(widest, all);
    // The same clicks as whole days only.
    let days = summary("program=krispcall&from=2026-03-01T00:00:00Z&to=2026-03-04T00:00:00Z").await;
    assert_eq!(days, all);
    // One whole day, from the rollups alone.
    assert_eq!(
        summary("program=krispcall&from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z").await,
        (
            4,
            json!({"flagged": 2, "valid": 2}),
            json!({"bot": 1, "stuffing": 1}),
            ben_all(2, 2)
        )
    );
    // No whole day: two part-days, click by click.
    assert_eq!(
        summary("program=krispcall&from=2026-03-02T12:00:00Z&to=2026-03-03T12:00:00Z").await,
        (
            3,
            json!({"flagged": 1, "valid": 2}),
            json!({"bot": 1}),
            ben_all(1, 1)
        )
    );
    // Every program: the aircall click too.
    let everything = summary("from=2026-03-01T00:00:00Z&to=2026-03-04T00:00:00Z").await;
    assert_eq!(
        (everything.0, &everything.1),
        (11, &json!({"flagged": 3, "valid": 8}))
    );
    let r = api(
        s.addr(),
        "GET",
        "/api/v1/fraud/summary?from=2026-03-04T00:00:00Z&to=2026-03-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!((r.status, r.json()["field"].clone()), (422, json!("from")));
}

#[tokio::test]
async fn self_referral_by_the_partners_own_account_or_address() {
    let s = TestServer::start().await;
    let mut m = Money::new(&s);
    let r = api(s.addr(), "POST", "/api/v1/partners", Some(json!({
        "program": "krispcall", "name": "Dee", "email": "dee@site.example", "website": "https://site.example",
        "customer_ids": ["cus_dee"], "ips": ["100.80.1.2"]}))).await;
    assert_eq!(r.status, 201);
    let dee = r.json()["id"].as_str().unwrap().to_string();
    assert!(
        !r.body.windows(10).any(|w| w == b"100.80.1.2"),
        "the partner's address is not echoed or kept"
    );
    s.link(&dee, "https://krispcall.com/", Some("dee-link"))
        .await;
    let fresh = || async {
        hit(&s, "/r/dee-link", CHROME, &next_visitor(), None, None)
            .await
            .attribution_cookie()
            .unwrap()
    };
    // "Partners cannot refer themselves ... or use their partner referral links for their purchases."
    m.ev(json!({"id": "s1", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "cus_dee"}, "attribution": {"token": fresh().await}})).await;
    assert_eq!(m.rejection("cus_dee").await, "self_referral");
    m.ev(json!({"id": "s2", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "cus_other", "ip": "100.80.1.2"}, "attribution": {"token": fresh().await}})).await;
    assert_eq!(m.rejection("cus_other").await, "self_referral");
    m.ev(json!({"id": "s3", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-02T00:00:00Z",
                "customer": {"id": "cus_real", "ip": "100.80.9.9"}, "attribution": {"token": fresh().await}})).await;
    assert_eq!(
        m.referred_to("cus_real").await.as_deref(),
        Some(dee.as_str())
    );
    // Raw addresses never reach the data dir.
    s.running.app.store.flush().unwrap();
    for f in walk(&s.data_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [&b"100.80.1.2"[..], b"100.80.9.9"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds a raw address",
                f.display()
            );
        }
    }
    let bad = api(
        s.addr(),
        "POST",
        "/api/v1/events",
        Some(json!({"id": "s4", "type": "signup", "program": "krispcall",
        "occurred_at": "2026-03-02T00:00:00Z", "customer": {"id": "x", "ip": "not-an-ip"}})),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["field"], "customer.ip");
}
