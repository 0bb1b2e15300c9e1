//! The click log on a real sled database: chunked batches page correctly,
//! and per-link counts come back exactly after a clean stop or a crash.

use chrono::DateTime;
use refedge::id::ClickIdGen;
use refedge::model::{rows, ClickHeaders, ClickRecord, CookieOutcome};
use refedge::store::{ClickQuery, Store};

const T0: i64 = 1_790_000_000_000;

fn batch(ids: &ClickIdGen, start_ms: i64, n: usize) -> Vec<ClickRecord> {
    (0..n)
        .map(|i| {
            let id = ids.next(start_ms + i as i64);
            ClickRecord {
                id,
                at: DateTime::from_timestamp_millis(id.timestamp_ms()).unwrap(),
                link: format!("link-{}", i % 3),
                partner_id: if i % 3 == 2 {
                    "p_two".into()
                } else {
                    "p_one".into()
                },
                program: "krispcall".into(),
                method: "GET".into(),
                ip_hash: "00".into(),
                ip_prefix: "203.0.113.0/24".into(),
                user_agent: None,
                referer: None,
                query: None,
                headers: ClickHeaders::default(),
                cookie: CookieOutcome::Set,
                prior_token_error: None,
                verdict: "valid".into(),
                flags: Vec::new(),
            }
        })
        .collect()
}

fn all(store: &Store, mut q: ClickQuery) -> Vec<ClickRecord> {
    let mut out = Vec::new();
    loop {
        let page = store.clicks(&q).unwrap();
        assert!(page.clicks.len() <= q.limit);
        out.extend(page.clicks);
        match page.next {
            Some(n) => q.after = Some(n),
            None => return out,
        }
    }
}

#[test]
fn pages_cross_chunk_boundaries_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids = ClickIdGen::new(None);
    let mut written = Vec::new();
    for b in 0..3 {
        let recs = batch(&ids, T0 + b * 10_000, 300); // 300 > one 256-record chunk
        store.write_clicks(&rows(&recs)).unwrap();
        written.extend(recs);
    }
    let q = ClickQuery {
        limit: 97,
        ..ClickQuery::default()
    };
    let got = all(&store, q.clone());
    assert_eq!(got, written);

    let two = all(
        &store,
        ClickQuery {
            partner: Some("p_two".into()),
            ..q.clone()
        },
    );
    assert_eq!(two.len(), 300);
    assert!(two.iter().all(|r| r.partner_id == "p_two"));
    let link = all(
        &store,
        ClickQuery {
            link: Some("link-0".into()),
            partner: Some("p_one".into()),
            ..q.clone()
        },
    );
    assert_eq!(link.len(), 300);
    assert!(link.iter().all(|r| r.link == "link-0"));

    // A window that opens and closes inside chunks.
    let from = T0 + 10_000 + 100;
    let to = T0 + 20_000 + 280;
    let window = all(
        &store,
        ClickQuery {
            from_ms: Some(from),
            to_ms: Some(to),
            ..q.clone()
        },
    );
    let expected: Vec<_> = written
        .iter()
        .filter(|r| r.id.timestamp_ms() >= from && r.id.timestamp_ms() < to)
        .cloned()
        .collect();
    assert_eq!(window.len(), 200 + 280);
    assert_eq!(window, expected);
    assert_eq!(
        store.newest_click_id().unwrap(),
        written.last().map(|r| r.id)
    );
}

#[test]
fn counts_survive_a_crash_and_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ClickIdGen::new(None);
    {
        let store = Store::open(dir.path()).unwrap();
        store.write_clicks(&rows(&batch(&ids, T0, 30))).unwrap();
        store.snapshot_click_counts().unwrap();
        store
            .write_clicks(&rows(&batch(&ids, T0 + 1_000, 30)))
            .unwrap();
        // Dropped without a snapshot: as after `kill -9`.
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.click_count("link-0"), 20);
    assert_eq!(store.click_count("link-2"), 20);
    assert_eq!(store.click_count("nope"), 0);
    store
        .write_clicks(&rows(&batch(&ids, T0 + 2_000, 3)))
        .unwrap();
    store.snapshot_click_counts().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.click_count("link-0"), 21);
    assert_eq!(
        all(
            &store,
            ClickQuery {
                limit: 1000,
                ..ClickQuery::default()
            }
        )
        .len(),
        63
    );
}
