//! The agent's Prometheus metrics and the admin HTTP endpoint
//! (`/metrics`, `/healthz`, `/readyz`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Label of a datapath counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Agent metrics.
pub struct AgentMetrics {
    /// Packets by datapath reason (copied from the kernel's per-CPU counters).
    pub datapath_packets: Family<ReasonLabel, Gauge<u64, AtomicU64>>,
    /// Policy changes applied to the kernel.
    pub policy_applied: Counter,
    /// Policy changes rejected as invalid (previous policy kept).
    pub policy_rejected: Counter,
    /// Kernel map changes written.
    pub map_changes: Counter,
    /// Managed endpoints.
    pub endpoints: Gauge,
    /// Applies that left part of the policy unapplied (failed closed).
    pub apply_failures: Counter,
    /// Endpoints whose policy is not in the kernel (all traffic denied).
    pub endpoints_failed_closed: Gauge,
    /// Learned addresses left out of the full ipcache (not allowed).
    pub ipcache_learned_left_out: Gauge,
    /// Entries in the policy map / the ipcache, as the agent wrote them.
    pub policy_map_entries: Gauge,
    pub ipcache_entries: Gauge,
    /// Learned DNS addresses refused, by reason.
    pub learn_refused: Family<ReasonLabel, Counter>,
    /// Input reads that failed for lack of resources (retried, not invalid).
    pub inputs_unreadable: Counter,
    /// The agent's open-file limit after raising it.
    pub open_files_limit: Gauge,
    /// Flow events the kernel did not emit, by reason (`suppressed`: the
    /// endpoint was over its per-second budget; `ring_full`).
    pub datapath_events_dropped: Family<ReasonLabel, Gauge<u64, AtomicU64>>,
    /// Flows a Hubble client fell too far behind to receive (each client
    /// is told, as `lost_events`).
    pub hubble_flows_lost: Counter,
    /// Packets carrying a from-proxy or policy-done mark they could not
    /// prove (judged like any other packet).
    pub datapath_forged_marks: Gauge<u64, AtomicU64>,
    /// Seconds from an input change (the first file event of a debounced
    /// batch, or the Kubernetes change) to the last map write of it.
    pub policy_realization: Histogram,
    /// Whether the first policy is in the kernel.
    pub ready: AtomicBool,
}

/// Buckets of [`AgentMetrics::policy_realization`]: 100 µs to ~13 s, each
/// twice the last.
fn realization_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

impl AgentMetrics {
    /// Creates the agent's metrics and registers them in `root` under
    /// `portcullis_`.
    pub fn register(root: &mut Registry) -> Self {
        let registry = root.sub_registry_with_prefix("portcullis");
        let datapath_packets = Family::<ReasonLabel, Gauge<u64, AtomicU64>>::default();
        let policy_applied = Counter::default();
        let policy_rejected = Counter::default();
        let map_changes = Counter::default();
        let endpoints = Gauge::default();
        let datapath_events_dropped = Family::<ReasonLabel, Gauge<u64, AtomicU64>>::default();
        let datapath_forged_marks = Gauge::<u64, AtomicU64>::default();
        let hubble_flows_lost = Counter::default();
        registry.register(
            "hubble_flows_lost",
            "Flows a Hubble client fell too far behind to receive (reported to it as lost events)",
            hubble_flows_lost.clone(),
        );
        registry.register(
            "datapath_flow_events_dropped",
            "Flow events the kernel did not emit (suppressed: endpoint over its budget; ring_full)",
            datapath_events_dropped.clone(),
        );
        registry.register(
            "datapath_forged_marks",
            "Packets with a from-proxy or policy-done mark not proven by their socket",
            datapath_forged_marks.clone(),
        );
        registry.register(
            "datapath_packets",
            "Packets seen by the TC programs, by verdict reason",
            datapath_packets.clone(),
        );
        registry.register(
            "policy_applied",
            "Policy versions applied to the kernel maps",
            policy_applied.clone(),
        );
        registry.register(
            "policy_rejected",
            "Policy versions rejected as invalid (the previous one stayed in force)",
            policy_rejected.clone(),
        );
        registry.register(
            "policy_map_changes",
            "Policy, ipcache and endpoint map entries written or deleted",
            map_changes.clone(),
        );
        registry.register("endpoints", "Managed local endpoints", endpoints.clone());
        let apply_failures = Counter::default();
        let endpoints_failed_closed = Gauge::default();
        let ipcache_learned_left_out = Gauge::default();
        let policy_map_entries = Gauge::default();
        let ipcache_entries = Gauge::default();
        let learn_refused = Family::<ReasonLabel, Counter>::default();
        let inputs_unreadable = Counter::default();
        let open_files_limit = Gauge::default();
        registry.register(
            "policy_apply_failures",
            "Applies that could not write everything (what did not fit fails closed)",
            apply_failures.clone(),
        );
        registry.register(
            "endpoints_failed_closed",
            "Endpoints whose policy is not in the kernel: all their traffic is denied",
            endpoints_failed_closed.clone(),
        );
        registry.register(
            "ipcache_learned_left_out",
            "Learned DNS addresses left out of the full ipcache (not allowed)",
            ipcache_learned_left_out.clone(),
        );
        registry.register(
            "policy_map_entries",
            "Entries the agent holds in the policy map",
            policy_map_entries.clone(),
        );
        registry.register(
            "ipcache_entries",
            "Entries the agent holds in the ipcache",
            ipcache_entries.clone(),
        );
        registry.register(
            "fqdn_learn_refused",
            "Addresses of DNS answers not learned (not allowed), by reason",
            learn_refused.clone(),
        );
        registry.register(
            "inputs_unreadable",
            "Policy/topology reads that failed for lack of resources (retried; the previous policy stays)",
            inputs_unreadable.clone(),
        );
        registry.register(
            "open_files_limit",
            "The agent's open-file limit (RLIMIT_NOFILE) after raising it",
            open_files_limit.clone(),
        );
        let policy_realization = Histogram::new(realization_buckets());
        registry.register(
            "policy_realization_seconds",
            "Seconds from an input change (file event or Kubernetes change) to the last kernel map write of it",
            policy_realization.clone(),
        );
        AgentMetrics {
            policy_realization,
            datapath_packets,
            policy_applied,
            policy_rejected,
            map_changes,
            endpoints,
            apply_failures,
            endpoints_failed_closed,
            ipcache_learned_left_out,
            policy_map_entries,
            ipcache_entries,
            learn_refused,
            inputs_unreadable,
            open_files_limit,
            datapath_events_dropped,
            datapath_forged_marks,
            hubble_flows_lost,
            ready: AtomicBool::new(false),
        }
    }

    /// Copies the kernel counters.
    pub fn set_counters(&self, counters: &redirect_ebpf::Counters) {
        for r in redirect_ebpf::Reason::ALL {
            self.datapath_packets
                .get_or_create(&ReasonLabel {
                    reason: format!("{r:?}"),
                })
                .set(counters.get(r));
        }
        for (reason, value) in [
            ("suppressed", counters.events_suppressed),
            ("ring_full", counters.events_lost),
        ] {
            self.datapath_events_dropped
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .set(value);
        }
        self.datapath_forged_marks.set(counters.forged_marks);
    }

    /// Records what one apply left unapplied.
    pub fn record_apply(
        &self,
        failed_endpoints: usize,
        learned_left_out: usize,
        errors: usize,
        policy_entries: usize,
        ipcache_entries: usize,
    ) {
        if failed_endpoints > 0 || learned_left_out > 0 || errors > 0 {
            self.apply_failures.inc();
        }
        self.endpoints_failed_closed.set(failed_endpoints as i64);
        self.ipcache_learned_left_out.set(learned_left_out as i64);
        self.policy_map_entries.set(policy_entries as i64);
        self.ipcache_entries.set(ipcache_entries as i64);
    }

    /// Counts `n` learned addresses refused for `reason`.
    pub fn learn_refused(&self, reason: &str, n: u64) {
        self.learn_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }
}

/// The text exposition of `registry`: one OpenMetrics document, ending
/// with a single `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Serves `/metrics` (everything registered in `registry`: the agent's,
/// the proxies' and, in Kubernetes mode, the watcher's metrics, encoded
/// once), `/healthz` and `/readyz` on `addr`, one short-lived connection
/// at a time; readiness comes from `metrics`.
pub fn serve_admin(
    addr: SocketAddr,
    metrics: Arc<AgentMetrics>,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            // Drain the request head.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let (status, body) = match path.as_str() {
                "/metrics" => ("200 OK", render(&registry)),
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into()),
                "/readyz" => ("503 Service Unavailable", "not ready\n".into()),
                _ => ("404 Not Found", "not found\n".into()),
            };
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}
