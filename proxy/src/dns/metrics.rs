//! DNS proxy metrics (prometheus-client, prefix `portcullis_proxy`):
//! queries by transport and verdict, how long answers are held for the
//! learner, and learner timeouts.

use crate::budget::BudgetRefusal;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics;

/// The verdict label of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum DnsVerdict {
    /// Allowed and forwarded; the upstream answered.
    Allowed,
    /// Forwarded although a policy would deny it (audit mode: the client
    /// is in audit mode, or an audited policy's rules would deny a name);
    /// the upstream answered.
    Audit,
    /// Denied by policy: answered REFUSED (or NXDOMAIN).
    Denied,
    /// Not a query the proxy can judge: answered FORMERR, or dropped.
    Invalid,
    /// Allowed, but the upstream failed or timed out: answered SERVFAIL.
    UpstreamError,
    /// Dropped unanswered: too many queries in flight.
    Overloaded,
}

/// The transport label of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum TransportLabel {
    Udp,
    Tcp,
}

/// Why the proxy refused or closed a connection, or dropped a message,
/// to keep within its limits or its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum DnsLimit {
    /// A TCP connection past `max_tcp_connections_per_source`, closed at accept.
    TcpConnectionsPerSource,
    /// A TCP connection past `max_tcp_connections`, closed at accept.
    TcpConnectionsTotal,
    /// No whole first query within `tcp_first_query_timeout`.
    TcpFirstQueryTimeout,
    /// No whole next query within `tcp_idle_timeout`.
    TcpIdleTimeout,
    /// A UDP query over its source's `udp_queries_per_second_per_source`,
    /// dropped unanswered.
    UdpRatePerSource,
}

impl DnsLimit {
    /// The limit behind a refused TCP connection.
    pub fn tcp_connections(why: BudgetRefusal) -> DnsLimit {
        match why {
            BudgetRefusal::PerSource => DnsLimit::TcpConnectionsPerSource,
            BudgetRefusal::Total => DnsLimit::TcpConnectionsTotal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: DnsLimit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueryLabels {
    transport: TransportLabel,
    verdict: DnsVerdict,
}

/// The DNS proxy's metrics (names under the `portcullis_proxy` prefix).
#[derive(Debug)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    hold: Histogram,
    learn_timeouts: Counter,
    limits: Family<LimitLabels, Counter>,
    mismatched_answers: Counter,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsMetrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        DnsMetrics {
            queries: Family::default(),
            // 50 µs .. ~3 s
            hold: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            learn_timeouts: Counter::default(),
            limits: Family::default(),
            mismatched_answers: Counter::default(),
        }
    }

    /// Registers every metric into `registry`, which carries the prefix.
    fn add_to(&self, registry: &mut Registry) {
        registry.register(
            "dns_queries",
            "DNS queries judged by the proxy, by transport and verdict",
            self.queries.clone(),
        );
        registry.register(
            "dns_learn_hold_seconds",
            "Time an allowed answer was held between the learner call and its acknowledgement",
            self.hold.clone(),
        );
        registry.register(
            "dns_learn_timeouts",
            "Answers released because the learner did not acknowledge in time",
            self.learn_timeouts.clone(),
        );
        registry.register(
            "dns_limit_refusals",
            "DNS connections refused or closed by a limit, by limit",
            self.limits.clone(),
        );
        registry.register(
            "dns_mismatched_answers",
            "Upstream datagrams dropped: no query in flight on that socket has their id and question (forged, late or stray)",
            self.mismatched_answers.clone(),
        );
    }

    /// Registers every metric into `root` under `portcullis_proxy` (one
    /// registry for the whole agent).
    pub fn register(&self, root: &mut Registry) {
        metrics::register(root, |r| self.add_to(r));
    }

    /// Records one query.
    pub fn query(&self, transport: TransportLabel, verdict: DnsVerdict) {
        self.queries
            .get_or_create(&QueryLabels { transport, verdict })
            .inc();
    }

    /// Number of queries seen with this transport and verdict.
    pub fn queries(&self, transport: TransportLabel, verdict: DnsVerdict) -> u64 {
        self.queries
            .get_or_create(&QueryLabels { transport, verdict })
            .get()
    }

    /// Counts one refusal by `limit`.
    pub fn limit_refusal(&self, limit: DnsLimit) {
        self.limits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Refusals by `limit` so far.
    pub fn limit_refusals(&self, limit: DnsLimit) -> u64 {
        self.limits.get_or_create(&LimitLabels { limit }).get()
    }

    /// Counts an upstream datagram dropped for answering no query in flight.
    pub fn mismatched_answer(&self) {
        self.mismatched_answers.inc();
    }

    /// Upstream datagrams dropped for answering no query in flight so far.
    pub fn mismatched_answers(&self) -> u64 {
        self.mismatched_answers.get()
    }

    /// Records how long an answer was held for the learner.
    pub fn hold(&self, seconds: f64) {
        self.hold.observe(seconds);
    }

    /// Counts an answer released by the learn timeout.
    pub fn learn_timeout(&self) {
        self.learn_timeouts.inc();
    }

    /// Answers released by the learn timeout so far.
    pub fn learn_timeouts(&self) -> u64 {
        self.learn_timeouts.get()
    }

    /// The OpenMetrics text of every DNS metric alone (ends with
    /// `# EOF`).
    pub fn render(&self) -> String {
        metrics::render(|r| self.add_to(r))
    }
}
