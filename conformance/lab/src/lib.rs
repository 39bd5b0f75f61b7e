//! The local lab: a node namespace, one namespace per pod joined to it by
//! a veth pair, and a world namespace behind an uplink veth. The agent runs
//! in the node namespace with the programs attached to the node side of
//! every veth. A topology with two nodes or more in `nodes:` makes a
//! cluster lab ([`cluster`]): each node a namespace with its pods and its
//! own agent, the nodes and the world joined by an underlay bridge.
//!
//! - [`net`]: the lab's names and addresses, its namespaces and links;
//! - [`cluster`]: the cluster lab's plan (placement, addresses) and build;
//! - [`agent`]: starting and stopping the agent (and the fake API server);
//! - [`state`]: what `lab up` made, found again by later commands;
//! - [`paths`]: the lab's file layout, one owner;
//! - [`probe`]: real traffic from inside the namespaces;
//! - [`servers`]: real peers (haproxy, nginx, knot, tansu) in namespaces;
//! - [`fake_api`]: the topology and policy files as API objects;
//! - [`netns`]: running code in a namespace, and a [`netns::Netns`] guard
//!   for root tests of every crate.

#![forbid(unsafe_code)]

pub mod agent;
pub mod cluster;
pub mod fake_api;
pub mod net;
pub mod netns;
pub mod paths;
pub mod probe;
pub mod servers;
pub mod state;

pub use agent::{
    detach, start_agent, start_agents, start_node_agent, stop_agent, stop_agents, stop_node_agent,
};
pub use net::{NODE_NS, NS_PREFIX, WORLD_NS, host_ifname, pod_ns};
pub use paths::{LAB_NODE, PIN_DIR, STATE_DIR};
pub use state::{LabNode, LabState};

use anyhow::{Context, Result, bail};
use policy_model::Topology;
use std::path::{Path, PathBuf};
use std::process::Command;

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads eBPF: run it as root");
    }
    Ok(())
}

/// How `lab up` feeds the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inputs {
    /// Files for a one-node lab, the API server for a cluster lab.
    #[default]
    Auto,
    /// The agents read the topology and policy files.
    Files,
    /// The agents list+watch the lab's API server, which serves the
    /// topology and the policy files as API objects (and takes kubectl).
    Kubernetes,
}

/// What `lab up` builds beyond the topology and policies.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    pub inputs: Inputs,
    /// Build only this node of a topology with `nodes:` (the others' pods
    /// are addresses its agent knows as remote endpoints): a one-node lab
    /// for large-cluster benches.
    pub only_node: Option<String>,
    /// More arguments for every agent.
    pub agent_args: Vec<String>,
}

/// `lab up`: builds the namespaces and starts the agent from `binary`
/// (a `portcullis` executable); `kubernetes` forces Kubernetes mode.
pub fn up(
    topology: &Path,
    policies: &[PathBuf],
    binary: &Path,
    kubernetes: bool,
    agent_args: &[String],
) -> Result<LabState> {
    let options = UpOptions {
        inputs: if kubernetes {
            Inputs::Kubernetes
        } else {
            Inputs::Auto
        },
        only_node: None,
        agent_args: agent_args.to_vec(),
    };
    up_with(topology, policies, binary, &options)
}

/// `lab up` with every option: a cluster lab for a topology with two nodes
/// or more (unless [`UpOptions::only_node`]), else a one-node lab.
pub fn up_with(
    topology: &Path,
    policies: &[PathBuf],
    binary: &Path,
    options: &UpOptions,
) -> Result<LabState> {
    require_root()?;
    let topo = Topology::from_file(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let cluster = cluster::is_cluster(&topo) && options.only_node.is_none();
    let kubernetes = match options.inputs {
        Inputs::Auto => cluster,
        Inputs::Files => false,
        Inputs::Kubernetes => true,
    };
    let policies: Vec<PathBuf> = policies
        .iter()
        .map(std::fs::canonicalize)
        .collect::<std::io::Result<_>>()?;
    let mut state = if cluster {
        // The user's addresses; those the plan adds are the lab's own.
        net::check_lab_addresses(&topo)?;
        let plan = cluster::plan(&topo)?;
        down()?;
        std::fs::create_dir_all(STATE_DIR)?;
        std::fs::write(
            paths::built_topology(),
            serde_yaml_ng::to_string(&plan.topology)?,
        )?;
        let built = cluster::build(&plan)?;
        LabState {
            topology: std::fs::canonicalize(topology)?,
            policies,
            pods: built
                .iter()
                .map(|(p, ns, _)| (p.clone(), ns.clone()))
                .collect(),
            remote_pods: Vec::new(),
            nodes: plan
                .nodes
                .iter()
                .map(cluster::PlannedNode::lab_node)
                .collect(),
            pod_nodes: built.into_iter().map(|(p, _, n)| (p, n)).collect(),
            cluster: true,
            kubernetes,
            agent_args: options.agent_args.clone(),
        }
    } else {
        net::check_lab_addresses(&topo)?;
        let node_name = options.only_node.as_deref().unwrap_or(LAB_NODE);
        if node_name != LAB_NODE {
            bail!(
                "--node {node_name}: a one-node lab's node is {LAB_NODE:?} (name it so in `nodes:`)"
            );
        }
        // The lab's node as its agent sees it: a `nodes:` entry named
        // `lab-node` adds its addresses to the node namespace.
        let topo = topo.for_node(LAB_NODE);
        down()?;
        std::fs::create_dir_all(STATE_DIR)?;
        let pods = make_network(&topo)?;
        LabState {
            topology: std::fs::canonicalize(topology)?,
            policies,
            pods,
            remote_pods: net::remote_pods(&topo),
            nodes: vec![LabNode::single()],
            pod_nodes: Vec::new(),
            cluster: false,
            kubernetes,
            agent_args: options.agent_args.clone(),
        }
    };
    for node in &state.nodes {
        std::fs::create_dir_all(&node.state_dir)?;
    }
    if kubernetes {
        let (netns, at) = if state.cluster {
            (
                cluster::UNDERLAY_NS.to_string(),
                std::net::SocketAddr::new(cluster::UNDERLAY_V4.into(), cluster::API_PORT),
            )
        } else {
            (
                NODE_NS.to_string(),
                std::net::SocketAddr::from(([127, 0, 0, 1], cluster::API_PORT)),
            )
        };
        agent::start_fake_apiserver(&state, binary, &netns, at)?;
    }
    // Written before the agents start: a failed start leaves a lab `down`
    // and `status` can find.
    state.write()?;
    agent::start_agents(&mut state, binary)?;
    state.write()?;
    agent::start_relay(binary);
    Ok(state)
}

/// The lab's namespaces and links for `topo` (the lab node's view, see
/// [`Topology::for_node`]): node and world, then a namespace and veth for
/// each pod of the lab's node only; pods of other nodes are addresses the
/// agent knows as remote endpoints. Returns each local pod (`ns/pod`) with
/// its namespace. [`down`] removes what it made.
pub fn make_network(topo: &Topology) -> Result<Vec<(String, String)>> {
    net::make_node_and_world(topo)?;
    let node_v4 = topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter())
        .find(|ip| ip.is_ipv4())
        .copied();
    let mut pods = Vec::new();
    for (id, pod) in net::local_pods(topo)? {
        let ns = net::link_pod(id, pod, node_v4)?;
        pods.push((pod.full_name(), ns));
    }
    Ok(pods)
}

/// `lab down`: removes everything a lab made, also after a crash.
pub fn down() -> Result<()> {
    require_root()?;
    agent::stop_every_agent();
    agent::kill_pidfile("apiserver.pid");
    agent::kill_pidfile("relay.pid");
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
        "agent-kubeconfig",
        "cluster-topology.yaml",
    ] {
        let _ = std::fs::remove_file(paths::state_file(f));
    }
    // A cluster's nodes keep their agents' files in directories of their
    // own (logs go too: a new lab starts them afresh).
    let _ = std::fs::remove_dir_all(paths::state_file("nodes"));
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
