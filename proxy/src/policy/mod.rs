//! Which L7 rules apply to a redirected connection: a pure function of a
//! policy snapshot and the connection's addresses.
//!
//! The kernel redirects a TCP flow when the source endpoint's egress entry
//! or the local destination's ingress entry carries a redirect. The proxy
//! repeats the kernel's own lookups ([`MapState::lookup`]) on the same
//! resolved policy to find each side's rule set, then allows a request only
//! when every side that applies allows it. Anything it cannot account for
//! (a flow the kernel should not have redirected, a redirect to another
//! parser, a rule set that failed to compile) denies: the proxy fails
//! closed like the datapath.
//!
//! - [`side`]: one side of a flow, its compiled rules and the refusal,
//!   for every parser (each protocol's `judge.rs` gives the verdict);
//! - `lookup.rs`: the kernel's lookup of a flow's local sides;
//! - [`ProxyPolicy`]: the snapshot; [`PolicyHandle`]: the current one.
//!
//! [`MapState::lookup`]: policy_model::MapState::lookup

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use policy_model::l7::HttpRuleSet;
use policy_model::resolve::{Endpoint, L7Policy};
use policy_model::{Cluster, EndpointPolicy, L7Parser, MapKey, NumericIdentity};

mod ipcache;
mod lookup;
pub mod side;

pub use ipcache::IpcacheLookup;
#[cfg(test)]
mod tests;

use side::CompiledRules;
pub use side::{FlowRules, Refusal, RuleSet, Side, SideFault, SideName, SidePolicy};

/// One endpoint's precomputed policy.
#[derive(Debug)]
pub(crate) struct EndpointEntry {
    /// `namespace/name`.
    pub(crate) name: String,
    pub(crate) policy: EndpointPolicy,
    /// The compiled rules of every redirected key, for its parser.
    rules: BTreeMap<MapKey, CompiledRules>,
}

/// Memoized HTTP rules of TLS-scoped ports per (endpoint, key, SNI).
type TlsMemo = std::sync::Mutex<HashMap<(usize, MapKey, String), Arc<SidePolicy<HttpRuleSet>>>>;

/// A snapshot of the node's policy as the proxy needs it: every local
/// endpoint's map state and compiled L7 rules, and the ipcache.
#[derive(Debug)]
pub struct ProxyPolicy {
    /// Every address's identity, as the kernel's ipcache has it.
    ipcache: Arc<IpcacheLookup>,
    /// Shared with the snapshots before and after it while unchanged.
    pub(crate) endpoints: Vec<Arc<EndpointEntry>>,
    by_ip: HashMap<IpAddr, usize>,
    /// HTTP rules of TLS-scoped ports per (endpoint, key, SNI), built on
    /// first use (see `tls/plan.rs`).
    pub(crate) tls_memo: TlsMemo,
    /// Per endpoint (as `endpoints`): in audit mode (its namespace's
    /// `policy.cilium.io/audit-mode` or the node's `--policy-audit-mode`):
    /// what its policy denies passes, reported as AUDIT.
    pub(crate) audited: Vec<bool>,
}

impl ProxyPolicy {
    /// Resolves every endpoint of `cluster` and compiles its L7 rule sets
    /// once. A rule set that does not compile is kept as deny-all and
    /// logged.
    pub fn new(cluster: &Cluster) -> ProxyPolicy {
        ProxyPolicy::build(cluster, |_| true, None)
    }

    /// Resolves the endpoints of `cluster` that `is_local` says are this
    /// node's (a remote pod's ingress is judged on its own node; here its
    /// address is only an identity) and compiles their L7 rule sets. A rule
    /// set equal to one `previous` compiled for the same endpoint and key,
    /// or to one compiled for another endpoint in this build, is shared,
    /// not compiled again: a change recompiles only what it changed.
    pub fn build(
        cluster: &Cluster,
        is_local: impl Fn(&Endpoint) -> bool,
        previous: Option<&ProxyPolicy>,
    ) -> ProxyPolicy {
        let endpoints = cluster
            .endpoints()
            .iter()
            .filter(|ep| is_local(ep))
            .map(|ep| (ep, Cow::Owned(cluster.endpoint_policy(ep))));
        let ipcache = IpcacheLookup::new(cluster.ipcache().iter().copied());
        ProxyPolicy::assemble(endpoints, Arc::new(ipcache), previous, |_| false, |_| false)
    }

    /// Puts the endpoints `audited` names (`namespace/name`) into audit
    /// mode and every other one out of it.
    pub fn set_audited(&mut self, audited: impl Fn(&str) -> bool) {
        self.audited = self.endpoints.iter().map(|e| audited(&e.name)).collect();
    }

    /// A snapshot of these local endpoints (each with its resolved policy)
    /// and this ipcache. An endpoint `unchanged` says did not change since
    /// `previous` keeps `previous`'s entry as it is (nothing cloned or
    /// compiled); any other reuses the rule sets `previous` compiled for
    /// the same endpoint and key, or one this build compiled for another
    /// endpoint, when equal: a change recompiles only what it changed.
    /// Endpoints `audited` says are in audit mode pass what their policy
    /// denies, reported as AUDIT.
    pub fn assemble<'a>(
        local: impl IntoIterator<Item = (&'a Endpoint, Cow<'a, EndpointPolicy>)>,
        ipcache: Arc<IpcacheLookup>,
        previous: Option<&ProxyPolicy>,
        unchanged: impl Fn(&Endpoint) -> bool,
        audited: impl Fn(&Endpoint) -> bool,
    ) -> ProxyPolicy {
        let before: HashMap<&str, &Arc<EndpointEntry>> = previous
            .map(|p| p.endpoints.iter().map(|e| (e.name.as_str(), e)).collect())
            .unwrap_or_default();
        let mut endpoints = Vec::new();
        let mut audit_flags = Vec::new();
        let mut by_ip = HashMap::new();
        let mut compiled_here = CompileCache::default();
        for (ep, policy) in local {
            let name = ep.full_name();
            let before = before.get(name.as_str()).copied();
            let entry = match before {
                Some(b) if unchanged(ep) => b.clone(),
                _ => Arc::new(compile_entry(
                    name,
                    slim(policy),
                    before,
                    &mut compiled_here,
                )),
            };
            let index = endpoints.len();
            for ip in &ep.ips {
                by_ip.insert(*ip, index);
            }
            endpoints.push(entry);
            audit_flags.push(audited(ep));
        }
        ProxyPolicy {
            ipcache,
            endpoints,
            by_ip,
            tls_memo: Default::default(),
            audited: audit_flags,
        }
    }

    /// A snapshot with no endpoints: every connection is denied.
    pub fn empty() -> ProxyPolicy {
        ProxyPolicy {
            ipcache: Default::default(),
            endpoints: Vec::new(),
            by_ip: HashMap::new(),
            tls_memo: Default::default(),
            audited: Vec::new(),
        }
    }

    fn endpoint(&self, ip: IpAddr) -> Option<&EndpointEntry> {
        self.by_ip.get(&ip).map(|i| &*self.endpoints[*i])
    }

    /// Whether `ip` is one of this snapshot's local endpoints.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip.to_canonical())
    }

    /// Whether `ip` is a pod of the cluster: a local endpoint, or an
    /// address the ipcache gives a pod's label identity (a pod on another
    /// node). Upstream connections from the client's address go only to
    /// these (see [`crate::upstream::bind_client_address`]).
    pub fn is_pod(&self, ip: IpAddr) -> bool {
        if self.is_local(ip) {
            return true;
        }
        let id = self.ipcache.identity_of(ip.to_canonical()).0;
        (NumericIdentity::FIRST_ENDPOINT..NumericIdentity::FIRST_LOCAL).contains(&id)
    }

    fn identity(&self, ip: IpAddr) -> NumericIdentity {
        match self.endpoint(ip) {
            Some(e) => e.policy.identity,
            None => self.ipcache.identity_of(ip),
        }
    }

    /// Whose share a DNS or Kafka connection (or datagram) is counted in
    /// ([`crate::budget::SourceKey::of`]): what the datapath says of the
    /// source address.
    pub fn budget_key(&self, ip: IpAddr) -> crate::budget::SourceKey {
        let ip = ip.to_canonical();
        crate::budget::SourceKey::of(ip, self.identity(ip))
    }

    /// Whose connection it is, for the connection limits: a local
    /// endpoint (by name, so all its addresses share one budget), else the
    /// remote address (IPv6 by its /64).
    pub fn source_key(&self, ip: IpAddr) -> crate::limits::SourceKey {
        let ip = ip.to_canonical();
        match self.endpoint(ip) {
            Some(e) => crate::limits::SourceKey::Endpoint(e.name.as_str().into()),
            None => crate::limits::SourceKey::remote(ip),
        }
    }
}

/// What the proxy keeps of an endpoint's resolved policy: its identity,
/// map state and L7 rules (the lookups repeat the kernel's), not why each
/// entry is there (provenance, enforcing policies, warnings: for
/// `explain` and the agent's log, and most of its size).
fn slim(policy: Cow<'_, EndpointPolicy>) -> EndpointPolicy {
    match policy {
        Cow::Owned(mut p) => {
            p.provenance.clear();
            p.enforcing.clear();
            p.audit_enforcing.clear();
            p.warnings.clear();
            p
        }
        Cow::Borrowed(p) => EndpointPolicy {
            endpoint_id: p.endpoint_id,
            identity: p.identity,
            ingress_enforced: p.ingress_enforced,
            egress_enforced: p.egress_enforced,
            map: p.map.clone(),
            l7: p.l7.clone(),
            provenance: Default::default(),
            enforcing: Default::default(),
            audit_enforcing: Default::default(),
            warnings: Vec::new(),
        },
    }
}

/// One endpoint's entry: its policy and its compiled rule sets (shared
/// with `before`, the same endpoint's last entry, or with another endpoint
/// of this build, when equal).
fn compile_entry(
    name: String,
    policy: EndpointPolicy,
    before: Option<&Arc<EndpointEntry>>,
    compiled_here: &mut CompileCache,
) -> EndpointEntry {
    let mut rules = BTreeMap::new();
    for (key, l7) in &policy.l7 {
        let reused = before
            .filter(|b| b.policy.l7.get(key) == Some(l7))
            .and_then(|b| b.rules.get(key).cloned())
            .or_else(|| compiled_here.get(l7));
        let compiled = reused.unwrap_or_else(|| {
            let compiled = CompiledRules::compile(l7);
            log_compile_error(&name, key, l7.parser, &compiled);
            compiled
        });
        compiled_here.insert(l7, &compiled);
        rules.insert(*key, compiled);
    }
    EndpointEntry {
        name,
        policy,
        rules,
    }
}

/// What of an L7 policy is cheap to compare: parser, allow-all, how many
/// rule lists and TLS entries.
type Shape = (L7Parser, bool, usize, usize);

/// L7 rule sets compiled during one build, by content: endpoints with the
/// same rules on a port (replicas of one deployment) share one compile.
#[derive(Default)]
struct CompileCache {
    /// Bucketed by what is cheap to compare; searched by equality.
    by_shape: HashMap<Shape, Vec<(L7Policy, CompiledRules)>>,
}

impl CompileCache {
    fn shape(l7: &L7Policy) -> Shape {
        (l7.parser, l7.allow_all, l7.rules.len(), l7.tls.len())
    }

    fn get(&self, l7: &L7Policy) -> Option<CompiledRules> {
        self.by_shape
            .get(&Self::shape(l7))?
            .iter()
            .find(|(seen, _)| seen == l7)
            .map(|(_, compiled)| compiled.clone())
    }

    fn insert(&mut self, l7: &L7Policy, compiled: &CompiledRules) {
        let bucket = self.by_shape.entry(Self::shape(l7)).or_default();
        if !bucket.iter().any(|(seen, _)| seen == l7) {
            bucket.push((l7.clone(), compiled.clone()));
        }
    }
}

/// Logs a rule set that did not compile (it denies everything).
fn log_compile_error(endpoint: &str, key: &MapKey, parser: L7Parser, compiled: &CompiledRules) {
    let Some(why) = compiled.compile_error() else {
        return;
    };
    match parser {
        L7Parser::Http => tracing::error!(
            %endpoint, key = ?key, error = %why,
            "HTTP rules do not compile; every request on this key is denied"
        ),
        L7Parser::Dns => tracing::error!(
            %endpoint, key = ?key, error = %why,
            "DNS rules do not compile; every query on this key is denied"
        ),
        L7Parser::Kafka => tracing::error!(
            %endpoint, key = ?key, error = %why,
            "Kafka rules do not compile; every request on this key is denied"
        ),
    }
}

/// The current policy snapshot, swapped by the agent on every policy
/// change and read by the proxy once per request (so a change applies to
/// the next request of an existing connection). Cloning shares the
/// snapshot.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<ProxyPolicy>>,
    /// Bumped on every [`update`](Self::update): open connections re-check
    /// their flow (see [`PolicyHandle::changes`]).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl PolicyHandle {
    /// A handle starting at `policy`.
    pub fn new(policy: ProxyPolicy) -> PolicyHandle {
        PolicyHandle {
            current: Arc::new(ArcSwap::from_pointee(policy)),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// A handle that denies everything until the first [`update`](Self::update).
    pub fn deny_all() -> PolicyHandle {
        PolicyHandle::new(ProxyPolicy::empty())
    }

    /// Replaces the snapshot; requests judged from now on see `policy`.
    pub fn update(&self, policy: ProxyPolicy) {
        self.current.store(Arc::new(policy));
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes when the snapshot is replaced.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Resolves with `check`'s reason once a snapshot installed after this
    /// call makes `check` say the connection may not continue; never
    /// otherwise. Open connections race their serving against it.
    pub async fn revoked<F>(&self, check: F) -> String
    where
        F: Fn(&ProxyPolicy) -> Option<String>,
    {
        let mut changes = self.changes();
        loop {
            if changes.changed().await.is_err() {
                // Every handle is gone: no change can come.
                std::future::pending::<()>().await;
            }
            if let Some(why) = check(&self.snapshot()) {
                return why;
            }
        }
    }

    /// Builds a snapshot from `cluster` and swaps it in.
    pub fn update_from_cluster(&self, cluster: &Cluster) {
        self.update(ProxyPolicy::new(cluster));
    }

    /// Builds a snapshot of `cluster`'s local endpoints (`is_local`),
    /// reusing what the current one compiled (see [`ProxyPolicy::build`]),
    /// and swaps it in.
    pub fn update_local(&self, cluster: &Cluster, is_local: impl Fn(&Endpoint) -> bool) {
        let previous = self.snapshot();
        self.update(ProxyPolicy::build(cluster, is_local, Some(&previous)));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ProxyPolicy> {
        self.current.load_full()
    }
}
