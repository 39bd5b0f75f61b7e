//! The local lab: a node namespace, one namespace per pod joined to it by
//! a veth pair, and a world namespace behind an uplink veth. The agent runs
//! in the node namespace with the programs attached to the node side of
//! every veth.
//!
//! - [`net`]: the lab's names and addresses, its namespaces and links;
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
pub mod fake_api;
pub mod net;
pub mod netns;
pub mod paths;
pub mod probe;
pub mod servers;
pub mod state;

pub use agent::{detach, start_agent, stop_agent};
pub use net::{NODE_NS, NS_PREFIX, WORLD_NS, host_ifname, pod_ns};
pub use paths::{LAB_NODE, PIN_DIR, STATE_DIR};
pub use state::LabState;

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

/// `lab up`: builds the namespaces and starts the agent from `binary`
/// (a `portcullis` executable).
pub fn up(
    topology: &Path,
    policies: &[PathBuf],
    binary: &Path,
    kubernetes: bool,
    agent_args: &[String],
) -> Result<LabState> {
    require_root()?;
    let topo = Topology::from_file(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
    net::check_lab_addresses(&topo)?;
    // The lab's node as its agent sees it: a `nodes:` entry named
    // `lab-node` adds its addresses to the node namespace.
    let topo = topo.for_node(LAB_NODE);
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

    let pods = make_network(&topo)?;

    let mut state = LabState {
        topology: std::fs::canonicalize(topology)?,
        policies: policies
            .iter()
            .map(std::fs::canonicalize)
            .collect::<std::io::Result<_>>()?,
        pods,
        remote_pods: net::remote_pods(&topo),
        agent_pid: None,
        kubernetes,
        agent_args: agent_args.to_vec(),
    };
    if kubernetes {
        agent::start_fake_apiserver(&state, binary)?;
    }
    state.agent_pid = Some(start_agent(&state, binary)?);
    state.write()?;
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
    stop_agent();
    agent::kill_pidfile("apiserver.pid");
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
        let _ = std::fs::remove_file(paths::state_file(f));
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
