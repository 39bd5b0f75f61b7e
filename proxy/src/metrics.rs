//! Proxy metrics (prometheus-client): requests by protocol and verdict,
//! request latency, connections.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The verdict label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum VerdictLabel {
    /// Allowed and forwarded (whatever the upstream answered).
    Allowed,
    /// Denied by policy or by the proxy's path rules.
    Denied,
    /// Malformed or ambiguous: answered 400.
    Invalid,
    /// Allowed but the upstream failed: answered 502.
    UpstreamError,
}

/// The protocol label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ProtocolLabel {
    Http1,
    Http2,
    Grpc,
}

/// Why the proxy refused a request before (or instead of) judging it by
/// policy. Each such request is also counted in `http_requests` (verdict
/// `Denied`, or `UpstreamError` for `UpgradeResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum RefusedRequest {
    /// An `Upgrade` the proxy would not keep judging (h2c next to another
    /// protocol, several protocols, an unknown one): 403.
    Upgrade,
    /// The upstream answered `101` switching to a protocol that was not
    /// asked: not spliced, 502.
    UpgradeResponse,
    /// A dot segment or one of its encodings in the path: 403.
    Path,
    /// Another request the proxy refuses on its own (`CONNECT`): 403.
    Other,
}

/// Why the proxy closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ClosedConnection {
    /// A ClientHello whose `server_name` list holds more than one name.
    SniList,
    /// The policy no longer allows the connection's flow (source identity,
    /// destination, port) to reach the proxy: closed after a policy change.
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: RefusedRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    reason: ClosedConnection,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    protocol: ProtocolLabel,
    verdict: VerdictLabel,
}

/// The proxy's metrics and the registry they are rendered from.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    active_connections: Gauge,
    connections: Counter,
    refused: Family<RefusedLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
    limits: crate::limits::LimitMetrics,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// Registers every metric under the `portcullis_proxy` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests judged by the proxy, by protocol and verdict",
            requests.clone(),
        );
        // 100 µs .. ~13 s
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to the response head sent downstream",
            latency.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Redirected connections being served",
            active_connections.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Redirected connections accepted",
            connections.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Requests the proxy refused on its own rules, by reason",
            refused.clone(),
        );
        let closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "closed_connections",
            "Connections the proxy closed on its own, by reason",
            closed.clone(),
        );
        let limits = crate::limits::LimitMetrics::default();
        limits.register(&mut registry);
        ProxyMetrics {
            registry,
            requests,
            latency,
            active_connections,
            connections,
            refused,
            closed,
            limits,
        }
    }

    /// Records one request.
    pub fn request(&self, protocol: ProtocolLabel, verdict: VerdictLabel, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { protocol, verdict })
            .inc();
        self.latency.observe(seconds);
    }

    /// Counts a request the proxy refused on its own rules.
    pub fn refused(&self, reason: RefusedRequest) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Number of requests refused for `reason`.
    pub fn refused_count(&self, reason: RefusedRequest) -> u64 {
        self.refused.get_or_create(&RefusedLabels { reason }).get()
    }

    /// Counts a connection the proxy closed on its own.
    pub fn closed(&self, reason: ClosedConnection) {
        self.closed.get_or_create(&ClosedLabels { reason }).inc();
    }

    /// Number of connections closed for `reason`.
    pub fn closed_count(&self, reason: ClosedConnection) -> u64 {
        self.closed.get_or_create(&ClosedLabels { reason }).get()
    }

    /// The connection limits' counters (see [`crate::limits`]).
    pub fn limits(&self) -> &crate::limits::LimitMetrics {
        &self.limits
    }

    /// Number of requests seen with this protocol and verdict.
    pub fn requests(&self, protocol: ProtocolLabel, verdict: VerdictLabel) -> u64 {
        self.requests
            .get_or_create(&RequestLabels { protocol, verdict })
            .get()
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        self.active_connections.inc();
        ConnectionGuard {
            gauge: self.active_connections.clone(),
        }
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.get()
    }

    /// The OpenMetrics text of every metric, for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the active connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
