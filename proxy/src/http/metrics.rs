//! HTTP proxy metrics (prometheus-client, prefix `portcullis_proxy`):
//! requests by protocol and verdict, request latency, connections, and
//! what the proxy refused or closed on its own.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

pub use crate::metrics::ConnectionGuard;
use crate::metrics::{self, Connections, RequestMetrics};

/// The verdict label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum VerdictLabel {
    /// Allowed and forwarded (whatever the upstream answered).
    Allowed,
    /// Forwarded although a policy would deny it (audit mode: an end in
    /// audit mode, or an audited policy's rules would deny it), whatever
    /// the upstream answered.
    Audit,
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

/// The HTTP proxy's metrics (names under the `portcullis_proxy` prefix).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: RequestMetrics<RequestLabels>,
    connections: Connections,
    refused: Family<RefusedLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
    limits: crate::limits::LimitMetrics,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        HttpMetrics {
            // 100 µs .. ~13 s
            requests: RequestMetrics::new(exponential_buckets(0.0001, 2.0, 18)),
            connections: Connections::default(),
            refused: Family::default(),
            closed: Family::default(),
            limits: crate::limits::LimitMetrics::default(),
        }
    }

    /// Registers every metric into `registry`, which carries the prefix.
    fn add_to(&self, registry: &mut Registry) {
        self.requests.register(
            registry,
            (
                "http_requests",
                "HTTP requests judged by the proxy, by protocol and verdict",
            ),
            (
                "http_request_duration_seconds",
                "Time from a request's head to the response head sent downstream",
            ),
        );
        self.connections.register(
            registry,
            ("active_connections", "Redirected connections being served"),
            ("connections", "Redirected connections accepted"),
        );
        registry.register(
            "refused_requests",
            "Requests the proxy refused on its own rules, by reason",
            self.refused.clone(),
        );
        registry.register(
            "closed_connections",
            "Connections the proxy closed on its own, by reason",
            self.closed.clone(),
        );
        self.limits.register(registry);
    }

    /// Registers every metric into `root` under `portcullis_proxy` (one
    /// registry for the whole agent).
    pub fn register(&self, root: &mut Registry) {
        metrics::register(root, |r| self.add_to(r));
    }

    /// Records one request.
    pub fn request(&self, protocol: ProtocolLabel, verdict: VerdictLabel, seconds: f64) {
        self.requests
            .record(&RequestLabels { protocol, verdict }, Some(seconds));
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
        self.requests.count(&RequestLabels { protocol, verdict })
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.open()
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> i64 {
        self.connections.active()
    }

    /// The OpenMetrics text of these metrics alone (ends with `# EOF`).
    pub fn render(&self) -> String {
        metrics::render(|r| self.add_to(r))
    }
}
