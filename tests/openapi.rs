//! The OpenAPI description against the router: every described route
//! reaches a handler, nothing undescribed is served, and every documented
//! example is valid against its schema.

mod common;

use common::*;
use serde_json::{json, Value};

/// The document served, and a partner and link to fill paths with.
async fn setup() -> (TestServer, Value, String) {
    let s = TestServer::start().await;
    let r = api(s.addr(), "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    let ann = s.partner("krispcall", "ann@blog.example").await;
    s.link(&ann, "https://krispcall.com/", Some("ann-k")).await;
    (s, doc, ann)
}

#[tokio::test]
async fn every_described_route_reaches_a_handler_and_nothing_else_is_served() {
    let (s, doc, ann) = setup().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let url = path
                .replace("{id}", &ann)
                .replace("{code}", "ann-k")
                .replace("{program}", "krispcall")
                .replace("{delivery}", "whd_none");
            let method = method.to_uppercase();
            let body = op.get("requestBody").map(|_| json!({}));
            let r = if op["security"] == json!([]) || path.starts_with("/integrations/") {
                send(s.addr(), &method, &url, &[], None).await
            } else {
                api(s.addr(), &method, &url, body).await
            };
            let text = String::from_utf8_lossy(&r.body);
            assert_ne!(r.status, 405, "{method} {path}: {text}");
            assert!(!text.contains("route not found"), "{method} {path}: {text}");
            // Its documented answers include what it said (a success, or
            // one of the errors it lists for these placeholder inputs).
            let answered = r.status.to_string();
            let listed = op["responses"].as_object().unwrap();
            assert!(
                listed.contains_key(&answered) || r.status >= 400,
                "{method} {path} answered {answered}, listed {:?}",
                listed.keys().collect::<Vec<_>>()
            );
            if r.status >= 400 && r.status != 503 && !path.starts_with("/r/") {
                assert!(
                    listed.contains_key(&answered),
                    "{method} {path} answered {answered} ({text}), listed {:?}",
                    listed.keys().collect::<Vec<_>>()
                );
            }
        }
    }
    assert!(operations > 60, "{operations}");
    // What the description does not have is not served.
    for (method, path, status) in [
        ("PUT", "/api/v1/links", 405),
        ("GET", "/api/v1/linkz", 404),
        ("POST", "/api/v1/partners/x/balance", 405),
    ] {
        let r = api(s.addr(), method, path, Some(json!({}))).await;
        assert_eq!(r.status, status, "{method} {path}");
    }
    // Roles come from the access rules.
    assert_eq!(
        doc["paths"]["/api/v1/payouts/run"]["post"]["x-roles"],
        json!(["admin", "finance"])
    );
    assert_eq!(
        doc["paths"]["/api/v1/events"]["post"]["x-roles"],
        json!(["admin", "ingest"])
    );
}

#[tokio::test]
async fn every_example_is_valid_against_its_schema() {
    let (_s, doc, _) = setup().await;
    let components = doc["components"].clone();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(content) = op.pointer("/requestBody/content/application~1json") else {
                continue;
            };
            let mut root = content["schema"].clone();
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            root["components"] = components.clone();
            let validator = jsonschema::validator_for(&root)
                .unwrap_or_else(|e| panic!("{method} {path}: the schema does not compile: {e}"));
            let example = &content["example"];
            let errors: Vec<String> = validator
                .iter_errors(example)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{method} {path}: {errors:?}");
            // And the schema is not one that takes anything: an example
            // without its first required field fails.
            if let Some(Value::Object(mut broken)) = Some(example.clone()) {
                let schema = resolve(&root, &content["schema"]);
                if let Some(first) = schema["required"].as_array().and_then(|r| r.first()) {
                    broken.remove(first.as_str().unwrap());
                    assert!(
                        !validator.is_valid(&Value::Object(broken)),
                        "{method} {path}: valid without {first}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "{checked}");
}

/// The schema a `$ref` names, within `root`.
fn resolve(root: &Value, s: &Value) -> Value {
    match s["$ref"].as_str() {
        Some(r) => root
            .pointer(r.trim_start_matches('#'))
            .cloned()
            .unwrap_or(Value::Null),
        None => s.clone(),
    }
}
