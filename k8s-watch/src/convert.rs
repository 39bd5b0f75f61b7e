//! API objects -> `policy-model` terms. Pure: no I/O, no tokio.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use policy_model::api::CiliumCidrGroup;
use policy_model::rules::PolicyKind;
use policy_model::topology::cidr_group::CidrGroup;
use policy_model::topology::{ContainerPort, NamespaceSpec, PodSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The API group, version and plural of a policy kind.
pub fn policy_resource(kind: PolicyKind) -> ApiResource {
    let (group, version, plural) = match kind {
        PolicyKind::NetworkPolicy => ("networking.k8s.io", "v1", "networkpolicies"),
        PolicyKind::CiliumNetworkPolicy => ("cilium.io", "v2", "ciliumnetworkpolicies"),
        PolicyKind::CiliumClusterwideNetworkPolicy => {
            ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies")
        }
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &kind.to_string()),
        plural,
    )
}

/// The API group, version and plural of `CiliumCIDRGroup` (cluster-scoped).
pub fn cidr_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumCIDRGroup"),
        "ciliumcidrgroups",
    )
}

/// A `CiliumCIDRGroup` object in model terms, or why it cannot be used
/// (the message names the field, as `policy check` does).
pub fn cidr_group(obj: &DynamicObject) -> Result<CidrGroup, String> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let value = serde_json::to_value(obj).map_err(|e| format!("CiliumCIDRGroup/{name}: {e}"))?;
    let group: CiliumCidrGroup = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("CiliumCIDRGroup/{name}: {}: {}", e.path(), e.inner()))?;
    policy_model::rules::from_cidr_group(&group)
        .map_err(|e| format!("CiliumCIDRGroup/{name}: {}: {}", e.path, e.reason))
}

/// Every policy kind, in snapshot order.
pub const POLICY_KINDS: [PolicyKind; 3] = [
    PolicyKind::NetworkPolicy,
    PolicyKind::CiliumNetworkPolicy,
    PolicyKind::CiliumClusterwideNetworkPolicy,
];

/// A policy object as received, before it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPolicy {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: String,
    pub json: String,
}

/// Turns a policy object into JSON `load_str` accepts: `apiVersion` and
/// `kind` are set (items of a list response carry neither) and
/// `metadata.managedFields` is dropped (large, and no input to policy).
pub fn raw_policy(kind: PolicyKind, obj: &DynamicObject) -> RawPolicy {
    let mut value = serde_json::to_value(obj).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        let ar = policy_resource(kind);
        map.insert("apiVersion".into(), ar.api_version.into());
        map.insert("kind".into(), kind.to_string().into());
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    let namespace = match kind {
        PolicyKind::CiliumClusterwideNetworkPolicy => None,
        _ => Some(
            obj.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
    };
    RawPolicy {
        kind,
        namespace,
        name: obj.metadata.name.clone().unwrap_or_default(),
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        json: value.to_string(),
    }
}

/// The store key of a namespaced or cluster-scoped object.
pub fn object_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// A namespace and its labels.
pub fn namespace_spec(ns: &Namespace) -> NamespaceSpec {
    NamespaceSpec {
        name: ns.metadata.name.clone().unwrap_or_default(),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
        annotations: ns.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// A pod that is an endpoint: what the topology needs and the node it runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    /// Shared with every snapshot that holds the pod.
    pub spec: std::sync::Arc<PodSpec>,
    pub node_name: Option<String>,
}

/// Why a pod is not an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSkip {
    /// No address yet (pending, or the CNI has not run).
    NoAddress,
    /// `hostNetwork: true`: its address is the node's (Cilium treats it as
    /// the host too).
    HostNetwork,
    /// Succeeded or Failed: its address may already belong to a new pod.
    Finished,
}

/// A pod as an endpoint: labels, service account, `status.podIPs` and the
/// named container ports of `spec.containers[].ports` (a name used twice,
/// or a port outside 1..65535, is dropped).
pub fn pod_endpoint(pod: &Pod) -> Result<PodEndpoint, PodSkip> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Err(PodSkip::HostNetwork);
    }
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Err(PodSkip::Finished);
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    let listed = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().map(|p| p.ip.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    for text in status
        .and_then(|s| s.pod_ip.clone())
        .into_iter()
        .chain(listed)
    {
        if let Ok(ip) = text.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(PodSkip::NoAddress);
    }
    let mut ports = Vec::new();
    let mut names = BTreeSet::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.as_deref().unwrap_or_default() {
            let Ok(number) = u16::try_from(p.container_port) else {
                continue;
            };
            if number == 0 {
                continue;
            }
            if let Some(n) = &p.name
                && !names.insert(n.clone())
            {
                continue;
            }
            ports.push(ContainerPort {
                name: p.name.clone(),
                container_port: number,
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            });
        }
    }
    Ok(PodEndpoint {
        spec: std::sync::Arc::new(PodSpec {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip: None,
            ips,
            ports,
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            node: spec.and_then(|s| s.node_name.clone()),
            annotations: visibility_annotation(pod),
        }),
        node_name: spec.and_then(|s| s.node_name.clone()),
    })
}

/// The pod's annotations the policy reads: `policy.cilium.io/proxy-visibility`
/// when it parses (others are left out: a change of an unrelated
/// annotation is no change of the endpoint). One that does not parse is
/// logged with the pod and the reason and left out: visibility never
/// enforces, so ignoring it opens nothing.
fn visibility_annotation(pod: &Pod) -> BTreeMap<String, String> {
    let key = policy_model::rules::PROXY_VISIBILITY_ANNOTATION;
    let Some(value) = pod.metadata.annotations.as_ref().and_then(|a| a.get(key)) else {
        return BTreeMap::new();
    };
    match policy_model::rules::parse_visibility(value) {
        Ok(_) => BTreeMap::from([(key.to_string(), value.clone())]),
        Err(why) => {
            tracing::warn!(
                pod = %format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                annotation = key,
                error = %why,
                "ignoring an invalid proxy-visibility annotation"
            );
            BTreeMap::new()
        }
    }
}

/// A node's name, labels and addresses (InternalIP and ExternalIP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
}

/// See [`NodeInfo`].
pub fn node_info(node: &Node) -> NodeInfo {
    let mut ips = Vec::new();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default()
    {
        if (a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            && let Ok(ip) = a.address.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ips,
    }
}

/// The addresses of the `default/kubernetes` EndpointSlice (the
/// kube-apiserver). Endpoints explicitly not ready are left out.
pub fn apiserver_ips(slice: &EndpointSlice) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for ep in &slice.endpoints {
        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        for a in &ep.addresses {
            if let Ok(ip) = a.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests;
