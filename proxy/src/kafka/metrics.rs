//! Kafka proxy metrics (prometheus-client, prefix `portcullis_proxy`):
//! requests by API and verdict, request latency, connections.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The verdict label of a Kafka request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum KafkaVerdictLabel {
    /// Allowed and forwarded; the upstream answered.
    Allowed,
    /// Denied by policy: answered with an authorization error.
    Denied,
    /// Unreadable, oversized, or not answerable: the connection was closed.
    Invalid,
    /// Allowed, but the upstream could not be reached or failed.
    UpstreamError,
}

/// Why the proxy closed a connection (or refused it at accept) to keep
/// within its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum KafkaLimit {
    /// The source already had `max_connections_per_source` connections.
    ConnectionsPerSource,
    /// The proxy already had `max_connections` connections.
    ConnectionsTotal,
    /// A request frame's length was over `max_request_frame`.
    FrameTooLarge,
    /// The source's frames already held `buffer_budget_per_source` bytes.
    BufferPerSource,
    /// Every connection's frames already held `buffer_budget` bytes.
    BufferTotal,
    /// No whole request within `first_request_timeout` of accept.
    FirstRequestTimeout,
    /// A frame's bytes did not all arrive within `frame_timeout`.
    FrameTimeout,
    /// No new request for `idle_timeout`.
    IdleTimeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: KafkaLimit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The API key's name (`Produce`, `Fetch`, ...), or `unknown`.
    api: String,
    verdict: KafkaVerdictLabel,
}

/// The Kafka proxy's metrics and their registry.
#[derive(Debug)]
pub struct KafkaMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    active_connections: Gauge,
    connections: Counter,
    limits: Family<LimitLabels, Counter>,
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl KafkaMetrics {
    /// Registers every metric under the `portcullis_proxy` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kafka_requests",
            "Kafka requests judged by the proxy, by API and verdict",
            requests.clone(),
        );
        // 50 µs .. ~13 s
        let latency = Histogram::new(exponential_buckets(0.00005, 2.0, 19));
        registry.register(
            "kafka_request_duration_seconds",
            "Time from a request read to its response written downstream",
            latency.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "kafka_active_connections",
            "Redirected Kafka connections being served",
            active_connections.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "kafka_connections",
            "Redirected Kafka connections accepted",
            connections.clone(),
        );
        let limits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "kafka_limit_refusals",
            "Kafka connections refused or closed by a limit, by limit",
            limits.clone(),
        );
        KafkaMetrics {
            limits,
            registry,
            requests,
            latency,
            active_connections,
            connections,
        }
    }

    /// Records one request; `seconds` is `None` when it got no response.
    pub fn request(&self, api: &str, verdict: KafkaVerdictLabel, seconds: Option<f64>) {
        self.requests
            .get_or_create(&RequestLabels {
                api: api.to_string(),
                verdict,
            })
            .inc();
        if let Some(s) = seconds {
            self.latency.observe(s);
        }
    }

    /// Requests seen for this API name and verdict.
    pub fn requests(&self, api: &str, verdict: KafkaVerdictLabel) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                api: api.to_string(),
                verdict,
            })
            .get()
    }

    /// Counts one connection refused or closed by `limit`.
    pub fn limit_refusal(&self, limit: KafkaLimit) {
        self.limits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Connections refused or closed by `limit` so far.
    pub fn limit_refusals(&self, limit: KafkaLimit) -> u64 {
        self.limits.get_or_create(&LimitLabels { limit }).get()
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection(&self) -> KafkaConnectionGuard {
        self.connections.inc();
        self.active_connections.inc();
        KafkaConnectionGuard {
            gauge: self.active_connections.clone(),
        }
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.get()
    }

    /// The OpenMetrics text of every Kafka metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the active connection gauge when dropped.
#[derive(Debug)]
pub struct KafkaConnectionGuard {
    gauge: Gauge,
}

impl Drop for KafkaConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
