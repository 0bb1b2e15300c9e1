//! The commission calculator applying payment events in batch: 1,000,000
//! payments from 10,000 referred customers of 1,000 partners, on the
//! heaviest presets (Aloware's monthly tiers with top-ups, KrispCall's
//! initial-plan cap).
//!
//! Run: `cargo bench --bench calculator`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use refedge::commission::{Calculator, Event};
use refedge::config::Config;
use refedge::replay::books;
use serde_json::json;

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTNERS: usize = 1_000;
const CUSTOMERS: usize = 10_000;
const PAYMENTS: usize = 1_000_000;

fn setup(program: &str) -> (Calculator, Vec<(String, Event)>) {
    let config = Config::defaults("unused");
    let mut calc = Calculator::new(books(&config.programs));
    let ev = |v: serde_json::Value| Event::from_value(v).unwrap();
    for p in 0..PARTNERS {
        calc.apply(
            &format!("partner-{p}"),
            &ev(
                json!({"type": "partner", "id": format!("p{p}"), "program": program,
            "email": format!("p{p}@partner.example"), "created_at": "2026-01-01T00:00:00Z"}),
            ),
        );
        calc.apply(
            &format!("coupon-{p}"),
            &ev(json!({"type": "coupon", "code": format!("C{p}"), "partner_id": format!("p{p}")})),
        );
    }
    for c in 0..CUSTOMERS {
        calc.apply(
            &format!("s{c}"),
            &ev(
                json!({"type": "signup", "id": format!("s{c}"), "program": program,
            "occurred_at": "2026-01-02T00:00:00Z", "customer": {"id": format!("c{c}")},
            "attribution": {"coupon": format!("C{}", c % PARTNERS)}}),
            ),
        );
    }
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-03T00:00:00Z").unwrap();
    let payments = (0..PAYMENTS)
        .map(|i| {
            let at = start + chrono::Duration::seconds((i as i64) * 30);
            let id = format!("pay{i}");
            let e = ev(json!({"type": "payment", "id": id, "program": program, "occurred_at": at.to_rfc3339(),
                "customer_id": format!("c{}", i % CUSTOMERS), "invoice_id": format!("inv{i}"), "currency": "USD",
                "lines": [{"kind": "subscription", "amount": "45.00", "plan": "standard", "unit_price": "15.00", "quantity": 3},
                          {"kind": "usage", "amount": "3.20"}]}));
            (id, e)
        })
        .collect();
    (calc, payments)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("calculator");
    g.throughput(Throughput::Elements(PAYMENTS as u64));
    g.sample_size(10);
    for program in ["aloware", "krispcall"] {
        let (base, payments) = setup(program);
        g.bench_function(format!("apply_1m_payments_{program}"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut calc| {
                    for (id, e) in &payments {
                        calc.apply(id, e);
                    }
                    calc
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
