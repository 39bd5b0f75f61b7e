//! The local lab: a node namespace, one namespace per pod joined to it by
//! a veth pair, and a world namespace behind an uplink veth. The agent runs
//! in the node namespace with the programs attached to the node side of
//! every veth.

pub mod fake_api;
pub mod netns;
pub mod paths;
pub mod probe;

pub use paths::{LAB_NODE, PIN_DIR, STATE_DIR};

use anyhow::{Context, Result, bail};
use policy_model::Topology;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Node namespace name.
pub const NODE_NS: &str = "pc-node";
/// World namespace name.
pub const WORLD_NS: &str = "pc-world";
/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "pc-";
/// Node side of the uplink veth.
pub const UPLINK_IF: &str = "pcup";
/// Gateway address every pod routes through (on each node-side veth).
pub const POD_GATEWAY_V4: &str = "169.254.1.1";
pub const POD_GATEWAY_V6: &str = "fe80::1";
/// Node-side addresses of the uplink.
pub const UPLINK_NODE_V4: &str = "10.201.255.254";
pub const UPLINK_NODE_V6: &str = "fd00:201::fffe";

/// Namespace of the pod with endpoint id `id`.
pub fn pod_ns(id: u16) -> String {
    format!("{NS_PREFIX}pod{id}")
}

/// Node-side interface of the pod with endpoint id `id`.
pub fn host_ifname(id: u16) -> String {
    format!("pc{id}")
}

/// What `lab up` made, so `down` and `exec` find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub topology: PathBuf,
    pub policies: Vec<PathBuf>,
    /// `ns/pod` -> namespace.
    pub pods: Vec<(String, String)>,
    pub agent_pid: Option<u32>,
    /// Kubernetes mode: the agent watches a fake API server (in the node
    /// namespace) that serves the topology and policy files as API objects.
    #[serde(default)]
    pub kubernetes: bool,
    /// More arguments for `portcullis agent` (`lab up --agent-arg`), kept
    /// for `restart-agent`.
    #[serde(default)]
    pub agent_args: Vec<String>,
}

impl LabState {
    fn path() -> PathBuf {
        Path::new(STATE_DIR).join("state.json")
    }

    /// Reads the state of a running lab.
    pub fn read() -> Result<Self> {
        let p = Self::path();
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no lab is up ({} missing): run `portcullis lab up`",
                p.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }

    /// Saves the state.
    pub fn write(&self) -> Result<()> {
        std::fs::create_dir_all(STATE_DIR)?;
        std::fs::write(Self::path(), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// The namespace of `node`, `world` or `ns/pod`.
    pub fn namespace_of(&self, target: &str) -> Result<String> {
        match target {
            "node" => Ok(NODE_NS.into()),
            "world" => Ok(WORLD_NS.into()),
            t => self
                .pods
                .iter()
                .find(|(p, _)| p == t)
                .map(|(_, ns)| ns.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no pod {t:?} in the lab (pods: {})",
                        self.pods
                            .iter()
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads eBPF: run it as root");
    }
    Ok(())
}

fn check_lab_addresses(topo: &Topology) -> Result<()> {
    let pod_net4: ipnet::IpNet = "10.200.0.0/16".parse().expect("literal");
    let pod_net6: ipnet::IpNet = "fd00:200::/64".parse().expect("literal");
    let world4: ipnet::IpNet = "10.201.0.0/16".parse().expect("literal");
    let world6: ipnet::IpNet = "fd00:201::/64".parse().expect("literal");
    for p in &topo.pods {
        for ip in p.addresses() {
            if !pod_net4.contains(&ip) && !pod_net6.contains(&ip) {
                bail!(
                    "pod {}: address {ip} is outside the lab's pod ranges 10.200.0.0/16 and fd00:200::/64",
                    p.full_name()
                );
            }
        }
    }
    for ip in topo.world.iter().flat_map(|w| w.ips.iter()) {
        if !world4.contains(ip) && !world6.contains(ip) {
            bail!("world address {ip} is outside 10.201.0.0/16 and fd00:201::/64");
        }
    }
    for ip in topo.node.iter().flat_map(|w| w.ips.iter()) {
        if !pod_net4.contains(ip) && !pod_net6.contains(ip) {
            bail!("node address {ip} is outside 10.200.0.0/16 and fd00:200::/64");
        }
    }
    Ok(())
}

fn host_prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// `lab up`: builds the namespaces and starts the agent.
pub fn up(
    topology: &Path,
    policies: &[PathBuf],
    binary: &Path,
    kubernetes: bool,
    agent_args: &[String],
) -> Result<LabState> {
    require_root()?;
    let topo = Topology::from_file(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
    check_lab_addresses(&topo)?;
    // Validate the policies before touching the system.
    policy_model::PolicySet::load_paths(policies).map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    down()?;
    std::fs::create_dir_all(STATE_DIR)?;

    for ns in [NODE_NS, WORLD_NS] {
        netns::ip(&["netns", "add", ns])?;
        netns::ip_in(ns, &["link", "set", "lo", "up"])?;
    }
    netns::sysctl_in(NODE_NS, "net.ipv4.ip_forward", "1")?;
    netns::sysctl_in(NODE_NS, "net.ipv6.conf.all.forwarding", "1")?;
    let node_v4 = topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter())
        .find(|ip| ip.is_ipv4())
        .copied();
    for ip in topo.node.iter().flat_map(|n| n.ips.iter()) {
        netns::ip_in(NODE_NS, &["addr", "add", &host_prefix(ip), "dev", "lo"])?;
    }

    // Uplink to the world.
    netns::ip(&[
        "link", "add", UPLINK_IF, "netns", NODE_NS, "type", "veth", "peer", "name", "eth0",
        "netns", WORLD_NS,
    ])?;
    netns::ip_in(
        NODE_NS,
        &[
            "addr",
            "add",
            &format!("{UPLINK_NODE_V4}/16"),
            "dev",
            UPLINK_IF,
        ],
    )?;
    netns::ip_in(
        NODE_NS,
        &[
            "addr",
            "add",
            &format!("{UPLINK_NODE_V6}/64"),
            "dev",
            UPLINK_IF,
            "nodad",
        ],
    )?;
    netns::ip_in(NODE_NS, &["link", "set", UPLINK_IF, "up"])?;
    netns::sysctl_in(WORLD_NS, "net.ipv6.conf.all.accept_dad", "0")?;
    netns::ip_in(WORLD_NS, &["addr", "add", "10.201.0.1/16", "dev", "eth0"])?;
    netns::ip_in(
        WORLD_NS,
        &["addr", "add", "fd00:201::1/64", "dev", "eth0", "nodad"],
    )?;
    for ip in topo.world.iter().flat_map(|w| w.ips.iter()) {
        let p = host_prefix(ip);
        if ip.is_ipv6() {
            netns::ip_in(WORLD_NS, &["addr", "add", &p, "dev", "eth0", "nodad"])?;
        } else {
            netns::ip_in(WORLD_NS, &["addr", "add", &p, "dev", "eth0"])?;
        }
    }
    netns::ip_in(WORLD_NS, &["link", "set", "eth0", "up"])?;
    netns::ip_in(
        WORLD_NS,
        &["route", "add", "default", "via", UPLINK_NODE_V4],
    )?;
    netns::ip_in(
        WORLD_NS,
        &["-6", "route", "add", "default", "via", UPLINK_NODE_V6],
    )?;

    // Pods.
    let mut pods = Vec::new();
    for (i, pod) in topo.pods.iter().enumerate() {
        let id = u16::try_from(i + 1).context("too many pods")?;
        let ns = pod_ns(id);
        let hif = host_ifname(id);
        netns::ip(&["netns", "add", &ns])?;
        netns::ip_in(&ns, &["link", "set", "lo", "up"])?;
        netns::sysctl_in(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
        netns::ip(&[
            "link", "add", &hif, "netns", NODE_NS, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        for ip in pod.addresses() {
            let p = host_prefix(&ip);
            if ip.is_ipv6() {
                netns::ip_in(&ns, &["addr", "add", &p, "dev", "eth0", "nodad"])?;
            } else {
                netns::ip_in(&ns, &["addr", "add", &p, "dev", "eth0"])?;
            }
        }
        netns::ip_in(&ns, &["link", "set", "eth0", "up"])?;
        netns::ip_in(
            &ns,
            &[
                "route",
                "add",
                POD_GATEWAY_V4,
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        )?;
        netns::ip_in(
            &ns,
            &[
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY_V4,
                "dev",
                "eth0",
            ],
        )?;
        netns::ip_in(
            &ns,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY_V6,
                "dev",
                "eth0",
            ],
        )?;
        netns::ip_in(
            NODE_NS,
            &["addr", "add", &format!("{POD_GATEWAY_V4}/32"), "dev", &hif],
        )?;
        netns::ip_in(
            NODE_NS,
            &[
                "addr",
                "add",
                &format!("{POD_GATEWAY_V6}/64"),
                "dev",
                &hif,
                "nodad",
            ],
        )?;
        netns::ip_in(NODE_NS, &["link", "set", &hif, "up"])?;
        for ip in pod.addresses() {
            let p = host_prefix(&ip);
            match (ip, node_v4) {
                (IpAddr::V4(_), Some(src)) => netns::ip_in(
                    NODE_NS,
                    &["route", "add", &p, "dev", &hif, "src", &src.to_string()],
                )?,
                (IpAddr::V4(_), None) => netns::ip_in(NODE_NS, &["route", "add", &p, "dev", &hif])?,
                (IpAddr::V6(_), _) => {
                    netns::ip_in(NODE_NS, &["-6", "route", "add", &p, "dev", &hif])?
                }
            }
        }
        pods.push((pod.full_name(), ns));
    }

    let mut state = LabState {
        topology: std::fs::canonicalize(topology)?,
        policies: policies
            .iter()
            .map(std::fs::canonicalize)
            .collect::<std::io::Result<_>>()?,
        pods,
        agent_pid: None,
        kubernetes,
        agent_args: agent_args.to_vec(),
    };
    if kubernetes {
        start_fake_apiserver(&state, binary)?;
    }
    state.agent_pid = Some(start_agent(&state, binary)?);
    state.write()?;
    Ok(state)
}

/// Starts `portcullis agent` in the node namespace, detached, and waits
/// until it reports its maps filled.
pub fn start_agent(state: &LabState, binary: &Path) -> Result<u32> {
    let ready = Path::new(STATE_DIR).join("agent.ready");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(STATE_DIR).join("agent.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("agent").arg("--netns").arg(NODE_NS);
    if state.kubernetes {
        cmd.arg("--kubernetes")
            .arg("--kubeconfig")
            .arg(Path::new(STATE_DIR).join("kubeconfig"))
            .arg("--node-name")
            .arg(LAB_NODE);
    } else {
        cmd.arg("--topology").arg(&state.topology);
        for p in &state.policies {
            cmd.arg("--policy").arg(p);
        }
    }
    if !state.kubernetes {
        // Kubernetes mode reads them as Secrets from the (fake) API server,
        // which serves this directory's files.
        cmd.arg("--tls-secrets-dir").arg(paths::secrets_dir());
    }
    // The lab's pod ranges: never learned from DNS answers.
    cmd.args(["--pod-cidr", "10.200.0.0/16", "--pod-cidr", "fd00:200::/64"]);
    cmd.arg("--pin-dir")
        .arg(PIN_DIR)
        .arg("--state-dir")
        .arg(STATE_DIR)
        .arg("--uplink")
        .arg(UPLINK_IF)
        .args(&state.agent_args);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd.spawn().context("starting the agent")?;
    let pid = child.id();
    std::fs::write(Path::new(STATE_DIR).join("agent.pid"), pid.to_string())?;
    let start = Instant::now();
    while !ready.exists() {
        if start.elapsed() > Duration::from_secs(20) {
            let tail =
                std::fs::read_to_string(Path::new(STATE_DIR).join("agent.log")).unwrap_or_default();
            bail!(
                "the agent did not become ready in 20 s; its log:\n{}",
                tail.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("the agent exited; see {STATE_DIR}/agent.log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// Starts the fake API server in the node namespace and waits for the
/// kubeconfig it writes.
fn start_fake_apiserver(state: &LabState, binary: &Path) -> Result<()> {
    let kubeconfig = Path::new(STATE_DIR).join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(STATE_DIR).join("apiserver.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NODE_NS])
        .arg(binary)
        .args(["lab", "fake-apiserver", "--topology"])
        .arg(&state.topology)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig);
    for p in &state.policies {
        cmd.arg("--policy").arg(p);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the fake API server")?;
    std::fs::write(
        Path::new(STATE_DIR).join("apiserver.pid"),
        child.id().to_string(),
    )?;
    let start = Instant::now();
    while !kubeconfig.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the fake API server did not start; see {STATE_DIR}/apiserver.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn kill_pidfile(name: &str) {
    let pidfile = Path::new(STATE_DIR).join(name);
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // The fake API server runs under `ip netns exec` in its own
        // process group: signal the group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Stops the lab's agent process, if running.
pub fn stop_agent() {
    let pidfile = Path::new(STATE_DIR).join("agent.pid");
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists()
            && start.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Stops the agent and removes the pinned program links, which detaches
/// the programs from every interface. The maps stay pinned.
pub fn detach() -> Result<()> {
    stop_agent();
    let links = Path::new(PIN_DIR).join("links");
    if links.exists() {
        std::fs::remove_dir_all(&links).with_context(|| format!("removing {}", links.display()))?;
    }
    Ok(())
}

/// `lab down`: removes everything a lab made, also after a crash.
pub fn down() -> Result<()> {
    require_root()?;
    stop_agent();
    kill_pidfile("apiserver.pid");
    for ns in netns::list() {
        if ns.starts_with(NS_PREFIX) {
            netns::ip(&["netns", "del", &ns])?;
        }
    }
    let _ = std::fs::remove_dir_all(PIN_DIR);
    for f in [
        "applied.json",
        "applied.hash",
        "agent.ready",
        "fqdn.json",
        "kubeconfig",
    ] {
        let _ = std::fs::remove_file(Path::new(STATE_DIR).join(f));
    }
    let _ = std::fs::remove_file(LabState::path());
    Ok(())
}

/// `lab exec TARGET -- CMD...`: runs a command in a lab namespace.
pub fn exec(target: &str, cmd: &[String]) -> Result<std::process::ExitStatus> {
    let state = LabState::read()?;
    let ns = state.namespace_of(target)?;
    if cmd.is_empty() {
        bail!("give a command after --");
    }
    Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(cmd)
        .status()
        .context("running ip netns exec")
}
