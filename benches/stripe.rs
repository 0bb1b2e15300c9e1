//! What a Stripe delivery costs refedge before the event log, beside the
//! same payment sent as a native event: signature check, envelope,
//! translation, and the event's own parse and check.
//!
//! Run: `cargo bench --bench stripe`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use refedge::commission::event::Event;
use refedge::integrations::stripe::{self, Known};
use serde_json::{json, Value};

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Nothing;

impl Known for Nothing {
    fn paid_by(&self, _: &str) -> Option<(String, String)> {
        None
    }
    fn referred(&self, _: &str) -> bool {
        true
    }
}

fn delivery(version: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/stripe/{version}/invoice.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let invoice: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json!({"id": "evt_1", "object": "event", "api_version": version, "created": 1_772_452_800,
           "type": "invoice.paid", "data": {"object": invoice}})
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stripe");
    let secret = "whsec_bench_0123456789abcdef";
    for version in ["2024-06-20", "2025-03-31.basil"] {
        let body = delivery(version);
        let sig = refedge::signature::sign(secret, 1_772_452_800, &body);
        g.bench_function(format!("invoice_paid_{version}"), |b| {
            b.iter(|| {
                refedge::signature::verify(secret, &sig, black_box(&body), 1_772_452_800).unwrap();
                let d = stripe::parse(black_box(&body)).unwrap();
                let stripe::Outcome::Events(events) =
                    stripe::translate("krispcall", &d, &Nothing).unwrap()
                else {
                    panic!("a payment")
                };
                for e in events {
                    black_box(Event::from_value(e).unwrap());
                }
            })
        });
    }
    // The reference: the same payment as the native event the merchant
    // would post, from its bytes.
    let native = json!({"id": "n1", "type": "payment", "program": "krispcall",
        "occurred_at": "2026-03-02T12:00:05Z", "customer_id": "cus_QK1SjT3bwN4mQy",
        "invoice_id": "in_1PB1aaQK1SjT3bwN", "currency": "USD",
        "lines": [{"kind": "subscription", "amount": "30.00", "plan": "price_standard",
                   "unit_price": "15.00", "quantity": 2}]})
    .to_string()
    .into_bytes();
    g.bench_function("native_payment", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&native)).unwrap();
            black_box(Event::from_value(v).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
