//! The click queue on a real sled database: a full queue drops and counts
//! (never blocks), a barrier sees everything queued before it.

use refedge::clicklog::ClickLog;
use refedge::config::{ClickLogConfig, Config};
use refedge::id::ClickIdGen;
use refedge::metrics::Metrics;
use refedge::model::{Click, ClickRecord, CookieOutcome, Evidence, EvidenceField};
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
        evidence: {
            let query = format!("sub1={n}");
            let mut e: Evidence = [
                (EvidenceField::UserAgent, "Mozilla/5.0 (X11; Linux x86_64)"),
                (EvidenceField::Query, query.as_str()),
            ]
            .into_iter()
            .collect();
            e.set_bytes(EvidenceField::Via, b"1.1 proxy \xff");
            e
        },
        cookie: CookieOutcome::Set,
        prior_token_error: None,
        verdict: "valid",
        flags: Vec::new(),
    }
}

/// A click log on a fresh store, with the click settings `tweak` leaves.
struct Log {
    _dir: tempfile::TempDir,
    store: Store,
    metrics: Arc<Metrics>,
    log: ClickLog,
    writer: tokio::task::JoinHandle<()>,
    ids: ClickIdGen,
}

fn start(tweak: impl FnOnce(&mut ClickLogConfig)) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut cfg = Config::defaults(dir.path()).clicks;
    tweak(&mut cfg);
    let metrics = Arc::new(Metrics::new());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 32]);
    let (log, writer) = ClickLog::start(store.clone(), key, &cfg, metrics.clone()).unwrap();
    Log {
        _dir: dir,
        store,
        metrics,
        log,
        writer,
        ids: ClickIdGen::new(None),
    }
}

/// The first 100 clicks on disk, oldest first.
fn stored(store: &Store) -> Vec<ClickRecord> {
    store
        .clicks(&ClickQuery {
            limit: 100,
            ..ClickQuery::default()
        })
        .unwrap()
        .clicks
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let t = start(|c| c.queue_capacity = 4);
    // On a current-thread runtime the writer cannot run until we yield, so
    // exactly four fit and the rest are dropped.
    let accepted = (0..10).filter(|&n| t.log.enqueue(click(&t.ids, n))).count();
    assert_eq!(accepted, 4);
    assert_eq!(
        t.metrics
            .clicks_dropped
            .with_label_values(&["queue_full"])
            .get(),
        6
    );
    assert_eq!(t.metrics.click_queue_depth.get(), 4);

    t.log.barrier().await;
    assert_eq!(t.store.click_count("queue-test"), 4);
    assert_eq!(t.metrics.click_queue_depth.get(), 0);
    let clicks = stored(&t.store);
    assert_eq!(clicks.len(), 4);
    let first = &clicks[0];
    assert_eq!(first.ip_prefix, "198.51.100.0/24");
    assert_eq!(first.ip_hash.len(), 32);
    // The evidence reaches disk field by field, each in its place.
    assert_eq!(
        first.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64)")
    );
    assert_eq!(first.query.as_deref(), Some("sub1=0"));
    assert_eq!(first.headers.via.as_deref(), Some("1.1 proxy \u{fffd}"));
    assert_eq!(first.referer, None);
    assert_eq!(first.headers.accept, None);

    t.log.stop().await;
    t.writer.await.unwrap();
    assert!(!t.log.enqueue(click(&t.ids, 99)));
    assert_eq!(
        t.metrics
            .clicks_dropped
            .with_label_values(&["stopped"])
            .get(),
        1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_backlog_is_written_oldest_first_a_batch_at_a_time() {
    let t = start(|c| c.batch_max = 3);
    // Ten clicks before the writer can run, then the same again: batches
    // of 3, 3, 3 and 1 each time, the vectors reused between rounds.
    for round in 0..2 {
        for n in 0..10 {
            assert!(t.log.enqueue(click(&t.ids, round * 10 + n)));
        }
        t.log.barrier().await;
        assert_eq!(t.metrics.click_queue_depth.get(), 0);
    }
    assert_eq!(t.metrics.batch_size.get_sample_count(), 8);
    assert_eq!(t.metrics.batch_size.get_sample_sum(), 20.0);
    assert_eq!(t.store.click_count("queue-test"), 20);
    let queries: Vec<String> = stored(&t.store)
        .iter()
        .map(|c| c.query.clone().unwrap())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("sub1={n}")).collect();
    assert_eq!(queries, expected, "stored in the order served");
    t.log.stop().await;
    t.writer.await.unwrap();
}
