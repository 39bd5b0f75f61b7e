//! What `lab up` made ([`LabState`], saved in the state directory), so
//! later commands (`down`, `exec`, `restart-agent`, the wire runner) find
//! it again.

use crate::net::{NODE_NS, WORLD_NS};
use crate::paths::{self, LAB_NODE, PIN_DIR, STATE_DIR};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A node of the lab and its agent: where it runs and keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabNode {
    /// The node's name (`spec.nodeName` of its pods).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its agent's state directory (log, pid, `agent.ready`, observe
    /// socket, `applied.hash`).
    pub state_dir: PathBuf,
    /// Its agent's bpffs directory.
    pub pin_dir: PathBuf,
    /// Its agent's process, while running.
    #[serde(default)]
    pub agent_pid: Option<u32>,
}

impl LabNode {
    /// The one node of a one-node lab: today's fixed names.
    pub fn single() -> LabNode {
        LabNode {
            name: LAB_NODE.into(),
            netns: NODE_NS.into(),
            state_dir: STATE_DIR.into(),
            pin_dir: PIN_DIR.into(),
            agent_pid: None,
        }
    }

    /// The file `name` in the agent's state directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    /// The agent's log (stdout and stderr, appended across restarts).
    pub fn agent_log(&self) -> PathBuf {
        self.file("agent.log")
    }

    /// The hash of the policy files the agent last applied (file mode).
    pub fn applied_hash(&self) -> PathBuf {
        self.file("applied.hash")
    }
}

/// What `lab up` made, so `down` and `exec` find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub topology: PathBuf,
    pub policies: Vec<PathBuf>,
    /// `ns/pod` -> namespace, for every pod with a namespace (every node's).
    pub pods: Vec<(String, String)>,
    /// Pods of nodes the lab did not build (`ns/pod` -> node): addresses
    /// only, no namespace, so nothing runs "in" them.
    #[serde(default)]
    pub remote_pods: Vec<(String, String)>,
    /// The nodes the lab built, each with its agent; the first is the one
    /// `node` names. One for a one-node lab.
    pub nodes: Vec<LabNode>,
    /// `ns/pod` -> node, for every pod with a namespace (a cluster lab).
    #[serde(default)]
    pub pod_nodes: Vec<(String, String)>,
    /// A cluster lab: several node namespaces joined by an underlay; the
    /// agents read [`paths::built_topology`].
    #[serde(default)]
    pub cluster: bool,
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

    /// Waits until every node's agent has applied the policy files as they
    /// are now: in file mode each agent's `applied.hash` is the files'
    /// content hash; in Kubernetes mode the lab's API server first takes
    /// the files in ([`paths::api_policies_hash`]), then each agent's
    /// `applied.hash` is the digest of the policies it stored. Returns how
    /// long it took.
    pub fn wait_applied(&self, timeout: std::time::Duration) -> Result<std::time::Duration> {
        let start = std::time::Instant::now();
        let want = format!("{:016x}", policy_model::load::content_hash(&self.policies));
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let digest = loop {
            if !self.kubernetes {
                break want.clone();
            }
            let line = read(paths::api_policies_hash());
            if let Some((files, digest)) = line.trim().split_once(' ')
                && files == want
            {
                break digest.to_string();
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "the lab's API server did not take the policy files in within {} s (see {})",
                    timeout.as_secs(),
                    paths::state_file("apiserver.log").display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        for node in &self.nodes {
            while read(node.applied_hash()).trim() != digest {
                if start.elapsed() > timeout {
                    anyhow::bail!(
                        "the agent of node {} did not apply the policies within {} s (see {})",
                        node.name,
                        timeout.as_secs(),
                        node.agent_log().display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        Ok(start.elapsed())
    }

    /// The node named `name` (or the first, for `node`).
    pub fn node(&self, name: &str) -> Result<&LabNode> {
        if name == "node" {
            return self.nodes.first().context("the lab has no node");
        }
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            format!(
                "no node {name:?} in the lab (nodes: {})",
                self.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The node a pod (`ns/pod`) runs on.
    pub fn node_of_pod(&self, pod: &str) -> Option<&LabNode> {
        match self.pod_nodes.iter().find(|(p, _)| p == pod) {
            Some((_, n)) => self.nodes.iter().find(|node| &node.name == n),
            None if self.pods.iter().any(|(p, _)| p == pod) => self.nodes.first(),
            None => None,
        }
    }

    /// The namespace of `node` (the first node), a node by name, `world`
    /// or `ns/pod` (a pod the lab built: a pod of a node it did not build
    /// has none, and says so).
    pub fn namespace_of(&self, target: &str) -> Result<String> {
        match target {
            "node" => Ok(self
                .nodes
                .first()
                .map_or_else(|| NODE_NS.into(), |n| n.netns.clone())),
            "world" => Ok(WORLD_NS.into()),
            t if self.nodes.iter().any(|n| n.name == t) => Ok(self.node(t)?.netns.clone()),
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
                    "no node or pod {t:?} in the lab (nodes: {}; pods: {})",
                    self.nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
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
