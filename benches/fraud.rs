//! The fraud checks on their own: the user-agent classifier and the whole
//! click verdict (limiters, windows, networks, headers).
//!
//! Run: `cargo bench --bench fraud`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use refedge::clock::SystemClock;
use refedge::fraud::{ua, ClickFacts, FraudRules, Guard};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "python-requests/2.32.3",
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fraud");
    g.bench_function("classify_user_agent", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % UAS.len();
            black_box(ua::is_bot(black_box(UAS[i])))
        })
    });
    let guard = Guard::new(
        [(
            "krispcall".to_string(),
            FraudRules {
                partner_per_second: 100_000_000,
                ..FraudRules::default()
            },
        )],
        Arc::new(SystemClock),
    );
    let hosts = vec!["blog.example".to_string()];
    let links: Vec<String> = (0..64).map(|i| format!("ann-spring-{i}")).collect();
    let mut n = 0u32;
    // A million visitors in turn, each on a different link every time: as
    // many returning visitors as in life, none over a limit, so this is the
    // cost of a valid click's verdict (a flagged one formats its evidence).
    g.bench_function("click_verdict", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0x6440_0000 | (n % 1_000_003)));
            black_box(guard.click(&ClickFacts {
                ip: Some(ip),
                user_agent: Some(UAS[0]),
                accept: Some("text/html,application/xhtml+xml"),
                accept_language: Some("en-US,en;q=0.9"),
                sec_fetch_dest: Some("document"),
                sec_fetch_mode: Some("navigate"),
                referer: Some("https://blog.example/review"),
                query: Some("utm_source=blog"),
                program: "krispcall",
                partner: "p_3RlEuIdP2y6IXfB4",
                link: &links[(n % 64) as usize],
                partner_hosts: &hosts,
                ..ClickFacts::default()
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
