//! The metrics skeleton every proxy shares (prometheus-client): requests
//! counted by a label set with a latency histogram, connections open and
//! accepted with a guard that closes on `Drop`, and the registration of a
//! proxy's metrics under the `portcullis_proxy` prefix, either into the
//! caller's registry (one registry for the whole agent, encoded once) or
//! into one of their own for [`render`].
//!
//! Each protocol's `metrics.rs` holds its own names and labels.

use std::fmt::Debug;
use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The prefix of every proxy metric.
pub const PREFIX: &str = "portcullis_proxy";

/// A metric's name (without the prefix) and help text.
pub type Named = (&'static str, &'static str);

/// Registers what `add` registers into `root` under [`PREFIX`].
pub(crate) fn register(root: &mut Registry, add: impl FnOnce(&mut Registry)) {
    add(root.sub_registry_with_prefix(PREFIX));
}

/// The OpenMetrics text of what `add` registers, under [`PREFIX`], in a
/// registry of its own (ends with `# EOF`).
pub(crate) fn render(add: impl FnOnce(&mut Registry)) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    add(&mut registry);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Requests by label set `L`, and how long they took.
#[derive(Debug)]
pub(crate) struct RequestMetrics<L> {
    requests: Family<L, Counter>,
    latency: Histogram,
}

impl<L> RequestMetrics<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static,
{
    /// Counters by label set, and a latency histogram with `buckets`.
    pub(crate) fn new(buckets: impl Iterator<Item = f64>) -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: Histogram::new(buckets),
        }
    }

    /// Counts one request; `seconds` is `None` when it got no response.
    pub(crate) fn record(&self, labels: &L, seconds: Option<f64>) {
        self.requests.get_or_create(labels).inc();
        if let Some(s) = seconds {
            self.latency.observe(s);
        }
    }

    /// Requests counted with `labels`.
    pub(crate) fn count(&self, labels: &L) -> u64 {
        self.requests.get_or_create(labels).get()
    }

    /// Registers the counter family as `requests` and the histogram as
    /// `latency`.
    pub(crate) fn register(&self, registry: &mut Registry, requests: Named, latency: Named) {
        registry.register(requests.0, requests.1, self.requests.clone());
        registry.register(latency.0, latency.1, self.latency.clone());
    }
}

/// Connections open now and accepted so far.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    active: Gauge,
    total: Counter,
}

impl Connections {
    /// Counts a connection as open until the guard drops.
    pub(crate) fn open(&self) -> ConnectionGuard {
        self.total.inc();
        self.active.inc();
        ConnectionGuard {
            gauge: self.active.clone(),
        }
    }

    /// Connections currently open.
    pub(crate) fn active(&self) -> i64 {
        self.active.get()
    }

    /// Registers the gauge as `active` and the counter as `total`.
    pub(crate) fn register(&self, registry: &mut Registry, active: Named, total: Named) {
        registry.register(active.0, active.1, self.active.clone());
        registry.register(total.0, total.1, self.total.clone());
    }
}

/// Decrements the open connections gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
