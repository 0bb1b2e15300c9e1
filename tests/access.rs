//! Scoped API keys (issue 16): every API route walked with every role
//! (issue 17's webhooks and postbacks included); a
//! partner key sees only its partner; secrets shown once, stored hashed,
//! revoked at once, expired keys refused.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const ROLES: [&str; 6] = [
    "admin",
    "marketing",
    "fraud",
    "finance",
    "ingest",
    "partner",
];

#[tokio::test]
async fn every_route_answers_each_role_as_its_rules_say() {
    let s = TestServer::start().await;
    let addr = s.addr();
    let a = s.partner("krispcall", "a@blog.example").await;
    let b = s.partner("krispcall", "b@blog.example").await;
    s.link(&a, "https://krispcall.com/", Some("own-a")).await;
    s.link(&b, "https://krispcall.com/", Some("own-b")).await;
    let mut secrets = BTreeMap::new();
    for role in ROLES {
        let p = (role == "partner").then_some(a.as_str());
        secrets.insert(role, api_key(addr, role, p).await);
    }

    // (method, path, body, roles allowed). A partner key on another
    // partner's resource: 404, as if it did not exist ("own" rows).
    let partner_json = json!({"program": "krispcall", "name": "N", "email": "n@x.example",
                              "website": "https://x.example"});
    let link_json = json!({"partner_id": a, "destination": "https://krispcall.com/"});
    let standing = json!({"status": "active", "reason": "review"});
    let empty = json!({});
    let decision = json!({"decision": "approve", "reason": "checked"});
    let routes: Vec<(&str, String, Option<&Value>, &[&str])> = vec![
        (
            "POST",
            "/api/v1/partners".into(),
            Some(&partner_json),
            &["admin", "marketing"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}"),
            None,
            &["admin", "marketing", "fraud", "finance", "partner"],
        ),
        (
            "PATCH",
            format!("/api/v1/partners/{b}"),
            Some(&standing),
            &["admin", "fraud"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/audit"),
            None,
            &["admin", "fraud"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/balance"),
            None,
            &["admin", "finance", "partner"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/statement?month=2026-02"),
            None,
            &["admin", "finance", "partner"],
        ),
        (
            "POST",
            "/api/v1/links".into(),
            Some(&link_json),
            &["admin", "marketing"],
        ),
        (
            "GET",
            "/api/v1/links/own-a".into(),
            None,
            &["admin", "marketing", "fraud", "partner"],
        ),
        (
            "GET",
            "/api/v1/clicks".into(),
            None,
            &["admin", "marketing", "fraud"],
        ),
        (
            "GET",
            "/api/v1/clicks/01J0000000000000000000000Z".into(),
            None,
            &["admin", "marketing", "fraud"],
        ),
        ("GET", "/api/v1/keys".into(), None, &["admin"]),
        ("POST", "/api/v1/keys/999/retire".into(), None, &["admin"]),
        (
            "GET",
            "/api/v1/fraud/summary".into(),
            None,
            &["admin", "fraud"],
        ),
        (
            "GET",
            "/api/v1/fraud/clicks".into(),
            None,
            &["admin", "fraud"],
        ),
        (
            "GET",
            format!("/api/v1/fraud/partners/{a}"),
            None,
            &["admin", "fraud"],
        ),
        (
            "POST",
            "/api/v1/events".into(),
            Some(&empty),
            &["admin", "ingest"],
        ),
        (
            "POST",
            "/api/v1/fx-rates".into(),
            Some(&empty),
            &["admin", "finance"],
        ),
        (
            "POST",
            "/api/v1/coupons".into(),
            Some(&empty),
            &["admin", "marketing"],
        ),
        (
            "GET",
            "/api/v1/coupons/NOPE".into(),
            None,
            &["admin", "marketing", "fraud", "finance"],
        ),
        (
            "GET",
            "/api/v1/referrals".into(),
            None,
            &["admin", "finance", "fraud"],
        ),
        (
            "GET",
            "/api/v1/problems".into(),
            None,
            &["admin", "finance"],
        ),
        (
            "GET",
            "/api/v1/customers/c1".into(),
            None,
            &["admin", "finance", "fraud"],
        ),
        (
            "POST",
            "/api/v1/payouts/run".into(),
            Some(&empty),
            &["admin", "finance"],
        ),
        (
            "GET",
            "/api/v1/payouts/po_x".into(),
            None,
            &["admin", "finance"],
        ),
        (
            "GET",
            "/api/v1/payouts/po_x/csv".into(),
            None,
            &["admin", "finance"],
        ),
        (
            "POST",
            "/api/v1/payouts/po_x/confirm".into(),
            None,
            &["admin", "finance"],
        ),
        ("GET", "/api/v1/payouts".into(), None, &["admin", "finance"]),
        (
            "GET",
            "/api/v1/partners?q=blog".into(),
            None,
            &["admin", "marketing", "fraud", "finance"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/links"),
            None,
            &["admin", "marketing", "fraud", "finance", "partner"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/referrals"),
            None,
            &["admin", "marketing", "fraud", "finance", "partner"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/payouts"),
            None,
            &["admin", "marketing", "fraud", "finance", "partner"],
        ),
        (
            "POST",
            format!("/api/v1/partners/{a}/portal-link"),
            None,
            &["admin", "marketing"],
        ),
        (
            "GET",
            "/api/v1/reviews".into(),
            None,
            &["admin", "fraud", "finance"],
        ),
        (
            "GET",
            "/api/v1/reviews/rv_0000000000000000".into(),
            None,
            &["admin", "fraud", "finance"],
        ),
        (
            "POST",
            "/api/v1/reviews/rv_0000000000000000".into(),
            Some(&decision),
            &["admin", "fraud"],
        ),
        (
            "GET",
            "/api/v1/stats/top".into(),
            None,
            &["admin", "marketing", "fraud", "finance"],
        ),
        (
            "GET",
            "/api/v1/stats/commissions".into(),
            None,
            &["admin", "finance"],
        ),
        ("GET", "/api/v1/api-keys".into(), None, &["admin"]),
        ("POST", "/api/v1/api-keys".into(), Some(&empty), &["admin"]),
        (
            "DELETE",
            "/api/v1/api-keys/key_nope".into(),
            None,
            &["admin"],
        ),
        // Merchants' webhooks: the admin's; a partner's postback: marketing
        // and the partner itself.
        ("GET", "/api/v1/webhooks".into(), None, &["admin"]),
        ("POST", "/api/v1/webhooks".into(), Some(&empty), &["admin"]),
        ("GET", "/api/v1/webhooks/we_nope".into(), None, &["admin"]),
        (
            "DELETE",
            "/api/v1/webhooks/we_nope".into(),
            None,
            &["admin"],
        ),
        (
            "POST",
            "/api/v1/webhooks/we_nope/enable".into(),
            None,
            &["admin"],
        ),
        (
            "GET",
            "/api/v1/webhooks/we_nope/deliveries".into(),
            None,
            &["admin"],
        ),
        (
            "POST",
            "/api/v1/webhooks/we_nope/deliveries/whd_nope/redeliver".into(),
            None,
            &["admin"],
        ),
        (
            "PUT",
            format!("/api/v1/partners/{a}/postback"),
            Some(&empty),
            &["admin", "marketing", "partner"],
        ),
        (
            "GET",
            format!("/api/v1/partners/{a}/postback"),
            None,
            &["admin", "marketing", "partner"],
        ),
        (
            "DELETE",
            format!("/api/v1/partners/{a}/postback"),
            None,
            &["admin", "marketing", "partner"],
        ),
    ];
    let mut checked = 0;
    for (method, path, body, allowed) in &routes {
        for role in ROLES {
            let r = api_as(addr, &secrets[role], method, path, *body).await;
            let text = String::from_utf8_lossy(&r.body);
            if allowed.contains(&role) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{role} {method} {path}: {} {text}",
                    r.status
                );
                // Let through to a route that exists (its own 404s name
                // what was not found).
                assert!(!text.contains("route not found"), "{method} {path}: {text}");
            } else {
                assert_eq!(r.status, 403, "{role} {method} {path}: {text}");
                assert!(text.contains(role), "the refusal names the role: {text}");
            }
            checked += 1;
        }
        // No key at all: 401 everywhere.
        let r = send(addr, method, path, &[], None).await;
        assert_eq!(r.status, 401, "{method} {path} without a key");
    }
    assert_eq!(checked, routes.len() * ROLES.len());

    // A partner key changing an id in the URL gets 404, never the data.
    let p = &secrets["partner"];
    for path in [
        format!("/api/v1/partners/{b}"),
        format!("/api/v1/partners/{b}/balance"),
        format!("/api/v1/partners/{b}/statement?month=2026-02"),
        format!("/api/v1/partners/{b}/links"),
        format!("/api/v1/partners/{b}/referrals"),
        format!("/api/v1/partners/{b}/payouts"),
        format!("/api/v1/partners/{b}/clicks/daily"),
        "/api/v1/links/own-b".to_string(),
        "/api/v1/links/own-b/stats".to_string(),
    ] {
        let r = api_as(addr, p, "GET", &path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&r.body).contains(&b), "{path}");
    }
    let mine = api_as(addr, p, "GET", &format!("/api/v1/partners/{a}"), None).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json()["email"], "a@blog.example");
    // A fraud key cannot run payouts.
    let r = api_as(
        addr,
        &secrets["fraud"],
        "POST",
        "/api/v1/payouts/run",
        Some(&json!({"program": "krispcall", "as_of": "2026-04-15"})),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn secrets_are_shown_once_stored_hashed_and_revoked_at_once() {
    let s = TestServer::start().await;
    let addr = s.addr();
    let r = api(
        addr,
        "POST",
        "/api/v1/api-keys",
        Some(json!({"name": "billing", "role": "ingest", "expires_at": "2026-03-02T12:00:00Z"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("rk_"), "{secret}");
    assert_eq!(created["role"], "ingest");

    // Listed without its secret.
    let list = api(addr, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(list.json()["keys"][0]["id"], id.as_str());
    assert!(!String::from_utf8_lossy(&list.body).contains(&secret));
    assert!(list.json()["keys"][0].get("secret").is_none());

    // Works for its route.
    let ev = json!({"id": "e1", "type": "payment", "program": "krispcall",
                    "occurred_at": "2026-03-01T00:00:00Z", "customer_id": "c1", "invoice_id": "i1",
                    "currency": "USD", "lines": [{"kind": "subscription", "amount": "10"}]});
    assert_eq!(
        api_as(addr, &secret, "POST", "/api/v1/events", Some(&ev))
            .await
            .status,
        201
    );

    // Nowhere on disk.
    s.running.app.store.flush().unwrap();
    for f in walk(&s.data_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in {}",
            f.display()
        );
    }

    // Expired: refused.
    s.clock.advance(chrono::Duration::days(1));
    assert_eq!(
        api_as(addr, &secret, "POST", "/api/v1/events", Some(&ev))
            .await
            .status,
        401
    );

    // Revoked: refused at once.
    let k2 = api_key(addr, "finance", None).await;
    assert_eq!(
        api_as(addr, &k2, "GET", "/api/v1/problems", None)
            .await
            .status,
        200
    );
    let id2 = api(addr, "GET", "/api/v1/api-keys", None).await.json()["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api(addr, "DELETE", &format!("/api/v1/api-keys/{id2}"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked_at"].is_string());
    assert_eq!(
        api_as(addr, &k2, "GET", "/api/v1/problems", None)
            .await
            .status,
        401
    );

    // Bad requests name the field.
    for (body, field) in [
        (json!({"name": "p", "role": "partner"}), "partner_id"),
        (
            json!({"name": "p", "role": "partner", "partner_id": "p_nobody"}),
            "partner_id",
        ),
        (
            json!({"name": "f", "role": "finance", "partner_id": "p_x"}),
            "partner_id",
        ),
        (json!({"name": "", "role": "finance"}), "name"),
        (json!({"name": "x", "role": "owner"}), "role"),
        (
            json!({"name": "x", "role": "finance", "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let r = api(addr, "POST", "/api/v1/api-keys", Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(r.json()["field"], field, "{body}");
    }
}
