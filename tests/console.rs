//! The console's and portal's rules over plain HTTP (the browser journeys
//! are in `tests/browser.rs`): session cookies, CSRF tokens, the sign-in
//! rate limit, sessions ending with their key, the role of a session, and
//! the headers on every page.

mod common;

use common::*;
use serde_json::json;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// Signs in with `key`: the session cookie (`name=value`).
async fn sign_in(s: &TestServer, key: &str) -> String {
    let body = format!("key={}", urlencode(key));
    let r = send(
        s.addr(),
        "POST",
        "/console/signin",
        &[FORM],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let c = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(c.contains(attr), "{c}");
    }
    c.split(';').next().unwrap().to_string()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The CSRF token in a page's forms.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + 19;
    html[at..at + 32].to_string()
}

async fn get(s: &TestServer, cookie: &str, path: &str) -> Resp {
    send(s.addr(), "GET", path, &[("cookie", cookie)], None).await
}

async fn post(s: &TestServer, cookie: &str, path: &str, form: &str) -> Resp {
    send(
        s.addr(),
        "POST",
        path,
        &[("cookie", cookie), FORM],
        Some(form.as_bytes()),
    )
    .await
}

async fn key(s: &TestServer, role: &str, partner: Option<&str>) -> (String, String) {
    let v = new_api_key(s.addr(), role, partner).await;
    (
        v["id"].as_str().unwrap().into(),
        v["secret"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn pages_need_a_session_and_carry_the_security_headers() {
    let s = TestServer::start().await;
    let r = send(s.addr(), "GET", "/console/partners", &[], None).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/console/signin"))
    );
    let r = send(s.addr(), "GET", "/portal/", &[], None).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/portal/signin"))
    );
    let r = send(s.addr(), "GET", "/console/signin", &[], None).await;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // No inline script anywhere: the one script is a file of ours.
    let html = String::from_utf8(r.body).unwrap();
    assert!(!html.contains("<script>"));
    let cookie = sign_in(&s, ADMIN).await;
    let r = get(&s, &cookie, "/console/partners").await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("<script src=\"/console/app.js\" defer></script>"));
    // A made-up session is none.
    let r = get(
        &s,
        "refedge_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/console/",
    )
    .await;
    assert_eq!(r.status, 303);
    // Sessions are kept hashed: the cookie's value is nowhere on disk.
    let value = cookie.split('=').nth(1).unwrap().to_string();
    s.running.app.store.flush().unwrap();
    let mut found = false;
    for entry in walk(&s.data_dir()) {
        let bytes = std::fs::read(entry).unwrap();
        found |= bytes.windows(value.len()).any(|w| w == value.as_bytes());
    }
    assert!(!found, "the session id is not stored");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_form_without_the_sessions_token_or_from_another_site_changes_nothing() {
    let s = TestServer::start().await;
    let pid = s.partner("krispcall", "a@blog.example").await;
    let cookie = sign_in(&s, ADMIN).await;
    let page = String::from_utf8(
        get(&s, &cookie, &format!("/console/partners/{pid}"))
            .await
            .body,
    )
    .unwrap();
    let token = csrf(&page);
    let path = format!("/console/partners/{pid}/status");
    // No token, a wrong token, another session's token: 403.
    let other = sign_in(&s, ADMIN).await;
    let other_token =
        csrf(&String::from_utf8(get(&s, &other, "/console/partners").await.body).unwrap());
    assert_ne!(token, other_token);
    for form in [
        "status=suspended&reason=x".to_string(),
        "status=suspended&reason=x&csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        format!("status=suspended&reason=x&csrf={other_token}"),
    ] {
        let r = post(&s, &cookie, &path, &form).await;
        assert_eq!(r.status, 403, "{form}");
    }
    // The right token, but sent from another site's page.
    let form = format!("status=suspended&reason=x&csrf={token}");
    for h in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ] {
        let r = send(
            s.addr(),
            "POST",
            &path,
            &[("cookie", &cookie), FORM, h],
            Some(form.as_bytes()),
        )
        .await;
        assert_eq!(r.status, 403, "{h:?}");
        assert!(String::from_utf8_lossy(&r.body).contains("another site"));
    }
    let p = api(s.addr(), "GET", &format!("/api/v1/partners/{pid}"), None).await;
    assert_eq!(p.json()["status"], "active");
    // The same form from our page: done, the reason in the audit log.
    let origin = format!("http://{}", s.addr());
    let r = send(
        s.addr(),
        "POST",
        &path,
        &[
            ("cookie", &cookie),
            FORM,
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
        Some(format!("status=suspended&reason=stuffing&csrf={token}").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let audit = api(
        s.addr(),
        "GET",
        &format!("/api/v1/partners/{pid}/audit"),
        None,
    )
    .await;
    assert_eq!(audit.json()["audit"][0]["reason"], "stuffing");
    // A bad value is a 422 page naming the field.
    let r = post(
        &s,
        &cookie,
        &path,
        &format!("status=active&reason=&csrf={token}"),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(String::from_utf8_lossy(&r.body).contains("reason: say why"));
}

#[tokio::test]
async fn a_sessions_role_is_its_keys_and_ends_with_it() {
    let s = TestServer::start().await;
    let (fraud_id, fraud) = key(&s, "fraud", None).await;
    let cookie = sign_in(&s, &fraud).await;
    let token = csrf(&String::from_utf8(get(&s, &cookie, "/console/").await.body).unwrap());
    // A fraud key cannot run payouts, from the page or by posting the form.
    assert_eq!(get(&s, &cookie, "/console/payouts").await.status, 403);
    let r = post(
        &s,
        &cookie,
        "/console/payouts",
        &format!("program=krispcall&date=2026-04-13&action=run&csrf={token}"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        String::from_utf8_lossy(&r.body).contains("a fraud key may not POST /api/v1/payouts/run")
    );
    assert_eq!(get(&s, &cookie, "/console/api-keys").await.status, 403);
    // Revoking the key ends the session at once.
    let r = api(
        s.addr(),
        "DELETE",
        &format!("/api/v1/api-keys/{fraud_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(&s, &cookie, "/console/").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/console/signin"))
    );
    // An ingest key opens no pages; a partner key opens the portal only.
    let (_, ingest) = key(&s, "ingest", None).await;
    let r = send(
        s.addr(),
        "POST",
        "/console/signin",
        &[FORM],
        Some(format!("key={ingest}").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 403);
    let pid = s.partner("krispcall", "p@blog.example").await;
    let (_, partner) = key(&s, "partner", Some(&pid)).await;
    let cookie = sign_in(&s, &partner).await;
    let r = get(&s, &cookie, "/console/partners").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/portal/")));
    assert_eq!(get(&s, &cookie, "/portal/").await.status, 200);
    // Signing out ends the session.
    let token = csrf(&String::from_utf8(get(&s, &cookie, "/portal/").await.body).unwrap());
    let r = post(&s, &cookie, "/portal/signout", &format!("csrf={token}")).await;
    assert_eq!(r.status, 303);
    assert_eq!(get(&s, &cookie, "/portal/").await.status, 303);
    // Sessions end when idle (30 minutes by default).
    let cookie = sign_in(&s, ADMIN).await;
    s.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(get(&s, &cookie, "/console/").await.status, 303);
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address() {
    let s = TestServer::start_with(|c| c.console.signin_per_minute = 3).await;
    let wrong = |n: u8| format!("key=rk_nope_{n}");
    for n in 0..3 {
        let r = send(
            s.addr(),
            "POST",
            "/console/signin",
            &[FORM],
            Some(wrong(n).as_bytes()),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = send(
        s.addr(),
        "POST",
        "/console/signin",
        &[FORM],
        Some(format!("key={ADMIN}").as_bytes()),
    )
    .await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("60")));
    // Another address (through the trusted proxy) is not held back.
    let r = send(
        s.addr(),
        "POST",
        "/console/signin",
        &[FORM, ("x-forwarded-for", "203.0.113.9")],
        Some(format!("key={ADMIN}").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 303);
    // A minute later the first address may try again.
    s.clock.advance(chrono::Duration::seconds(61));
    let r = send(
        s.addr(),
        "POST",
        "/console/signin",
        &[FORM],
        Some(format!("key={ADMIN}").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 303);
}

#[tokio::test]
async fn a_portal_sign_in_link_is_used_once_and_runs_out() {
    let s = TestServer::start().await;
    let pid = s.partner("krispcall", "p@blog.example").await;
    let r = api(
        s.addr(),
        "POST",
        &format!("/api/v1/partners/{pid}/portal-link"),
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(v["expires_at"], "2026-03-04T12:00:00Z", "72 hours");
    let url = v["url"].as_str().unwrap();
    let path = &url[url.find("/portal/").unwrap()..];
    // Opening it (a mail scanner fetching links) uses nothing.
    for _ in 0..2 {
        assert_eq!(send(s.addr(), "GET", path, &[], None).await.status, 200);
    }
    let r = send(s.addr(), "POST", path, &[FORM], Some(b"")).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/portal/")));
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(get(&s, &cookie, "/portal/").await.status, 200);
    // Used: gone, both to look at and to use.
    assert_eq!(send(s.addr(), "GET", path, &[], None).await.status, 410);
    assert_eq!(
        send(s.addr(), "POST", path, &[FORM], Some(b""))
            .await
            .status,
        410
    );
    // Expired after 72 hours.
    let r = api(
        s.addr(),
        "POST",
        &format!("/api/v1/partners/{pid}/portal-link"),
        None,
    )
    .await;
    let url = r.json()["url"].as_str().unwrap().to_string();
    let path = &url[url.find("/portal/").unwrap()..];
    s.clock.advance(chrono::Duration::hours(72));
    assert_eq!(
        send(s.addr(), "POST", path, &[FORM], Some(b""))
            .await
            .status,
        410
    );
    // A made-up link: the same page, nothing opened.
    let r = send(
        s.addr(),
        "POST",
        "/portal/signin/nothing-here",
        &[FORM],
        Some(b""),
    )
    .await;
    assert_eq!(r.status, 410);
}

#[tokio::test]
async fn partners_create_their_own_links_only_where_the_program_allows() {
    let s = TestServer::start_with(|c| {
        c.programs.get_mut("aloware").unwrap().partner_links = true;
    })
    .await;
    let k = s.partner("krispcall", "k@blog.example").await;
    let a = s.partner("aloware", "a@blog.example").await;
    let other = s.partner("aloware", "o@blog.example").await;
    let (_, k_key) = key(&s, "partner", Some(&k)).await;
    let (_, a_key) = key(&s, "partner", Some(&a)).await;
    let link = |pid: &str, dest: &str| json!({"partner_id": pid, "destination": dest});
    // KrispCall keeps link creation to its staff.
    let r = api_as(
        s.addr(),
        &k_key,
        "POST",
        "/api/v1/links",
        Some(&link(&k, "https://krispcall.com/")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("partner_links"));
    // Aloware lets partners: their own, on the program's hosts.
    let r = api_as(
        s.addr(),
        &a_key,
        "POST",
        "/api/v1/links",
        Some(&link(&a, "https://aloware.com/pricing")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = api_as(
        s.addr(),
        &a_key,
        "POST",
        "/api/v1/links",
        Some(&link(&other, "https://aloware.com/")),
    )
    .await;
    assert_eq!(r.status, 404, "never another partner's");
    let r = api_as(
        s.addr(),
        &a_key,
        "POST",
        "/api/v1/links",
        Some(&link(&a, "https://evil.example/")),
    )
    .await;
    assert_eq!(r.status, 422);
    // The same from the portal's form (its partner_id field is ignored).
    let cookie = sign_in(&s, &a_key).await;
    let page = String::from_utf8(get(&s, &cookie, "/portal/").await.body).unwrap();
    assert!(page.contains("id=\"new-link\""));
    let form = format!(
        "csrf={}&partner_id={other}&destination={}&utm_source=blog",
        csrf(&page),
        urlencode("https://aloware.com/demo")
    );
    let r = post(&s, &cookie, "/portal/links", &form).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let mine = api(
        s.addr(),
        "GET",
        &format!("/api/v1/partners/{a}/links"),
        None,
    )
    .await
    .json();
    let dests: Vec<&str> = mine["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["destination"].as_str().unwrap())
        .collect();
    assert!(
        dests.contains(&"https://aloware.com/demo?utm_source=blog"),
        "{dests:?}"
    );
    let theirs = api(
        s.addr(),
        "GET",
        &format!("/api/v1/partners/{other}/links"),
        None,
    )
    .await
    .json();
    assert_eq!(theirs["links"], json!([]));
    // KrispCall's portal shows no form.
    let cookie = sign_in(&s, &k_key).await;
    let page = String::from_utf8(get(&s, &cookie, "/portal/").await.body).unwrap();
    assert!(!page.contains("id=\"new-link\""));
}

#[tokio::test]
async fn the_overview_lists_the_periods_busiest_partners_and_links() {
    let s = TestServer::start().await;
    let a = s.partner("krispcall", "a@blog.example").await;
    let b = s.partner("aloware", "b@blog.example").await;
    s.link(&a, "https://krispcall.com/", Some("busy-a")).await;
    s.link(&b, "https://aloware.com/", Some("quiet-b")).await;
    for _ in 0..3 {
        assert_eq!(click(s.addr(), "/r/busy-a", None).await.status, 302);
    }
    assert_eq!(click(s.addr(), "/r/quiet-b", None).await.status, 302);
    let (_, secret) = key(&s, "marketing", None).await;
    let cookie = sign_in(&s, &secret).await;
    let page = String::from_utf8(get(&s, &cookie, "/console/?days=7").await.body).unwrap();
    let table = |id: &str| {
        let start = page.find(&format!("id=\"{id}\"")).unwrap();
        page[start..start + page[start..].find("</table>").unwrap()].to_string()
    };
    let partners = table("top-partners");
    let (ia, ib) = (partners.find(&a).unwrap(), partners.find(&b).unwrap());
    assert!(ia < ib, "busiest first: {partners}");
    assert!(partners.contains("<td>3</td>"), "{partners}");
    let links = table("top-links");
    assert!(
        links.find("busy-a").unwrap() < links.find("quiet-b").unwrap(),
        "{links}"
    );
}
