//! The console and the partner portal in a real browser (headless
//! Chromium through chromedriver): each person's journey end to end over
//! real HTTP, and the pages' security cases. `REFEDGE_SCREENSHOTS=dir`
//! saves the screenshots the README shows.

mod common;

use common::browser::Browser;
use common::*;
use serde_json::json;
use std::path::PathBuf;

fn shots() -> Option<PathBuf> {
    std::env::var_os("REFEDGE_SCREENSHOTS").map(PathBuf::from)
}

async fn sign_in(b: &Browser, base: &str, key: &str) {
    b.goto(&format!("{base}/console/signin")).await;
    b.fill_and_submit("form", &[("key", key)], "#signin").await;
}

/// A partner who earned 13.50 USD payable on 2026-05-13 (KrispCall's
/// terms), with a referred customer `bob@acme.example`.
async fn earning_partner(s: &TestServer, m: &mut Money<'_>) -> String {
    let ann = s.partner("krispcall", "ann@blog.example").await;
    s.link(&ann, "https://krispcall.com/pricing", Some("ann-k"))
        .await;
    let token = click(s.addr(), "/r/ann-k", None)
        .await
        .attribution_cookie()
        .unwrap();
    m.ev(json!({"id": "s1", "type": "signup", "program": "krispcall", "occurred_at": "2026-03-01T13:00:00Z",
        "customer": {"id": "bob@acme.example", "email": "bob@acme.example"}, "attribution": {"token": token}}))
        .await;
    for (id, inv, at, amount, qty) in [
        ("p1", "INV-1", "2026-03-01T13:05:00Z", "15.00", 1),
        ("p2", "INV-2", "2026-04-02T09:05:00Z", "30.00", 2),
    ] {
        m.ev(json!({"id": id, "type": "payment", "program": "krispcall", "occurred_at": at,
            "customer_id": "bob@acme.example", "invoice_id": inv, "currency": "USD",
            "lines": [{"kind": "subscription", "amount": amount, "plan": "standard", "unit_price": "15.00", "quantity": qty}]}))
            .await;
    }
    let _ = m.get("/api/v1/referrals").await;
    ann
}

#[tokio::test]
async fn marketer_creates_a_partner_and_links_with_utm_and_qr() {
    let s = TestServer::start().await;
    let Some(b) = Browser::start(1280).await else {
        return;
    };
    let base = format!("http://{}", s.addr());
    let shots = shots();
    let marketing = api_key(s.addr(), "marketing", None).await;
    sign_in(&b, &base, &marketing).await;
    b.expect_path("/console/").await;
    // The menu follows the role: no payouts, no keys.
    let nav = b.text("header nav").await;
    assert!(
        nav.contains("Partners") && !nav.contains("Payouts") && !nav.contains("API keys"),
        "{nav}"
    );

    b.goto(&format!("{base}/console/partners")).await;
    b.fill_and_submit(
        "#new-partner",
        &[
            ("program", "krispcall"),
            ("name", "Spring Blog"),
            ("email", "spring@blog.example"),
            ("website", "https://blog.example"),
        ],
        "button",
    )
    .await;
    assert_eq!(b.text("#partner-name").await, "Spring Blog active");
    assert!(b.path().await.ends_with("?done=partner"));
    let pid = b
        .path()
        .await
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();

    // A link with the UTM builder.
    b.fill_and_submit(
        "#new-link",
        &[
            ("destination", "https://krispcall.com/pricing?plan=pro"),
            ("code", "spring-flyer"),
            ("utm_source", "flyer"),
            ("utm_medium", "print"),
            ("utm_campaign", "spring 2026"),
        ],
        "button",
    )
    .await;
    b.expect_path("/console/links/spring-flyer?done=link").await;
    assert_eq!(
        b.text("#link-destination").await,
        "https://krispcall.com/pricing?plan=pro&utm_source=flyer&utm_medium=print&utm_campaign=spring+2026"
    );
    let url = b
        .client
        .find(fantoccini::Locator::Css("#link-url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url, format!("{base}/r/spring-flyer"));
    // The QR code shows (the browser decoded the SVG) and both downloads
    // are served to this session.
    let width = b
        .client
        .execute("return document.getElementById('qr').naturalWidth", vec![])
        .await
        .unwrap();
    assert!(width.as_u64().unwrap() >= 192, "{width}");
    b.screenshot(shots.as_deref(), "link").await;
    let cookie = format!(
        "refedge_session={}",
        b.cookie("refedge_session").await.unwrap()
    );
    for (file, ty, magic) in [
        ("qr.svg", "image/svg+xml", &b"<?xml"[..]),
        ("qr.png", "image/png", &b"\x89PNG"[..]),
    ] {
        let r = send(
            s.addr(),
            "GET",
            &format!("/console/links/spring-flyer/{file}"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)));
        assert!(r.body.starts_with(magic), "{file}");
    }
    // The redirect works, and the link shows on the partner's page.
    assert_eq!(click(s.addr(), "/r/spring-flyer", None).await.status, 302);
    // Its page counts the click, by referrer host and device class.
    b.goto(&format!("{base}/console/links/spring-flyer")).await;
    assert!(b.text("#hosts").await.contains("blog.example 1"));
    assert!(b.text("#devices").await.contains("desktop 1"));
    b.goto(&format!("{base}/console/?days=7")).await;
    assert_eq!(b.text("#counted").await, "1");
    b.screenshot(shots.as_deref(), "overview").await;
    b.goto(&format!("{base}/console/partners/{pid}")).await;
    assert!(b.text("#links").await.contains("spring-flyer"));
    // Twenty links for a campaign from a CSV file: a result per row.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("campaign.csv");
    let mut text = String::from(
        "partner_id,destination,code,utm_source,utm_medium,utm_campaign,utm_content,utm_term\n",
    );
    for i in 0..20 {
        text.push_str(&format!(
            "{pid},https://krispcall.com/features,camp-{i},mail,email,autumn,v{i},\n"
        ));
    }
    text.push_str(&format!("{pid},https://evil.example/,,,,,,\n"));
    text.push_str("p_nobody,https://krispcall.com/,,,,,,\n");
    std::fs::write(&csv, text).unwrap();
    b.goto(&format!("{base}/console/links")).await;
    b.client
        .find(fantoccini::Locator::Css("#bulk-form input[type=file]"))
        .await
        .unwrap()
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    b.click("#bulk-form button").await;
    assert_eq!(
        b.text("#bulk-summary").await,
        "20 of 22 links created",
        "{}",
        b.source().await
    );
    let results = b.text("#bulk-results").await;
    assert!(results.contains(&format!("{base}/r/camp-19")), "{results}");
    assert!(
        results.contains("23 p_nobody partner_id: no partner with id"),
        "{results}"
    );
    assert!(
        results.contains("is not allowed for program krispcall"),
        "{results}"
    );
    b.screenshot(shots.as_deref(), "links-bulk").await;
    let camp = api(s.addr(), "GET", "/api/v1/links/camp-7", None)
        .await
        .json();
    assert_eq!(camp["destination"], "https://krispcall.com/features?utm_source=mail&utm_medium=email&utm_campaign=autumn&utm_content=v7");
    // Find a link by its code.
    b.goto(&format!("{base}/console/links?code=camp-3")).await;
    b.expect_path("/console/links/camp-3").await;

    // Search finds the partner; disable the link.
    b.goto(&format!("{base}/console/partners?q=SPRING")).await;
    assert!(b.text("#partners").await.contains("Spring Blog"));
    b.screenshot(shots.as_deref(), "partners").await;
    b.goto(&format!("{base}/console/links/spring-flyer")).await;
    b.click("#disable-link").await;
    assert_eq!(b.text("#link-status").await, "disabled");
    assert_eq!(click(s.addr(), "/r/spring-flyer", None).await.status, 410);
    b.close().await;
}

#[tokio::test]
async fn analyst_suspends_a_partner_with_a_reason_and_finance_pays() {
    let s = TestServer::start().await;
    let Some(b) = Browser::start(1280).await else {
        return;
    };
    let base = format!("http://{}", s.addr());
    let shots = shots();
    let mut m = Money::new(&s);
    let ann = earning_partner(&s, &mut m).await;
    let other = s.partner("krispcall", "eve@spam.example").await;

    // A bot's click on the other partner's link: flagged, with evidence.
    s.link(&other, "https://krispcall.com/", Some("eve-k"))
        .await;
    let r = send(
        s.addr(),
        "GET",
        "/r/eve-k",
        &[
            ("user-agent", "python-requests/2.31"),
            ("x-forwarded-for", "198.51.100.7"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 302);

    // The analyst finds it on the fraud page, opens the partner, and
    // suspends it with a reason.
    let fraud = api_key(s.addr(), "fraud", None).await;
    sign_in(&b, &base, &fraud).await;
    b.goto(&format!("{base}/console/fraud")).await;
    let flagged = b.text("#flagged").await;
    assert!(
        flagged.contains(&other) && flagged.contains("bot") && flagged.contains("python-requests"),
        "{flagged}"
    );
    assert!(b.text("#ranked").await.contains(&other));
    b.fill_and_submit("#fraud-filter", &[("reason", "stuffing")], "button")
        .await;
    assert!(b.text("#flagged").await.contains("No flagged clicks match"));
    b.screenshot(shots.as_deref(), "fraud").await;
    b.goto(&format!("{base}/console/fraud?reason=bot")).await;
    b.click(&format!("#flagged a[href='/console/partners/{other}']"))
        .await;
    b.expect_path(&format!("/console/partners/{other}")).await;
    // The fraud profile's chart: one flagged click today.
    let chart = b.text("#clicks-chart").await;
    assert!(
        chart.contains("counted (blue) and not counted (red)"),
        "{chart}"
    );
    let title = b
        .client
        .execute(
            "return document.querySelector('#clicks-chart svg > title').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        title.as_str(),
        Some("Clicks per day, last 30 days: 0 counted, 1 not counted")
    );
    b.goto(&format!("{base}/console/partners/{other}")).await;
    b.fill_and_submit(
        "#change-status",
        &[
            ("status", "suspended"),
            ("reason", "cookie stuffing from a popunder network"),
        ],
        "button",
    )
    .await;
    assert!(b.text("#partner-status").await.contains("suspended"));
    let audit = b.text("#audit").await;
    assert!(
        audit.contains("cookie stuffing from a popunder network") && audit.contains("fraud desk"),
        "{audit}"
    );
    // A fraud key cannot open payouts (the menu hides them; the page says why).
    assert!(!b.text("header nav").await.contains("Payouts"));
    b.goto(&format!("{base}/console/payouts")).await;
    assert!(
        b.text("#error-message")
            .await
            .contains("a fraud key may not"),
        "{}",
        b.source().await
    );
    b.goto(&format!("{base}/console/")).await;
    b.click("header button").await;
    b.expect_path("/console/signin").await;

    // Finance previews, runs, downloads and confirms the batch of the 13th
    // (on the 14th: balances are read as of now).
    s.clock.set("2026-05-14T09:00:00Z".parse().unwrap());
    let finance = api_key(s.addr(), "finance", None).await;
    sign_in(&b, &base, &finance).await;
    b.goto(&format!("{base}/console/payouts")).await;
    // (A date input takes its value from script, not keystrokes.)
    b.client
        .execute(
            "document.querySelector('#payout-form [name=date]').value = '2026-05-13'",
            vec![],
        )
        .await
        .unwrap();
    b.fill_and_submit("#payout-form", &[("program", "krispcall")], "#preview")
        .await;
    assert!(b.text("#preview-note").await.contains("records nothing"));
    let items = b.text("#items").await;
    assert!(
        items.contains(&ann) && items.contains("13.50 USD"),
        "{items}"
    );
    b.screenshot(shots.as_deref(), "payout-preview").await;
    let before = m.get("/api/v1/payouts").await;
    assert_eq!(before["payouts"], json!([]), "a preview records nothing");
    b.click("#run").await;
    b.expect_path("/console/payouts/po_krispcall_20260513?done=run")
        .await;
    assert_eq!(b.text("#batch-status").await, "created");
    let cookie = format!(
        "refedge_session={}",
        b.cookie("refedge_session").await.unwrap()
    );
    let csv = send(
        s.addr(),
        "GET",
        "/console/payouts/po_krispcall_20260513/csv",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(csv.status, 200);
    let csv = String::from_utf8(csv.body).unwrap();
    assert!(
        csv.contains(&format!(
            "{ann},\"Test Partner\",\"ann@blog.example\",13.50,USD,cash"
        )),
        "{csv}"
    );
    b.click("#confirm").await;
    assert_eq!(b.text("#batch-status").await, "confirmed");
    b.goto(&format!("{base}/console/payouts")).await;
    assert!(b.text("#batches").await.contains("confirmed"));
    // The partner's page shows the payout and the balances.
    b.goto(&format!("{base}/console/partners/{ann}")).await;
    assert!(b.text("#partner-payouts").await.contains("13.50 USD"));
    let balances = b.text("#balances").await;
    assert!(balances.contains("USD 0.00 0.00 0.00 13.50"), "{balances}");
    b.screenshot(shots.as_deref(), "partner").await;
    b.close().await;
}

#[tokio::test]
async fn analyst_approves_and_rejects_held_commissions() {
    use refedge::commission::review::{ReviewFlag, ReviewPolicy};
    let s = TestServer::start_with(|c| {
        c.programs.get_mut("krispcall").unwrap().review = ReviewPolicy {
            flags: vec![ReviewFlag::FastSignup],
            fast_signup_seconds: 60,
        };
    })
    .await;
    let Some(b) = Browser::start(1280).await else {
        return;
    };
    let base = format!("http://{}", s.addr());
    let mut m = Money::new(&s);
    let ann = s.partner("krispcall", "ann@blog.example").await;
    s.link(&ann, "https://krispcall.com/", Some("ann-k")).await;
    // Two signups 30 and 20 seconds after their clicks: both held.
    for (customer, at, amount) in [
        ("good@acme.example", "2026-03-01T12:00:30Z", "20.00"),
        ("farm@mailinator.example", "2026-03-01T12:00:20Z", "50.00"),
    ] {
        let c = click(s.addr(), "/r/ann-k", None).await;
        m.ev(json!({"id": format!("s-{customer}"), "type": "signup", "program": "krispcall", "occurred_at": at,
            "customer": {"id": customer}, "attribution": {"click_id": click_id_of(&c)}}))
            .await;
        m.ev(json!({"id": format!("p-{customer}"), "type": "payment", "program": "krispcall",
            "occurred_at": "2026-03-02T00:00:00Z", "customer_id": customer, "invoice_id": format!("I-{customer}"),
            "currency": "USD", "lines": [{"kind": "subscription", "amount": amount, "plan": "standard", "unit_price": amount, "quantity": 1}]}))
            .await;
    }
    let queue = m.get("/api/v1/reviews").await;
    let id_of = |customer: &str| {
        queue["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["customer_id"] == customer)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (good, farm) = (id_of("good@acme.example"), id_of("farm@mailinator.example"));
    // The analyst looks the next day.
    s.clock.set("2026-03-03T09:00:00Z".parse().unwrap());

    let fraud = api_key(s.addr(), "fraud", None).await;
    sign_in(&b, &base, &fraud).await;
    b.click("header nav a[href='/console/reviews']").await;
    b.expect_path("/console/reviews").await;
    let rows = b.text("#reviews").await;
    assert!(
        rows.contains("fast_signup")
            && rows.contains("20s after the click")
            && rows.contains("15.00 USD"),
        "{rows}"
    );
    b.screenshot(shots().as_deref(), "reviews").await;
    for (id, reason, decision, done, flash) in [
        (
            &good,
            "called them: a real office",
            "approve",
            "approved",
            "Approved",
        ),
        (
            &farm,
            "disposable mail, signed up in 20 s",
            "reject",
            "rejected",
            "Rejected",
        ),
    ] {
        b.fill_and_submit(
            &format!("[id='{id}'] form"),
            &[("reason", reason)],
            &format!(".{decision}"),
        )
        .await;
        b.expect_path(&format!("/console/reviews?done={done}"))
            .await;
        assert!(b.text(".flash").await.contains(flash));
    }
    assert!(b.text("#reviews").await.contains("Nothing held"));
    b.goto(&format!("{base}/console/reviews?status=all")).await;
    let all = b.text("#reviews").await;
    assert!(
        all.contains("approved")
            && all.contains("rejected")
            && all.contains("disposable mail, signed up in 20 s"),
        "{all}"
    );
    // Finance, on the partner's page: nothing held any more; the approved
    // 6.00 is on KrispCall's schedule, the rejected 15.00 voided with the
    // reason. Finance sees the queue but gets no decision form.
    b.click("header button").await;
    b.expect_path("/console/signin").await;
    let finance = api_key(s.addr(), "finance", None).await;
    sign_in(&b, &base, &finance).await;
    b.goto(&format!("{base}/console/reviews?status=all")).await;
    assert!(b.text("#reviews").await.contains("rejected"));
    assert!(!b.source().await.contains("class=\"decide\""));
    b.goto(&format!("{base}/console/partners/{ann}")).await;
    let balances = b.text("#balances").await;
    assert!(balances.contains("USD 6.00 0.00 0.00"), "{balances}");
    let ledger = b.text("#ledger").await;
    assert!(
        ledger.contains("rejected in review by fraud desk: disposable mail"),
        "{ledger}"
    );
    let referrals = b.text("#referrals").await;
    assert!(
        referrals.contains("approved in review") && referrals.contains("rejected in review"),
        "{referrals}"
    );
    b.close().await;
}

#[tokio::test]
async fn a_partner_signs_in_with_a_one_time_link_and_sees_only_their_own() {
    let s = TestServer::start().await;
    let shots = shots();
    let mut m = Money::new(&s);
    let ann = earning_partner(&s, &mut m).await;
    let bea = s.partner("krispcall", "bea@other.example").await;
    s.link(&bea, "https://krispcall.com/", Some("bea-k")).await;
    // The next morning: the first commission is pending.
    s.clock.set("2026-03-02T09:00:00Z".parse().unwrap());
    for width in [1280, 375] {
        let Some(b) = Browser::start(width).await else {
            return;
        };
        let base = format!("http://{}", s.addr());
        // Staff make the link with the console's button.
        sign_in(&b, &base, ADMIN).await;
        b.goto(&format!("{base}/console/partners/{ann}")).await;
        b.click("#make-portal-link").await;
        let link = b
            .client
            .find(fantoccini::Locator::Css("#portal-link"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap();
        assert!(
            link.starts_with(&format!("{base}/portal/signin/")),
            "{link}"
        );
        b.client.delete_all_cookies().await.unwrap();

        // The partner opens it: a button, not an automatic sign-in.
        b.goto(&link).await;
        b.click("#signin").await;
        b.expect_path("/portal/").await;
        assert_eq!(b.text("#partner-name").await, "Test Partner");
        let referrals = b.text("#referrals").await;
        assert!(
            referrals.contains("b***@acme.example") && !referrals.contains("bob@"),
            "{referrals}"
        );
        let ledger = b.text("#ledger").await;
        assert!(
            ledger.contains("4.50 USD") && !ledger.contains("bob@"),
            "{ledger}"
        );
        assert!(b.source().await.contains("/r/ann-k"));
        let html = b.source().await;
        assert!(
            !html.contains(&bea) && !html.contains("bea@other.example") && !html.contains("bea-k"),
            "nothing of another partner"
        );
        // Nothing fits wider than the screen.
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{width}px: {overflow}");
        b.screenshot(shots.as_deref(), &format!("portal-{width}"))
            .await;
        // Another partner's link in the URL: 404, never their data.
        b.goto(&format!("{base}/portal/links/bea-k/qr.svg")).await;
        assert!(b.text("#error-message").await.contains("No such link"));
        // Staff pages are not the partner's.
        b.goto(&format!("{base}/console/partners/{bea}")).await;
        b.expect_path("/portal/").await;
        // The link was used up.
        b.goto(&link).await;
        assert!(b.source().await.contains("has been used or has expired"));
        b.close().await;
    }
}

/// An attacker's page on another site (`localhost` is not `127.0.0.1`'s
/// site), with a form that posts to the console.
async fn attacker_site(target: String) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let body = format!(
                "<!doctype html><form method=post action=\"{target}\"><input name=status value=terminated>\
                 <input name=reason value=gotcha><button id=go>Win a prize</button></form>"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn pages_escape_what_they_show_and_refuse_forms_from_other_sites() {
    let s = TestServer::start().await;
    let Some(b) = Browser::start(1280).await else {
        return;
    };
    let base = format!("http://{}", s.addr());
    let r = api(
        s.addr(),
        "POST",
        "/api/v1/partners",
        Some(
            json!({"program": "krispcall", "name": "<script>alert(1)</script>",
                    "email": "x@evil.example", "website": "https://evil.example"}),
        ),
    )
    .await;
    let pid = r.json()["id"].as_str().unwrap().to_string();
    sign_in(&b, &base, ADMIN).await;
    b.goto(&format!("{base}/console/partners/{pid}")).await;
    assert_eq!(
        b.text("#partner-name").await,
        "<script>alert(1)</script> active"
    );
    assert!(b.client.get_alert_text().await.is_err(), "no script ran");
    b.goto(&format!("{base}/console/partners")).await;
    assert!(b
        .text("#partners")
        .await
        .contains("<script>alert(1)</script>"));

    // A form on another site posting to the console, in the signed-in
    // browser: refused, nothing changed.
    let evil = attacker_site(format!("{base}/console/partners/{pid}/status")).await;
    b.goto(&format!("http://localhost:{}/", evil.port())).await;
    b.click("#go").await;
    b.expect_path(&format!("/console/partners/{pid}/status"))
        .await;
    assert!(
        b.text("#error-message").await.contains("another site"),
        "{}",
        b.source().await
    );
    let p = api(s.addr(), "GET", &format!("/api/v1/partners/{pid}"), None).await;
    assert_eq!(p.json()["status"], "active");
    b.close().await;
}
