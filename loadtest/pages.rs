//! The console and portal on real volumes: seeds a data dir (partners,
//! links and clicks over 90 days, written through the store as the server
//! writes them), starts the release server on it, signs in, and times
//! each page over sequential requests on loopback (p50, p95, max, in ms).
//! Driven by `loadtest/pages`; targets 127.0.0.1 only, bounded in
//! requests, and stops the server it started by its pid.
//!
//! Usage: pages BINARY DATA_DIR PARTNERS LINKS CLICKS REQUESTS OUT_JSON

use chrono::{Duration as Days, Utc};
use refedge::id::ClickId;
use refedge::model::{ClickHeaders, ClickRecord, CookieOutcome, Link, Partner, PartnerStatus};
use refedge::store::Store;

#[path = "client.rs"]
mod client;
use client::{send, Server};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TOKEN: &str = "pages-bench-admin-token-0123456789";
const DAYS: i64 = 90;
const PROGRAMS: [&str; 4] = ["krispcall", "aloware", "aircall", "ringostat"];
const HOSTS: [&str; 4] = [
    "krispcall.com",
    "aloware.com",
    "aircall.io",
    "ringostat.com",
];
const UAS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
];

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: pages BINARY DATA_DIR PARTNERS LINKS CLICKS REQUESTS OUT_JSON");
        std::process::exit(2)
    })
}

fn partner_id(i: usize) -> String {
    format!("p_bench{i:09}")
}

/// The seed's randomness for click `i` and draw `k`: a hash (splitmix64)
/// rather than a sequence, so a seeding stopped part way resumes at any
/// click with the same data it would have written.
fn draw(i: usize, k: u64) -> u64 {
    let mut z = (i as u64)
        .wrapping_mul(4)
        .wrapping_add(k)
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Clicks written per store opening. sled 0.34 keeps far more than its
/// cache for a long run of small inserts (the per-partner index keys: one
/// per click when partners are spread this evenly; spacejam/sled#986): the
/// first 10,000,000-click seeding reached 18 GB in one process. Closing
/// and reopening the store every segment gives that memory back.
const SEGMENT: usize = 1_000_000;

/// The process's resident set in MB (Linux), for the seeding log.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn seed(dir: &std::path::Path, partners: usize, links: usize, clicks: usize) {
    let now = Utc::now();
    let links_done = dir.with_file_name("seeded-links");
    if !links_done.exists() {
        let _ = std::fs::remove_dir_all(dir);
        seed_directory(dir, partners, links, now);
        std::fs::write(&links_done, now.timestamp_millis().to_string()).unwrap();
    }
    // Clicks are spread over the 90 days before the first seeding began,
    // so a resumed seeding continues the same timeline.
    let began = std::fs::read_to_string(&links_done).unwrap();
    let began = refedge::clock::ms_to_datetime(began.trim().parse().unwrap());
    let progress = dir.with_file_name("seeded-clicks");
    let mut done: usize = std::fs::read_to_string(&progress)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let t0 = Instant::now();
    while done < clicks {
        let end = (done + SEGMENT).min(clicks);
        let store = Store::open(dir).expect("open store");
        seed_clicks(&store, partners, links, clicks, began, done..end);
        store.flush().unwrap();
        drop(store);
        done = end;
        std::fs::write(&progress, done.to_string()).unwrap();
        eprintln!(
            "seeded {done} of {clicks} clicks in {:.1?} (RSS {:.0} MB)",
            t0.elapsed(),
            rss_mb()
        );
    }
    // The seed is kept from here on: a run stopped during the backfill
    // resumes it from the rollups' cursor instead of seeding again.
    std::fs::write(dir.with_file_name("seeded"), b"").unwrap();
    roll_up(&Store::open(dir).expect("open store"));
}

fn seed_directory(
    dir: &std::path::Path,
    partners: usize,
    links: usize,
    now: chrono::DateTime<Utc>,
) {
    let store = Store::open(dir).expect("open store");
    let t0 = Instant::now();
    for i in 0..partners {
        let program = PROGRAMS[i % 4];
        store
            .stage_partner(&Partner {
                id: partner_id(i),
                program: program.into(),
                name: format!("Partner {i}"),
                email: format!("partner{i}@blog{}.example", i % 977),
                website: format!("https://blog{i}.example"),
                currency: "USD".into(),
                status: PartnerStatus::Active,
                customer_ids: vec![],
                ip_hashes: vec![],
                created_at: now - Days::days(DAYS) + Days::seconds(i as i64),
            })
            .unwrap();
    }
    for j in 0..links {
        let p = j % partners;
        store
            .stage_link(&Link {
                code: format!("l{j:07}"),
                partner_id: partner_id(p),
                program: PROGRAMS[p % 4].into(),
                destination: format!("https://{}/pricing?c={j}", HOSTS[p % 4]),
                created_at: now - Days::days(DAYS),
                disabled_at: None,
            })
            .unwrap();
    }
    store.flush().unwrap();
    eprintln!(
        "seeded {partners} partners and {links} links in {:.1?}",
        t0.elapsed()
    );
}

/// Clicks `range` of `clicks`, evenly over the 90 days before `began`.
fn seed_clicks(
    store: &Store,
    partners: usize,
    links: usize,
    clicks: usize,
    began: chrono::DateTime<Utc>,
    range: std::ops::Range<usize>,
) {
    let start = (began - Days::days(DAYS)).timestamp_millis();
    let span = DAYS * 86_400_000;
    let mut batch = Vec::with_capacity(4096);
    let last = range.end;
    for i in range {
        let ms = start + (i as i64 * span) / clicks as i64;
        let j = (draw(i, 0) % links as u64) as usize;
        let p = j % partners;
        let flagged = draw(i, 1) % 100 < 3;
        let rec = ClickRecord {
            id: ClickId(ClickId::lower_bound(ms).0 + i as u128),
            at: refedge::clock::ms_to_datetime(ms),
            link: format!("l{j:07}"),
            partner_id: partner_id(p),
            program: PROGRAMS[p % 4].into(),
            method: "GET".into(),
            ip_hash: format!("{:032x}", draw(i, 2)),
            ip_prefix: format!("100.64.{}.0/24", draw(i, 3) % 256),
            user_agent: Some(UAS[i % 3].into()),
            referer: (i % 2 == 0).then(|| format!("https://blog{p}.example/post")),
            query: None,
            headers: ClickHeaders::default(),
            cookie: if flagged {
                CookieOutcome::NotSet
            } else {
                CookieOutcome::Set
            },
            prior_token_error: None,
            verdict: if flagged { "flagged" } else { "valid" }.into(),
            flags: if flagged {
                vec![refedge::fraud::Flag {
                    reason: refedge::fraud::Reason::Bot,
                    evidence: "user agent matches a crawler pattern".into(),
                }]
            } else {
                vec![]
            },
        };
        batch.push(rec);
        if batch.len() == 4096 || i + 1 == last {
            store.write_clicks(&refedge::model::rows(&batch)).unwrap();
            batch.clear();
        }
    }
}

/// Rolls up every click not rolled up yet (the backfill), timed.
fn roll_up(store: &Store) {
    let t0 = Instant::now();
    store.roll_up_all().unwrap();
    store.write_pending_rollups().unwrap();
    store.snapshot_click_counts().unwrap();
    store.flush().unwrap();
    eprintln!("rolled up in {:.1?}", t0.elapsed());
}

async fn sign_in(addr: SocketAddr, path: &str, body: &str) -> String {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = send(addr, "POST", path, &form, body).await;
    assert_eq!(status, 303, "sign-in at {path}");
    let c = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .expect("cookie")
        .1
        .clone();
    c.split(';').next().unwrap().to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary: String = arg(&args, 1);
    let dir: String = arg(&args, 2);
    let (partners, links, clicks, requests): (usize, usize, usize, usize) =
        (arg(&args, 3), arg(&args, 4), arg(&args, 5), arg(&args, 6));
    let out: String = arg(&args, 7);
    let dir = std::path::PathBuf::from(dir);
    if !dir.join("seeded").exists() {
        seed(&dir.join("db"), partners, links, clicks);
    } else {
        roll_up(&Store::open(&dir.join("db")).expect("open store"));
    }
    let started = Instant::now();
    let server = Server::start(&binary, &dir, TOKEN, &[], Duration::from_secs(300)).await;
    let addr = server.addr;
    eprintln!("server up in {:.1?}", started.elapsed());
    // A first view SETTLE_S seconds after the start (default 10): what a
    // person arriving then sees, once the server has made the console's
    // default periods ahead (SETTLE_S=0: the cold first view).
    let settle: u64 = std::env::var("SETTLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let staff = sign_in(addr, "/console/signin", &format!("key={TOKEN}")).await;
    let auth = format!("Bearer {TOKEN}");
    let (_, _, body) = send(
        addr,
        "POST",
        &format!("/api/v1/partners/{}/portal-link", partner_id(7)),
        &[("authorization", &auth)],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let url = v["url"].as_str().unwrap();
    let partner = sign_in(addr, &url[url.find("/portal/").unwrap()..], "").await;
    let pid = partner_id(7);
    let (staff, partner) = (("cookie", staff), ("cookie", partner));
    let bearer = ("authorization", auth.clone());
    // The fraud team's API summary over the last 30 and 90 days: whole days
    // from the rollups, the two part-days click by click.
    let since = |days: i64| {
        (Utc::now() - Days::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let pages: Vec<(&str, String, &(&str, String))> = vec![
        ("overview, 30 days", "/console/".into(), &staff),
        ("overview, 90 days", "/console/?days=90".into(), &staff),
        ("partners list", "/console/partners".into(), &staff),
        (
            "partners search",
            "/console/partners?q=blog977".into(),
            &staff,
        ),
        ("partner page", format!("/console/partners/{pid}"), &staff),
        ("link page", "/console/links/l0000007".into(), &staff),
        ("fraud page", "/console/fraud".into(), &staff),
        ("review queue", "/console/reviews".into(), &staff),
        ("payouts", "/console/payouts".into(), &staff),
        ("API keys", "/console/api-keys".into(), &staff),
        ("portal", "/portal/".into(), &partner),
        (
            "fraud summary API 30 d",
            format!("/api/v1/fraud/summary?from={}", since(30)),
            &bearer,
        ),
        (
            "fraud summary API 90 d",
            format!("/api/v1/fraud/summary?from={}", since(90)),
            &bearer,
        ),
    ];
    let mut results = Vec::new();
    for (name, path, (header, value)) in &pages {
        let h = [(*header, value.as_str())];
        // The first view of a period sums its closed days (kept for the
        // next views): timed on its own.
        let mut first = 0.0;
        for i in 0..3 {
            let t = Instant::now();
            let (status, _, body) = send(addr, "GET", path, &h, "").await;
            if i == 0 {
                first = t.elapsed().as_secs_f64() * 1000.0;
            }
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        }
        let mut ms = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let (status, _, _) = send(addr, "GET", path, &h, "").await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}");
        }
        ms.sort_by(f64::total_cmp);
        let (p50, p95, max) = (
            percentile(&ms, 0.5),
            percentile(&ms, 0.95),
            ms[ms.len() - 1],
        );
        println!(
            "{name:<20} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   max {max:>8.2} ms   first {first:>8.2} ms"
        );
        results.push(
            serde_json::json!({"page": name, "path": path, "p50_ms": p50, "p95_ms": p95,
            "max_ms": max, "first_ms": first}),
        );
    }
    drop(server);
    let report = serde_json::json!({
        "partners": partners, "links": links, "clicks": clicks, "days": DAYS,
        "requests_per_page": requests, "pages": results,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {out}");
}
