//! The lab's file layout and fixed names, in one place: where its state,
//! pinned maps and TLS secrets live, and the node name its API objects use.
//! Everything else in the lab (and the wire runner) takes them from here.

use std::path::{Path, PathBuf};

/// Where the lab keeps its state (also after a crash).
pub const STATE_DIR: &str = "/run/portcullis/lab";
/// The bpffs directory the lab's agent pins its maps in.
pub const PIN_DIR: &str = "/run/portcullis/bpffs/lab";
/// The node name the lab's objects use.
pub const LAB_NODE: &str = "lab-node";

/// The state directory of node `name`'s agent in a cluster lab (a
/// one-node lab's agent uses [`STATE_DIR`] itself).
pub fn node_state_dir(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join("nodes").join(name)
}

/// The bpffs directory of node `name`'s agent in a cluster lab (a
/// one-node lab's agent uses [`PIN_DIR`] itself).
pub fn node_pin_dir(name: &str) -> PathBuf {
    Path::new(PIN_DIR).join(name)
}

/// The kubeconfig `lab up` writes for the user's kubectl (the API server
/// on 127.0.0.1 of the caller's namespace).
pub fn user_kubeconfig() -> PathBuf {
    state_file("kubeconfig")
}

/// The cluster's topology as `lab up` built it (every pod placed and
/// addressed, every node with its underlay addresses).
pub fn built_topology() -> PathBuf {
    state_file("cluster-topology.yaml")
}

/// Where the lab's agent reads TLS secrets (`DIR/<namespace>/<name>/`).
pub fn secrets_dir() -> PathBuf {
    Path::new(STATE_DIR).join("tls-secrets")
}

/// The file `name` in the state directory.
pub fn state_file(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(name)
}

/// The (first) agent's log (stdout and stderr, appended across
/// restarts); each node's is `agent.log` in its [`crate::LabNode::state_dir`].
pub fn agent_log() -> PathBuf {
    state_file("agent.log")
}

/// The kubeconfig the fake API server writes for the agents (its listener
/// in the agents' namespace: the node's, or the cluster's underlay).
pub fn kubeconfig() -> PathBuf {
    state_file("agent-kubeconfig")
}

/// The hash of the policy files the agent last applied (the agent writes
/// it; the wire runner waits for it).
pub fn applied_hash() -> PathBuf {
    state_file("applied.hash")
}

/// What the lab's API server last took from the policy files: their
/// content hash and the digest of the policies it then stored
/// (`HASH DIGEST`, hex); an agent in Kubernetes mode that applied them
/// records the same digest as its `applied.hash`.
pub fn api_policies_hash() -> PathBuf {
    state_file("api-policies.hash")
}

/// The agent's learned-name store (DNS-learned addresses).
pub fn learned_names() -> PathBuf {
    state_file("fqdn.json")
}

/// A working directory of a runner inside the state directory
/// (`conformance`, `demo`).
pub fn work_dir(name: &str) -> PathBuf {
    state_file(name)
}
