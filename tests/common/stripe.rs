//! Stripe deliveries for the tests: objects from the fixtures in the
//! shapes of Stripe's API reference (tests/fixtures/stripe), and the event
//! envelope Stripe sends them in.

use serde_json::{json, Value};

/// The webhook signing secret the tests configure.
pub const SECRET: &str = "whsec_krispcall_test_0123456789abcdef";
pub const V2024: &str = "2024-06-20";
pub const BASIL: &str = "2025-03-31.basil";

/// A fixture object of an API version.
pub fn fixture(version: &str, name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{version}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Unix seconds of an RFC 3339 time.
pub fn unix(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
}

/// The event envelope Stripe sends an object in.
pub fn envelope(
    id: &str,
    version: &str,
    kind: &str,
    created: i64,
    object: Value,
    previous: Option<Value>,
) -> Value {
    let mut data = json!({"object": object});
    if let Some(p) = previous {
        data["previous_attributes"] = p;
    }
    json!({
        "id": id, "object": "event", "api_version": version, "created": created,
        "data": data, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind,
    })
}

pub fn set(v: &mut Value, pointer: &str, to: Value) {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} in the fixture")) = to;
}

/// An invoice of `quantity` seats of `price` at `unit` cents, paid at `at`.
pub fn invoice(
    version: &str,
    id: &str,
    n: u32,
    price: &str,
    unit: i64,
    quantity: i64,
    at: &str,
) -> Value {
    let mut i = fixture(version, "invoice");
    let total = unit * quantity;
    set(&mut i, "/id", json!(id));
    set(&mut i, "/lines/data/0/invoice", json!(id));
    for f in ["amount_due", "amount_paid", "subtotal", "total"] {
        set(&mut i, &format!("/{f}"), json!(total));
    }
    set(&mut i, "/lines/data/0/amount", json!(total));
    set(&mut i, "/lines/data/0/quantity", json!(quantity));
    set(&mut i, "/status_transitions/paid_at", json!(unix(at)));
    set(&mut i, "/created", json!(unix(at)));
    if n > 1 {
        set(&mut i, "/billing_reason", json!("subscription_cycle"));
    }
    if version == V2024 {
        set(&mut i, "/charge", json!(format!("ch_{n}")));
        set(&mut i, "/payment_intent", json!(format!("pi_{n}")));
        set(&mut i, "/lines/data/0/price/id", json!(price));
        set(&mut i, "/lines/data/0/price/unit_amount", json!(unit));
        set(
            &mut i,
            "/lines/data/0/price/unit_amount_decimal",
            json!(unit.to_string()),
        );
    } else {
        set(
            &mut i,
            "/lines/data/0/pricing/price_details/price",
            json!(price),
        );
        set(
            &mut i,
            "/lines/data/0/pricing/unit_amount_decimal",
            json!(unit.to_string()),
        );
    }
    i
}
