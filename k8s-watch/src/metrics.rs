//! Watch metrics (prometheus-client): events and errors per resource,
//! snapshots published, policy objects not in force as received.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    resource: String,
    /// `apply`, `delete`, `relist` (a completed list) or `absent`.
    event: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// The watcher's metrics. Cheap to clone (shared counters).
#[derive(Debug, Clone, Default)]
pub struct WatchMetrics {
    events: Family<EventLabels, Counter>,
    errors: Family<ResourceLabels, Counter>,
    snapshots: Counter,
    invalid_policies: Gauge,
}

impl WatchMetrics {
    /// Creates the metrics and registers them under `portcullis_k8s_watch_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = WatchMetrics::default();
        let sub = registry.sub_registry_with_prefix("portcullis_k8s_watch");
        sub.register(
            "events",
            "Watch events applied to the store, by resource and event",
            m.events.clone(),
        );
        sub.register(
            "errors",
            "List/watch failures (retried with backoff), by resource",
            m.errors.clone(),
        );
        sub.register(
            "snapshots",
            "Snapshots published to the agent",
            m.snapshots.clone(),
        );
        sub.register(
            "invalid_policies",
            "Policy objects whose latest version does not load",
            m.invalid_policies.clone(),
        );
        m
    }

    pub(crate) fn event(&self, resource: &crate::store::Resource, event: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                resource: resource.to_string(),
                event,
            })
            .inc();
    }

    pub(crate) fn error(&self, resource: &crate::store::Resource) {
        self.errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_string(),
            })
            .inc();
    }

    pub(crate) fn published(&self, invalid: usize) {
        self.snapshots.inc();
        self.invalid_policies
            .set(i64::try_from(invalid).unwrap_or(i64::MAX));
    }
}
