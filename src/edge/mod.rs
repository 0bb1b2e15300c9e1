//! The only module that knows HTTP: startup, the accept loop with graceful
//! shutdown, readiness; routing and who may call what in [`routes`], the
//! redirect and the admin API in their own modules.

mod api;
mod api_keys;
pub mod client;
pub mod client_ip;
mod cluster_tasks;
mod console;
mod fraud_api;
mod fraud_summary;
pub mod http;
mod idle;
pub mod money;
mod openapi;
mod partner_reads;
pub mod redirect;
mod reviews;
mod routes;
mod stats_api;
pub mod stripe;
mod webhooks_api;
mod writes;

use crate::background;
use crate::clicklog::ClickLog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::conversions::Conversions;
use crate::directory::Directory;
use crate::id::ClickIdGen;
use crate::metrics::Metrics;
use crate::secrets::{self, AdminAuth, KeyringSource, SecretError};
use crate::store::{Store, StoreError};
use crate::token::Keyring;
use http::{text, ApiError, Body};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use ring::rand::SystemRandom;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest graceful shutdown waits for open requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request handler can reach.
pub struct App {
    /// Validated settings.
    pub config: Config,
    /// Source of "now".
    pub clock: SharedClock,
    /// Durable storage.
    pub store: Store,
    /// Partners and links, indexed in memory.
    pub directory: Directory,
    /// The click queue.
    pub clicklog: ClickLog,
    /// Event log ingestion and the commission calculator.
    pub conversions: Arc<Conversions>,
    /// Fraud verdicts on clicks.
    pub guard: crate::fraud::Guard,
    /// Click id generator.
    pub ids: ClickIdGen,
    /// Signs and verifies attribution tokens; written only on rotation.
    pub keyring: RwLock<Keyring>,
    /// Where the keyring lives, so rotations can be saved.
    keyring_source: KeyringSource,
    /// Serialises keyring changes so saves land in order.
    keyring_write: tokio::sync::Mutex<()>,
    /// Admin token check.
    pub(crate) admin: AdminAuth,
    /// API keys with roles.
    pub keys: crate::access::Keys,
    /// Console and portal sessions, and partners' sign-in links.
    pub sessions: crate::access::sessions::Sessions,
    /// Sign-in attempts per client address.
    signin_limiter: console::SigninLimiter,
    /// The admin token itself, for this node's calls to other cluster
    /// nodes (every node of a cluster is given the same one).
    node_token: String,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Per-program click counters, resolved once (label lookups are not free).
    program_clicks: HashMap<String, ProgramCounters>,
    /// Redirect responses by status, resolved once (see `REDIRECT_STATUSES`).
    redirect_responses: Vec<IntCounter>,
    /// Base of public tracked URLs.
    pub public_url: String,
    /// `; Path=/; HttpOnly; SameSite=Lax[; Secure][; Domain=..]`, built once.
    cookie_attributes: String,
    /// Randomness for keys.
    rng: SystemRandom,
    /// Keys the pseudonyms of IP addresses.
    pub ip_key: ring::hmac::Key,
    /// Cluster mode: the node's handle on NATS JetStream.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Webhooks and partner postbacks out (see [`crate::webhooks`]).
    pub outbox: Arc<crate::webhooks::Outbox>,
}

/// Statuses the redirect answers with, counted through pre-resolved series.
const REDIRECT_STATUSES: [u16; 6] = [302, 403, 404, 405, 410, 429];

impl App {
    /// Appends events to the ledger: the local event log, or in cluster
    /// mode the cluster's event stream. Either way an `Accepted` or
    /// `Duplicate` is durable when this returns.
    pub async fn append(
        self: &Arc<Self>,
        items: Vec<crate::store::events::NewEvent>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::store::events::Appended>, ApiError> {
        match &self.cluster {
            None => {
                let a = self.clone();
                Ok(http::blocking(move || a.conversions.ingest(items, now)).await??)
            }
            Some(c) => c
                .publish_events(items, now)
                .await
                .map_err(|e| ApiError::Unavailable(format!("the cluster's event stream: {e}"))),
        }
    }

    /// Whether this node keeps a ledger (single node, or a calculator).
    pub fn calculates(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.role.calculates())
    }

    /// A link's clicks: on a cluster's calculator every edge's (the click
    /// stream as replicated), elsewhere this node's own log's.
    pub(crate) fn link_clicks(&self, code: &str) -> u64 {
        if self.cluster.is_some() && self.calculates() {
            return self.store.cluster_click_count(code).unwrap_or_else(|e| {
                tracing::warn!(error = %e, link = code, "reading a link's cluster click count failed");
                0
            });
        }
        self.store.click_count(code)
    }

    /// Counts a redirect response in
    /// `refedge_http_responses_total{route="/r/{code}", status}`.
    fn count_redirect_response(&self, status: StatusCode) {
        match REDIRECT_STATUSES.iter().position(|&s| s == status.as_u16()) {
            Some(i) => self.redirect_responses[i].inc(),
            None => self
                .metrics
                .http_responses
                .with_label_values(&["/r/{code}", status.as_str()])
                .inc(),
        }
    }

    /// A program's click counters.
    fn program_metrics(&self, program: &str) -> &ProgramCounters {
        self.program_clicks
            .get(program)
            .expect("every link's program has a counter")
    }
}

/// A program's per-click counters, resolved once.
struct ProgramCounters {
    /// `refedge_clicks_served_total{program}`.
    served: IntCounter,
    /// `refedge_clicks_total{program, verdict="valid", reason="none"}`.
    valid: IntCounter,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    #[error("starting thread {name}: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin bearer token.
    pub admin_token: String,
    /// Where the admin token was written, when it was generated.
    pub admin_token_path: Option<PathBuf>,
    /// The shared state, for in-process inspection.
    pub app: Arc<App>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), StoreError>>,
}

impl Running {
    /// Stops accepting, finishes open requests, drains the click queue,
    /// flushes, and returns once everything is on disk.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        let _ = self.shutdown.send(());
        self.task.await.expect("server task does not panic")
    }
}

/// Opens the data dir, loads state and starts serving on the current runtime.
pub async fn start(config: Config, clock: SharedClock) -> Result<Running, StartError> {
    let dir = config.data_dir.clone();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StartError::DataDir {
                path: dir.clone(),
                source,
            })?;
    }
    let rng = SystemRandom::new();
    let (admin_token, admin_token_path) =
        secrets::admin_token(config.admin_token.as_deref(), &dir, &rng)?;
    let cluster = match &config.cluster {
        Some(cc) => Some(crate::cluster::Cluster::new(cc.clone(), &dir)?),
        None => None,
    };
    let (mut keyring, keyring_source) =
        secrets::keyring(&config.signing_keys, &dir, &rng, clock.now_ms() / 1000)?;
    let mut ip_key = secrets::ip_hash_key(&dir, &rng)?;
    if let Some(c) = &cluster {
        // The cluster's keyring and IP key, when NATS answers in time.
        if let Some(adopted) = cluster_tasks::share_secrets_at_start(c, &dir, &keyring_source).await
        {
            if adopted.keyring {
                keyring = secrets::keyring(&config.signing_keys, &dir, &rng, 0)?.0;
            }
            if adopted.ip_key {
                ip_key = secrets::ip_hash_key(&dir, &rng)?;
            }
        }
    }
    let store = {
        // Opened on a background thread: sled's IO and flusher threads,
        // started by the open, inherit its scheduling (see `background`).
        let path = dir.join("db");
        let opener =
            background::Thread::spawn("store-open").map_err(|source| StartError::Thread {
                name: "store-open",
                source,
            })?;
        opener.run(move || Store::open(&path)).await?
    };
    let (directory, newest, keys) = {
        let store = store.clone();
        let programs = config.programs.clone();
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            Ok((
                Directory::load(store.clone(), &programs)?,
                store.newest_click_id()?,
                crate::access::Keys::load(store.clone())?,
            ))
        })
        .await
        .expect("loading does not panic")?
    };
    let metrics = Arc::new(Metrics::new());
    let conversions = Conversions::open(
        store.clone(),
        crate::replay::books(&config.programs),
        config.snapshot_every_events,
        Some(metrics.clone()),
    )?;
    match &config.cluster {
        None => sync_partners(&conversions, &store, clock.now())?,
        Some(_) => {
            // The console's statistics are of every edge's clicks.
            store.use_cluster_rollups();
            let s = store.clone();
            let (cursor, last) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                Ok((s.stream_cursor()?, s.last_event_seq()?))
            })
            .await
            .expect("reading does not panic")?;
            if cursor.is_none() && last > 0 {
                return Err(crate::cluster::ClusterError::Setup(format!(
                    "{} holds a single node's event log ({last} events); a cluster node starts with an empty ledger (publish the events through POST /api/v1/events to a cluster node instead)",
                    dir.display()
                ))
                .into());
            }
        }
    }
    // Partners' customer references are keyed by a key of their own,
    // derived from the IP-hash secret (never the merchant's ids).
    let refs_key = ring::hmac::sign(&ip_key, b"refedge customer references");
    let outbox = Arc::new(crate::webhooks::Outbox::new(
        store.clone(),
        config.webhooks.clone(),
        refs_key.as_ref(),
        clock.clone(),
    ));
    conversions.set_outbox(outbox.clone());
    let calculator = conversions.start();
    let (clicklog, writer) = ClickLog::start(
        store.clone(),
        ip_key.clone(),
        &config.clicks,
        metrics.clone(),
    )
    .map_err(|source| StartError::Thread {
        name: "click-writer",
        source,
    })?;
    let listener =
        bind(config.listen, config.listen_backlog).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut cookie_attributes = String::from("; Path=/; HttpOnly; SameSite=Lax");
    if config.cookie.secure {
        cookie_attributes.push_str("; Secure");
    }
    if let Some(d) = &config.cookie.domain {
        cookie_attributes.push_str("; Domain=");
        cookie_attributes.push_str(d);
    }
    let program_clicks = config
        .programs
        .keys()
        .map(|k| {
            let counters = ProgramCounters {
                served: metrics.clicks_served.with_label_values(&[k]),
                valid: metrics
                    .clicks_by_verdict
                    .with_label_values(&[k, "valid", "none"]),
            };
            (k.clone(), counters)
        })
        .collect();
    tracing::info!(
        links = directory.link_count(),
        newest_click = ?newest.map(|id| id.to_string()),
        data_dir = %dir.display(),
        "state loaded"
    );
    let redirect_responses = REDIRECT_STATUSES
        .iter()
        .map(|s| {
            metrics
                .http_responses
                .with_label_values(&["/r/{code}", &s.to_string()])
        })
        .collect();
    let guard = crate::fraud::Guard::new(
        config
            .programs
            .iter()
            .map(|(k, p)| (k.clone(), p.fraud.clone())),
        clock.clone(),
    );
    let app = Arc::new(App {
        admin: AdminAuth::new(&admin_token, &rng),
        keys,
        sessions: crate::access::sessions::Sessions::new(
            store.clone(),
            crate::access::sessions::Lifetimes {
                idle: chrono::Duration::minutes(config.console.session_idle_minutes as i64),
                absolute: chrono::Duration::hours(config.console.session_max_hours as i64),
            },
        ),
        signin_limiter: console::signin_limiter(config.console.signin_per_minute, clock.clone()),
        node_token: admin_token.clone(),
        ids: ClickIdGen::new(newest),
        keyring: RwLock::new(keyring),
        keyring_source,
        keyring_write: tokio::sync::Mutex::new(()),
        config,
        clock,
        store,
        directory,
        clicklog,
        conversions,
        guard,
        metrics,
        program_clicks,
        redirect_responses,
        public_url,
        cookie_attributes,
        rng,
        ip_key,
        cluster,
        outbox,
    });
    let cluster_tasks = cluster_tasks::spawn(&app, addr);
    // Idle visitors' state is swept once a sweep period, a sixteenth at a
    // time: small sweeps, short pauses, on a background thread.
    let pruner = {
        let app = app.clone();
        let thread =
            background::Thread::spawn("visitor-pruner").map_err(|source| StartError::Thread {
                name: "visitor-pruner",
                source,
            })?;
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(app.guard.sweep_period() / crate::fraud::PRUNE_PARTS as u32);
            loop {
                tick.tick().await;
                let a = app.clone();
                thread
                    .run(move || {
                        let t0 = std::time::Instant::now();
                        a.guard.prune_step();
                        a.metrics.limiter_keys.set(a.guard.key_count() as i64);
                        timeline("visitor_sweep", t0, 0);
                    })
                    .await;
            }
        })
    };
    let roller = {
        let app = app.clone();
        // The console's sums may lag under load; the redirects may not.
        let thread = background::Thread::spawn_with("rollups", background::Share::Leftover)
            .map_err(|source| StartError::Thread {
                name: "rollups",
                source,
            })?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let store = app.store.clone();
                // The console is read where the calculator runs.
                let console_here = match &app.cluster {
                    None => true,
                    Some(c) => c
                        .lease
                        .held_by_me(Duration::from_secs(c.config.lease_seconds)),
                };
                let pass = thread.run(move || {
                    let t0 = std::time::Instant::now();
                    let r = store.roll_up_all();
                    timeline("rollups", t0, 0);
                    if r.is_ok() && console_here {
                        let t0 = std::time::Instant::now();
                        match store.warm_closed_sums() {
                            Ok(true) => timeline("console_sums", t0, 0),
                            Ok(false) => {}
                            Err(error) => tracing::warn!(%error, "console sums: not made ahead"),
                        }
                    }
                    r
                });
                if let Err(error) = pass.await {
                    tracing::warn!(%error, "click rollups: a pass failed; retried in a second");
                }
            }
        })
    };
    // Sessions that ended without being seen again (resuming removes the
    // others) are swept out every ten minutes.
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let a = app.clone();
                let now = app.clock.now();
                match tokio::task::spawn_blocking(move || a.sessions.sweep(&a.keys, now)).await {
                    Ok(Err(error)) => tracing::warn!(%error, "sessions: a sweep failed"),
                    Ok(Ok(n)) if n > 0 => tracing::debug!(ended = n, "sessions swept"),
                    _ => {}
                }
            }
        })
    };
    let healer = tokio::spawn(heal_store(app.clone()));
    // Deliveries go out from a single node, or from a cluster's active
    // calculator only.
    let (stop_deliveries, deliveries_stop) = tokio::sync::watch::channel(false);
    let deliveries = {
        let a = app.clone();
        crate::webhooks::deliver::spawn(
            app.outbox.clone(),
            move || match &a.cluster {
                None => true,
                Some(c) => c
                    .lease
                    .held_by_me(Duration::from_secs(c.config.lease_seconds)),
            },
            app.cluster
                .clone()
                .filter(|c| c.role.calculates())
                .map(|c| c as Arc<dyn crate::webhooks::deliver::Marks>),
            deliveries_stop,
        )
    };
    let app_for_serve = app.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let result = serve(listener, app_for_serve, rx, writer, calculator).await;
        pruner.abort();
        roller.abort();
        sweeper.abort();
        healer.abort();
        let _ = stop_deliveries.send(true);
        let _ = deliveries.await;
        cluster_tasks.stop().await;
        result
    });
    Ok(Running {
        addr,
        admin_token,
        admin_token_path,
        app,
        shutdown: tx,
        task,
    })
}

/// Background work that could hold up a redirect, for finding stalls
/// (docs/performance.md, issue 18): with `REFEDGE_LOG` including
/// `refedge::timeline=debug`, each step is logged as it ends, with how long
/// it ran. Off (one relaxed load) otherwise.
pub(crate) fn timeline(what: &'static str, started: std::time::Instant, items: usize) {
    tracing::debug!(
        target: "refedge::timeline",
        what,
        items,
        us = started.elapsed().as_micros() as u64
    );
}

/// The listening socket, with the configured accept backlog (a burst of
/// connects beyond the backlog waits for SYN retries, a second or more).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// How often a store that failed a write is reopened and tried again.
const HEAL_EVERY: Duration = Duration::from_secs(1);

/// Reopens the store after an I/O failure (a full disk), once a second
/// until a durable write succeeds again; no restart needed.
async fn heal_store(app: Arc<App>) {
    let mut tick = tokio::time::interval(HEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if app.store.needs_heal() {
            try_heal(&app).await;
        }
    }
}

/// One attempt to reopen the store; true when it takes writes again.
async fn try_heal(app: &Arc<App>) -> bool {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.heal()).await {
        Ok(Ok(())) => {
            app.clicklog.store_healed();
            app.conversions.store_healed();
            tracing::info!("store reopened after a write failure; writes are durable again");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store still cannot write; trying again in a second");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "reopening the store failed");
            false
        }
    }
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    mut stop: oneshot::Receiver<()>,
    writer: JoinHandle<()>,
    calculator: JoinHandle<()>,
) -> Result<(), StoreError> {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let limit = Duration::from_millis(app.config.idle_timeout_ms);
                        let activity = Arc::new(idle::Activity::default());
                        let io = idle::Tracked::new(TokioIo::new(stream), activity.clone());
                        let requests = activity.clone();
                        let svc = service_fn(move |req| {
                            let app = app.clone();
                            let in_flight = requests.begin();
                            async move {
                                let resp = routes::route(app, peer, req).await;
                                drop(in_flight);
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        // Idle and stalled connections are closed by
                        // `idle::until_idle`, one timer per connection,
                        // not hyper's per-request header timer.
                        let conn = http1::Builder::new()
                            .header_read_timeout(None)
                            .serve_connection(io, svc);
                        match idle::until_idle(watcher.watch(conn), &activity, limit).await {
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            Some(Ok(())) => {}
                            None => tracing::debug!(%peer, "closed an idle connection"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    tracing::info!("stopping: draining open connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time");
    }
    // A store that failed a write gets one more chance before the drain.
    if app.store.needs_heal() {
        try_heal(&app).await;
    }
    app.clicklog.stop().await;
    let _ = writer.await;
    app.conversions.stop(calculator).await;
    let store = app.store.clone();
    let counts = tokio::task::spawn_blocking(move || {
        // Rollups are made again from the log when this fails: not an error.
        if let Err(error) = store.write_pending_rollups() {
            tracing::warn!(%error, "click rollups: the pending sums were not written");
        }
        store.snapshot_click_counts()
    })
    .await
    .expect("flush does not panic");
    let dropped = app
        .metrics
        .clicks_dropped
        .with_label_values(&["write_failed"])
        .get();
    if let Err(e) = counts.and_then(|()| {
        if app.store.needs_heal() {
            Err(StoreError::Unwritable("the last writes failed".into()))
        } else {
            Ok(())
        }
    }) {
        tracing::error!(
            error = %e,
            clicks_lost_to_write_failures = dropped,
            "stopped, but the store cannot write: {dropped} click(s) were not recorded; the calculator's last snapshot and the per-link click counts are rebuilt from the logs at the next start; acknowledged events were already durable"
        );
        return Err(e);
    }
    tracing::info!(
        clicks_written = app.metrics.clicks_written.get(),
        clicks_lost_to_write_failures = dropped,
        "stopped; click queue drained and flushed"
    );
    Ok(())
}

/// `/readyz`: 200 when the store reads and its last writes of both logs
/// succeeded and the calculator keeps up; otherwise 503 naming each reason.
async fn readiness(app: &Arc<App>) -> Response<Body> {
    let a = app.clone();
    let mut reasons: Vec<String> = http::blocking(move || {
        let mut r = Vec::new();
        if let Err(e) = a.store.check() {
            r.push(format!("store: {e}"));
        }
        if let Err(e) = a.conversions.readiness(
            a.config.calculator_max_lag_events,
            Duration::from_secs(a.config.calculator_stall_seconds),
        ) {
            r.push(format!("calculator: {e}"));
        }
        r
    })
    .await
    .unwrap_or_else(|e| vec![e.to_string()]);
    if !app.clicklog.healthy() {
        reasons.push("click log: the last click batch could not be written".into());
    }
    if let Some(e) = app.conversions.write_failure() {
        reasons.push(format!("event log: the last write failed: {e}"));
    }
    if reasons.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        let mut body = String::from("not ready\n");
        for r in reasons {
            body.push_str(&r);
            body.push('\n');
        }
        http::text_owned(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Makes sure the calculator knows every partner (idempotent: partners
/// created before the calculator existed, or whose event failed to append).
fn sync_partners(
    conversions: &Conversions,
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let missing: Vec<_> = store
        .partners()?
        .into_iter()
        .filter(|p| conversions.read(|c| c.partner(&p.id).is_none()))
        .map(|p| partner_event(&p))
        .collect();
    if !missing.is_empty() {
        conversions.ingest(missing, now)?;
    }
    Ok(())
}

/// The calculator's event for a partner.
pub(crate) fn partner_event(p: &crate::model::Partner) -> crate::store::events::NewEvent {
    let record = crate::commission::event::PartnerRecord {
        id: p.id.clone(),
        program: p.program.clone(),
        email: p.email.clone(),
        website: Some(p.website.clone()),
        currency: p.currency.clone(),
        created_at: Some(p.created_at),
        name: Some(p.name.clone()),
        customer_ids: p.customer_ids.clone(),
        ip_hashes: p.ip_hashes.clone(),
    };
    let value = serde_json::to_value(&record).expect("serialises");
    let event = crate::commission::Event::Partner(record);
    crate::store::events::NewEvent {
        id: crate::conversions::internal_id(&event),
        digest: crate::conversions::digest(&value),
        event,
    }
}
