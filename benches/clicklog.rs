//! The click log's write path: converting and group-committing one batch of
//! clicks to sled (the cost the writer task pays per click).
//!
//! Run: `cargo bench --bench clicklog`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use refedge::id::ClickIdGen;
use refedge::model::{ClickHeaders, ClickRecord, CookieOutcome};
use refedge::store::Store;

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 1000;
const LINKS: usize = 10_000;

fn record(ids: &ClickIdGen, i: usize) -> ClickRecord {
    let id = ids.next(1_790_000_000_000 + i as i64);
    ClickRecord {
        id,
        at: chrono::DateTime::from_timestamp_millis(id.timestamp_ms()).unwrap(),
        link: format!("lt-{:07}", (i * 7919) % LINKS),
        partner_id: "p_3RlEuIdP2y6IXfB4".into(),
        program: "krispcall".into(),
        method: "GET".into(),
        ip_hash: "886cecdbdba58c3214e5e2467da6d3ed".into(),
        ip_prefix: "203.0.113.0/24".into(),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0".into(),
        ),
        referer: Some("https://blog.example/best-voip".into()),
        query: Some("utm_source=load".into()),
        headers: ClickHeaders {
            accept: Some("text/html,application/xhtml+xml".into()),
            accept_language: Some("en-US,en;q=0.5".into()),
            sec_fetch_dest: Some("document".into()),
            sec_fetch_mode: Some("navigate".into()),
            ..ClickHeaders::default()
        },
        cookie: CookieOutcome::Set,
        prior_token_error: None,
        verdict: "valid".into(),
        flags: Vec::new(),
    }
}

fn bench_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let ids = ClickIdGen::new(None);
    let mut n = 0usize;
    let mut g = c.benchmark_group("clicklog");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.bench_function("write_batch_1000", |b| {
        b.iter_batched(
            || {
                n += BATCH;
                (0..BATCH).map(|i| record(&ids, n + i)).collect::<Vec<_>>()
            },
            |batch| store.write_clicks(&batch).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_write);
criterion_main!(benches);
