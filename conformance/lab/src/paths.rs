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
