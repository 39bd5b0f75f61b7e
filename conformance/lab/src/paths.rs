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

/// Where the lab's agent reads TLS secrets (`DIR/<namespace>/<name>/`).
pub fn secrets_dir() -> PathBuf {
    Path::new(STATE_DIR).join("tls-secrets")
}

/// The file `name` in the state directory.
pub fn state_file(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(name)
}

/// The agent's log (stdout and stderr, appended across restarts).
pub fn agent_log() -> PathBuf {
    state_file("agent.log")
}

/// The kubeconfig the fake API server writes for the agent.
pub fn kubeconfig() -> PathBuf {
    state_file("kubeconfig")
}

/// The hash of the policy files the agent last applied (the agent writes
/// it; the wire runner waits for it).
pub fn applied_hash() -> PathBuf {
    state_file("applied.hash")
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
