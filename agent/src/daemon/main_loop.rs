//! The daemon's loop: flow lines out, new inputs in, node addresses, learned
//! names and their expiry, state files and `status`, each at its own pace.

use super::enforcer::{SharedEnforcer, lock_enforcer};
use super::fdlimit::{self, FdReserve};
use super::flows::{self, SharedFlows};
use super::inputs::Inputs;
use super::known_names::{KnownNames, LearnRequest};
use super::persist::mark_applied;
use super::status::StatusFile;
use crate::access_log::PodNames;
use crate::metrics::AgentMetrics;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often the node's addresses are re-read from the kernel.
const NODE_ADDRESS_POLL: Duration = Duration::from_secs(2);

/// How often learned names are checked for expiry.
const EXPIRY_POLL: Duration = Duration::from_secs(1);

/// Everything the loop works with besides the enforcer.
pub(super) struct MainLoop {
    pub(super) enforcer: SharedEnforcer,
    pub(super) inputs: Inputs,
    pub(super) status: StatusFile,
    pub(super) flows: SharedFlows,
    pub(super) events: redirect_ebpf::FlowEvents,
    /// Pod names of the flow lines.
    pub(super) names: PodNames,
    /// Answers the DNS thread could not learn in place.
    pub(super) learn_rx: Receiver<LearnRequest>,
    /// The learner's fast-path view of what the maps hold.
    pub(super) known: Arc<RwLock<KnownNames>>,
    pub(super) metrics: Arc<AgentMetrics>,
    /// Descriptors held back from the proxies' connections
    /// (`--reserved-fds`); let go to read and apply.
    pub(super) reserved_fds: usize,
    pub(super) state_dir: PathBuf,
    /// How often the inputs are looked at (`--poll-ms`).
    pub(super) poll: Duration,
    /// `--dns-min-ttl`.
    pub(super) min_ttl: Duration,
}

impl MainLoop {
    /// Runs until the process is killed.
    pub(super) fn run(mut self) {
        let mut announced: BTreeMap<String, String> = BTreeMap::new();
        let (mut last_input_check, mut last_node_check, mut last_expiry) =
            (Instant::now(), Instant::now(), Instant::now());
        let mut reserve = FdReserve::new(self.reserved_fds);
        let shared = self.enforcer.clone();
        loop {
            let mut guard = lock_enforcer(&shared);
            let enforcer = guard.as_mut().expect("the enforcer is set before the loop");
            let mut any = false;
            // Bounded: a flood of events must not starve the rest of the
            // loop (policy changes); what is left is read on the next turn.
            for ev in std::iter::from_fn(|| self.events.try_next()).take(flows::EVENT_BATCH) {
                any = true;
                flows::broadcast(&self.flows, flows::flow_json(&ev, &self.names));
            }
            for line in crate::access_log::drain() {
                any = true;
                flows::broadcast(&self.flows, line);
            }
            // Input files are looked at every poll interval, not on every
            // loop turn (DNS learn requests can turn it thousands of times
            // a second).
            let check_inputs = last_input_check.elapsed() >= self.poll;
            if check_inputs {
                last_input_check = Instant::now();
            }
            if check_inputs && self.inputs.pending() {
                // With the reserve let go, so a descriptor flood against the
                // proxies cannot keep the agent from reading and applying.
                reserve.released(|| self.handle_input_change(enforcer));
            } else {
                reserve.refill();
            }
            if last_node_check.elapsed() >= NODE_ADDRESS_POLL {
                last_node_check = Instant::now();
                let changed = reserve.released(|| enforcer.refresh_node_addresses());
                if changed {
                    let cluster = enforcer.cluster();
                    if let Err(e) = enforcer.enforce(&cluster) {
                        tracing::error!(error = %e, "applying new node addresses failed");
                    }
                    // Status shows the new set.
                    enforcer.outcome_gen += 1;
                }
            }
            if last_expiry.elapsed() >= EXPIRY_POLL {
                last_expiry = Instant::now();
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
            let mut wait = None;
            if !any {
                if let Ok(c) = enforcer.dp.counters() {
                    self.metrics.set_counters(&c);
                }
                wait = Some(enforcer.persist_due.map_or(self.poll, |due| {
                    due.saturating_duration_since(Instant::now()).min(self.poll)
                }));
            }
            // Sleep until the next poll (or state files due) without the
            // enforcer, so the DNS thread can learn in place meanwhile; wake
            // at once for an answer it could not learn in place.
            drop(guard);
            let mut batch: Vec<LearnRequest> = Vec::new();
            if let Some(wait) = wait
                && let Ok(req) = self.learn_rx.recv_timeout(wait)
            {
                batch.push(req);
            }
            batch.extend(self.learn_rx.try_iter());
            let mut guard = lock_enforcer(&shared);
            let enforcer = guard.as_mut().expect("the enforcer is set before the loop");
            if !batch.is_empty() {
                enforcer.learn_batch(batch, self.min_ttl, &self.known);
            }
            enforcer.persist_learned(false);
            // Endpoints that failed closed (or recovered) since last time go
            // to the flow stream too.
            flows::announce_failures(&self.flows, &mut announced, &enforcer.outcome.failed);
            self.status.refresh(&enforcer.status_view());
        }
    }

    /// Handles new inputs, if any: applies them, or keeps the previous
    /// policy when they are invalid. A read that failed for lack of
    /// resources is not an invalid policy: it is retried on the next poll.
    fn handle_input_change(&mut self, enforcer: &mut super::enforcer::Enforcer) {
        match self.inputs.changed() {
            None => {}
            Some(Ok(snapshot)) => {
                enforcer.topo = snapshot.topology;
                enforcer.set = snapshot.policies;
                enforcer.local = snapshot.local_pods;
                let cluster = enforcer.cluster();
                enforcer.note_endpoints(&cluster);
                let result = enforcer
                    .attach_endpoints(&cluster)
                    .and_then(|()| enforcer.enforce(&cluster));
                if let Err(e) = result {
                    tracing::error!(error = %e, "applying the change failed");
                }
                self.names = flows::pod_names(&cluster);
                crate::access_log::set_pod_names(self.names.clone());
                self.metrics.endpoints.set(enforcer.attached.len() as i64);
                let policies = self.inputs.policy_states(&enforcer.set);
                self.status
                    .record_applied(policies, &enforcer.status_view());
                if let Some(hash) = snapshot.content_hash
                    && let Err(e) = mark_applied(&self.state_dir, hash)
                {
                    tracing::warn!(error = %e, "writing applied.hash failed");
                }
            }
            Some(Err(e)) if fdlimit::is_resource_error(&e) => {
                self.metrics.inputs_unreadable.inc();
                self.status.record_unreadable(&e);
                tracing::warn!(
                    error = %e,
                    "reading the inputs failed for lack of resources; retrying (the previous policy stays in force)"
                );
            }
            Some(Err(e)) => {
                self.metrics.policy_rejected.inc();
                self.status.record_rejected(&e);
                tracing::error!(
                    error = %e,
                    "new policy is invalid; the previous policy stays in force"
                )
            }
        }
    }
}
