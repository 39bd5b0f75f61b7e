//! The daemon's command-line options.

use std::path::PathBuf;

/// Which pods the Kubernetes watcher lists.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodScope {
    /// Every pod (peers on other nodes keep their label identities).
    Cluster,
    /// Only this node's pods.
    ThisNode,
}

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
    #[arg(long, value_enum, default_value = "cluster")]
    pub pod_scope: PodScope,
    /// Network namespace to run in (the lab's node namespace).
    #[arg(long)]
    pub netns: Option<String>,
    /// bpffs directory for pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/portcullis")]
    pub pin_dir: PathBuf,
    /// Directory for the agent's state (applied maps, `hubble.sock`).
    #[arg(long, default_value = crate::state_dir::DEFAULT)]
    pub state_dir: PathBuf,
    /// Audit mode for every endpoint of the node: what policy would drop
    /// passes and is reported as AUDIT (attributed to the policy that
    /// would have dropped it). Per policy and per namespace: the
    /// annotation `policy.cilium.io/audit-mode: "true"`.
    #[arg(long)]
    pub policy_audit_mode: bool,
    /// Flows kept for Hubble's `GetFlows` (the ring's capacity).
    #[arg(long, default_value_t = crate::hubble::ring::DEFAULT_MAX_FLOWS)]
    pub hubble_max_flows: usize,
    /// TCP address of Hubble's Observer API (besides the unix socket
    /// `hubble.sock` in the state directory); empty: none. Flows name
    /// every pod of the node: the default is reachable from the node only,
    /// not from its pods.
    #[arg(long, default_value = "127.0.0.1:4244")]
    pub hubble_listen_address: String,
    /// Uplink interface of the node (programs attached at its ingress).
    #[arg(long)]
    pub uplink: Option<String>,
    /// Fallback only: the input files are watched (inotify) and read when
    /// they change, not polled. If the watcher cannot be started, the files
    /// are re-checked this often instead, in milliseconds (at least 1000).
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// How long the file watcher waits for a burst of file events (an
    /// editor's several writes) to go quiet before reading, in
    /// milliseconds; a steady stream is read every ten such periods. A
    /// file closed after writing or renamed into place is read at once.
    #[arg(long, default_value_t = 5)]
    pub watch_debounce_ms: u64,
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
    #[arg(long, default_value_t = super::capacity::DEFAULT_LIMITS.ipcache as u32)]
    pub ipcache_max_entries: u32,
    /// Entries of the node-wide policy map (all endpoints), created with
    /// this size (a pinned map keeps its size). An endpoint whose policy
    /// does not fit fails closed: all its traffic is denied, `status`
    /// shows it.
    #[arg(long, default_value_t = super::capacity::DEFAULT_LIMITS.policy as u32)]
    pub policy_map_max_entries: u32,
    /// Most policy map entries one endpoint may hold (Cilium's default
    /// per-endpoint map size). An endpoint whose policy needs more fails
    /// closed: all its traffic is denied, `status` shows it.
    #[arg(long, default_value_t = super::capacity::DEFAULT_LIMITS.policy_per_endpoint)]
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
