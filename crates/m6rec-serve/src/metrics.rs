//! Prometheus metrics (`GET /metrics`, text format).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The service's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `m6rec_requests_total{route, status}`.
    pub requests: IntCounterVec,
    /// `m6rec_request_duration_seconds{route}`.
    pub latency: HistogramVec,
    /// `m6rec_catalog_items`.
    pub catalog_items: IntGauge,
    /// `m6rec_users`.
    pub users: IntGauge,
    /// `m6rec_model_generation`.
    pub generation: IntGauge,
    /// `m6rec_batch_size`: recommendation requests answered by one forward pass.
    pub batch_size: Histogram,
    /// `m6rec_model_panics_total`: batches whose computation panicked (answered 500).
    pub panics: IntCounter,
    /// `m6rec_user_cache_hits_total`.
    pub cache_hits: IntCounter,
    /// `m6rec_accept_errors_total`: failed accepts (out of file descriptors, ...); the server retries.
    pub accept_errors: IntCounter,
    /// `m6rec_connections_refused_total`: connections closed at accept because `max_connections` were open.
    pub connections_refused: IntCounter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("m6rec_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
        let latency = HistogramVec::new(
            HistogramOpts::new("m6rec_request_duration_seconds", "HTTP request latency by route").buckets(buckets),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
        };
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
        };
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("m6rec_batch_size", "recommendation requests per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let m = Metrics {
            requests,
            latency,
            catalog_items: gauge("m6rec_catalog_items", "items in the catalog, including items added while serving"),
            users: gauge("m6rec_users", "users with a history"),
            generation: gauge("m6rec_model_generation", "checkpoint loads so far (1 at start)"),
            batch_size,
            panics: counter("m6rec_model_panics_total", "model batches that panicked (answered 500)"),
            cache_hits: counter("m6rec_user_cache_hits_total", "recommendations answered from a cached user state"),
            accept_errors: counter(
                "m6rec_accept_errors_total",
                "failed accepts (such as running out of file descriptors)",
            ),
            connections_refused: counter(
                "m6rec_connections_refused_total",
                "connections closed at accept because max_connections were open",
            ),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.catalog_items.clone()),
            Box::new(m.users.clone()),
            Box::new(m.generation.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.panics.clone()),
            Box::new(m.cache_hits.clone()),
            Box::new(m.accept_errors.clone()),
            Box::new(m.connections_refused.clone()),
        ];
        for c in collectors {
            m.registry.register(c).unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
        }
        m
    }

    /// Everything, in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into memory fails only on invalid metric families, which registration already rejected.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
