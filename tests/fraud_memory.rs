//! A million distinct visitors through the limiters: memory stays bounded,
//! because idle visitors' state is pruned.

use refedge::clock::{FakeClock, SharedClock};
use refedge::fraud::{ClickFacts, FraudRules, Guard, PRUNE_PARTS};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

#[test]
fn a_million_visitors_leave_memory_bounded() {
    let clock = Arc::new(FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap()));
    let guard = Guard::new(
        [(
            "krispcall".to_string(),
            FraudRules {
                partner_per_second: 10_000_000,
                ..FraudRules::default()
            },
        )],
        clock.clone() as SharedClock,
    );
    let hosts: Vec<String> = vec![];
    let mut peak = 0;
    for n in 0u32..1_000_000 {
        // 100.64.0.0/10: carrier-grade NAT, in no data-centre list.
        let ip = IpAddr::V4(Ipv4Addr::from(0x6440_0000 | (n & 0x003f_ffff)));
        let v = guard.click(&ClickFacts {
            ip: Some(ip),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            ),
            accept: Some("text/html"),
            accept_language: Some("en"),
            program: "krispcall",
            partner: "p_1",
            link: "link-1",
            partner_hosts: &hosts,
            ..ClickFacts::default()
        });
        assert!(v.flags.is_empty(), "visitor {n}: {:?}", v.flags);
        // 10,000 visitors a second.
        if n % 10_000 == 9_999 {
            clock.advance(chrono::Duration::seconds(1));
        }
        // The server's pruner: a sixteenth of the windows (and the
        // limiters once a round) every 1/16 s.
        if n % 625 == 624 {
            guard.prune_step();
        }
        if n % 50_000 == 49_999 {
            peak = peak.max(guard.key_count());
        }
    }
    // Unpruned, the visitor map would hold every visitor: 1,000,000 (a
    // first click never reaches the limiter maps: it is charged late).
    // Pruned, only the last window's visitors stay: the 30 s window holds
    // ~300,000 at 10,000 a second, plus up to a second's worth waiting for
    // its part's sweep (measured peak: 309,376), whatever the total.
    assert!(peak <= 500_000, "peak {peak} keys");
    clock.advance(chrono::Duration::minutes(10));
    for _ in 0..PRUNE_PARTS {
        guard.prune_step();
    }
    assert_eq!(guard.key_count(), 0, "idle visitors are all forgotten");
}
