//! The redirect hot path in-process (link lookup, cookie check, token
//! signing, click enqueue, response building) and the token on its own.
//!
//! Run: `cargo bench --bench redirect`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use refedge::clock::{Clock, SystemClock};
use refedge::config::Config;
use refedge::directory::{NewLink, NewPartner};
use refedge::edge::redirect::redirect;
use refedge::edge::App;
use refedge::id::ClickId;
use refedge::model::{Click, CookieOutcome, EvidenceField};
use refedge::token::{Claims, Keyring, SigningKey};
use std::sync::Arc;

/// The allocator the binary ships with (see src/main.rs).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const LINKS: usize = 10_000;

fn browser_request(code: &str, cookie: Option<&str>) -> hyper::Request<()> {
    let mut b = hyper::Request::get(format!("/r/{code}?utm_source=newsletter&sub1=42"))
        .header("host", "go.example.com")
        .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8")
        .header("accept-language", "en-US,en;q=0.9")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-user", "?1")
        .header("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"")
        .header("sec-ch-ua-mobile", "?0")
        .header("sec-ch-ua-platform", "\"Windows\"")
        .header("upgrade-insecure-requests", "1")
        .header("referer", "https://blog.example/best-voip-2026");
    if let Some(c) = cookie {
        b = b.header("cookie", format!("_ga=GA1.1.123; refedge_attr={c}"));
    }
    b.body(()).unwrap()
}

fn bench_redirect(c: &mut Criterion) {
    // Both servers live side by side, so the alternating comparison at the
    // end sees the same machine state for each.
    let on = Setup::new(true);
    let off = Setup::new(false);
    on.bench(c, "redirect");
    bench_parts(c, &on.rt, &on.app, &on.codes);
    off.bench(c, "redirect_fraud_off");
    fraud_overhead(&on, &off);
    on.report(true);
    off.report(false);
    on.shutdown();
    off.shutdown();
}

/// A server with 10,000 links and the requests to click them.
struct Setup {
    rt: tokio::runtime::Runtime,
    running: Option<refedge::edge::Running>,
    app: Arc<App>,
    codes: Vec<String>,
    peers: Vec<std::net::SocketAddr>,
    requests: Vec<hyper::Request<()>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(fraud: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_token = Some("bench-admin-token-0123456789".into());
        config.clicks.queue_capacity = 1 << 20;
        for p in config.programs.values_mut() {
            p.fraud.enabled = fraud;
            // One bench partner gets all the traffic: lift its per-second limit.
            p.fraud.partner_per_second = 100_000_000;
        }
        let running = rt
            .block_on(refedge::edge::start(config, Arc::new(SystemClock)))
            .unwrap();
        let app = running.app.clone();
        let now = SystemClock.now();
        let partner = app
            .directory
            .create_partner(
                NewPartner {
                    program: "krispcall".into(),
                    name: "Bench".into(),
                    email: "bench@blog.example".into(),
                    website: "https://blog.example".into(),
                    currency: None,
                    customer_ids: Vec::new(),
                    ip_hashes: Vec::new(),
                },
                now,
            )
            .unwrap();
        let codes: Vec<String> = (0..LINKS)
            .map(|i| {
                app.directory
                    .create_link(
                        NewLink {
                            partner_id: partner.id.clone(),
                            destination: "https://krispcall.com/pricing?plan=standard".into(),
                            code: Some(format!("bench-{i:05}")),
                        },
                        now,
                    )
                    .unwrap()
                    .code
            })
            .collect();
        // Many distinct visitors (carrier-grade NAT space, in no data-centre
        // list), so the fraud state sees fresh and returning visitors as in
        // life.
        let peers: Vec<std::net::SocketAddr> = (0..100_003u32)
            .map(|n| {
                std::net::SocketAddr::from((
                    [100, 64 + (n >> 16) as u8 % 64, (n >> 8) as u8, n as u8],
                    51234,
                ))
            })
            .collect();
        let requests: Vec<_> = codes.iter().map(|c| browser_request(c, None)).collect();
        Self {
            rt,
            running: Some(running),
            app,
            codes,
            peers,
            requests,
            _dir: dir,
        }
    }

    /// Click number `n`: link and visitor both cycle.
    fn click(&self, n: usize) -> hyper::Response<refedge::edge::http::Body> {
        self.click_with(&self.requests, n)
    }

    /// Click number `n`, one of `requests` (one per link, in code order).
    fn click_with(
        &self,
        requests: &[hyper::Request<()>],
        n: usize,
    ) -> hyper::Response<refedge::edge::http::Body> {
        let i = (n * 7919) % requests.len();
        let v = n % self.peers.len();
        redirect(&self.app, self.peers[v], &requests[i], &self.codes[i])
    }

    fn bench(&self, c: &mut Criterion, group: &str) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        let mut n = 0usize;
        g.bench_function("browser_click_no_cookie", |b| {
            b.iter(|| {
                n += 1;
                black_box(self.click(n))
            })
        });
        // A visitor outside the benches' cycle: never flagged, so its
        // click sets a cookie.
        let fresh: std::net::SocketAddr = "100.127.255.254:51234".parse().unwrap();
        let token = redirect(&self.app, fresh, &self.requests[0], &self.codes[0])
            .headers()
            .get("set-cookie")
            .expect("a fresh visitor's click sets a cookie")
            .to_str()
            .unwrap()
            .to_string();
        let token = token
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("refedge_attr=")
            .to_string();
        let with_cookie: Vec<_> = self
            .codes
            .iter()
            .map(|c| browser_request(c, Some(&token)))
            .collect();
        g.bench_function("browser_click_with_cookie", |b| {
            b.iter(|| {
                n += 1;
                black_box(self.click_with(&with_cookie, n))
            })
        });
        g.finish();
    }

    fn report(&self, fraud: bool) {
        let app = &self.app;
        let dropped: u64 = ["queue_full", "stopped"]
            .iter()
            .map(|r| app.metrics.clicks_dropped.with_label_values(&[r]).get())
            .sum();
        let flagged: u64 = refedge::fraud::Reason::ALL
            .iter()
            .map(|r| {
                app.metrics
                    .clicks_by_verdict
                    .with_label_values(&["krispcall", "flagged", r.label()])
                    .get()
            })
            .sum();
        eprintln!(
            "fraud {fraud}: clicks written {}, dropped {dropped}, flag hits {flagged}",
            app.metrics.clicks_written.get()
        );
    }

    fn shutdown(mut self) {
        let running = self.running.take().unwrap();
        self.rt.block_on(running.shutdown()).unwrap();
    }
}

/// The fraud checks' in-process cost, measured so that this machine's
/// drift cancels out: rounds of clicks with the checks on and off back to
/// back (the order swapped every round), and the median of the rounds'
/// ratios. Criterion's two groups above run a minute apart, and their
/// difference moved by ±10% from run to run.
fn fraud_overhead(on: &Setup, off: &Setup) {
    const ROUNDS: usize = 40;
    const CLICKS: usize = 20_000;
    let mut n = 1_000_000usize;
    let mut time = |s: &Setup| {
        let t = std::time::Instant::now();
        for _ in 0..CLICKS {
            n += 1;
            black_box(s.click(n));
        }
        t.elapsed().as_secs_f64() * 1e6 / CLICKS as f64
    };
    let (mut t_on, mut t_off, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (a, b) = if round % 2 == 0 {
            let a = time(on);
            (a, time(off))
        } else {
            let b = time(off);
            (time(on), b)
        };
        t_on.push(a);
        t_off.push(b);
        ratios.push(a / b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (q1, q3) = {
        let mut r = ratios.clone();
        r.sort_by(f64::total_cmp);
        (r[ROUNDS / 4], r[3 * ROUNDS / 4])
    };
    eprintln!(
        "fraud overhead, {ROUNDS} alternating rounds of {CLICKS} clicks: on {:.2} µs, off {:.2} µs \
         (medians); on/off per round: median {:.3}, quartiles {q1:.3}–{q3:.3}",
        median(&mut t_on),
        median(&mut t_off),
        median(&mut ratios),
    );
}

/// Two pieces of the redirect on their own: the link lookup, and queueing
/// a click for the writer (timed without the writer's work: each batch of
/// enqueues is followed by an untimed barrier that lets the writer drain).
fn bench_parts(c: &mut Criterion, rt: &tokio::runtime::Runtime, app: &App, codes: &[String]) {
    let mut g = c.benchmark_group("hot_path");
    let mut i = 0usize;
    g.bench_function("link_lookup", |b| {
        b.iter(|| {
            i = (i + 7919) % codes.len();
            black_box(app.directory.live_link(&codes[i]))
        })
    });
    let live = app.directory.live_link(&codes[0]).unwrap();
    let click = Click {
        id: ClickId(0),
        link: live.code().into(),
        partner_id: live.partner.id.clone(),
        program: live.partner.program_key.clone(),
        method: "GET",
        ip: "100.64.1.2".parse().unwrap(),
        evidence: [
            (
                EvidenceField::UserAgent,
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            ),
            (EvidenceField::Query, "utm_source=newsletter"),
            (EvidenceField::Accept, "text/html,application/xhtml+xml"),
            (EvidenceField::AcceptLanguage, "en-US,en;q=0.5"),
        ]
        .into_iter()
        .collect(),
        cookie: CookieOutcome::Set,
        prior_token_error: None,
        verdict: "valid",
        flags: Vec::new(),
    };
    g.bench_function("enqueue_click", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1_000);
                let clicks: Vec<Click> = (0..n).map(|_| click.clone()).collect();
                let t = std::time::Instant::now();
                for c in clicks {
                    black_box(app.clicklog.enqueue(c));
                }
                spent += t.elapsed();
                rt.block_on(app.clicklog.barrier());
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

fn bench_token(c: &mut Criterion) {
    let ring = Keyring::new(vec![SigningKey::new(1, vec![7; 32], 0, false)]).unwrap();
    let claims = Claims {
        click_id: ClickId(0x0193_0000_0000_0000_1234_5678_9abc_def0),
        program: "krispcall".into(),
        partner_id: "p_3RlEuIdP2y6IXfB4".into(),
        link: "ann-spring".into(),
        issued_at: 1_790_000_000,
        expires_at: 1_797_776_000,
    };
    let token = ring.sign(&claims);
    let mut g = c.benchmark_group("token");
    g.bench_function("sign", |b| {
        let mut out = String::with_capacity(256);
        b.iter(|| {
            out.clear();
            ring.sign_into(black_box(&claims), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| black_box(ring.verify(black_box(&token), 1_790_000_001).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench_redirect, bench_token);
criterion_main!(benches);
