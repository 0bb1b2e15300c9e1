//! The click queue on a real sled database: a full queue drops and counts
//! (never blocks), a barrier sees everything queued before it.

use refedge::clicklog::ClickLog;
use refedge::config::Config;
use refedge::id::ClickIdGen;
use refedge::metrics::Metrics;
use refedge::model::{Click, ClickHeaders, CookieOutcome};
use refedge::store::{ClickQuery, Store};
use std::sync::Arc;

fn click(ids: &ClickIdGen, n: i64) -> Click {
    Click {
        id: ids.next(1_770_000_000_000 + n),
        link: "queue-test".into(),
        partner_id: "p_test".into(),
        program: "krispcall".into(),
        method: "GET",
        ip: "198.51.100.4".parse().unwrap(),
        user_agent: None,
        referer: None,
        query: None,
        headers: ClickHeaders::default(),
        cookie: CookieOutcome::Set,
        prior_token_error: None,
        verdict: "valid",
        flags: Vec::new(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut cfg = Config::defaults(dir.path()).clicks;
    cfg.queue_capacity = 4;
    let metrics = Arc::new(Metrics::new());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 32]);
    let (log, writer) = ClickLog::start(store.clone(), key, &cfg, metrics.clone());
    let ids = ClickIdGen::new(None);
    // On a current-thread runtime the writer cannot run until we yield, so
    // exactly four fit and the rest are dropped.
    let accepted = (0..10).filter(|&n| log.enqueue(click(&ids, n))).count();
    assert_eq!(accepted, 4);
    assert_eq!(
        metrics
            .clicks_dropped
            .with_label_values(&["queue_full"])
            .get(),
        6
    );
    assert_eq!(metrics.click_queue_depth.get(), 4);

    log.barrier().await;
    assert_eq!(store.click_count("queue-test"), 4);
    assert_eq!(metrics.click_queue_depth.get(), 0);
    let page = store
        .clicks(&ClickQuery {
            limit: 100,
            ..ClickQuery::default()
        })
        .unwrap();
    assert_eq!(page.clicks.len(), 4);
    assert_eq!(page.clicks[0].ip_prefix, "198.51.100.0/24");

    log.stop().await;
    writer.await.unwrap();
    assert!(!log.enqueue(click(&ids, 99)));
    assert_eq!(
        metrics.clicks_dropped.with_label_values(&["stopped"]).get(),
        1
    );
}
