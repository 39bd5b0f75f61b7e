//! Kafka proxy metrics (prometheus-client, prefix `portcullis_proxy`):
//! requests by API and verdict, request latency, connections.

use crate::budget::BudgetRefusal;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::metrics::{self, ConnectionGuard, Connections, RequestMetrics};

/// The verdict label of a Kafka request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum KafkaVerdictLabel {
    /// Allowed and forwarded; the upstream answered.
    Allowed,
    /// Forwarded although a policy would deny it (audit mode: an end in
    /// audit mode, or an audited policy's rules would deny it); the
    /// upstream answered.
    Audit,
    /// Denied by policy: answered with an authorization error.
    Denied,
    /// Unreadable, oversized, or not answerable: the connection was closed.
    Invalid,
    /// Allowed, but the upstream could not be reached or failed.
    UpstreamError,
}

impl KafkaVerdictLabel {
    /// The verdict as the access log writes it: `allowed`, `audit`,
    /// `denied`, `invalid`, `upstream_error`.
    pub fn log_text(self) -> &'static str {
        match self {
            KafkaVerdictLabel::Allowed => "allowed",
            KafkaVerdictLabel::Audit => "audit",
            KafkaVerdictLabel::Denied => "denied",
            KafkaVerdictLabel::Invalid => "invalid",
            KafkaVerdictLabel::UpstreamError => "upstream_error",
        }
    }
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

impl KafkaLimit {
    /// The limit behind a refused connection.
    pub fn connections(why: BudgetRefusal) -> KafkaLimit {
        match why {
            BudgetRefusal::PerSource => KafkaLimit::ConnectionsPerSource,
            BudgetRefusal::Total => KafkaLimit::ConnectionsTotal,
        }
    }

    /// The limit behind a frame refused buffer room.
    pub fn buffer(why: BudgetRefusal) -> KafkaLimit {
        match why {
            BudgetRefusal::PerSource => KafkaLimit::BufferPerSource,
            BudgetRefusal::Total => KafkaLimit::BufferTotal,
        }
    }
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

/// The Kafka proxy's metrics (names under the `portcullis_proxy` prefix).
#[derive(Debug)]
pub struct KafkaMetrics {
    requests: RequestMetrics<RequestLabels>,
    connections: Connections,
    limits: Family<LimitLabels, Counter>,
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl KafkaMetrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        KafkaMetrics {
            // 50 µs .. ~13 s
            requests: RequestMetrics::new(exponential_buckets(0.00005, 2.0, 19)),
            connections: Connections::default(),
            limits: Family::default(),
        }
    }

    /// Registers every metric into `registry`, which carries the prefix.
    fn add_to(&self, registry: &mut Registry) {
        self.requests.register(
            registry,
            (
                "kafka_requests",
                "Kafka requests judged by the proxy, by API and verdict",
            ),
            (
                "kafka_request_duration_seconds",
                "Time from a request read to its response written downstream",
            ),
        );
        self.connections.register(
            registry,
            (
                "kafka_active_connections",
                "Redirected Kafka connections being served",
            ),
            ("kafka_connections", "Redirected Kafka connections accepted"),
        );
        registry.register(
            "kafka_limit_refusals",
            "Kafka connections refused or closed by a limit, by limit",
            self.limits.clone(),
        );
    }

    /// Registers every metric into `root` under `portcullis_proxy` (one
    /// registry for the whole agent).
    pub fn register(&self, root: &mut Registry) {
        metrics::register(root, |r| self.add_to(r));
    }

    /// Records one request; `seconds` is `None` when it got no response.
    pub fn request(&self, api: &str, verdict: KafkaVerdictLabel, seconds: Option<f64>) {
        let labels = RequestLabels {
            api: api.to_string(),
            verdict,
        };
        self.requests.record(&labels, seconds);
    }

    /// Requests seen for this API name and verdict.
    pub fn requests(&self, api: &str, verdict: KafkaVerdictLabel) -> u64 {
        self.requests.count(&RequestLabels {
            api: api.to_string(),
            verdict,
        })
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
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.open()
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> i64 {
        self.connections.active()
    }

    /// The OpenMetrics text of every Kafka metric alone (ends with
    /// `# EOF`).
    pub fn render(&self) -> String {
        metrics::render(|r| self.add_to(r))
    }
}
