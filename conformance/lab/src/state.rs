//! What `lab up` made ([`LabState`], saved in the state directory), so
//! later commands (`down`, `exec`, `restart-agent`, the wire runner) find
//! it again.

use crate::net::{NODE_NS, WORLD_NS};
use crate::paths::{self, LAB_NODE};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `lab up` made, so `down` and `exec` find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub topology: PathBuf,
    pub policies: Vec<PathBuf>,
    /// `ns/pod` -> namespace.
    pub pods: Vec<(String, String)>,
    /// Pods of other nodes (`ns/pod` -> node): addresses only, no
    /// namespace, so nothing runs "in" them.
    #[serde(default)]
    pub remote_pods: Vec<(String, String)>,
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
    pub(crate) fn path() -> PathBuf {
        paths::state_file("state.json")
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
        std::fs::create_dir_all(paths::STATE_DIR)?;
        std::fs::write(Self::path(), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// The namespace of `node`, `world` or `ns/pod` (a pod of the lab's
    /// node: a pod of another node has none, and says so).
    pub fn namespace_of(&self, target: &str) -> Result<String> {
        match target {
            "node" => Ok(NODE_NS.into()),
            "world" => Ok(WORLD_NS.into()),
            t => {
                if let Some((_, ns)) = self.pods.iter().find(|(p, _)| p == t) {
                    return Ok(ns.clone());
                }
                if let Some((_, node)) = self.remote_pods.iter().find(|(p, _)| p == t) {
                    anyhow::bail!(
                        "pod {t} is not on this node (it runs on {node:?}; the lab's node is {LAB_NODE:?}): \
                         it exists only as an address, so nothing can run in it"
                    );
                }
                anyhow::bail!(
                    "no pod {t:?} in the lab (pods: {})",
                    self.pods
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
