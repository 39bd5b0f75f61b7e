//! The enforcer: keeps the node's policy in the incremental engine and
//! hands what each change did to the proxies and the kernel maps.

use super::args::AgentArgs;
use super::capacity::MapLimits;
use super::engine_input::{engine_topology, hosts_of, policies_by_key, with_node_addresses};
use super::fqdn::FqdnStore;
use super::inputs::{InputSnapshot, LocalPods, Policies};
use super::kernel::{self, ApplyOutcome, KernelState};
use super::learn_guard::{LearnGuard, LearnLimits};
use super::lingering::Lingering;
use super::persist::Persister;
use super::status::StatusView;
use crate::metrics::AgentMetrics;
use anyhow::Result;
use policy_model::incremental::{
    Change, Delta, EndpointChange, Hosts, IncrementalCluster, IpcacheChange,
};
use proxy::policy::IpcacheLookup;
use redirect_ebpf::Datapath;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The enforcer, shared by the daemon's loop and the DNS thread (which
/// takes it when free to learn an address in place).
pub(super) type SharedEnforcer = Arc<Mutex<Option<Enforcer>>>;

/// The enforcer's lock; a panic while it was held leaves it usable (the
/// kernel writer compares what it plans with what it recorded, and an
/// endpoint whose write failed is planned whole again).
pub(super) fn lock_enforcer(
    m: &Mutex<Option<Enforcer>>,
) -> std::sync::MutexGuard<'_, Option<Enforcer>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything the agent enforces from: the datapath, the inputs (topology,
/// policies, learned names) and what it last wrote.
pub(super) struct Enforcer {
    pub(super) dp: Datapath,
    /// The node's policy, resolved and kept up to date change by change.
    pub(super) engine: IncrementalCluster,
    /// The hosts of the inputs (the node's addresses from the kernel are
    /// added to them for the engine).
    pub(super) input_hosts: Hosts,
    /// The policy objects in force (for `status`).
    pub(super) set: Policies,
    pub(super) fqdn: FqdnStore,
    /// What the kernel maps hold (shared with the state-file writer).
    pub(super) applied: Arc<KernelState>,
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
    /// The proxies' copy of the ipcache, rebuilt when the ipcache changes.
    pub(super) proxy_ipcache: Arc<IpcacheLookup>,
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
    /// What the flows' context must look at again (written with the
    /// kernel; taken by the loop).
    pub(super) flow_dirty: FlowDirty,
    /// `--policy-audit-mode`: every endpoint audited.
    pub(super) audit_all: bool,
    /// The endpoint flags last written, by pod (`ns/pod`).
    pub(super) endpoint_flags: BTreeMap<String, u16>,
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
        let applied = Arc::new(if maps_pinned {
            KernelState::load(&args.state_dir)
        } else {
            KernelState::default()
        });
        let fqdn = FqdnStore::load(&args.state_dir.join("fqdn.json"));
        let node_addrs = match super::node_addrs::discover() {
            Ok(a) => {
                tracing::info!(addresses = ?a, "node addresses (host)");
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the node's addresses failed");
                BTreeSet::new()
            }
        };
        let started = Instant::now();
        let input_hosts = hosts_of(&first.topology);
        let engine = IncrementalCluster::new(
            engine_topology(&first, &node_addrs),
            policies_by_key(&first),
            fqdn.cache(),
            &args.node_name,
        );
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            endpoints = engine.state().endpoints.len(),
            identities = engine.state().identities.len(),
            ipcache = engine.state().ipcache.len(),
            "policy engine built"
        );
        let mut guard = LearnGuard::new(
            LearnLimits {
                per_name: args.fqdn_max_ips_per_name,
                per_endpoint: args.fqdn_max_ips_per_endpoint,
                node: args.fqdn_max_ips.unwrap_or(limits.ipcache / 2),
            },
            args.pod_cidrs.clone(),
        );
        guard.set_node_addresses(node_addrs.clone());
        Ok(Enforcer {
            dp,
            engine,
            input_hosts,
            set: first.policies,
            fqdn,
            applied,
            proxy,
            metrics,
            state_dir: args.state_dir.clone(),
            local: first.local_pods,
            attached: BTreeMap::new(),
            expired: false,
            proxy_ipcache: Arc::new(IpcacheLookup::default()),
            persist: Persister::start()?,
            persist_due: None,
            lingering: Lingering::default(),
            limits,
            outcome: ApplyOutcome::default(),
            outcome_gen: 0,
            flow_dirty: FlowDirty {
                all: true,
                pods: true,
                identities: true,
                touched: BTreeSet::new(),
            },
            audit_all: args.policy_audit_mode,
            endpoint_flags: BTreeMap::new(),
            guard,
            node_addrs,
        })
    }

    /// Builds the engine again from `snapshot` (what it takes only at
    /// build changed), keeping its numbers, and writes the whole state.
    pub(super) fn rebuild(&mut self, snapshot: &InputSnapshot) -> Result<()> {
        let numbering = self.engine.numbering().clone();
        let node = self.engine.node().to_string();
        self.engine = IncrementalCluster::with_numbering(
            engine_topology(snapshot, &self.node_addrs),
            policies_by_key(snapshot),
            self.fqdn.cache(),
            &node,
            numbering,
        );
        self.input_hosts = hosts_of(&snapshot.topology);
        self.write_all()
    }

    /// Writes the engine's whole state: endpoints, proxies, kernel maps
    /// (every endpoint compared with what the maps hold).
    pub(super) fn write_all(&mut self) -> Result<()> {
        self.flow_dirty.pods = true;
        self.flow_dirty.identities = true;
        self.note_endpoints();
        let attached = self.attach_endpoints();
        self.copy_ipcache_for_proxies();
        self.update_proxy(None);
        self.write_kernel(None, None);
        attached
    }

    /// Feeds `changes` to the engine and writes what they did: the proxies
    /// first (so a newly redirected flow finds its rules), then the kernel
    /// maps, comparing only the endpoints the changes touched. Returns what
    /// changed.
    pub(super) fn realize(&mut self, changes: Vec<Change>) -> Result<Realized> {
        let mut r = Realized::default();
        let started = Instant::now();
        for c in changes {
            r.pods_changed |= matches!(
                c,
                Change::PodUpsert(_)
                    | Change::PodDelete { .. }
                    | Change::NamespaceUpsert(_)
                    | Change::NamespaceDelete(_)
            );
            // A pod's addresses before and after, for the learn guard.
            let pod = match &c {
                Change::PodUpsert(p) => Some(p.full_name()),
                Change::PodDelete { namespace, name } => Some(format!("{namespace}/{name}")),
                _ => None,
            };
            let addresses = |e: &IncrementalCluster, name: &str| {
                e.pod(name).map(|p| p.addresses()).unwrap_or_default()
            };
            let before = pod.as_deref().map(|n| addresses(&self.engine, n));
            let d = self.engine.apply(c);
            self.flow_dirty.identities |=
                !d.identities_added.is_empty() || !d.identities_removed.is_empty();
            if let (Some(name), Some(before)) = (pod, before) {
                let after = addresses(&self.engine, &name);
                if before != after {
                    self.guard.update_endpoint(&name, &before, &after);
                }
            }
            r.add(&d);
        }
        r.engine_us = started.elapsed().as_micros() as u64;
        self.flow_dirty.pods |= r.pods_changed;
        if r.pods_changed && !r.endpoints_changed && self.refresh_endpoint_flags() {
            // A namespace's audit annotation changed: the proxies judge
            // its pods' requests in audit mode too.
            self.update_proxy(Some(&BTreeSet::new()));
        }
        if r.is_empty() {
            return Ok(r);
        }
        let started = Instant::now();
        let attached = if r.endpoints_changed {
            self.attach_endpoints()
        } else {
            Ok(())
        };
        if r.ipcache_changed {
            self.copy_ipcache_for_proxies();
        }
        self.update_proxy(Some(&r.touched));
        r.proxy_us = started.elapsed().as_micros() as u64;
        let started = Instant::now();
        // Endpoints that failed closed are planned again (they may fit now).
        let mut touched = r.touched.clone();
        touched.extend(self.outcome.failed_ids.iter().copied());
        // The ipcache by the prefixes the changes touched while the maps
        // hold every other entry (nothing left out, no write failed).
        let ipcache_complete = self.outcome.ipcache_refused == 0 && self.outcome.errors.is_empty();
        let prefixes = ipcache_complete.then_some(&r.prefixes);
        self.write_kernel(Some(&touched), prefixes);
        r.kernel_us = started.elapsed().as_micros() as u64;
        attached.map(|()| r)
    }

    /// Tells the learn guard whose addresses are the cluster's (every
    /// pod's, local or not).
    pub(super) fn note_endpoints(&mut self) {
        let pods: Vec<(String, Vec<IpAddr>)> = self
            .engine
            .pods()
            .map(|p| (p.full_name(), p.addresses()))
            .collect();
        self.guard
            .set_endpoints(pods.iter().map(|(n, ips)| (n.clone(), ips.as_slice())));
    }

    /// Re-reads the node's addresses from the kernel; `true` when they
    /// changed (the caller hands them to the engine with
    /// [`Self::node_hosts`]). A failed read keeps the last set.
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

    /// The hosts for the engine: the inputs' with the node's addresses.
    pub(super) fn node_hosts(&self) -> Hosts {
        with_node_addresses(self.input_hosts.clone(), &self.node_addrs)
    }

    /// Whether `ep` is one of this node's pods.
    pub(super) fn is_local(&self, ep: &policy_model::resolve::Endpoint) -> bool {
        self.local.contains(&ep.full_name())
    }

    /// Queues what was applied to the state writer (with the learned
    /// names when they are due).
    ///
    /// `hash`: the policy files' hash (`applied.hash`), written after
    /// `applied.json`; `wait`: return only once both are on disk (startup:
    /// before the agent says it is ready).
    pub(super) fn persist_applied(&mut self, hash: Option<u64>, wait: bool) {
        // Learned names still due go with this write (applied is written
        // here anyway).
        if self.persist_due.take().is_some() {
            self.persist.fqdn(&self.fqdn);
        }
        self.persist.applied(&self.applied, &self.state_dir);
        if let Some(h) = hash {
            self.persist.hash(h, &self.state_dir);
        }
        if wait {
            self.persist.flush();
        }
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

    /// Copies the engine's ipcache into the lookup the proxies' snapshots
    /// share.
    fn copy_ipcache_for_proxies(&mut self) {
        self.proxy_ipcache = Arc::new(IpcacheLookup::new(
            self.engine.state().ipcache.iter().map(|(p, i)| (*p, *i)),
        ));
    }

    /// Gives the proxies a new snapshot: every local endpoint, rebuilt for
    /// the endpoints of `touched` (`None`: all; the others keep their
    /// entries), with the current ipcache copy.
    fn update_proxy(&mut self, touched: Option<&BTreeSet<u16>>) {
        let local = &self.local;
        let endpoints = self
            .engine
            .state()
            .endpoints
            .values()
            .filter(|(e, _)| local.contains(&e.full_name()))
            .map(|(e, p)| (e, Cow::Borrowed(p)));
        let previous = self.proxy.snapshot();
        let audited = self.audited_namespaces();
        let snapshot = proxy::ProxyPolicy::assemble(
            endpoints,
            self.proxy_ipcache.clone(),
            Some(&previous),
            |ep| touched.is_some_and(|t| !t.contains(&ep.id)),
            // The kernel's endpoint flag and the proxies agree by one rule.
            |ep| self.endpoint_flags_of(&audited, &ep.namespace) != 0,
        );
        self.proxy.update(snapshot);
    }

    /// Writes the engine's state to the kernel maps, comparing the
    /// endpoints of `touched` and the ipcache `prefixes` (`None`: all)
    /// with what the maps hold.
    fn write_kernel(
        &mut self,
        touched: Option<&BTreeSet<u16>>,
        prefixes: Option<&BTreeSet<ipnet::IpNet>>,
    ) {
        match touched {
            Some(t) => self.flow_dirty.touched.extend(t.iter().copied()),
            None => self.flow_dirty.all = true,
        }
        let outcome = kernel::apply(
            &mut self.dp,
            &self.engine,
            Arc::make_mut(&mut self.applied),
            &self.local,
            &self.limits,
            (touched, prefixes),
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
        self.lingering.forget_rewritten(&self.engine);
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
        self.mark_lingering();
    }

    /// Marks learned addresses past their TTL that open flows still use so
    /// the kernel admits no new flow to them, and unmarks addresses learned
    /// again.
    pub(super) fn mark_lingering(&mut self) {
        let past_ttl = self.fqdn.lingering();
        self.lingering
            .mark(&mut self.dp, &self.engine, past_ttl, &self.applied.ipcache);
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
        self.lingering.unmark(&mut self.dp, &self.engine, ips);
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

/// What changed since the flows' context was last refreshed.
#[derive(Debug, Default)]
pub(super) struct FlowDirty {
    /// Every endpoint.
    pub(super) all: bool,
    /// Pods or namespaces (names, labels, identities).
    pub(super) pods: bool,
    /// Identities added or removed (their labels name flows' peers).
    pub(super) identities: bool,
    pub(super) touched: BTreeSet<u16>,
}

impl FlowDirty {
    pub(super) fn is_clean(&self) -> bool {
        !self.all && !self.pods && !self.identities && self.touched.is_empty()
    }
}

/// What a batch of changes did, summed over their deltas.
#[derive(Debug, Default, Clone)]
pub(super) struct Realized {
    /// Local endpoints whose policy, L7 rules or record changed.
    pub(super) touched: BTreeSet<u16>,
    pub(super) endpoints_changed: bool,
    pub(super) ipcache_changed: bool,
    /// Pods or namespaces changed (names, learn guard).
    pub(super) pods_changed: bool,
    /// Policy map changes and ipcache writes the engine asked for.
    pub(super) map_changes: usize,
    pub(super) ipcache_changes: usize,
    /// The ipcache prefixes the changes rewrote.
    pub(super) prefixes: BTreeSet<ipnet::IpNet>,
    /// Time in the engine; then the learn guard, endpoints and proxy
    /// snapshot; then the kernel plan and writes (µs, for the debug log).
    pub(super) engine_us: u64,
    pub(super) proxy_us: u64,
    pub(super) kernel_us: u64,
}

impl Realized {
    fn add(&mut self, d: &Delta) {
        for e in &d.endpoints {
            self.endpoints_changed = true;
            match e {
                EndpointChange::Upsert(ep) | EndpointChange::Removed(ep) => {
                    self.touched.insert(ep.id);
                }
            }
        }
        self.touched.extend(d.policy.keys().copied());
        self.touched.extend(d.l7.keys().copied());
        self.map_changes += d.policy.values().map(Vec::len).sum::<usize>();
        self.ipcache_changes += d.ipcache.len();
        self.prefixes.extend(d.ipcache.iter().map(|c| match c {
            IpcacheChange::Upsert(p, _) | IpcacheChange::Delete(p) => *p,
        }));
        self.ipcache_changed |= !d.ipcache.is_empty();
    }

    /// Whether nothing is to be written.
    pub(super) fn is_empty(&self) -> bool {
        self.touched.is_empty() && !self.endpoints_changed && !self.ipcache_changed
    }
}
