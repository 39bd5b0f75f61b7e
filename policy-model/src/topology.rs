//! The topology file: namespaces, pods (labels, addresses, named ports),
//! the node and the world. The lab builds namespaces from the same file.

use crate::labels::{
    CLUSTER_LABEL, LabelSet, NAMESPACE_LABELS_PREFIX, NAMESPACE_NAME_LABEL, POD_NAMESPACE_LABEL,
    SERVICE_ACCOUNT_LABEL, SOURCE_K8S,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// The name of the (single) cluster.
pub const CLUSTER_NAME: &str = "default";

/// A topology as written in YAML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    /// Shared: a topology read again after an edit, and each node's view
    /// of it, hold the pods that did not change without copying them.
    #[serde(default)]
    pub pods: Vec<Arc<PodSpec>>,
    /// The local node: the `host` entity.
    #[serde(default)]
    pub node: Option<HostSpec>,
    /// Addresses of the kube-apiserver (`kube-apiserver` entity).
    #[serde(default)]
    pub kube_apiserver: Option<HostSpec>,
    /// Other nodes of the cluster (`remote-node` entity).
    #[serde(default)]
    pub remote_nodes: Option<HostSpec>,
    /// Addresses the lab serves in its world namespace.
    #[serde(default)]
    pub world: Option<HostSpec>,
    /// The cluster's nodes, by name. A pod's `node:` names one; an agent
    /// sees its own as `host` and the others as `remote-node`
    /// ([`Topology::for_node`]).
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// The cluster's CIDR groups (CiliumCIDRGroup), in name order as the
    /// loaders hand them over; a name given twice keeps the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_groups: Vec<cidr_group::CidrGroup>,
}

/// A node of the cluster: its name, addresses and labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A namespace and its labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `policy.cilium.io/audit-mode: "true"`: every policy of the
    /// namespace's pods is audited (their would-be drops pass, reported
    /// as AUDIT).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl NamespaceSpec {
    /// Whether the namespace puts its pods' policies into audit mode.
    pub fn audit_mode(&self) -> bool {
        crate::api::audit_mode(&self.annotations)
    }
}

/// A pod: labels, addresses and container ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One address (the short form); merged with `ips`.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// The node the pod runs on (Kubernetes' `spec.nodeName`). A pod
    /// without one runs on every agent's node: it is local everywhere.
    #[serde(default)]
    pub node: Option<String>,
    /// `policy.cilium.io/proxy-visibility` redirects ports to a proxy for
    /// access records only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl PodSpec {
    /// All addresses of the pod (`ip` first, then `ips`).
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.ip.into_iter().collect();
        for a in &self.ips {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v
    }

    /// Whether the checks of [`Topology::validate`] that concern this pod
    /// alone pass: its name, and its ports (names unique in the pod,
    /// numbers 1..65535, protocol TCP, UDP or SCTP).
    pub fn is_sound(&self) -> bool {
        let name_ok = !(self.name.is_empty() || self.name.contains('/'));
        let ports_ok = self.ports.iter().enumerate().all(|(j, port)| {
            let unique = port
                .name
                .as_ref()
                .is_none_or(|n| !self.ports[..j].iter().any(|o| o.name.as_ref() == Some(n)));
            let protocol = port.protocol.as_ref().is_none_or(|proto| {
                ["TCP", "UDP", "SCTP"]
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(proto))
            });
            unique && port.container_port != 0 && protocol
        });
        name_ok && ports_ok
    }

    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod is a local endpoint of the agent on `node`: it
    /// names that node, or none.
    pub fn is_on(&self, node: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
    }
}

/// The `policy.cilium.io/proxy-visibility` annotation of `annotations`
/// (of the object at `path`) parses.
fn check_visibility(
    annotations: &BTreeMap<String, String>,
    path: &str,
    err: &impl Fn(String, String) -> TopologyError,
) -> Result<(), TopologyError> {
    let key = crate::rules::PROXY_VISIBILITY_ANNOTATION;
    match annotations
        .get(key)
        .map(|v| crate::rules::parse_visibility(v))
    {
        Some(Err(why)) => Err(err(format!("{path}.annotations.{key}"), why)),
        _ => Ok(()),
    }
}

/// A named container port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// Addresses (and labels) of a non-pod participant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A problem in a topology file.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {path}: {reason}")]
    Invalid {
        file: String,
        path: String,
        reason: String,
    },
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn from_file(path: &Path) -> Result<Self, TopologyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml(&text, &file)
    }

    /// Parses and validates topology YAML; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, TopologyError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let topo: Topology =
            serde_path_to_error::deserialize(de).map_err(|e| TopologyError::Invalid {
                file: file.to_string(),
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        topo.validate(file)?;
        Ok(topo)
    }

    /// Checks references and uniqueness.
    pub fn validate(&self, file: &str) -> Result<(), TopologyError> {
        let (ns_names, node_names) = self.validate_names(file)?;
        let err = |path: String, reason: String| TopologyError::Invalid {
            file: file.to_string(),
            path,
            reason,
        };
        let mut pods = HashSet::with_capacity(self.pods.len());
        let mut ips: HashMap<IpAddr, usize> = HashMap::with_capacity(self.pods.len());
        for (i, p) in self.pods.iter().enumerate() {
            if !ns_names.contains(p.namespace.as_str()) {
                return Err(err(
                    format!("pods[{i}].namespace"),
                    format!(
                        "namespace {:?} is not listed under `namespaces`",
                        p.namespace
                    ),
                ));
            }
            if p.name.is_empty() || p.name.contains('/') {
                return Err(err(
                    format!("pods[{i}].name"),
                    "must be a non-empty name without '/'".into(),
                ));
            }
            if let Some(node) = &p.node
                && !self.nodes.is_empty()
                && !node_names.contains(node.as_str())
            {
                return Err(err(
                    format!("pods[{i}].node"),
                    format!("node {node:?} is not listed under `nodes`"),
                ));
            }
            if !pods.insert((p.namespace.as_str(), p.name.as_str())) {
                return Err(err(
                    format!("pods[{i}].name"),
                    format!("pod {} listed twice", p.full_name()),
                ));
            }
            for ip in p.ip.iter().chain(&p.ips) {
                match ips.insert(*ip, i) {
                    Some(other) if other != i => {
                        return Err(err(
                            format!("pods[{i}].ips"),
                            format!(
                                "address {ip} is already used by {}",
                                self.pods[other].full_name()
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            let mut names = BTreeSet::new();
            for (j, port) in p.ports.iter().enumerate() {
                if let Some(n) = &port.name
                    && !names.insert(n.as_str())
                {
                    return Err(err(
                        format!("pods[{i}].ports[{j}].name"),
                        format!("port name {n:?} used twice in one pod"),
                    ));
                }
                if port.container_port == 0 {
                    return Err(err(
                        format!("pods[{i}].ports[{j}].containerPort"),
                        "must be 1..65535".into(),
                    ));
                }
                if let Some(proto) = &port.protocol
                    && !["TCP", "UDP", "SCTP"]
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(proto))
                {
                    return Err(err(
                        format!("pods[{i}].ports[{j}].protocol"),
                        format!("{proto:?} is not TCP, UDP or SCTP"),
                    ));
                }
            }
            check_visibility(&p.annotations, &format!("pods[{i}]"), &err)?;
        }
        for (i, n) in self.namespaces.iter().enumerate() {
            check_visibility(&n.annotations, &format!("namespaces[{i}]"), &err)?;
        }
        Ok(())
    }

    /// The checks of [`Topology::validate`] on the namespaces and nodes
    /// lists (names valid and unique); their names.
    pub fn validate_names(
        &self,
        file: &str,
    ) -> Result<(HashSet<&str>, HashSet<&str>), TopologyError> {
        let err = |path: String, reason: String| TopologyError::Invalid {
            file: file.to_string(),
            path,
            reason,
        };
        let mut ns_names = HashSet::with_capacity(self.namespaces.len());
        for (i, ns) in self.namespaces.iter().enumerate() {
            if ns.name.is_empty() || ns.name.contains('/') {
                return Err(err(
                    format!("namespaces[{i}].name"),
                    "must be a non-empty name without '/'".into(),
                ));
            }
            if !ns_names.insert(ns.name.as_str()) {
                return Err(err(
                    format!("namespaces[{i}].name"),
                    format!("namespace {:?} listed twice", ns.name),
                ));
            }
        }
        let mut node_names = HashSet::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.is_empty() || n.name.contains('/') {
                return Err(err(
                    format!("nodes[{i}].name"),
                    "must be a non-empty name without '/'".into(),
                ));
            }
            if !node_names.insert(n.name.as_str()) {
                return Err(err(
                    format!("nodes[{i}].name"),
                    format!("node {:?} listed twice", n.name),
                ));
            }
        }
        Ok((ns_names, node_names))
    }

    /// The topology as the agent on `node` sees it: that node's addresses
    /// and labels join `node` (the `host` entity), every other listed
    /// node's addresses join `remoteNodes`. Pods are unchanged: which are
    /// local is [`PodSpec::is_on`].
    pub fn for_node(&self, node: &str) -> Topology {
        let mut view = self.clone();
        for n in &self.nodes {
            let target = if n.name == node {
                let host = view.node.get_or_insert_with(HostSpec::default);
                for (k, v) in &n.labels {
                    host.labels.entry(k.clone()).or_insert_with(|| v.clone());
                }
                host
            } else {
                view.remote_nodes.get_or_insert_with(HostSpec::default)
            };
            for ip in &n.ips {
                if !target.ips.contains(ip) {
                    target.ips.push(*ip);
                }
            }
        }
        view
    }

    /// The pods that are local endpoints of the agent on `node`.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodSpec> + 'a {
        self.pods
            .iter()
            .map(|p| &**p)
            .filter(move |p| p.is_on(node))
    }

    /// The namespace object named `name`.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceSpec> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The pod `ns/name`.
    pub fn pod(&self, full_name: &str) -> Option<&PodSpec> {
        self.pods
            .iter()
            .map(|p| &**p)
            .find(|p| p.full_name() == full_name)
    }

    /// The security labels Cilium derives for a pod: its own labels, its
    /// namespace, its namespace's labels, service account and cluster.
    pub fn pod_labels(&self, pod: &PodSpec) -> LabelSet {
        let mut l = LabelSet::new();
        for (k, v) in &pod.labels {
            l.insert(SOURCE_K8S, k, v);
        }
        l.insert(SOURCE_K8S, POD_NAMESPACE_LABEL, &pod.namespace);
        if let Some(ns) = self.namespace(&pod.namespace) {
            for (k, v) in namespace_labels(ns) {
                l.insert(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), &v);
            }
        }
        l.insert(
            SOURCE_K8S,
            SERVICE_ACCOUNT_LABEL,
            pod.service_account.as_deref().unwrap_or("default"),
        );
        l.insert(SOURCE_K8S, CLUSTER_LABEL, CLUSTER_NAME);
        l
    }
}

/// A namespace's labels including `kubernetes.io/metadata.name`.
pub fn namespace_labels(ns: &NamespaceSpec) -> BTreeMap<String, String> {
    let mut l = ns.labels.clone();
    l.insert(NAMESPACE_NAME_LABEL.to_string(), ns.name.clone());
    l
}

pub mod cidr_group;
pub mod reader;

#[cfg(test)]
mod tests;
