//! `portcullis agent`: owns the kernel maps. Resolves the policy files with
//! policy-model, applies the result to the datapath as deltas, re-resolves
//! when a file changes (keeping the previous policy in force when the new
//! one is invalid), and streams flow events to `portcullis observe`.

use crate::lab;

mod capacity;
mod fdlimit;
mod fqdn;
mod learn_guard;
mod node_addrs;

use anyhow::{Context, Result};
use policy_model::{
    Cluster, Direction, L7Parser, MapChange, MapKey, MapState, MapValue, MapVerdict, PolicySet,
    Topology,
};
use redirect_ebpf::{Datapath, EndpointInfo, FlowEvent, PolicyChange, PolicyKey, PolicyValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Agent options.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Topology file (pods, node, world); file mode.
    #[arg(long, required_unless_present = "kubernetes")]
    pub topology: Option<PathBuf>,
    /// Policy file or directory (repeatable); watched for changes; file mode.
    #[arg(long = "policy", required_unless_present = "kubernetes")]
    pub policies: Vec<PathBuf>,
    /// Take pods, namespaces, nodes and policies from the Kubernetes API
    /// (list+watch) instead of files.
    #[arg(long, conflicts_with_all = ["topology", "policies"])]
    pub kubernetes: bool,
    /// kubeconfig file (default: in-cluster service account, or $KUBECONFIG).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (pods with this spec.nodeName are enforced).
    #[arg(long, env = "NODE_NAME", default_value = "lab-node")]
    pub node_name: String,
    /// `cluster`: watch every pod (peers on other nodes keep their label
    /// identities); `this-node`: only this node's pods.
    #[arg(long, default_value = "cluster")]
    pub pod_scope: String,
    /// Network namespace to run in (the lab's node namespace).
    #[arg(long)]
    pub netns: Option<String>,
    /// bpffs directory for pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/portcullis")]
    pub pin_dir: PathBuf,
    /// Directory for the agent's state (applied maps, observe socket).
    #[arg(long, default_value = "/run/portcullis/agent")]
    pub state_dir: PathBuf,
    /// Uplink interface of the node (programs attached at its ingress).
    #[arg(long)]
    pub uplink: Option<String>,
    /// How often policy files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// DNS proxy: answer denied queries with NXDOMAIN instead of REFUSED.
    #[arg(long)]
    pub dns_nxdomain: bool,
    /// DNS proxy: the shortest time a learned address is kept, in seconds.
    #[arg(long, default_value_t = 0)]
    pub dns_min_ttl: u64,
    /// DNS proxy: how long an answer is held for its addresses to reach the
    /// kernel maps, in milliseconds (then it is released anyway, counted).
    #[arg(long, default_value_t = 100)]
    pub dns_hold_ms: u64,
    /// DNS proxy: most addresses kept per name.
    #[arg(long, default_value_t = 50)]
    pub dns_max_ips: usize,
    /// DNS proxy: UDP queries per second one source (a pod, or all world
    /// clients together) may send, and as many at once; more are dropped
    /// unanswered and counted (`UdpRatePerSource`). 0 = no limit.
    #[arg(long, default_value_t = 5000)]
    pub dns_udp_qps_per_source: u32,
    /// DNS proxy: threads of its own runtime. 1 (the default) keeps a
    /// query, its upstream answer and its reply on one thread: no
    /// cross-thread wake-ups per query.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub dns_threads: u16,
    /// Admin endpoint: `/metrics`, `/healthz`, `/readyz`. Loopback by
    /// default: only the node reaches it (pods and the world never do);
    /// `0.0.0.0:9876` exposes it to anything that may reach the node.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub admin_addr: std::net::SocketAddr,
    /// TLS secrets of `terminatingTLS`/`originatingTLS`, as
    /// `DIR/<namespace>/<name>/{tls.crt,tls.key,ca.crt}` (re-read when they
    /// change). Without it, ports with TLS contexts deny.
    #[arg(long)]
    pub tls_secrets_dir: Option<PathBuf>,
    /// Entries of the ipcache map (address/prefix -> identity), created
    /// with this size; a map already pinned keeps its size (the agent uses
    /// what the kernel reports). When full, learned DNS addresses are left
    /// out (not allowed), cluster entries never.
    #[arg(long, default_value_t = crate::daemon::capacity::DEFAULT_LIMITS.ipcache as u32)]
    pub ipcache_max_entries: u32,
    /// Entries of the node-wide policy map (all endpoints), created with
    /// this size (a pinned map keeps its size). An endpoint whose policy
    /// does not fit fails closed: all its traffic is denied, `status`
    /// shows it.
    #[arg(long, default_value_t = crate::daemon::capacity::DEFAULT_LIMITS.policy as u32)]
    pub policy_map_max_entries: u32,
    /// Most policy map entries one endpoint may hold (Cilium's default
    /// per-endpoint map size). An endpoint whose policy needs more fails
    /// closed: all its traffic is denied, `status` shows it.
    #[arg(long, default_value_t = crate::daemon::capacity::DEFAULT_LIMITS.policy_per_endpoint)]
    pub policy_max_entries_per_endpoint: usize,
    /// Learned DNS addresses one endpoint may hold under one name (Cilium's
    /// `--tofqdns-endpoint-max-ip-per-hostname`); more are not learned (not
    /// allowed) until some expire. Counted in `fqdn_learn_refused`.
    #[arg(long, default_value_t = 50)]
    pub fqdn_max_ips_per_name: usize,
    /// Learned DNS addresses one endpoint may hold in all; more are not
    /// learned (not allowed) until some expire.
    #[arg(long, default_value_t = 1000)]
    pub fqdn_max_ips_per_endpoint: usize,
    /// Learned (name, address) pairs on the node; more are not learned.
    /// Default: half the ipcache, so learning never crowds out pods and
    /// policy CIDRs.
    #[arg(long)]
    pub fqdn_max_ips: Option<usize>,
    /// Pod address ranges (repeatable): never learned from DNS answers.
    /// Every pod address the agent knows is refused anyway.
    #[arg(long = "pod-cidr")]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Open-file limit the agent raises itself to at start (soft and hard,
    /// capped by fs.nr_open).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_open_files: u64,
    /// Descriptors held back for the agent's own control work (reading
    /// policies, running `ip`, writing state) and let go just before it.
    #[arg(long, default_value_t = 64)]
    pub reserved_fds: usize,
}

/// Proxy port per L7 parser. The proxy listens on these; until it does,
/// redirected flows are dropped by the kernel (fail closed).
pub fn proxy_port(parser: L7Parser) -> u16 {
    match parser {
        L7Parser::Http => 15001,
        L7Parser::Dns => 15053,
        L7Parser::Kafka => 15092,
    }
}

/// The model's key and value as the kernel's: the one conversion point.
pub fn kernel_entry(
    endpoint_id: u16,
    key: &MapKey,
    value: Option<&MapValue>,
) -> Result<(PolicyKey, Option<PolicyValue>)> {
    let dir = match key.direction {
        Direction::Ingress => redirect_ebpf::Direction::Ingress,
        Direction::Egress => redirect_ebpf::Direction::Egress,
    };
    let k = PolicyKey::new(
        key.identity.0,
        endpoint_id,
        dir,
        key.port.protocol,
        key.port.port,
        key.port.prefix_len,
    )?;
    let v = value.map(|v| match (v.verdict, v.redirect) {
        (MapVerdict::Deny, _) => PolicyValue::deny(v.cookie),
        (MapVerdict::Allow, None) => PolicyValue::allow(v.cookie),
        (MapVerdict::Allow, Some(p)) => PolicyValue::redirect(proxy_port(p), v.cookie),
    });
    Ok((k, v))
}

/// What the agent last wrote to the kernel; persisted so a restarted
/// agent can compute deltas against the pinned maps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    policies: BTreeMap<u16, Vec<(MapKey, MapValue)>>,
    ipcache: Vec<(ipnet::IpNet, u32)>,
}

impl Applied {
    fn path(dir: &Path) -> PathBuf {
        dir.join("applied.json")
    }
    fn load(dir: &Path) -> Self {
        std::fs::read_to_string(Self::path(dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }
    fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("applied.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, Self::path(dir))?;
        Ok(())
    }
}

/// Writes the state files (`applied.json`, `fqdn.json`) on a thread of
/// its own, in the order asked, the newest of each kind winning: the DNS
/// learn path hands a copy over instead of serialising on the agent's
/// loop. [`Persister::flush`] waits until everything asked is written.
struct Persister {
    tx: std::sync::mpsc::Sender<Persist>,
}

enum Persist {
    Applied(Box<Applied>, PathBuf),
    Fqdn(Box<crate::daemon::fqdn::FqdnStore>),
    Flush(std::sync::mpsc::Sender<()>),
}

impl Persister {
    fn start() -> Result<Persister> {
        let (tx, rx) = std::sync::mpsc::channel::<Persist>();
        std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let (mut applied, mut fqdn, mut flushed) = (None, None, Vec::new());
                    for job in std::iter::once(first).chain(rx.try_iter()) {
                        match job {
                            Persist::Applied(a, dir) => applied = Some((a, dir)),
                            Persist::Fqdn(f) => fqdn = Some(f),
                            Persist::Flush(done) => flushed.push(done),
                        }
                    }
                    if let Some((a, dir)) = applied
                        && let Err(e) = a.save(&dir)
                    {
                        tracing::warn!(error = %e, "persisting the applied policy failed");
                    }
                    if let Some(f) = fqdn
                        && let Err(e) = f.save()
                    {
                        tracing::warn!(error = %e, "persisting learned names failed");
                    }
                    for done in flushed {
                        let _ = done.send(());
                    }
                }
            })
            .context("starting the state-file writer")?;
        Ok(Persister { tx })
    }

    fn applied(&self, applied: &Applied, dir: &Path) {
        let _ = self.tx.send(Persist::Applied(
            Box::new(applied.clone()),
            dir.to_path_buf(),
        ));
    }

    fn fqdn(&self, fqdn: &crate::daemon::fqdn::FqdnStore) {
        let _ = self.tx.send(Persist::Fqdn(Box::new(fqdn.for_saving())));
    }

    /// Waits until everything asked so far is on disk.
    fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Persist::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// What `portcullis status` shows: per-policy state and what is in force.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    pub mode: String,
    pub updated: String,
    pub endpoints: usize,
    pub learned_addresses: usize,
    pub policies: Vec<PolicyState>,
    /// The last rejected input, if the newest version could not be used.
    pub last_error: Option<String>,
    /// Endpoints whose policy could not be written whole: all their
    /// traffic is denied until it fits.
    #[serde(default)]
    pub endpoint_failures: Vec<EndpointFailure>,
    /// Map writes that failed outside an endpoint's policy.
    #[serde(default)]
    pub apply_errors: Vec<String>,
    /// Learned addresses left out of the full ipcache (not allowed).
    #[serde(default)]
    pub ipcache_left_out: usize,
    /// Learned-address refusals since start, by reason.
    #[serde(default)]
    pub learn_refused: BTreeMap<String, u64>,
    /// The last input read that failed for lack of resources (retried; the
    /// previous policy stays in force). Not an invalid policy.
    #[serde(default)]
    pub inputs_unreadable: Option<String>,
    /// Addresses the node owns, from the kernel: all `host` (identity 1),
    /// also when the topology or Node object does not list them.
    #[serde(default)]
    pub node_addresses: Vec<IpAddr>,
}

/// An endpoint whose policy is not in the kernel (fails closed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointFailure {
    pub endpoint: String,
    pub reason: String,
}

/// One policy object's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyState {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub valid: bool,
    pub reason: Option<String>,
    /// Whether it is in the kernel for every endpoint it selects.
    #[serde(default = "yes")]
    pub applied: bool,
    /// Endpoints it selects whose policy could not be written (they fail
    /// closed).
    #[serde(default)]
    pub not_applied_on: Vec<String>,
}

fn yes() -> bool {
    true
}

fn write_status(dir: &Path, st: &AgentStatus) {
    let tmp = dir.join("status.json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(tmp, dir.join("status.json"));
    }
}

/// `portcullis status`: the agent's view of its inputs.
pub fn print_status(state_dir: &Path, json: bool) -> Result<()> {
    let path = state_dir.join("status.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is the agent running?)", path.display()))?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let st: AgentStatus = serde_json::from_str(&text)?;
    println!(
        "mode: {}   updated: {}   endpoints: {}   learned addresses: {}",
        st.mode, st.updated, st.endpoints, st.learned_addresses
    );
    if let Some(e) = &st.last_error {
        println!(
            "last rejected input (previous policy stays in force):\n  {}",
            e.replace('\n', "\n  ")
        );
    }
    if let Some(e) = &st.inputs_unreadable {
        println!("inputs unreadable (retrying; previous policy stays in force): {e}");
    }
    for f in &st.endpoint_failures {
        println!("FAILED CLOSED endpoint {}: {}", f.endpoint, f.reason);
    }
    for e in &st.apply_errors {
        println!("APPLY ERROR {e}");
    }
    if st.ipcache_left_out > 0 {
        println!(
            "ipcache full: {} learned addresses left out (not allowed)",
            st.ipcache_left_out
        );
    }
    for (reason, n) in &st.learn_refused {
        println!("learned addresses refused ({reason}): {n}");
    }
    for p in &st.policies {
        let name = match &p.namespace {
            Some(ns) => format!("{}/{}", ns, p.name),
            None => p.name.clone(),
        };
        let (state, why) = if !p.valid {
            ("INVALID", p.reason.clone())
        } else if !p.applied {
            (
                "FAILED",
                Some(format!(
                    "not applied on {} (failed closed)",
                    p.not_applied_on.join(", ")
                )),
            )
        } else {
            ("valid", p.reason.clone())
        };
        println!(
            "{:<8} {:<32} {}{}",
            state,
            name,
            p.kind,
            why.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Names for flow lines: address -> `ns/pod`.
struct Names {
    by_ip: BTreeMap<IpAddr, String>,
}

impl Names {
    fn of(cluster: &Cluster) -> Self {
        Names {
            by_ip: cluster
                .endpoints()
                .iter()
                .flat_map(|e| e.ips.iter().map(move |ip| (*ip, e.full_name())))
                .collect(),
        }
    }
}

/// Where the agent's inputs come from.
enum Inputs {
    /// Topology and policy files, re-read when they change.
    Files {
        topology: PathBuf,
        policies: Vec<PathBuf>,
        stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    },
    /// The Kubernetes API, through a watcher's snapshots.
    Kubernetes {
        /// Kept alive: dropping it stops the watches.
        _watcher: k8s_watch::Watcher,
        rx: tokio::sync::watch::Receiver<Option<Arc<k8s_watch::Snapshot>>>,
    },
}

/// Topology, policies, this node's pods, and (file mode) a content hash.
type InputState = (Topology, PolicySet, Option<BTreeSet<String>>, Option<u64>);

fn states_of(set: &PolicySet) -> Vec<PolicyState> {
    set.policies
        .iter()
        .map(|p| PolicyState {
            kind: p.origin.kind.to_string(),
            namespace: p.origin.namespace.clone(),
            name: p.origin.name.clone(),
            valid: true,
            reason: None,
            applied: true,
            not_applied_on: Vec::new(),
        })
        .collect()
}

impl Inputs {
    fn kubernetes(rt: &tokio::runtime::Runtime, args: &AgentArgs) -> Result<Self> {
        let scope = match args.pod_scope.as_str() {
            "cluster" => k8s_watch::PodScope::Cluster,
            "this-node" => k8s_watch::PodScope::ThisNode,
            other => anyhow::bail!("--pod-scope {other:?}: expected cluster or this-node"),
        };
        let kubeconfig = args.kubeconfig.clone();
        let node = args.node_name.clone();
        rt.block_on(async move {
            let client = crate::k8s::client(kubeconfig.as_deref()).await?;
            let mut config = k8s_watch::WatchConfig::new(&node);
            config.pod_scope = scope;
            let watcher = k8s_watch::Watcher::start(client, config);
            let first = tokio::time::timeout(Duration::from_secs(60), watcher.ready())
                .await
                .context("no complete list from the API server within 60 s")?;
            tracing::info!(
                pods = first.local_pods.len(),
                policies = first.policies.len(),
                "first snapshot from the API server"
            );
            let rx = watcher.subscribe();
            Ok(Inputs::Kubernetes {
                _watcher: watcher,
                rx,
            })
        })
    }

    /// Per-policy states of the newest input (k8s: the API's view,
    /// including invalid objects).
    fn policy_states(&self, set: &PolicySet) -> Vec<PolicyState> {
        match self {
            Inputs::Files { .. } => states_of(set),
            Inputs::Kubernetes { rx, .. } => rx
                .borrow()
                .as_ref()
                .map(|snap| {
                    snap.status
                        .iter()
                        .map(|st| PolicyState {
                            kind: st.kind.to_string(),
                            namespace: st.namespace.clone(),
                            name: st.name.clone(),
                            valid: st.valid,
                            reason: st.reason.clone(),
                            applied: true,
                            not_applied_on: Vec::new(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Inputs::Files { .. } => "files",
            Inputs::Kubernetes { .. } => "kubernetes",
        }
    }

    fn from_snapshot(snap: &k8s_watch::Snapshot) -> Result<InputState, String> {
        for st in snap.status.iter().filter(|s| !s.valid) {
            tracing::warn!(
                kind = %st.kind, namespace = ?st.namespace, name = %st.name,
                reason = ?st.reason, "invalid policy (not enforced)"
            );
        }
        let set = snap.policy_set().map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok((
            snap.topology.clone(),
            set,
            Some(snap.local_pods.iter().cloned().collect()),
            None,
        ))
    }

    /// The first inputs.
    fn initial(&mut self) -> Result<InputState, String> {
        match self {
            Inputs::Files {
                topology,
                policies,
                stamp,
            } => {
                *stamp = fingerprint(policies);
                let topo = Topology::from_file(topology).map_err(|e| e.to_string())?;
                let hash = policy_model::load::content_hash(policies);
                let set = load_policies(policies)?;
                Ok((topo, set, None, Some(hash)))
            }
            Inputs::Kubernetes { rx, .. } => {
                let snap = rx.borrow_and_update().clone();
                let snap = snap.ok_or("no snapshot yet")?;
                Self::from_snapshot(&snap)
            }
        }
    }

    /// Whether [`Self::changed`] may have something (a cheap look: file
    /// metadata, or the watch's flag).
    fn pending(&self) -> bool {
        match self {
            Inputs::Files {
                policies, stamp, ..
            } => fingerprint(policies) != *stamp,
            Inputs::Kubernetes { rx, .. } => rx.has_changed().unwrap_or(false),
        }
    }

    /// New inputs if something changed since the last call.
    fn changed(&mut self) -> Option<Result<InputState, String>> {
        match self {
            Inputs::Files {
                topology,
                policies,
                stamp,
            } => {
                let now = fingerprint(policies);
                if now == *stamp {
                    return None;
                }
                *stamp = now;
                let hash = policy_model::load::content_hash(policies);
                let read = load_policies(policies).and_then(|set| {
                    let topo = Topology::from_file(topology).map_err(|e| e.to_string())?;
                    Ok((topo, set, None, Some(hash)))
                });
                if let Err(e) = &read
                    && crate::daemon::fdlimit::is_resource_error(e)
                {
                    // Read again on the next poll.
                    stamp.clear();
                }
                Some(read)
            }
            Inputs::Kubernetes { rx, .. } => {
                if !rx.has_changed().unwrap_or(false) {
                    return None;
                }
                let snap = rx.borrow_and_update().clone()?;
                Some(Self::from_snapshot(&snap))
            }
        }
    }
}

/// Runs the agent until killed.
pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(ns) = &args.netns {
        lab::netns::enter(ns)?;
    }
    // Before any proxy socket exists: the kernel trusts the from-proxy mark
    // only on sockets of this cgroup (issue 13, finding 7).
    let proxy_cgroup =
        redirect_ebpf::cgroup::enter_dedicated(redirect_ebpf::cgroup::DEDICATED_CGROUP);
    // Before any socket: the proxies share this process's descriptors.
    let open_files = match crate::daemon::fdlimit::raise_open_files(args.max_open_files) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "raising the open-file limit failed");
            0
        }
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    // What we applied before only describes the kernel maps if they are the
    // same pinned maps; fresh maps start from nothing.
    let maps_pinned = args.pin_dir.join("maps").join("policy").exists();
    let mut dp = Datapath::load_sized(
        &args.pin_dir,
        &[
            ("ipcache", args.ipcache_max_entries),
            ("policy", args.policy_map_max_entries),
        ],
    )
    .context("loading the datapath")?;
    let limits = map_limits(&dp, &args);
    match proxy_cgroup {
        Ok(id) => dp
            .set_proxy_cgroup(id)
            .context("trusting the proxy's cgroup")?,
        Err(error) => {
            // Fail closed: no socket is trusted as the proxy's, so the
            // proxy's connections to local pods are judged as the node's.
            dp.set_proxy_cgroup(0)
                .context("clearing the proxy's cgroup")?;
            tracing::error!(%error, "cannot run in a cgroup of its own; L7 traffic to local pods will be judged as the node's");
        }
    }
    redirect_ebpf::install_proxy_routing().context("installing proxy routing")?;

    let metrics = Arc::new(crate::metrics::AgentMetrics::new());
    metrics.open_files_limit.set(open_files as i64);
    tracing::info!(open_files, "open-file limit");
    // The L7 proxy runs on a small tokio runtime beside the map loop; it
    // denies everything until the first policy is in.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("proxy")
        .enable_all()
        .build()
        .context("starting the proxy runtime")?;
    let proxy_policy = proxy::PolicyHandle::deny_all();
    let l7 = {
        let _in_runtime = runtime.enter();
        let mut cfg = proxy::ProxyConfig::datapath();
        if let Some(dir) = &args.tls_secrets_dir {
            cfg.tls_secrets = proxy::TlsSecrets::from_dir(dir);
        } else if args.kubernetes {
            cfg.tls_secrets = crate::k8s::watch_tls_secrets(args.kubeconfig.clone());
        }
        proxy::Proxy::start(proxy_policy.clone(), cfg)
            .context("starting the HTTP proxy on port 15001")?
    };
    // The DNS proxy: learned names come back to this loop over a channel
    // and the answer is held until the maps have them (bounded).
    let (learn_tx, learn_rx) = std::sync::mpsc::channel::<LearnRequest>();
    let known = Arc::new(std::sync::RwLock::new(KnownNames::default()));
    // The enforcer, once built: the agent loop holds it while it works; the
    // DNS thread takes it when free to learn an address in place.
    let shared_enforcer: Arc<Mutex<Option<Enforcer>>> = Arc::new(Mutex::new(None));
    let dns_runtime = if args.dns_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.dns_threads))
            .thread_name("dns")
            .enable_all()
            .build()
    }
    .context("starting the DNS proxy runtime")?;
    let dns = {
        let _in_runtime = dns_runtime.enter();
        let mut cfg = proxy::DnsConfig::datapath();
        if args.dns_nxdomain {
            cfg.deny_response = proxy::dns::DenyResponse::NxDomain;
        }
        cfg.min_ttl = Duration::from_secs(args.dns_min_ttl);
        cfg.learn_timeout = Duration::from_millis(args.dns_hold_ms);
        cfg.max_ips_per_name = args.dns_max_ips;
        cfg.udp_queries_per_second_per_source = args.dns_udp_qps_per_source;
        cfg.udp_burst_per_source = args.dns_udp_qps_per_source;
        proxy::DnsProxy::start(
            proxy_policy.clone(),
            cfg,
            Arc::new(AgentLearner {
                tx: Mutex::new(learn_tx),
                known: known.clone(),
                enforcer: shared_enforcer.clone(),
                min_ttl: Duration::from_secs(args.dns_min_ttl),
            }),
        )
        .context("starting the DNS proxy on port 15053")?
    };
    // A current-thread runtime runs only while a thread drives it.
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || dns_runtime.block_on(std::future::pending::<()>()))
        .context("starting the DNS proxy thread")?;
    let kafka = {
        let _in_runtime = runtime.enter();
        proxy::KafkaProxy::start(proxy_policy.clone(), proxy::KafkaConfig::datapath())
            .context("starting the Kafka proxy on port 15092")?
    };
    let l7_metrics = l7.metrics();
    let dns_metrics = dns.metrics();
    let kafka_metrics = kafka.metrics();
    crate::metrics::serve_admin(args.admin_addr, metrics.clone(), move || {
        // Each text ends with `# EOF`; keep only the last one.
        let http = l7_metrics.render();
        let http = http
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&http)
            .to_string();
        let dns = dns_metrics.render();
        let dns = dns
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&dns)
            .to_string();
        format!("{http}{dns}{}", kafka_metrics.render())
    })
    .with_context(|| format!("binding the admin endpoint {}", args.admin_addr))?;

    let mut inputs = if args.kubernetes {
        Inputs::kubernetes(&runtime, &args)?
    } else {
        Inputs::Files {
            topology: args.topology.clone().context("--topology is required")?,
            policies: args.policies.clone(),
            stamp: Vec::new(),
        }
    };
    let (topo, set, local, hash) = inputs
        .initial()
        .map_err(|e| anyhow::anyhow!("initial inputs are invalid:\n{e}"))?;
    let applied = if maps_pinned {
        Applied::load(&args.state_dir)
    } else {
        Applied::default()
    };
    let mut enforcer = Enforcer {
        dp,
        topo,
        set,
        fqdn: crate::daemon::fqdn::FqdnStore::load(&args.state_dir.join("fqdn.json")),
        applied,
        proxy: proxy_policy,
        metrics: metrics.clone(),
        state_dir: args.state_dir.clone(),
        local,
        attached: BTreeMap::new(),
        expired: false,
        last: None,
        persist: Persister::start()?,
        persist_due: None,
        resolve_pending: false,
        lingering: BTreeMap::new(),
        limits,
        outcome: ApplyOutcome::default(),
        outcome_gen: 0,
        guard: crate::daemon::learn_guard::LearnGuard::new(
            crate::daemon::learn_guard::LearnLimits {
                per_name: args.fqdn_max_ips_per_name,
                per_endpoint: args.fqdn_max_ips_per_endpoint,
                node: args.fqdn_max_ips.unwrap_or(limits.ipcache / 2),
            },
            args.pod_cidrs.clone(),
        ),
        node_addrs: BTreeSet::new(),
    };
    enforcer.refresh_node_addresses();
    if let Ok(mut k) = known.write() {
        k.0 = enforcer.fqdn.expiries();
    }
    let cluster = enforcer.cluster();
    enforcer.note_endpoints(&cluster);
    if let Some(up) = args.uplink.as_deref() {
        enforcer
            .dp
            .attach_uplink(up)
            .with_context(|| format!("attaching to uplink {up}"))?;
    }
    enforcer.attach_endpoints(&cluster)?;
    enforcer.enforce(&cluster)?;
    if let Some(hash) = hash {
        mark_applied(&args.state_dir, hash)?;
    }
    metrics.endpoints.set(cluster.endpoints().len() as i64);
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut names = Names::of(&cluster);
    crate::access_log::set_pod_names(Arc::new(names.by_ip.clone()));
    tracing::info!(
        endpoints = cluster.endpoints().len(),
        policies = enforcer.set.policies.len(),
        learned_addresses = enforcer.fqdn.len(),
        "policy applied"
    );

    let mut status = AgentStatus {
        mode: inputs.mode().into(),
        updated: monotonic_to_wall(now_monotonic()).to_string(),
        endpoints: enforcer.attached.len(),
        learned_addresses: enforcer.fqdn.len(),
        policies: inputs.policy_states(&enforcer.set),
        last_error: None,
        ..Default::default()
    };
    enforcer.status_failures(&mut status);
    write_status(&args.state_dir, &status);
    let mut status_gen = enforcer.outcome_gen;
    let flows = start_observe_server(&args.state_dir)?;
    std::fs::write(args.state_dir.join("agent.ready"), b"ready\n")?;

    let mut events = enforcer.dp.take_flow_events()?;
    let mut last_expiry = std::time::Instant::now();
    let mut last_node_check = std::time::Instant::now();
    let mut last_status_write = std::time::Instant::now();
    // Held back from the proxies' connections; let go to read and apply.
    let mut reserve = crate::daemon::fdlimit::FdReserve::new(args.reserved_fds);
    let mut announced: BTreeMap<String, String> = BTreeMap::new();
    let mut last_input_check = std::time::Instant::now();
    *lock_enforcer(&shared_enforcer) = Some(enforcer);
    write_state_on_signal(&runtime, shared_enforcer.clone());
    loop {
        let mut guard = lock_enforcer(&shared_enforcer);
        let enforcer = guard.as_mut().expect("the enforcer is set before the loop");
        let mut any = false;
        // Bounded: a flood of events must not starve the rest of the loop
        // (policy changes); what is left is read on the next turn.
        for ev in std::iter::from_fn(|| events.try_next()).take(EVENT_BATCH) {
            any = true;
            broadcast(&flows, flow_json(&ev, &names));
        }
        for line in crate::access_log::drain() {
            any = true;
            broadcast(&flows, line);
        }
        // Input files are looked at every poll interval, not on every loop
        // turn (DNS learn requests can turn it thousands of times a second).
        let check_inputs = last_input_check.elapsed() >= Duration::from_millis(args.poll_ms);
        if check_inputs {
            last_input_check = std::time::Instant::now();
        }
        if check_inputs && inputs.pending() {
            // With the reserve let go, so a descriptor flood against the
            // proxies cannot keep the agent from reading and applying.
            reserve.released(|| {
                handle_input_change(
                    enforcer,
                    &mut inputs,
                    &mut status,
                    &mut status_gen,
                    &mut names,
                    &metrics,
                    &args.state_dir,
                )
            });
        } else {
            reserve.refill();
        }
        if last_node_check.elapsed() >= NODE_ADDRESS_POLL {
            last_node_check = std::time::Instant::now();
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
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            last_expiry = std::time::Instant::now();
            enforcer.expire_names();
            if std::mem::take(&mut enforcer.expired) {
                // Built and dropped outside the lock: the DNS thread reads
                // it for every answer.
                let fresh = enforcer.fqdn.expiries();
                let old = known
                    .write()
                    .map(|mut k| std::mem::replace(&mut k.0, fresh));
                drop(old);
            }
        }
        let mut wait = None;
        if !any {
            if let Ok(c) = enforcer.dp.counters() {
                metrics.set_counters(&c);
            }
            let poll = Duration::from_millis(args.poll_ms);
            wait = Some(enforcer.persist_due.map_or(poll, |due| {
                due.saturating_duration_since(std::time::Instant::now())
                    .min(poll)
            }));
        }
        // Sleep until the next poll (or state files due) without the
        // enforcer, so the DNS thread can learn in place meanwhile; wake at
        // once for an answer it could not learn in place.
        drop(guard);
        let mut batch: Vec<LearnRequest> = Vec::new();
        if let Some(wait) = wait
            && let Ok(req) = learn_rx.recv_timeout(wait)
        {
            batch.push(req);
        }
        batch.extend(learn_rx.try_iter());
        let mut guard = lock_enforcer(&shared_enforcer);
        let enforcer = guard.as_mut().expect("the enforcer is set before the loop");
        if !batch.is_empty() {
            enforcer.learn_batch(batch, Duration::from_secs(args.dns_min_ttl), &known);
        }
        enforcer.persist_learned(false);
        // Endpoints that failed closed (or recovered) since last time go to
        // the flow stream too.
        announce_failures(&flows, &mut announced, &enforcer.outcome.failed);
        // Applies on learning or expiry change what failed: status follows
        // (a few times a second at most).
        if enforcer.outcome_gen != status_gen
            && last_status_write.elapsed() >= Duration::from_millis(250)
        {
            last_status_write = std::time::Instant::now();
            status_gen = enforcer.outcome_gen;
            status.updated = monotonic_to_wall(now_monotonic()).to_string();
            status.learned_addresses = enforcer.fqdn.len();
            enforcer.status_failures(&mut status);
            write_status(&args.state_dir, &status);
        }
    }
}

/// Sends a line to `observe` for each endpoint that started or stopped
/// failing closed since the last call (`{"type":"agent", ...}`).
fn announce_failures(
    flows: &SharedFlows,
    announced: &mut BTreeMap<String, String>,
    failed: &BTreeMap<String, String>,
) {
    if announced == failed {
        return;
    }
    let time = monotonic_to_wall(now_monotonic()).to_string();
    for (endpoint, reason) in failed {
        if announced.get(endpoint) != Some(reason) {
            let line = serde_json::json!({
                "type": "agent", "time": time, "event": "endpoint-failed-closed",
                "endpoint": endpoint, "reason": reason,
            });
            broadcast(flows, line.to_string());
        }
    }
    for endpoint in announced.keys() {
        if !failed.contains_key(endpoint) {
            let line = serde_json::json!({
                "type": "agent", "time": time, "event": "endpoint-policy-applied",
                "endpoint": endpoint,
            });
            broadcast(flows, line.to_string());
        }
    }
    *announced = failed.clone();
}

/// How often the node's addresses are re-read from the kernel.
const NODE_ADDRESS_POLL: Duration = Duration::from_secs(2);

/// Handles new inputs, if any: applies them, or keeps the previous policy
/// when they are invalid. A read that failed for lack of resources is not
/// an invalid policy: it is retried on the next poll.
fn handle_input_change(
    enforcer: &mut Enforcer,
    inputs: &mut Inputs,
    status: &mut AgentStatus,
    status_gen: &mut u64,
    names: &mut Names,
    metrics: &crate::metrics::AgentMetrics,
    state_dir: &Path,
) {
    match inputs.changed() {
        None => {}
        Some(Ok((topo, set, local, hash))) => {
            enforcer.topo = topo;
            enforcer.set = set;
            enforcer.local = local;
            let cluster = enforcer.cluster();
            enforcer.note_endpoints(&cluster);
            let result = enforcer
                .attach_endpoints(&cluster)
                .and_then(|()| enforcer.enforce(&cluster));
            if let Err(e) = result {
                tracing::error!(error = %e, "applying the change failed");
            }
            *names = Names::of(&cluster);
            crate::access_log::set_pod_names(Arc::new(names.by_ip.clone()));
            metrics.endpoints.set(enforcer.attached.len() as i64);
            status.updated = monotonic_to_wall(now_monotonic()).to_string();
            status.endpoints = enforcer.attached.len();
            status.learned_addresses = enforcer.fqdn.len();
            status.policies = inputs.policy_states(&enforcer.set);
            status.last_error = None;
            status.inputs_unreadable = None;
            enforcer.status_failures(status);
            *status_gen = enforcer.outcome_gen;
            write_status(state_dir, status);
            if let Some(hash) = hash
                && let Err(e) = mark_applied(state_dir, hash)
            {
                tracing::warn!(error = %e, "writing applied.hash failed");
            }
        }
        Some(Err(e)) if crate::daemon::fdlimit::is_resource_error(&e) => {
            metrics.inputs_unreadable.inc();
            status.updated = monotonic_to_wall(now_monotonic()).to_string();
            status.inputs_unreadable = Some(e.clone());
            write_status(state_dir, status);
            tracing::warn!(
                error = %e,
                "reading the inputs failed for lack of resources; retrying (the previous policy stays in force)"
            );
        }
        Some(Err(e)) => {
            metrics.policy_rejected.inc();
            status.updated = monotonic_to_wall(now_monotonic()).to_string();
            status.last_error = Some(e.clone());
            write_status(state_dir, status);
            tracing::error!(
                error = %e,
                "new policy is invalid; the previous policy stays in force"
            )
        }
    }
}

/// The map sizes the kernel has (a pinned map keeps the size it was
/// created with) and the per-endpoint budget.
fn map_limits(dp: &Datapath, args: &AgentArgs) -> crate::daemon::capacity::MapLimits {
    let size = |name: &'static str, asked: u32| match dp.map_capacity(name) {
        Ok(n) => {
            if n != asked {
                tracing::warn!(
                    map = name,
                    asked,
                    size = n,
                    "map pinned with another size; using the kernel's (remove the pin to resize)"
                );
            }
            n as usize
        }
        Err(e) => {
            tracing::warn!(map = name, error = %e, "map size unknown; assuming the asked size");
            asked as usize
        }
    };
    let limits = crate::daemon::capacity::MapLimits {
        ipcache: size("ipcache", args.ipcache_max_entries),
        policy: size("policy", args.policy_map_max_entries),
        policy_per_endpoint: args.policy_max_entries_per_endpoint,
    };
    tracing::info!(
        ipcache = limits.ipcache,
        policy = limits.policy,
        policy_per_endpoint = limits.policy_per_endpoint,
        "map limits"
    );
    limits
}

/// Flow events read per turn of the agent loop.
const EVENT_BATCH: usize = 1024;

/// On SIGTERM or SIGINT: writes what learning has not written yet (see
/// [`PERSIST_DELAY`]), waits for the state files, and exits. The kernel
/// keeps enforcing from the pinned maps meanwhile.
fn write_state_on_signal(rt: &tokio::runtime::Runtime, enforcer: Arc<Mutex<Option<Enforcer>>>) {
    use tokio::signal::unix::{SignalKind, signal};
    rt.spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!(
                "cannot watch for SIGTERM/SIGINT; state may lag by up to 500 ms on exit"
            );
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(e) = lock_enforcer(&enforcer).as_mut() {
                e.persist_learned(true);
                e.persist.flush();
            }
            tracing::info!("state written; exiting");
            std::process::exit(0);
        })
        .await;
    });
}

/// The enforcer's lock; a panic while it was held leaves it usable (its
/// maps are rewritten whole by the next resolve).
fn lock_enforcer(m: &Mutex<Option<Enforcer>>) -> std::sync::MutexGuard<'_, Option<Enforcer>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long learned addresses may wait to be written to the state files
/// (the DNS answers that taught them are released before either way).
/// Writing copies the store under the enforcer's lock, which the DNS thread
/// then cannot take to learn in place: a few times a second at most.
const PERSIST_DELAY: Duration = Duration::from_millis(500);

/// Everything the agent enforces from: the datapath, the inputs (topology,
/// policies, learned names) and what it last wrote.
struct Enforcer {
    dp: Datapath,
    topo: Topology,
    set: PolicySet,
    fqdn: crate::daemon::fqdn::FqdnStore,
    applied: Applied,
    proxy: proxy::PolicyHandle,
    metrics: Arc<crate::metrics::AgentMetrics>,
    state_dir: PathBuf,
    /// Pods of this node (`None`: every pod of the topology, file mode).
    local: Option<BTreeSet<String>>,
    /// Set when learned addresses expired: the learner's fast-path set must
    /// be rebuilt.
    expired: bool,
    /// Writes the state files.
    persist: Persister,
    /// When the state files are due after learned addresses changed them
    /// (learning writes at most every [`PERSIST_DELAY`], not per answer).
    persist_due: Option<std::time::Instant>,
    /// Set when learning in place wrote part of an answer and failed: the
    /// next learn batch resolves.
    resolve_pending: bool,
    /// The cluster last enforced (with the learned addresses added since),
    /// for learning without a resolve; `None` when the last enforce failed.
    last: Option<Cluster>,
    /// Endpoints whose interface has the programs: `ns/pod` -> (interface,
    /// addresses).
    attached: BTreeMap<String, (String, Vec<IpAddr>)>,
    /// Learned addresses past their TTL that open flows still use, as
    /// written to the ipcache: address -> (identity, identity of new flows).
    lingering: BTreeMap<IpAddr, (u32, u32)>,
    /// Map sizes and budgets.
    limits: crate::daemon::capacity::MapLimits,
    /// What the last apply left unapplied (for `status`).
    outcome: ApplyOutcome,
    /// Bumped whenever `outcome` changes: the loop rewrites `status`.
    outcome_gen: u64,
    /// Which learned addresses are admitted (finding 1a, 6).
    guard: crate::daemon::learn_guard::LearnGuard,
    /// The node's own addresses, from the kernel: `host`.
    node_addrs: BTreeSet<IpAddr>,
}

/// A DNS answer's addresses and the switch that releases the answer.
type LearnRequest = (proxy::LearnedNames, tokio::sync::oneshot::Sender<()>);

/// Learned names already in the kernel maps, with the expiry the agent
/// keeps each address until: an answer that only repeats them needs no
/// wait, and none of the agent's time unless it extends an expiry.
#[derive(Default)]
struct KnownNames(std::collections::HashMap<String, crate::daemon::fqdn::Expiries>);

/// How much earlier than an answer's TTL the agent's expiry of a known
/// address may run out before the answer is passed on to extend it: the
/// agent hears of a name answered thousands of times a second about once
/// a second, not on every answer.
const REFRESH_SLACK_SECS: u64 = 1;

/// What the agent's loop needs to hear of an answer.
#[derive(Debug, PartialEq, Eq)]
enum Novelty {
    /// An address is not in the maps yet: hold the answer until it is.
    NewAddress,
    /// All addresses are in the maps, but the answer outlives an expiry.
    LongerTtl,
    /// Nothing the maps or the expiries lack.
    Nothing,
}

impl KnownNames {
    fn novelty(&self, update: &proxy::LearnedNames, now: u64) -> Novelty {
        let Some(known) = self.0.get(&update.name) else {
            return Novelty::NewAddress;
        };
        let mut novelty = Novelty::Nothing;
        for (ip, ttl) in &update.ips {
            match known.get(ip) {
                None => return Novelty::NewAddress,
                // Past its TTL the kernel admits no new flow to it: the
                // answer waits until the address is unmarked.
                Some(until) if *until <= now => return Novelty::NewAddress,
                Some(until) if until + REFRESH_SLACK_SECS < now + ttl.as_secs() => {
                    novelty = Novelty::LongerTtl
                }
                Some(_) => {}
            }
        }
        novelty
    }
}

/// Hands learned names from the DNS proxy to the agent's loop.
struct AgentLearner {
    tx: Mutex<std::sync::mpsc::Sender<LearnRequest>>,
    known: Arc<std::sync::RwLock<KnownNames>>,
    enforcer: Arc<Mutex<Option<Enforcer>>>,
    min_ttl: Duration,
}

impl AgentLearner {
    /// Learns `update` on the calling (DNS) thread when the enforcer is free
    /// and no resolve is needed: no wake-up of the agent loop and back.
    fn learn_in_place(&self, update: &proxy::LearnedNames) -> bool {
        let Ok(mut guard) = self.enforcer.try_lock() else {
            return false;
        };
        guard
            .as_mut()
            .is_some_and(|e| e.learn_in_place(update, self.min_ttl, &self.known))
    }
}

impl proxy::NameLearner for AgentLearner {
    fn learn(&self, update: proxy::LearnedNames) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let novelty = self.known.read().map_or(Novelty::NewAddress, |k| {
            k.novelty(&update, crate::daemon::fqdn::now_secs())
        });
        if novelty != Novelty::Nothing && self.learn_in_place(&update) {
            let _ = tx.send(());
            return rx;
        }
        let ack = match novelty {
            Novelty::NewAddress => tx,
            // Nothing new for the maps: release the answer now; the loop
            // still gets the update to extend the expiry.
            Novelty::LongerTtl => {
                let _ = tx.send(());
                tokio::sync::oneshot::channel().0
            }
            Novelty::Nothing => {
                let _ = tx.send(());
                return rx;
            }
        };
        if let Ok(sender) = self.tx.lock() {
            // If the loop is gone the sender is dropped and the proxy
            // releases the answer (its bounded wait).
            let _ = sender.send((update, ack));
        }
        rx
    }
}

/// How long a flow may sit idle and still count as open for keeping the
/// addresses it uses.
const FLOW_IDLE: Duration = Duration::from_secs(30);

impl Enforcer {
    /// Resolves the current inputs.
    fn cluster(&self) -> Cluster {
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
    fn note_endpoints(&mut self, cluster: &Cluster) {
        self.guard.set_endpoints(
            cluster
                .endpoints()
                .iter()
                .map(|e| (e.full_name(), e.ips.as_slice())),
        );
    }

    /// Re-reads the node's addresses from the kernel; `true` when they
    /// changed (the caller re-resolves). A failed read keeps the last set.
    fn refresh_node_addresses(&mut self) -> bool {
        match crate::daemon::node_addrs::discover() {
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

    /// The part of an answer the learn guard admits; refusals counted.
    fn admit_update(&mut self, update: &proxy::LearnedNames) -> proxy::LearnedNames {
        let name = policy_model::l7::dns::normalize_name(&update.name);
        let (ips, refused) = self
            .guard
            .admit(update.source, &name, &update.ips, self.fqdn.len());
        if !refused.is_empty() {
            let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
            for (_, r) in &refused {
                *by_reason.entry(r.label()).or_default() += 1;
            }
            for (reason, n) in by_reason {
                self.metrics.learn_refused(&reason, n);
            }
            tracing::debug!(
                name = %update.name, source = %update.source, refused = ?refused,
                "addresses of a DNS answer not learned"
            );
            self.outcome_gen += 1;
        }
        proxy::LearnedNames {
            source: update.source,
            name: update.name.clone(),
            ips,
        }
    }

    fn is_local(&self, ep: &policy_model::resolve::Endpoint) -> bool {
        self.local
            .as_ref()
            .is_none_or(|l| l.contains(&ep.full_name()))
    }

    /// Attaches the programs to every local pod's host-side interface (found
    /// from the pod's address in the routing table) and fills the
    /// endpoints map; detaches pods that are gone.
    fn attach_endpoints(&mut self, cluster: &Cluster) -> Result<()> {
        let mut now = BTreeMap::new();
        for ep in cluster.endpoints() {
            if !self.is_local(ep) {
                continue;
            }
            let Some(ip) = ep.ips.first() else { continue };
            let ifname = match route_device(*ip) {
                Ok(i) => i,
                Err(e) => {
                    // An attached pod stays attached and policed: a failed
                    // lookup (e.g. no descriptors to run `ip`) must not
                    // take it out of the endpoints map.
                    if let Some(prev) = self.attached.get(&ep.full_name()) {
                        tracing::warn!(pod = %ep.full_name(), error = %e, "route lookup failed; keeping its interface");
                        now.insert(ep.full_name(), prev.clone());
                    } else {
                        tracing::warn!(pod = %ep.full_name(), error = %e, "no interface for the pod yet");
                    }
                    continue;
                }
            };
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .with_context(|| format!("interface {ifname} of {}", ep.full_name()))?;
            for ip in &ep.ips {
                self.dp.set_endpoint(
                    *ip,
                    EndpointInfo {
                        identity: ep.identity.0,
                        ifindex,
                        endpoint_id: ep.id,
                        flags: 0,
                    },
                )?;
            }
            if self.attached.get(&ep.full_name()).map(|(i, _)| i) != Some(&ifname) {
                self.dp
                    .attach_pod(&ifname)
                    .with_context(|| format!("attaching to {ifname}"))?;
            }
            now.insert(ep.full_name(), (ifname, ep.ips.clone()));
        }
        // Pods that are gone: forget their addresses and detach (the CNI
        // usually deleted the interface already).
        for (pod, (ifname, ips)) in &self.attached {
            if now.contains_key(pod) {
                continue;
            }
            for ip in ips {
                if !now.values().any(|(_, v)| v.contains(ip)) {
                    let _ = self.dp.remove_endpoint(*ip);
                }
            }
            if !now.values().any(|(i, _)| i == ifname) {
                let _ = self.dp.detach(ifname);
            }
            tracing::info!(pod = %pod, interface = %ifname, "endpoint removed");
        }
        self.attached = now;
        Ok(())
    }

    /// Hands a resolved cluster to the proxy, then to the kernel (the proxy
    /// first, so a newly redirected flow finds its rules).
    fn enforce(&mut self, cluster: &Cluster) -> Result<()> {
        self.enforce_in_memory(cluster)?;
        // Learned names still due go with this write (applied is written
        // here anyway).
        if self.persist_due.take().is_some() {
            self.persist.fqdn(&self.fqdn);
        }
        self.persist.applied(&self.applied, &self.state_dir);
        self.persist.flush();
        Ok(())
    }

    /// Queues the state files learning changed, when they are due (or
    /// now, with `now`).
    fn persist_learned(&mut self, now: bool) {
        let Some(due) = self.persist_due else { return };
        if now || std::time::Instant::now() >= due {
            self.persist_due = None;
            self.persist.applied(&self.applied, &self.state_dir);
            self.persist.fqdn(&self.fqdn);
        }
    }

    /// [`Self::enforce`] without persisting what was applied (the caller
    /// saves it later).
    fn enforce_in_memory(&mut self, cluster: &Cluster) -> Result<()> {
        self.last = None;
        self.proxy.update_from_cluster(cluster);
        let outcome = apply(
            &mut self.dp,
            cluster,
            &mut self.applied,
            self.local.as_ref(),
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
        // apply() rewrote changed entries without the lingering mark.
        self.lingering.retain(|ip, (id, _)| {
            cluster
                .learned_and_fallback_identity(*ip)
                .is_some_and(|(now, _)| now.0 == *id)
        });
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

    /// The apply failures, as `status` shows them.
    fn status_failures(&self, status: &mut AgentStatus) {
        let o = &self.outcome;
        status.endpoint_failures = o
            .failed
            .iter()
            .map(|(endpoint, reason)| EndpointFailure {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            })
            .collect();
        status.apply_errors = o.errors.clone();
        status.ipcache_left_out = o.ipcache_refused;
        status.learn_refused = self.guard.refused().clone();
        status.node_addresses = self.node_addrs.iter().copied().collect();
        for p in &mut status.policies {
            let key = (p.kind.clone(), p.namespace.clone(), p.name.clone());
            match o.failed_policies.get(&key) {
                Some(pods) => {
                    p.applied = false;
                    p.not_applied_on = pods.clone();
                }
                None => {
                    p.applied = true;
                    p.not_applied_on.clear();
                }
            }
        }
    }

    /// The ipcache entries that learning the addresses `fresh` needs (with
    /// `also` counted among each one's names, when it is not learned yet),
    /// when entries alone will do; `None`: a resolve is needed.
    fn plan_incremental(
        &self,
        fresh: &BTreeSet<IpAddr>,
        also: Option<&str>,
    ) -> Option<Vec<(IpAddr, ipnet::IpNet, policy_model::NumericIdentity)>> {
        let cluster = self.last.as_ref()?;
        let mut entries = Vec::new();
        for ip in fresh {
            let mut names = self.fqdn.names_of(ip);
            if let Some(name) = also
                && !names.contains(&name)
            {
                names.push(name);
                names.sort_unstable();
            }
            match cluster.learned_address(*ip, &names) {
                policy_model::resolve::LearnedAddress::Unchanged => {}
                policy_model::resolve::LearnedAddress::Ipcache(prefix, id) => {
                    entries.push((*ip, prefix, id))
                }
                policy_model::resolve::LearnedAddress::Resolve => return None,
            }
        }
        Some(entries)
    }

    /// Writes what [`Self::plan_incremental`] planned; `false`: a write
    /// failed (a resolve is needed).
    fn apply_incremental(
        &mut self,
        entries: Vec<(IpAddr, ipnet::IpNet, policy_model::NumericIdentity)>,
    ) -> bool {
        let Some(cluster) = self.last.as_mut() else {
            return false;
        };
        for (ip, prefix, id) in entries {
            if let Err(e) = self.dp.set_ipcache(prefix, id.0) {
                tracing::error!(error = %e, %prefix, "writing a learned address failed; resolving");
                return false;
            }
            self.applied.ipcache.retain(|(p, _)| *p != prefix);
            self.applied.ipcache.push((prefix, id.0));
            cluster.add_learned_address(prefix, id);
            self.proxy.add_learned_address(ip, id);
        }
        true
    }

    /// Adds learned addresses (already in the store) with ipcache writes
    /// alone when that is all a resolve would change; `false`: a resolve is
    /// needed.
    fn learn_incrementally(&mut self, fresh: &BTreeSet<IpAddr>) -> bool {
        match self.plan_incremental(fresh, None) {
            Some(entries) => self.apply_incremental(entries),
            None => false,
        }
    }

    /// The addresses of an answer the store does not have under its name.
    fn unknown_addresses<'a>(
        &'a self,
        update: &'a proxy::LearnedNames,
    ) -> impl Iterator<Item = IpAddr> + 'a {
        update
            .ips
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| !self.fqdn.knows(&update.name, ip))
    }

    /// Learns one answer's addresses on the DNS thread: only when it needs
    /// no resolve (else `false`, nothing changed, and the agent loop gets it).
    fn learn_in_place(
        &mut self,
        update: &proxy::LearnedNames,
        min_ttl: Duration,
        known: &std::sync::RwLock<KnownNames>,
    ) -> bool {
        let admitted = self.admit_update(update);
        let update = &admitted;
        if update.ips.is_empty() {
            // Nothing may be learned: the answer goes as it is.
            return true;
        }
        let fresh: BTreeSet<IpAddr> = self.unknown_addresses(update).collect();
        let start = std::time::Instant::now();
        let Some(entries) = self.plan_incremental(&fresh, Some(&update.name)) else {
            return false;
        };
        self.fqdn.learn(&update.name, &update.ips, min_ttl);
        self.relearned(update);
        if !self.apply_incremental(entries) {
            // The store has the name: the loop resolves.
            self.resolve_pending = true;
            return false;
        }
        if let Ok(mut k) = known.write()
            && let Some(expiries) = self.fqdn.expiries_of(&update.name)
        {
            k.0.insert(update.name.clone(), expiries);
        }
        self.persist_due
            .get_or_insert_with(|| std::time::Instant::now() + PERSIST_DELAY);
        if !fresh.is_empty() {
            tracing::debug!(
                apply_us = start.elapsed().as_micros() as u64,
                "learned addresses enforced in place"
            );
        }
        true
    }

    /// Takes expired addresses out with ipcache deletes alone when each
    /// one's identity keeps other addresses and those still learned keep
    /// their identity; `false`: a resolve is needed (nothing was written).
    fn forget_incrementally(&mut self, dropped: &BTreeSet<IpAddr>) -> bool {
        let Some(mut cluster) = self.last.clone() else {
            return false;
        };
        let mut gone = Vec::new();
        for ip in dropped {
            let names = self.fqdn.names_of(ip);
            if !names.is_empty() {
                // Still learned under another name: fine if its label set
                // (so its identity) is the same without this one.
                if cluster.learned_address(*ip, &names)
                    != policy_model::resolve::LearnedAddress::Unchanged
                {
                    return false;
                }
                continue;
            }
            match cluster.forget_learned_address(*ip) {
                Some(fallback) => gone.push((*ip, fallback)),
                // Never selected (or a cluster address) changes nothing;
                // the last address of an identity needs a resolve.
                None => {
                    if cluster.learned_address(*ip, &[])
                        != policy_model::resolve::LearnedAddress::Unchanged
                    {
                        return false;
                    }
                }
            }
        }
        for (ip, fallback) in gone {
            let prefix = ipnet::IpNet::from(ip);
            if let Err(e) = self.dp.remove_ipcache(prefix) {
                tracing::error!(error = %e, %prefix, "removing an expired address failed; resolving");
                return false;
            }
            self.applied.ipcache.retain(|(p, _)| *p != prefix);
            self.proxy.add_learned_address(ip, fallback);
        }
        self.last = Some(cluster);
        true
    }

    /// Records the names of several DNS answers; if that adds addresses,
    /// re-resolves and enforces once; then releases the held answers, and
    /// only then persists (the files are for a restart, not for them).
    fn learn_batch(
        &mut self,
        batch: Vec<LearnRequest>,
        min_ttl: Duration,
        known: &std::sync::RwLock<KnownNames>,
    ) {
        let mut fresh = BTreeSet::new();
        for (update, _) in &batch {
            let update = self.admit_update(update);
            if update.ips.is_empty() {
                continue;
            }
            fresh.extend(self.unknown_addresses(&update));
            self.fqdn.learn(&update.name, &update.ips, min_ttl);
        }
        for (update, _) in &batch {
            self.relearned(update);
        }
        let resolve = std::mem::take(&mut self.resolve_pending);
        let changed = !fresh.is_empty() || resolve;
        let start = std::time::Instant::now();
        let mut timings = None;
        if changed && (resolve || !self.learn_incrementally(&fresh)) {
            let cluster = self.cluster();
            let resolved = start.elapsed();
            if let Err(e) = self.enforce_in_memory(&cluster) {
                tracing::error!(error = %e, "applying learned addresses failed");
            }
            timings = Some((resolved, start.elapsed() - resolved));
        } else if changed {
            timings = Some((Duration::ZERO, start.elapsed()));
        }
        if let Ok(mut k) = known.write() {
            for (update, _) in &batch {
                if let Some(expiries) = self.fqdn.expiries_of(&update.name) {
                    k.0.insert(update.name.clone(), expiries);
                }
            }
        }
        let answers = batch.len();
        for (_, ack) in batch {
            let _ = ack.send(());
        }
        if let Some((resolved, applied)) = timings {
            // Written a little later, with whatever else is learned by then
            // (the answers are already released either way).
            self.persist_due
                .get_or_insert_with(|| std::time::Instant::now() + PERSIST_DELAY);
            tracing::debug!(
                answers,
                resolve_us = resolved.as_micros() as u64,
                apply_us = applied.as_micros() as u64,
                "learned addresses enforced"
            );
        }
    }

    /// Marks learned addresses past their TTL that open flows still use so
    /// the kernel admits no new flow to them (finding: reconnecting every
    /// few seconds used to keep an expired address open forever), and
    /// unmarks addresses learned again.
    fn mark_lingering(&mut self) {
        if let Some(cluster) = self.last.take() {
            self.mark_lingering_in(&cluster);
            self.last = Some(cluster);
        }
    }

    /// [`Self::mark_lingering`] against `cluster` (what was just applied).
    fn mark_lingering_in(&mut self, cluster: &Cluster) {
        let mut target = BTreeMap::new();
        for ip in self.fqdn.lingering() {
            // Only entries the kernel holds (a full ipcache may have left
            // a learned address out: it stays out).
            if let Some((id, fallback)) = cluster.learned_and_fallback_identity(ip)
                && self
                    .applied
                    .ipcache
                    .contains(&(ipnet::IpNet::from(ip), id.0))
            {
                target.insert(ip, (id.0, fallback.0));
            }
        }
        for (ip, (id, fallback)) in &target {
            if self.lingering.get(ip) == Some(&(*id, *fallback)) {
                continue;
            }
            match self
                .dp
                .set_ipcache_lingering(ipnet::IpNet::from(*ip), *id, *fallback)
            {
                Ok(()) => tracing::debug!(%ip, "learned address past its TTL: open flows only"),
                Err(e) => tracing::error!(error = %e, %ip, "marking an expired address failed"),
            }
        }
        let old = std::mem::replace(&mut self.lingering, target);
        let unmark: Vec<IpAddr> = old
            .keys()
            .filter(|ip| !self.lingering.contains_key(ip))
            .copied()
            .collect();
        self.unmark_lingering_in(cluster, unmark);
    }

    /// Gives addresses that lingered back their plain entry (learned again
    /// with a live TTL, or gone from the cluster).
    fn unmark_lingering(&mut self, ips: Vec<IpAddr>) {
        if let Some(cluster) = self.last.take() {
            self.unmark_lingering_in(&cluster, ips);
            self.last = Some(cluster);
        }
    }

    fn unmark_lingering_in(&mut self, cluster: &Cluster, ips: Vec<IpAddr>) {
        for ip in ips {
            self.lingering.remove(&ip);
            let prefix = ipnet::IpNet::from(ip);
            let Some((_, id)) = cluster.ipcache().iter().find(|(p, _)| *p == prefix) else {
                continue;
            };
            if let Err(e) = self.dp.set_ipcache(prefix, id.0) {
                tracing::error!(error = %e, %ip, "unmarking a learned address failed");
            }
        }
    }

    /// After an answer for `update` was learned: its addresses that
    /// lingered admit new flows again.
    fn relearned(&mut self, update: &proxy::LearnedNames) {
        let again: Vec<IpAddr> = update
            .ips
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| self.lingering.contains_key(ip))
            .collect();
        if !again.is_empty() {
            let still = self.fqdn.lingering();
            self.unmark_lingering(again.into_iter().filter(|ip| !still.contains(ip)).collect());
        }
    }

    /// Drops expired learned addresses no open flow uses.
    fn expire_names(&mut self) {
        let in_use = match self.dp.conntrack_destinations(FLOW_IDLE) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading conntrack failed; keeping learned names");
                return;
            }
        };
        let dropped = self.fqdn.expire_addresses(&in_use);
        if dropped.is_empty() {
            self.mark_lingering();
            return;
        }
        let fqdn = &self.fqdn;
        self.guard.prune(|name, ip| fqdn.knows(name, ip));
        self.expired = true;
        if self.forget_incrementally(&dropped) {
            self.persist.applied(&self.applied, &self.state_dir);
            self.mark_lingering();
        } else {
            let cluster = self.cluster();
            if let Err(e) = self.enforce(&cluster) {
                tracing::error!(error = %e, "applying expired names failed");
            }
        }
        self.persist.fqdn(&self.fqdn);
    }
}

fn mark_applied(state_dir: &Path, hash: u64) -> Result<()> {
    let tmp = state_dir.join("applied.hash.tmp");
    std::fs::write(&tmp, format!("{hash:016x}\n"))?;
    std::fs::rename(tmp, state_dir.join("applied.hash"))?;
    Ok(())
}

fn load_policies(paths: &[PathBuf]) -> Result<PolicySet, String> {
    PolicySet::load_paths(paths).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Modification times and sizes of every input file: a cheap change check.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                out.push((p.clone(), m.modified().ok(), 0));
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
            Ok(m) => out.push((p, m.modified().ok(), m.len())),
            Err(_) => out.push((p, None, 0)),
        }
    }
    out.sort();
    out
}

/// The interface the routing table sends `ip` out of (the pod's host-side
/// veth, for a pod on this node).
fn route_device(ip: IpAddr) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get", &ip.to_string()])
        .output()
        .context("running ip route get")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("no route to {ip}"))?;
    v[0]["dev"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no device in the route to {ip}"))
}

/// What one apply did: counts for metrics, failures for `status`.
#[derive(Debug, Default, Clone)]
struct ApplyOutcome {
    /// Map entries written or deleted.
    changes: usize,
    /// Endpoints (`ns/pod`) whose policy could not be written whole, with
    /// why. Their entries were removed: all their traffic is dropped.
    failed: BTreeMap<String, String>,
    /// Policies selecting a failed endpoint -> the endpoints.
    failed_policies: BTreeMap<(String, Option<String>, String), Vec<String>>,
    /// Learned addresses left out of the ipcache (map full).
    ipcache_refused: usize,
    /// Writes that failed outside an endpoint's policy (ipcache).
    errors: Vec<String>,
    /// Entries in the policy map and the ipcache afterwards.
    policy_entries: usize,
    ipcache_entries: usize,
}

impl ApplyOutcome {
    fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.errors.is_empty() && self.ipcache_refused == 0
    }
}

/// One endpoint's part of an apply.
struct EndpointApply {
    id: u16,
    name: String,
    old: MapState,
    new: MapState,
}

/// The kernel change of one model change, and whether it narrows what is
/// allowed (deletes of allows, deny upserts: written first) or widens it.
fn phase_of(old: &MapState, change: &MapChange) -> bool {
    match change {
        MapChange::Upsert(_, v) => v.verdict == MapVerdict::Deny,
        MapChange::Delete(k) => old
            .entries
            .get(k)
            .is_none_or(|v| v.verdict != MapVerdict::Deny),
    }
}

fn kernel_change(id: u16, change: &MapChange) -> Result<PolicyChange> {
    Ok(match change {
        MapChange::Upsert(k, v) => {
            let (k, v) = kernel_entry(id, k, Some(v))?;
            PolicyChange::Upsert(k, v.context("a value was given")?)
        }
        MapChange::Delete(k) => PolicyChange::Delete(kernel_entry(id, k, None)?.0),
    })
}

/// Applies the cluster's ipcache and every endpoint's map state as deltas
/// against what was applied before, within `limits`, and never stops at
/// one endpoint's failure:
///
/// 1. capacity is planned first ([`crate::capacity`]): an endpoint over its
///    budget or without room fails closed (all its entries removed);
/// 2. changes that narrow what is allowed (deletes of allows, deny
///    upserts) go first, for every endpoint, so a revocation is never
///    held up by another endpoint's growth;
/// 3. then the ipcache (deletes first; learned addresses are the ones left
///    out when it is full);
/// 4. then the widening changes.
///
/// An endpoint whose write fails in any step has all its entries removed
/// (no entry = drop). Everything is reported in the outcome.
fn apply(
    dp: &mut Datapath,
    cluster: &Cluster,
    applied: &mut Applied,
    local: Option<&BTreeSet<String>>,
    limits: &crate::daemon::capacity::MapLimits,
) -> ApplyOutcome {
    use crate::daemon::capacity::{Admission, EndpointDemand, IpcacheClass};
    let mut out = ApplyOutcome::default();
    let old_state = |applied: &Applied, id: u16| MapState {
        entries: applied
            .policies
            .get(&id)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default(),
    };
    let mut eps: Vec<EndpointApply> = Vec::new();
    let mut identities = BTreeMap::new();
    for ep in cluster.endpoints() {
        if !local.is_none_or(|l| l.contains(&ep.full_name())) {
            continue;
        }
        let pol = cluster.endpoint_policy(ep);
        for w in &pol.warnings {
            tracing::warn!(endpoint = %ep.full_name(), "{w}");
        }
        identities.insert(ep.id, ep.identity);
        eps.push(EndpointApply {
            id: ep.id,
            name: ep.full_name(),
            old: old_state(applied, ep.id),
            new: pol.map,
        });
    }
    // Endpoints that are gone: their entries leave the policy map.
    let gone: Vec<u16> = applied
        .policies
        .keys()
        .copied()
        .filter(|id| !eps.iter().any(|e| e.id == *id))
        .collect();
    for id in gone {
        eps.push(EndpointApply {
            id,
            name: format!("endpoint {id} (removed)"),
            old: old_state(applied, id),
            new: MapState::default(),
        });
    }

    // The ipcache plan: pods and reserved addresses first, then policy
    // CIDRs, then learned addresses (the ones left out when it is full).
    let mut new_ipc: Vec<(ipnet::IpNet, u32, IpcacheClass, u8)> = cluster
        .ipcache()
        .iter()
        .map(|(p, id)| {
            use policy_model::identity::IdentityKind;
            let (class, rank) = match cluster.identity(*id).map(|i| &i.kind) {
                Some(IdentityKind::Fqdn { .. }) => (IpcacheClass::Learned, 2),
                Some(IdentityKind::Cidr(_)) => (IpcacheClass::Cluster, 1),
                _ => (IpcacheClass::Cluster, 0),
            };
            (*p, id.0, class, rank)
        })
        .collect();
    new_ipc.sort_by_key(|e| e.3);
    let new_ipc: Vec<(ipnet::IpNet, u32, IpcacheClass)> = new_ipc
        .into_iter()
        .map(|(p, id, c, _)| (p, id, c))
        .collect();
    let plan = crate::daemon::capacity::plan_ipcache(&applied.ipcache, &new_ipc, limits.ipcache);
    // Identities some of whose addresses cannot be written: an endpoint
    // whose policy names one would see those addresses as a wider
    // identity (e.g. a deny CIDR falling back to an allowed world), so it
    // fails closed.
    let unwritable_ids: BTreeSet<u32> = new_ipc
        .iter()
        .filter(|(p, _, _)| plan.unwritable.contains(p))
        .map(|(_, id, _)| *id)
        .collect();

    // 1. Capacity.
    let demands: Vec<EndpointDemand> = eps
        .iter()
        .map(|e| EndpointDemand {
            id: e.id,
            old: e.old.len(),
            new: e.new.len(),
        })
        .collect();
    let admissions = crate::daemon::capacity::admit_endpoints(&demands, limits);
    let mut failed: BTreeMap<u16, String> = BTreeMap::new();
    for e in &mut eps {
        if let Some(reason) = admissions.get(&e.id).and_then(Admission::reason) {
            failed.insert(e.id, reason);
            e.new = MapState::default();
        } else if let Some(k) = e
            .new
            .entries
            .keys()
            .find(|k| unwritable_ids.contains(&k.identity.0))
        {
            failed.insert(
                e.id,
                format!(
                    "its policy names identity {} whose addresses do not fit in the ipcache (--ipcache-max-entries {}); all its traffic is denied",
                    k.identity.0, limits.ipcache
                ),
            );
            e.new = MapState::default();
        }
    }

    // 2. Narrowing changes, every endpoint.
    let write = |dp: &mut Datapath,
                 failed: &mut BTreeMap<u16, String>,
                 out: &mut ApplyOutcome,
                 e: &EndpointApply,
                 narrowing: bool| {
        if failed.contains_key(&e.id) && !narrowing {
            return;
        }
        let changes: Result<Vec<PolicyChange>> = e
            .old
            .diff(&e.new)
            .iter()
            .filter(|c| phase_of(&e.old, c) == narrowing)
            .map(|c| kernel_change(e.id, c))
            .collect();
        let result = changes.and_then(|changes| {
            out.changes += changes.len();
            dp.apply_policy(&changes).map_err(anyhow::Error::from)
        });
        if let Err(err) = result {
            failed.entry(e.id).or_insert_with(|| {
                format!("writing its policy failed: {err:#}; all its traffic is denied")
            });
        }
    };
    for e in &eps {
        write(dp, &mut failed, &mut out, e, true);
    }

    // 3. The ipcache (planned before step 1).
    let mut ipc: BTreeMap<ipnet::IpNet, u32> = applied.ipcache.iter().copied().collect();
    for p in &plan.deletes {
        match dp.remove_ipcache(*p) {
            Ok(()) => {
                ipc.remove(p);
                out.changes += 1;
            }
            Err(e) => out
                .errors
                .push(format!("ipcache: removing {p} failed: {e}")),
        }
    }
    let learned: BTreeSet<ipnet::IpNet> = new_ipc
        .iter()
        .filter(|e| e.2 == IpcacheClass::Learned)
        .map(|e| e.0)
        .collect();
    out.ipcache_refused = plan.refused_learned.len();
    for (p, id) in &plan.upserts {
        match dp.set_ipcache(*p, *id) {
            Ok(()) => {
                ipc.insert(*p, *id);
                out.changes += 1;
            }
            // A learned address only widens: left out, counted.
            Err(_) if learned.contains(p) => out.ipcache_refused += 1,
            Err(e) => out.errors.push(format!("ipcache: writing {p} failed: {e}")),
        }
    }
    if !plan.unwritable.is_empty() {
        out.errors.push(format!(
            "ipcache: {} cluster entries do not fit in {} (raise --ipcache-max-entries), e.g. {}",
            plan.unwritable.len(),
            limits.ipcache,
            plan.unwritable[0]
        ));
    }
    // Kept in the model's order (longest prefixes first).
    applied.ipcache = new_ipc
        .iter()
        .filter_map(|(p, _, _)| ipc.get(p).map(|id| (*p, *id)))
        .collect();
    for (p, id) in &ipc {
        if !applied.ipcache.iter().any(|(q, _)| q == p) {
            // Still in the map (a delete failed): remembered, retried.
            applied.ipcache.push((*p, *id));
        }
    }

    // 4. Widening changes.
    for e in &eps {
        write(dp, &mut failed, &mut out, e, false);
    }

    // Endpoints that failed: every entry they may hold goes (no entry =
    // drop); what cannot be removed stays recorded and is retried.
    for e in &mut eps {
        if !failed.contains_key(&e.id) {
            continue;
        }
        let keys: BTreeSet<MapKey> = e
            .old
            .entries
            .keys()
            .chain(e.new.entries.keys())
            .copied()
            .collect();
        let mut left = MapState::default();
        for k in keys {
            let removed = kernel_entry(e.id, &k, None)
                .and_then(|(k, _)| Ok(dp.apply_policy(&[PolicyChange::Delete(k)])?));
            if removed.is_err() {
                let v = e.old.entries.get(&k).or(e.new.entries.get(&k)).copied();
                if let Some(v) = v {
                    left.entries.insert(k, v);
                }
            }
        }
        e.new = left;
    }
    for e in &eps {
        if e.new.is_empty() && !identities.contains_key(&e.id) {
            applied.policies.remove(&e.id);
        } else {
            applied
                .policies
                .insert(e.id, e.new.entries.iter().map(|(k, v)| (*k, *v)).collect());
        }
        if let Some(reason) = failed.get(&e.id) {
            tracing::error!(endpoint = %e.name, reason = %reason, "endpoint policy not applied; its traffic is denied");
            out.failed.insert(e.name.clone(), reason.clone());
            if let Some(identity) = identities.get(&e.id) {
                for rule in cluster.rules_selecting(*identity) {
                    let o = &rule.origin;
                    let pods = out
                        .failed_policies
                        .entry((o.kind.to_string(), o.namespace.clone(), o.name.clone()))
                        .or_default();
                    if !pods.contains(&e.name) {
                        pods.push(e.name.clone());
                    }
                }
            }
        }
    }
    for err in &out.errors {
        tracing::error!(error = %err, "ipcache write failed");
    }
    out.policy_entries = applied.policies.values().map(Vec::len).sum();
    out.ipcache_entries = applied.ipcache.len();
    out
}

/// Observe clients and the recent flow lines a new client starts with.
#[derive(Default)]
struct FlowStream {
    clients: Vec<UnixStream>,
    backlog: VecDeque<String>,
}

type SharedFlows = Arc<Mutex<FlowStream>>;

/// Lines kept for clients that connect later.
const BACKLOG: usize = 2000;

fn start_observe_server(state_dir: &Path) -> Result<SharedFlows> {
    let path = state_dir.join("observe.sock");
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let flows: SharedFlows = Arc::new(Mutex::new(FlowStream::default()));
    let shared = flows.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let Ok(mut guard) = shared.lock() else { return };
            let ok = guard.backlog.iter().all(|l| writeln!(s, "{l}").is_ok());
            if ok {
                guard.clients.push(s);
            }
        }
    });
    Ok(flows)
}

/// Records a line and sends it to every client, dropping the ones that
/// cannot keep up.
fn broadcast(flows: &SharedFlows, line: String) {
    let Ok(mut guard) = flows.lock() else {
        return;
    };
    guard.clients.retain_mut(|s| writeln!(s, "{line}").is_ok());
    guard.backlog.push_back(line);
    if guard.backlog.len() > BACKLOG {
        guard.backlog.pop_front();
    }
}

fn now_monotonic() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn monotonic_to_wall(ts_ns: u64) -> chrono_like::Utc {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0);
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    chrono_like::Utc((wall - (mono - ts_ns as i128)).max(0) as u128)
}

fn flow_json(ev: &FlowEvent, names: &Names) -> String {
    let addr = |b: &[u8; 16]| -> IpAddr {
        if ev.family == 4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(*b)
        }
    };
    let (s, d) = (addr(&ev.saddr), addr(&ev.daddr));
    let verdict = match ev.verdict {
        0 => "FORWARDED",
        1 => "DROPPED",
        2 => "REDIRECTED",
        _ => "UNKNOWN",
    };
    let reason = redirect_ebpf::Reason::from_code(ev.reason)
        .map(|r| format!("{r:?}"))
        .unwrap_or_else(|| format!("reason-{}", ev.reason));
    let proto = match ev.protocol {
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        132 => "SCTP".to_string(),
        1 => "ICMP".to_string(),
        58 => "ICMPv6".to_string(),
        n => format!("proto-{n}"),
    };
    serde_json::json!({
        "time": monotonic_to_wall(ev.timestamp_ns).to_string(),
        "source": {"ip": s, "port": ev.sport, "identity": ev.src_identity, "pod": names.by_ip.get(&s)},
        "destination": {"ip": d, "port": ev.dport, "identity": ev.dst_identity, "pod": names.by_ip.get(&d)},
        "protocol": proto,
        "verdict": verdict,
        "reason": reason,
        "direction": if ev.direction == 0 { "ingress" } else { "egress" },
        "endpoint": ev.endpoint_id,
        "redirected": ev.redirected == 1,
        "proxy_port": ev.proxy_port,
        "rule_cookie": ev.rule_cookie,
    })
    .to_string()
}

/// A tiny RFC 3339 UTC formatter (no date crate needed for one format).
pub(crate) mod chrono_like {
    use std::fmt;

    /// Nanoseconds since the Unix epoch.
    pub struct Utc(pub u128);

    impl fmt::Display for Utc {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let secs = (self.0 / 1_000_000_000) as i64;
            let millis = (self.0 / 1_000_000 % 1000) as u32;
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            // Civil-from-days (Howard Hinnant's algorithm).
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z.rem_euclid(146_097);
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let y = yoe + era * 400;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = if m <= 2 { y + 1 } else { y };
            write!(
                f,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        }
    }
}

/// `portcullis observe`: prints the agent's flow events.
pub fn observe(state_dir: &Path, json: bool, follow: bool) -> Result<()> {
    use std::io::BufRead;
    let path = state_dir.join("observe.sock");
    let s = UnixStream::connect(&path)
        .with_context(|| format!("connecting to {} (is the agent running?)", path.display()))?;
    if !follow {
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
    }
    let reader = std::io::BufReader::new(s);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if json {
            writeln!(out, "{line}")?;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["type"] == "agent" {
            writeln!(
                out,
                "{}  agent: {} {}{}",
                v["time"].as_str().unwrap_or(""),
                v["event"].as_str().unwrap_or(""),
                v["endpoint"].as_str().unwrap_or(""),
                v["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )?;
            continue;
        }
        if v["type"] == "l7" {
            let who = |pod: &serde_json::Value, addr: &serde_json::Value| match pod.as_str() {
                Some(p) => format!("{p} ({})", addr.as_str().unwrap_or("?")),
                None => addr.as_str().unwrap_or("?").to_string(),
            };
            writeln!(
                out,
                "{}  {} -> {}  {}  {} {} {}  http {}  [{}]",
                v["time"].as_str().unwrap_or(""),
                who(&v["src_pod"], &v["src"]),
                who(&v["dst_pod"], &v["dst"]),
                v["protocol"].as_str().unwrap_or("HTTP"),
                v["method"].as_str().unwrap_or(""),
                v["authority"].as_str().unwrap_or(""),
                v["path"].as_str().unwrap_or(""),
                v["status"],
                v["verdict"].as_str().unwrap_or("")
            )?;
            continue;
        }
        let side = |x: &serde_json::Value| {
            let ip = x["ip"].as_str().unwrap_or("?");
            let port = x["port"].as_u64().unwrap_or(0);
            match x["pod"].as_str() {
                Some(p) => format!("{p} ({ip}:{port})"),
                None => format!("{ip}:{port}"),
            }
        };
        writeln!(
            out,
            "{}  {} -> {}  {}  {}  {}  [{}]",
            v["time"].as_str().unwrap_or(""),
            side(&v["source"]),
            side(&v["destination"]),
            v["protocol"].as_str().unwrap_or(""),
            v["verdict"].as_str().unwrap_or(""),
            v["reason"].as_str().unwrap_or(""),
            v["direction"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str, ips: &[(&str, u64)]) -> proxy::LearnedNames {
        proxy::LearnedNames {
            source: "10.200.0.1".parse().unwrap(),
            name: name.into(),
            ips: ips
                .iter()
                .map(|(ip, ttl)| (ip.parse().unwrap(), Duration::from_secs(*ttl)))
                .collect(),
        }
    }

    #[test]
    fn revocations_are_written_before_anything_that_widens() {
        use policy_model::{MapKey, MapValue, NumericIdentity, PortKey};
        let key = |id: u32| MapKey {
            direction: Direction::Egress,
            identity: NumericIdentity(id),
            port: PortKey::ANY,
        };
        let value = |verdict| MapValue {
            verdict,
            redirect: None,
            cookie: 0,
        };
        let old = MapState {
            entries: [
                (key(300), value(MapVerdict::Allow)),
                (key(301), value(MapVerdict::Deny)),
            ]
            .into_iter()
            .collect(),
        };
        // Deleting an allow and adding a deny narrow: first phase.
        assert!(phase_of(&old, &MapChange::Delete(key(300))));
        assert!(phase_of(
            &old,
            &MapChange::Upsert(key(302), value(MapVerdict::Deny))
        ));
        // Deleting a deny and adding an allow widen: last phase.
        assert!(!phase_of(&old, &MapChange::Delete(key(301))));
        assert!(!phase_of(
            &old,
            &MapChange::Upsert(key(303), value(MapVerdict::Allow))
        ));
    }

    #[test]
    fn an_answer_is_held_only_for_new_addresses_and_passed_on_only_to_extend_an_expiry() {
        let now = 1_000;
        let mut known = KnownNames::default();
        let a: IpAddr = "10.201.0.1".parse().unwrap();
        known
            .0
            .insert("a.example.".into(), [(a, now + 60)].into_iter().collect());
        // Unknown name, unknown address of a known name: hold.
        assert_eq!(
            known.novelty(&update("b.example.", &[("10.201.0.1", 60)]), now),
            Novelty::NewAddress
        );
        assert_eq!(
            known.novelty(
                &update("a.example.", &[("10.201.0.1", 60), ("10.201.0.2", 60)]),
                now
            ),
            Novelty::NewAddress
        );
        // Same TTL, or a longer one within the slack: nothing to do.
        assert_eq!(
            known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now),
            Novelty::Nothing
        );
        assert_eq!(
            known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 1),
            Novelty::Nothing
        );
        // Two seconds later the answer outlives the agent's expiry.
        assert_eq!(
            known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 2),
            Novelty::LongerTtl
        );
        assert_eq!(
            known.novelty(&update("a.example.", &[("10.201.0.1", 300)]), now),
            Novelty::LongerTtl
        );
        // Past its expiry the address admits no new flow until the agent
        // unmarks it: the answer is held like a new address.
        assert_eq!(
            known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 60),
            Novelty::NewAddress
        );
    }
}
