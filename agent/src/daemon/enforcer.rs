//! The enforcer: resolves the inputs and hands the result to the proxies
//! and the kernel maps.

use super::args::AgentArgs;
use super::capacity::MapLimits;
use super::fqdn::FqdnStore;
use super::inputs::{InputSnapshot, LocalPods};
use super::kernel::{self, ApplyOutcome, KernelState};
use super::learn_guard::{LearnGuard, LearnLimits};
use super::lingering::Lingering;
use super::persist::Persister;
use super::status::StatusView;
use crate::metrics::AgentMetrics;
use anyhow::Result;
use policy_model::{Cluster, PolicySet, Topology};
use redirect_ebpf::Datapath;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The enforcer, shared by the daemon's loop and the DNS thread (which
/// takes it when free to learn an address in place).
pub(super) type SharedEnforcer = Arc<Mutex<Option<Enforcer>>>;

/// The enforcer's lock; a panic while it was held leaves it usable (its
/// maps are rewritten whole by the next resolve).
pub(super) fn lock_enforcer(
    m: &Mutex<Option<Enforcer>>,
) -> std::sync::MutexGuard<'_, Option<Enforcer>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything the agent enforces from: the datapath, the inputs (topology,
/// policies, learned names) and what it last wrote.
pub(super) struct Enforcer {
    pub(super) dp: Datapath,
    pub(super) topo: Topology,
    pub(super) set: PolicySet,
    pub(super) fqdn: FqdnStore,
    pub(super) applied: KernelState,
    pub(super) proxy: proxy::PolicyHandle,
    pub(super) metrics: Arc<AgentMetrics>,
    pub(super) state_dir: PathBuf,
    /// Pods of this node.
    pub(super) local: LocalPods,
    /// Set when learned addresses expired: the learner's fast-path set must
    /// be rebuilt.
    pub(super) expired: bool,
    /// Writes the state files.
    pub(super) persist: Persister,
    /// When the state files are due after learned addresses changed them
    /// (learning writes at most every [`super::persist::PERSIST_DELAY`], not per answer).
    pub(super) persist_due: Option<Instant>,
    /// Set when learning in place wrote part of an answer and failed: the
    /// next learn batch resolves.
    pub(super) resolve_pending: bool,
    /// The cluster last enforced (with the learned addresses added since),
    /// for learning without a resolve; `None` when the last enforce failed.
    pub(super) last: Option<Cluster>,
    /// Endpoints whose interface has the programs: `ns/pod` -> (interface,
    /// addresses).
    pub(super) attached: BTreeMap<String, (String, Vec<IpAddr>)>,
    /// Learned addresses past their TTL that open flows still use.
    pub(super) lingering: Lingering,
    /// Map sizes and budgets.
    pub(super) limits: MapLimits,
    /// What the last apply left unapplied (for `status`).
    pub(super) outcome: ApplyOutcome,
    /// Bumped whenever `outcome` changes: the loop rewrites `status`.
    pub(super) outcome_gen: u64,
    /// Which learned addresses are admitted (finding 1a, 6).
    pub(super) guard: LearnGuard,
    /// The node's own addresses, from the kernel: `host`.
    pub(super) node_addrs: BTreeSet<IpAddr>,
}

/// How long a flow may sit idle and still count as open for keeping the
/// addresses it uses.
pub(super) const FLOW_IDLE: Duration = Duration::from_secs(30);

impl Enforcer {
    /// An enforcer for the first inputs. `maps_pinned`: the maps survived
    /// a previous agent, so what it recorded as applied is what they hold.
    pub(super) fn new(
        dp: Datapath,
        first: InputSnapshot,
        proxy: proxy::PolicyHandle,
        metrics: Arc<AgentMetrics>,
        limits: MapLimits,
        maps_pinned: bool,
        args: &AgentArgs,
    ) -> Result<Self> {
        let applied = if maps_pinned {
            KernelState::load(&args.state_dir)
        } else {
            KernelState::default()
        };
        let mut enforcer = Enforcer {
            dp,
            topo: first.topology,
            set: first.policies,
            fqdn: FqdnStore::load(&args.state_dir.join("fqdn.json")),
            applied,
            proxy,
            metrics,
            state_dir: args.state_dir.clone(),
            local: first.local_pods,
            attached: BTreeMap::new(),
            expired: false,
            last: None,
            persist: Persister::start()?,
            persist_due: None,
            resolve_pending: false,
            lingering: Lingering::default(),
            limits,
            outcome: ApplyOutcome::default(),
            outcome_gen: 0,
            guard: LearnGuard::new(
                LearnLimits {
                    per_name: args.fqdn_max_ips_per_name,
                    per_endpoint: args.fqdn_max_ips_per_endpoint,
                    node: args.fqdn_max_ips.unwrap_or(limits.ipcache / 2),
                },
                args.pod_cidrs.clone(),
            ),
            node_addrs: BTreeSet::new(),
        };
        enforcer.refresh_node_addresses();
        Ok(enforcer)
    }

    /// Resolves the current inputs.
    pub(super) fn cluster(&self) -> Cluster {
        let mut topo = self.topo.clone();
        // Every address the node owns is `host`, not only the topology's.
        let node = topo.node.get_or_insert_with(Default::default);
        for ip in &self.node_addrs {
            if !node.ips.contains(ip) {
                node.ips.push(*ip);
            }
        }
        Cluster::new(
            topo,
            self.set.rules().cloned().collect(),
            &self.fqdn.cache(),
        )
    }

    /// Tells the learn guard whose addresses are the cluster's.
    pub(super) fn note_endpoints(&mut self, cluster: &Cluster) {
        self.guard.set_endpoints(
            cluster
                .endpoints()
                .iter()
                .map(|e| (e.full_name(), e.ips.as_slice())),
        );
    }

    /// Re-reads the node's addresses from the kernel; `true` when they
    /// changed (the caller re-resolves). A failed read keeps the last set.
    pub(super) fn refresh_node_addresses(&mut self) -> bool {
        match super::node_addrs::discover() {
            Ok(now) if now != self.node_addrs => {
                tracing::info!(addresses = ?now, "node addresses (host)");
                self.guard.set_node_addresses(now.clone());
                self.node_addrs = now;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "reading the node's addresses failed; keeping the last ones");
                false
            }
        }
    }

    /// Whether `ep` is one of this node's pods.
    pub(super) fn is_local(&self, ep: &policy_model::resolve::Endpoint) -> bool {
        self.local.contains(&ep.full_name())
    }

    /// Hands a resolved cluster to the proxy, then to the kernel (the proxy
    /// first, so a newly redirected flow finds its rules).
    pub(super) fn enforce(&mut self, cluster: &Cluster) -> Result<()> {
        self.enforce_in_memory(cluster)?;
        self.persist_applied();
        Ok(())
    }

    /// Writes what was applied to the state files and waits until they
    /// are written.
    pub(super) fn persist_applied(&mut self) {
        // Learned names still due go with this write (applied is written
        // here anyway).
        if self.persist_due.take().is_some() {
            self.persist.fqdn(&self.fqdn);
        }
        self.persist.applied(&self.applied, &self.state_dir);
        self.persist.flush();
    }

    /// Queues the state files learning changed, when they are due (or
    /// now, with `now`).
    pub(super) fn persist_learned(&mut self, now: bool) {
        let Some(due) = self.persist_due else { return };
        if now || Instant::now() >= due {
            self.persist_due = None;
            self.persist.applied(&self.applied, &self.state_dir);
            self.persist.fqdn(&self.fqdn);
        }
    }

    /// [`Self::enforce`] without persisting what was applied (the caller
    /// saves it later).
    pub(super) fn enforce_in_memory(&mut self, cluster: &Cluster) -> Result<()> {
        self.last = None;
        // Only this node's endpoints, reusing what the last snapshot
        // compiled for rules that did not change.
        let local = &self.local;
        self.proxy
            .update_local(cluster, |ep| local.contains(&ep.full_name()));
        let outcome = kernel::apply(
            &mut self.dp,
            cluster,
            &mut self.applied,
            &self.local,
            &self.limits,
        );
        let n = outcome.changes;
        self.metrics.map_changes.inc_by(n as u64);
        self.metrics.policy_applied.inc();
        self.metrics.record_apply(
            outcome.failed.len(),
            outcome.ipcache_refused,
            outcome.errors.len(),
            outcome.policy_entries,
            outcome.ipcache_entries,
        );
        // Learning in place plans against the last cluster's ipcache: only
        // when it is what the kernel holds (nothing left out).
        if outcome.ipcache_refused == 0 && outcome.errors.is_empty() {
            self.last = Some(cluster.clone());
        }
        self.lingering.forget_rewritten(cluster);
        self.mark_lingering_in(cluster);
        if outcome.is_clean() {
            tracing::info!(changes = n, "policy in force");
        } else {
            tracing::error!(
                changes = n,
                endpoints_failed_closed = outcome.failed.len(),
                learned_addresses_left_out = outcome.ipcache_refused,
                errors = outcome.errors.len(),
                "policy in force except what did not fit (failed closed)"
            );
        }
        self.outcome = outcome;
        self.outcome_gen += 1;
        Ok(())
    }

    /// Marks learned addresses past their TTL that open flows still use so
    /// the kernel admits no new flow to them, and unmarks addresses learned
    /// again (against the last cluster enforced).
    pub(super) fn mark_lingering(&mut self) {
        if let Some(cluster) = self.last.take() {
            self.mark_lingering_in(&cluster);
            self.last = Some(cluster);
        }
    }

    /// [`Self::mark_lingering`] against `cluster` (what was just applied).
    pub(super) fn mark_lingering_in(&mut self, cluster: &Cluster) {
        let past_ttl = self.fqdn.lingering();
        self.lingering
            .mark(&mut self.dp, cluster, past_ttl, &self.applied.ipcache);
    }

    /// After an answer for `update` was learned: its addresses that
    /// lingered admit new flows again.
    pub(super) fn relearned(&mut self, update: &proxy::LearnedNames) {
        let again: Vec<IpAddr> = update
            .ips
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| self.lingering.contains(ip))
            .collect();
        if again.is_empty() {
            return;
        }
        let still = self.fqdn.lingering();
        let ips = again.into_iter().filter(|ip| !still.contains(ip)).collect();
        if let Some(cluster) = self.last.take() {
            self.lingering.unmark(&mut self.dp, &cluster, ips);
            self.last = Some(cluster);
        }
    }

    /// What `status` shows of the enforcer.
    pub(super) fn status_view(&self) -> StatusView<'_> {
        StatusView {
            endpoints: self.attached.len(),
            learned_addresses: self.fqdn.len(),
            failed: &self.outcome.failed,
            failed_policies: &self.outcome.failed_policies,
            apply_errors: &self.outcome.errors,
            ipcache_left_out: self.outcome.ipcache_refused,
            generation: self.outcome_gen,
            learn_refused: self.guard.refused(),
            node_addresses: self.node_addrs.iter().copied().collect(),
        }
    }
}
