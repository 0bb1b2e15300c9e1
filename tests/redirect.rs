//! The tracked-link redirect over real HTTP: Location, cookie, caching,
//! attribution models, token checks, and what reaches the click log.

mod common;

use common::*;
use refedge::clock::Clock;
use serde_json::json;

#[tokio::test]
async fn redirect_passes_the_query_through_and_sets_a_signed_cookie() {
    let s = TestServer::start().await;
    let p = s.partner("krispcall", "ann@blog.example").await;
    s.link(
        &p,
        "https://krispcall.com/pricing?plan=standard",
        Some("ann-spring"),
    )
    .await;

    let r = click(
        s.addr(),
        "/r/ann-spring?utm_source=blog&sub1=abc&refclk=forged",
        None,
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let location = r.header("location").unwrap();
    let (before, click_id) = location.split_once("&refclk=").unwrap();
    assert_eq!(
        before,
        "https://krispcall.com/pricing?plan=standard&utm_source=blog&sub1=abc"
    );
    assert_eq!(click_id.len(), 26);

    let set_cookie = r.header("set-cookie").unwrap();
    assert!(
        set_cookie.ends_with("; Max-Age=7776000; Path=/; HttpOnly; SameSite=Lax"),
        "{set_cookie}"
    );
    let token = r.attribution_cookie().unwrap();
    let now = s.clock.now_s();
    let claims = s
        .running
        .app
        .keyring
        .read()
        .unwrap()
        .verify(&token, now)
        .unwrap();
    assert_eq!(claims.click_id.to_string(), click_id);
    assert_eq!(claims.partner_id, p.as_str());
    assert_eq!(claims.program, "krispcall");
    assert_eq!(claims.link, "ann-spring");
    assert_eq!(claims.expires_at - claims.issued_at, 90 * 86_400);

    // The click is in the log with the same id.
    let clicks = api(s.addr(), "GET", "/api/v1/clicks?link=ann-spring", None)
        .await
        .json();
    let c = &clicks["clicks"][0];
    assert_eq!(c["id"], click_id);
    assert_eq!(c["partner_id"], p.as_str());
    assert_eq!(c["query"], "utm_source=blog&sub1=abc&refclk=forged");
    assert_eq!(c["headers"]["sec_fetch_dest"], "document");
    assert_eq!(c["referer"], "https://blog.example/review");
}

#[tokio::test]
async fn secure_and_domain_attributes_when_configured() {
    let s = TestServer::start_with(|c| {
        c.cookie.secure = true;
        c.cookie.domain = Some("example.com".into());
    })
    .await;
    let p = s.partner("aloware", "bo@agency.example").await;
    s.link(&p, "https://aloware.com/", Some("bo-1")).await;
    let r = click(s.addr(), "/r/bo-1", None).await;
    assert!(r
        .header("set-cookie")
        .unwrap()
        .ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=example.com"));
}

#[tokio::test]
async fn head_redirects_but_is_never_attributed() {
    let s = TestServer::start().await;
    let p = s.partner("krispcall", "ann@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("head-me")).await;
    let r = send(s.addr(), "HEAD", "/r/head-me", &[], None).await;
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("https://krispcall.com/?refclk="));
    // A HEAD request is never a person navigating: redirected, not attributed.
    assert!(r.header("set-cookie").is_none());
    assert!(r.body.is_empty());
    let log = api(s.addr(), "GET", "/api/v1/clicks?link=head-me", None)
        .await
        .json();
    assert_eq!(log["clicks"][0]["method"], "HEAD");
    assert_eq!(log["clicks"][0]["verdict"], "flagged");
    assert_eq!(log["clicks"][0]["flags"][0]["reason"], "bot");
}

#[tokio::test]
async fn unknown_and_disabled_links_set_no_cookie() {
    let s = TestServer::start().await;
    let p = s.partner("krispcall", "ann@blog.example").await;
    s.link(&p, "https://krispcall.com/", Some("soon-gone"))
        .await;

    let r = click(s.addr(), "/r/no-such-code", None).await;
    assert_eq!(r.status, 404);
    assert!(r.header("set-cookie").is_none());
    let r = click(s.addr(), "/r/bad%20code", None).await;
    assert_eq!(r.status, 404);

    let d = api(s.addr(), "DELETE", "/api/v1/links/soon-gone", None).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.json()["status"], "disabled");
    let r = click(s.addr(), "/r/soon-gone", None).await;
    assert_eq!(r.status, 410);
    assert!(r.header("set-cookie").is_none());
    assert!(r.header("location").is_none());
    let again = api(s.addr(), "DELETE", "/api/v1/links/soon-gone", None).await;
    assert_eq!(again.status, 200, "disabling twice is not an error");
    assert!(d.json()["disabled_at"].is_string(), "{}", d.json());
    assert_eq!(again.json()["disabled_at"], d.json()["disabled_at"]);
    assert_eq!(
        api(s.addr(), "DELETE", "/api/v1/links/never-was", None)
            .await
            .status,
        404
    );

    let clicks = api(s.addr(), "GET", "/api/v1/clicks", None).await.json();
    assert_eq!(clicks["clicks"].as_array().unwrap().len(), 0);
    let post = send(s.addr(), "POST", "/r/soon-gone", &[], None).await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn last_click_overwrites_first_click_keeps_another_partners_cookie() {
    let s = TestServer::start().await;
    // krispcall is last_click; aircall is first_click (presets).
    let k1 = s.partner("krispcall", "k1@a.example").await;
    let k2 = s.partner("krispcall", "k2@b.example").await;
    s.link(&k1, "https://krispcall.com/", Some("kc-one")).await;
    s.link(&k2, "https://krispcall.com/", Some("kc-two")).await;
    let first = click(s.addr(), "/r/kc-one", None)
        .await
        .attribution_cookie()
        .unwrap();
    let second = click(s.addr(), "/r/kc-two", Some(&first)).await;
    let token = second
        .attribution_cookie()
        .expect("last click sets a new cookie");
    let claims = s
        .running
        .app
        .keyring
        .read()
        .unwrap()
        .verify(&token, s.clock.now_s())
        .unwrap();
    assert_eq!(claims.partner_id, k2.as_str());

    let a1 = s.partner("aircall", "a1@a.example").await;
    let a2 = s.partner("aircall", "a2@b.example").await;
    s.link(&a1, "https://aircall.io/", Some("air-one")).await;
    s.link(&a2, "https://aircall.io/", Some("air-two")).await;
    let first = click(s.addr(), "/r/air-one", None)
        .await
        .attribution_cookie()
        .unwrap();
    let second = click(s.addr(), "/r/air-two", Some(&first)).await;
    assert_eq!(second.status, 302);
    assert!(
        second.header("set-cookie").is_none(),
        "first click must be kept"
    );
    // The same partner's link refreshes its own cookie.
    let again = click(s.addr(), "/r/air-one", Some(&first)).await;
    assert!(again.attribution_cookie().is_some());

    let log = api(s.addr(), "GET", "/api/v1/clicks?link=air-two", None)
        .await
        .json();
    assert_eq!(log["clicks"][0]["cookie"], "kept_existing");

    // Once the first cookie has expired (30-day aircall window), it no longer wins.
    s.clock.advance(chrono::Duration::days(31));
    let later = click(s.addr(), "/r/air-two", Some(&first)).await;
    assert!(later.attribution_cookie().is_some());
    assert_eq!(
        s.metric("refedge_tokens_rejected_total{reason=\"expired\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn tampered_cookie_is_refused_counted_and_flagged() {
    let s = TestServer::start().await;
    let a1 = s.partner("aircall", "a1@a.example").await;
    let a2 = s.partner("aircall", "a2@b.example").await;
    s.link(&a1, "https://aircall.io/", Some("air-one")).await;
    s.link(&a2, "https://aircall.io/", Some("air-two")).await;
    let token = click(s.addr(), "/r/air-one", None)
        .await
        .attribution_cookie()
        .unwrap();
    // Change one payload character: the partner would change if it verified.
    let mut forged = token.into_bytes();
    forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = click(s.addr(), "/r/air-two", Some(&forged)).await;
    // Redirected, but a manipulated cookie earns nothing: none is set.
    assert_eq!(r.status, 302);
    assert!(r.header("set-cookie").is_none());
    assert_eq!(
        s.metric("refedge_tokens_rejected_total{reason=\"bad_signature\"}")
            .await,
        1.0
    );
    let log = api(s.addr(), "GET", "/api/v1/clicks?link=air-two", None)
        .await
        .json();
    assert_eq!(log["clicks"][0]["prior_token_error"], "bad_signature");
    assert_eq!(log["clicks"][0]["cookie"], "not_set");
    assert_eq!(log["clicks"][0]["verdict"], "flagged");
    assert_eq!(log["clicks"][0]["flags"][0]["reason"], "token_tampered");
}

#[tokio::test]
async fn keys_rotate_old_tokens_verify_until_retired() {
    let s = TestServer::start().await;
    let a1 = s.partner("aircall", "a1@a.example").await;
    let a2 = s.partner("aircall", "a2@b.example").await;
    s.link(&a1, "https://aircall.io/", Some("air-one")).await;
    s.link(&a2, "https://aircall.io/", Some("air-two")).await;
    let old = click(s.addr(), "/r/air-one", None)
        .await
        .attribution_cookie()
        .unwrap();

    let r = api(s.addr(), "POST", "/api/v1/keys/rotate", None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["id"], 2);
    let keys = api(s.addr(), "GET", "/api/v1/keys", None).await.json();
    assert_eq!(keys["keys"][1]["signing"], true);
    assert!(keys.to_string().find("secret").is_none());

    // The old token still verifies: aircall keeps it.
    assert!(click(s.addr(), "/r/air-two", Some(&old))
        .await
        .header("set-cookie")
        .is_none());
    let r = api(s.addr(), "POST", "/api/v1/keys/1/retire", None).await;
    assert_eq!(r.status, 200);
    assert!(click(s.addr(), "/r/air-two", Some(&old))
        .await
        .attribution_cookie()
        .is_some());
    assert_eq!(
        s.metric("refedge_tokens_rejected_total{reason=\"retired_key\"}")
            .await,
        1.0
    );
    assert_eq!(
        api(s.addr(), "POST", "/api/v1/keys/2/retire", None)
            .await
            .status,
        409
    );
    assert_eq!(
        api(s.addr(), "POST", "/api/v1/keys/9/retire", None)
            .await
            .status,
        404
    );
    let bad = api(
        s.addr(),
        "POST",
        "/api/v1/keys/rotate",
        Some(json!({"id": 5})),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["field"], "id");
}

#[tokio::test]
async fn visitor_ip_comes_from_proxies_only_when_trusted_and_is_never_stored() {
    let trusting = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let plain = TestServer::start_with(|c| c.trusted_proxies.clear()).await;
    for s in [&trusting, &plain] {
        let p = s.partner("krispcall", "ann@blog.example").await;
        s.link(&p, "https://krispcall.com/", Some("ip-test")).await;
        let r = send(
            s.addr(),
            "GET",
            "/r/ip-test",
            &[("x-forwarded-for", "203.0.113.77, 127.0.0.1")],
            None,
        )
        .await;
        assert_eq!(r.status, 302);
    }
    let a = api(trusting.addr(), "GET", "/api/v1/clicks", None)
        .await
        .json();
    let b = api(plain.addr(), "GET", "/api/v1/clicks", None)
        .await
        .json();
    assert_eq!(a["clicks"][0]["ip_prefix"], "203.0.113.0/24");
    assert_eq!(b["clicks"][0]["ip_prefix"], "127.0.0.0/24");
    assert_eq!(a["clicks"][0]["ip_hash"].as_str().unwrap().len(), 32);
    assert_ne!(a["clicks"][0]["ip_hash"], b["clicks"][0]["ip_hash"]);

    // Nothing under the data dir holds the raw address, in text or binary.
    trusting.running.app.store.flush().unwrap();
    let needles: [&[u8]; 2] = [b"203.0.113.77", &[203, 0, 113, 77]];
    for entry in walk(&trusting.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{} contains the raw IP",
                entry.display()
            );
        }
    }
}
