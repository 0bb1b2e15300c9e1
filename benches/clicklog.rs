//! The click log's write path: anonymising, encoding and group-committing
//! one batch of served clicks to sled (the cost the writer task pays per
//! click).
//!
//! Run: `cargo bench --bench clicklog`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use refedge::clicklog::Anonymiser;
use refedge::id::ClickIdGen;
use refedge::model::{Click, CookieOutcome, Evidence, EvidenceField};
use refedge::store::Store;
use smol_str::SmolStr;

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 1000;
const LINKS: usize = 10_000;
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn click(ids: &ClickIdGen, links: &[SmolStr], i: usize) -> Click {
    use EvidenceField as F;
    let evidence: Evidence = [
        (F::UserAgent, FIREFOX),
        (F::Referer, "https://blog.example/best-voip"),
        (F::Query, "utm_source=load"),
        (F::Accept, "text/html,application/xhtml+xml"),
        (F::AcceptLanguage, "en-US,en;q=0.5"),
        (F::SecFetchDest, "document"),
        (F::SecFetchMode, "navigate"),
    ]
    .into_iter()
    .collect();
    Click {
        id: ids.next(1_790_000_000_000 + i as i64),
        link: links[(i * 7919) % LINKS].clone(),
        partner_id: "p_3RlEuIdP2y6IXfB4".into(),
        program: "krispcall".into(),
        method: "GET",
        ip: std::net::IpAddr::from([100, 64, (i >> 8) as u8, i as u8]),
        evidence,
        cookie: CookieOutcome::Set,
        prior_token_error: None,
        verdict: "valid",
        flags: Vec::new(),
    }
}

fn bench_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let ids = ClickIdGen::new(None);
    let anon = Anonymiser::new(
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]),
        24,
        48,
    );
    let links: Vec<SmolStr> = (0..LINKS).map(|i| format!("lt-{i:07}").into()).collect();
    let mut n = 0usize;
    let mut g = c.benchmark_group("clicklog");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.bench_function("write_batch_1000", |b| {
        b.iter_batched(
            || {
                n += BATCH;
                (0..BATCH)
                    .map(|i| click(&ids, &links, n + i))
                    .collect::<Vec<_>>()
            },
            |batch| anon.write(&store, &batch).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_write);
criterion_main!(benches);
