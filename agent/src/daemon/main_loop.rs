//! The daemon's loop: it blocks on its one channel of events (input files
//! changed, a Kubernetes change, DNS answers to learn) with a deadline for
//! its timers (learned-name expiry, state files due, node addresses,
//! datapath counters, `status`). Flow lines go out on a thread of their
//! own ([`super::flows::start_pump`]).

use super::enforcer::{Enforcer, SharedEnforcer, lock_enforcer};
use super::engine_input::{EngineInput, changes_for, hosts_of};
use super::events::{DaemonEvent, FileBatch};
use super::fdlimit::FdReserve;
use super::flows;
use super::inputs::{InputUpdate, Inputs};
use super::known_names::{KnownNames, LearnRequest};
use super::status::StatusFile;
use crate::hubble::convert::SharedContext;
use crate::metrics::AgentMetrics;
use policy_model::incremental::Change;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often the node's addresses are re-read from the kernel (a timer:
/// address changes are rare and a 2 s delay only affects `host`).
const NODE_ADDRESS_EVERY: Duration = Duration::from_secs(2);

/// How often learned names are checked for expiry, while there are any.
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// How often the datapath counters are copied to the metrics.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// When to read the inputs again after a read failed for lack of resources.
const UNREADABLE_RETRY: Duration = Duration::from_millis(50);

/// Everything the loop works with besides the enforcer.
pub(super) struct MainLoop {
    pub(super) enforcer: SharedEnforcer,
    pub(super) inputs: Inputs,
    pub(super) status: StatusFile,
    /// What flows are written with (read by the flow pump).
    pub(super) flow_context: SharedContext,
    /// The datapath's lost-event count, for the flow pump.
    pub(super) kernel_lost: flows::KernelLost,
    /// The one channel of daemon events.
    pub(super) rx: Receiver<DaemonEvent>,
    /// The learner's fast-path view of what the maps hold.
    pub(super) known: Arc<RwLock<KnownNames>>,
    pub(super) metrics: Arc<AgentMetrics>,
    /// Descriptors held back from the proxies' connections
    /// (`--reserved-fds`); let go to read and apply.
    pub(super) reserved_fds: usize,
    /// File mode without a watcher: how often the files are re-checked.
    pub(super) fallback_poll: Option<Duration>,
    /// `--dns-min-ttl`.
    pub(super) min_ttl: Duration,
}

/// What one wake-up of the loop brought.
#[derive(Default)]
struct Wake {
    files: Option<FileBatch>,
    /// When a Kubernetes change was first seen.
    kubernetes: Option<Instant>,
    learn: Vec<LearnRequest>,
}

impl Wake {
    fn add(&mut self, ev: DaemonEvent) {
        match ev {
            DaemonEvent::Files(b) => match &mut self.files {
                Some(mine) => mine.merge(b),
                None => self.files = Some(b),
            },
            DaemonEvent::Kubernetes { at } => {
                self.kubernetes = Some(self.kubernetes.map_or(at, |k| k.min(at)))
            }
            DaemonEvent::Learn(req) => self.learn.push(req),
            DaemonEvent::Wake => {}
        }
    }
}

/// When each timer is next due.
struct Timers {
    node: Instant,
    expiry: Instant,
    counters: Instant,
    /// A read that failed for lack of resources, to try again.
    retry: Option<Instant>,
    /// The fallback re-check of the files (no watcher).
    fallback: Option<Instant>,
}

impl MainLoop {
    /// Runs until the process is killed.
    pub(super) fn run(mut self) {
        let mut announced: BTreeMap<String, String> = BTreeMap::new();
        let now = Instant::now();
        let mut timers = Timers {
            node: now + NODE_ADDRESS_EVERY,
            expiry: now + EXPIRY_EVERY,
            counters: now,
            retry: None,
            fallback: self.fallback_poll.map(|p| now + p),
        };
        let mut reserve = FdReserve::new(self.reserved_fds);
        let shared = self.enforcer.clone();
        loop {
            let deadline = self.next_deadline(&shared, &timers);
            let mut wake = Wake::default();
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(ev) => wake.add(ev),
                Err(RecvTimeoutError::Timeout) => {}
                // The learner holds a sender for the process' life.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_secs(1)),
            }
            for ev in self.rx.try_iter() {
                wake.add(ev);
            }
            let now = Instant::now();
            let mut look = timers.retry.take_if(|t| *t <= now).is_some();
            if timers.fallback.is_some_and(|t| t <= now) {
                timers.fallback = self.fallback_poll.map(|p| now + p);
                look |= self.inputs.files_touched();
            }
            if look {
                wake.add(match self.inputs.mode() {
                    "kubernetes" => DaemonEvent::Kubernetes { at: now },
                    _ => DaemonEvent::Files(FileBatch {
                        first: now,
                        paths: None,
                    }),
                });
            }
            let mut guard = lock_enforcer(&shared);
            let enforcer = guard.as_mut().expect("the enforcer is set before the loop");
            if wake.files.is_some() || wake.kubernetes.is_some() {
                // With the reserve let go, so a descriptor flood against the
                // proxies cannot keep the agent from reading and applying.
                let retry = reserve.released(|| self.handle_inputs(enforcer, &wake));
                if retry {
                    timers.retry = Some(now + UNREADABLE_RETRY);
                }
            } else {
                reserve.refill();
            }
            if !wake.learn.is_empty() {
                enforcer.learn_batch(std::mem::take(&mut wake.learn), self.min_ttl, &self.known);
            }
            self.on_timers(enforcer, &mut timers, &mut reserve);
            enforcer.persist_learned(false);
            // Endpoints that failed closed (or recovered) since last time
            // are logged; the flows learn what changed.
            flows::announce_failures(&mut announced, &enforcer.outcome.failed);
            if !enforcer.flow_dirty.is_clean() {
                let dirty = std::mem::take(&mut enforcer.flow_dirty);
                flows::refresh_context(
                    &self.flow_context,
                    &enforcer.engine,
                    (!dirty.all).then_some(&dirty.touched),
                    dirty.pods,
                    dirty.identities,
                );
            }
            self.status.refresh(&enforcer.status_view());
        }
    }

    /// The earliest timer, state files due or `status` rewrite.
    fn next_deadline(&self, shared: &SharedEnforcer, timers: &Timers) -> Instant {
        let guard = lock_enforcer(shared);
        let enforcer = guard.as_ref().expect("the enforcer is set before the loop");
        let mut next = timers.node.min(timers.counters);
        // Addresses past their TTL stay learned while flows use them.
        if enforcer.fqdn.len() > 0 {
            next = next.min(timers.expiry);
        }
        for due in [
            timers.retry,
            timers.fallback,
            enforcer.persist_due,
            self.status.due(enforcer.outcome_gen),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(due);
        }
        next
    }

    /// Runs the timers that are due.
    fn on_timers(&mut self, enforcer: &mut Enforcer, timers: &mut Timers, reserve: &mut FdReserve) {
        let now = Instant::now();
        if timers.node <= now {
            timers.node = now + NODE_ADDRESS_EVERY;
            if reserve.released(|| enforcer.refresh_node_addresses()) {
                let hosts = Change::Hosts(enforcer.node_hosts());
                if let Err(e) = enforcer.realize(vec![hosts]) {
                    tracing::error!(error = %e, "applying new node addresses failed");
                }
                enforcer.persist_applied(None, false);
                // Status shows the new set.
                enforcer.outcome_gen += 1;
            }
        }
        if timers.expiry <= now {
            timers.expiry = now + EXPIRY_EVERY;
            enforcer.expire_names();
            if std::mem::take(&mut enforcer.expired) {
                // Built and dropped outside the lock: the DNS thread
                // reads it for every answer.
                let fresh = enforcer.fqdn.expiries();
                let old = self
                    .known
                    .write()
                    .map(|mut k| std::mem::replace(&mut k.0, fresh));
                drop(old);
            }
        }
        if timers.counters <= now {
            timers.counters = now + COUNTERS_EVERY;
            if let Ok(c) = enforcer.dp.counters() {
                self.metrics.set_counters(&c);
                self.kernel_lost
                    .store(c.events_lost, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Reads what changed and applies it; reports rejections (the previous
    /// version of each rejected object stays in force). Returns whether a
    /// read failed for lack of resources (to be retried).
    fn handle_inputs(&mut self, enforcer: &mut Enforcer, wake: &Wake) -> bool {
        let since = match (&wake.files, wake.kubernetes) {
            (Some(f), Some(k)) => f.first.min(k),
            (Some(f), None) => f.first,
            (None, Some(k)) => k,
            (None, None) => return false,
        };
        let waited = since.elapsed();
        let Some(update) = self.inputs.changed(wake.files.as_ref()) else {
            return false;
        };
        let waited_us = waited.as_micros() as u64;
        for e in &update.unreadable {
            self.metrics.inputs_unreadable.inc();
            self.status.record_unreadable(e);
            tracing::warn!(
                error = %e,
                "reading the inputs failed for lack of resources; retrying (the previous policy stays in force)"
            );
        }
        if !update.rejected.is_empty() {
            self.metrics
                .policy_rejected
                .inc_by(update.rejected.len() as u64);
            for e in &update.rejected {
                tracing::error!(
                    error = %e,
                    "new policy is invalid; the previous policy stays in force (for what it rejects; everything else updates)"
                );
            }
        }
        let standing = (!update.standing.is_empty()).then(|| update.standing.join("\n"));
        let retry = !update.unreadable.is_empty();
        match update.snapshot {
            Some(_) => self.apply(enforcer, update, since, standing, waited_us),
            None => self.status.set_last_error(standing),
        }
        retry
    }

    /// Puts new inputs in force; times it from `since` (the input event).
    fn apply(
        &mut self,
        enforcer: &mut Enforcer,
        update: InputUpdate,
        since: Instant,
        standing: Option<String>,
        waited_us: u64,
    ) {
        let InputUpdate {
            snapshot, changes, ..
        } = update;
        let snapshot = snapshot.expect("called with a snapshot");
        enforcer.local = snapshot.local_pods.clone();
        enforcer.input_hosts = hosts_of(&snapshot.topology);
        let hosts = enforcer.node_hosts();
        let compared = Instant::now();
        let input = changes_for(&enforcer.engine, &snapshot, &changes, hosts);
        let compare_us = compared.elapsed().as_micros() as u64;
        let engine_changes = match &input {
            EngineInput::Changes(c) => c.len(),
            EngineInput::Rebuild => 0,
        };
        let read_us = since.elapsed().as_micros() as u64;
        let (result, realized) = match input {
            EngineInput::Rebuild => (enforcer.rebuild(&snapshot), None),
            EngineInput::Changes(c) => match enforcer.realize(c) {
                Ok(r) => (Ok(()), Some(r)),
                Err(e) => (Err(e), None),
            },
        };
        let pods_changed = realized.as_ref().is_none_or(|r| r.pods_changed);
        let r = realized.unwrap_or_default();
        let elapsed = since.elapsed();
        self.metrics
            .policy_realization
            .observe(elapsed.as_secs_f64());
        tracing::debug!(
            changed = %changes.summary(),
            engine_changes,
            map_changes = r.map_changes,
            ipcache_changes = r.ipcache_changes,
            written = enforcer.outcome.changes,
            waited_us,
            read_us = read_us.saturating_sub(waited_us),
            compare_us,
            engine_us = r.engine_us,
            proxy_us = r.proxy_us,
            kernel_us = r.kernel_us,
            elapsed_us = elapsed.as_micros() as u64,
            "input change realized"
        );
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the change failed");
        }
        enforcer.set = snapshot.policies;
        enforcer.persist_applied(self.inputs.applied_hash(), false);
        if pods_changed {
            crate::access_log::set_pod_names(flows::pod_names(&enforcer.engine));
        }
        self.metrics.endpoints.set(enforcer.attached.len() as i64);
        // Per-policy states change with the policy files or with a
        // rejection (file mode); the API's statuses with any snapshot.
        let states_stale = !changes.policies.is_empty()
            || self.status.last_error() != standing.as_deref()
            || matches!(self.inputs, Inputs::Kubernetes { .. });
        let policies = states_stale.then(|| self.inputs.policy_states(&enforcer.set));
        self.status
            .record_applied(policies, &enforcer.status_view(), standing);
    }
}
