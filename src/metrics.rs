//! Prometheus metrics: one registry, typed families, handed through the app
//! (never globals). Labels stay low-cardinality: program, route, status,
//! reason; never a code, IP or partner id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric refedge exports.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Redirects served, by program.
    pub clicks_served: IntCounterVec,
    /// Time to answer a redirect, in seconds.
    pub redirect_seconds: Histogram,
    /// Clicks waiting in memory for the writer.
    pub click_queue_depth: IntGauge,
    /// Clicks dropped because the queue was full or the disk failed.
    pub clicks_dropped: IntCounterVec,
    /// Clicks written to disk.
    pub clicks_written: IntCounter,
    /// Time to write and flush one click batch, in seconds.
    pub batch_flush_seconds: Histogram,
    /// Clicks per batch.
    pub batch_size: Histogram,
    /// Click batches that failed to write (each is retried).
    pub batch_errors: IntCounter,
    /// HTTP responses by route pattern and status.
    pub http_responses: IntCounterVec,
    /// Attribution tokens refused, by reason.
    pub tokens_rejected: IntCounterVec,
    /// Clicks by program, verdict and reason (`none` for valid clicks; a
    /// click with two reasons counts under both).
    pub clicks_by_verdict: IntCounterVec,
    /// Signups refused, by program and reason.
    pub conversions_rejected: IntCounterVec,
    /// Keys held by the fraud limiters and windows.
    pub limiter_keys: IntGauge,
    /// Events the calculator failed on and set aside, by program.
    pub events_quarantined: IntCounterVec,
    /// Events in the log not yet applied by the calculator.
    pub calculator_lag: IntGauge,
    /// Durable writes refused because the store could not write, by log.
    pub store_write_failures: IntCounterVec,
    /// Stripe deliveries, by program and outcome (`applied`, `duplicate`,
    /// `ignored`, `bad_signature`, `unknown_version`, `invalid`, `not_yet`).
    pub stripe_deliveries: IntCounterVec,
    /// Cluster mode: clicks published to the cluster's click stream.
    pub clicks_shipped: IntCounter,
    /// Cluster mode: clicks in the local log not yet in the stream.
    pub ship_lag_clicks: IntGauge,
    /// Cluster mode: age of the oldest click not yet in the stream, in
    /// seconds (0 when caught up).
    pub ship_lag_seconds: prometheus::Gauge,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            clicks_served: IntCounterVec::new(
                Opts::new(
                    "refedge_clicks_served_total",
                    "Redirects served, by program",
                ),
                &["program"],
            )
            .expect("valid metric"),
            redirect_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "refedge_redirect_duration_seconds",
                    "Time to answer a tracked-link redirect",
                )
                .buckets(vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.05,
                ]),
            )
            .expect("valid metric"),
            click_queue_depth: IntGauge::new(
                "refedge_click_queue_depth",
                "Clicks waiting in memory for the writer",
            )
            .expect("valid metric"),
            clicks_dropped: IntCounterVec::new(
                Opts::new(
                    "refedge_clicks_dropped_total",
                    "Clicks not recorded (visitor still redirected), by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            clicks_written: IntCounter::new(
                "refedge_clicks_written_total",
                "Clicks durably written to the click log",
            )
            .expect("valid metric"),
            batch_flush_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "refedge_click_batch_flush_seconds",
                    "Time to write and flush one click batch",
                )
                .buckets(prometheus::exponential_buckets(0.000_1, 2.5, 12).expect("buckets")),
            )
            .expect("valid metric"),
            batch_size: Histogram::with_opts(
                HistogramOpts::new("refedge_click_batch_size", "Clicks per written batch")
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 9).expect("buckets")),
            )
            .expect("valid metric"),
            batch_errors: IntCounter::new(
                "refedge_click_batch_errors_total",
                "Click batches that failed to write",
            )
            .expect("valid metric"),
            http_responses: IntCounterVec::new(
                Opts::new(
                    "refedge_http_responses_total",
                    "HTTP responses by route and status",
                ),
                &["route", "status"],
            )
            .expect("valid metric"),
            tokens_rejected: IntCounterVec::new(
                Opts::new(
                    "refedge_tokens_rejected_total",
                    "Attribution tokens refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            clicks_by_verdict: IntCounterVec::new(
                Opts::new(
                    "refedge_clicks_total",
                    "Clicks by program, verdict and reason",
                ),
                &["program", "verdict", "reason"],
            )
            .expect("valid metric"),
            conversions_rejected: IntCounterVec::new(
                Opts::new(
                    "refedge_conversions_rejected_total",
                    "Signups refused, by program and reason",
                ),
                &["program", "reason"],
            )
            .expect("valid metric"),
            limiter_keys: IntGauge::new(
                "refedge_fraud_limiter_keys",
                "Keys held by the fraud limiters and windows",
            )
            .expect("valid metric"),
            events_quarantined: IntCounterVec::new(
                Opts::new(
                    "refedge_events_quarantined_total",
                    "Events the calculator failed on and set aside (GET /api/v1/problems), by program",
                ),
                &["program"],
            )
            .expect("valid metric"),
            calculator_lag: IntGauge::new(
                "refedge_calculator_lag_events",
                "Events in the log not yet applied by the calculator (after each batch and each /readyz)",
            )
            .expect("valid metric"),
            store_write_failures: IntCounterVec::new(
                Opts::new(
                    "refedge_store_write_failures_total",
                    "Durable writes that failed (disk full, I/O error), by log",
                ),
                &["log"],
            )
            .expect("valid metric"),
            stripe_deliveries: IntCounterVec::new(
                Opts::new(
                    "refedge_stripe_deliveries_total",
                    "Stripe webhook deliveries, by program and outcome (applied, duplicate, ignored, bad_signature, unknown_version, invalid, not_yet)",
                ),
                &["program", "outcome"],
            )
            .expect("valid metric"),
            clicks_shipped: IntCounter::new(
                "refedge_cluster_clicks_shipped_total",
                "Clicks published to the cluster's click stream (acknowledged)",
            )
            .expect("valid metric"),
            ship_lag_clicks: IntGauge::new(
                "refedge_cluster_ship_lag_clicks",
                "Clicks in the local log not yet acknowledged by the cluster's click stream",
            )
            .expect("valid metric"),
            ship_lag_seconds: prometheus::Gauge::new(
                "refedge_cluster_ship_lag_seconds",
                "Age of the oldest click not yet in the cluster's click stream (0 when caught up)",
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.clicks_served.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.redirect_seconds.clone()),
            Box::new(m.click_queue_depth.clone()),
            Box::new(m.clicks_dropped.clone()),
            Box::new(m.clicks_written.clone()),
            Box::new(m.batch_flush_seconds.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.batch_errors.clone()),
            Box::new(m.http_responses.clone()),
            Box::new(m.tokens_rejected.clone()),
            Box::new(m.clicks_by_verdict.clone()),
            Box::new(m.conversions_rejected.clone()),
            Box::new(m.limiter_keys.clone()),
            Box::new(m.events_quarantined.clone()),
            Box::new(m.calculator_lag.clone()),
            Box::new(m.store_write_failures.clone()),
            Box::new(m.stripe_deliveries.clone()),
            Box::new(m.clicks_shipped.clone()),
            Box::new(m.ship_lag_clicks.clone()),
            Box::new(m.ship_lag_seconds.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
