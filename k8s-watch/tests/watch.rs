//! The watcher against the in-process fake API server: list+watch of every
//! kind, dropped watches, compaction (410 -> relist), bookmarks, invalid
//! policies, and the same map state as file mode.

use k8s_watch::fake::{FakeApiServer, FakeHandle};
use k8s_watch::{PodScope, PolicyKind, Snapshot, WatchConfig, Watcher};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const NODE: &str = "n1";

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, node: &str, ip: Option<&str>, labels: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": "sa",
                 "containers": [{"name": "c", "image": "x",
                                 "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running"}
    });
    if let Some(ip) = ip {
        p["status"]["podIP"] = ip.into();
        p["status"]["podIPs"] = json!([{"ip": ip}]);
    }
    p
}

fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                    {"type": "Hostname", "address": name}]}})
}

fn apiserver_slice(ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": "default", "name": "kubernetes",
                        "labels": {"kubernetes.io/service-name": "kubernetes"}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
           "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]})
}

fn np_allow_from(ns: &str, name: &str, target: &str, from: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"podSelector": {"matchLabels": {"app": target}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}}],
                                 "ports": [{"port": "http", "protocol": "TCP"}]}]}})
}

fn cnp(ns: &str, name: &str, target: &str, port: &str) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"endpointSelector": {"matchLabels": {"app": target}},
                    "egress": [{"toEntities": ["kube-apiserver"],
                                "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}]}]}})
}

fn ccnp(name: &str, port: &str) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
           "metadata": {"name": name},
           "spec": {"endpointSelector": {},
                    "ingress": [{"fromEntities": ["host"],
                                 "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}]}]}})
}

/// A fake cluster with one node, two namespaces, three pods (one on
/// another node, one without an address) and the apiserver slice.
async fn cluster() -> FakeHandle {
    let (_url, h) = FakeApiServer::start().await.expect("fake starts");
    h.apply(namespace("x", json!({"team": "a"})))
        .expect("apply");
    h.apply(namespace("y", json!({"team": "b"})))
        .expect("apply");
    h.apply(node(NODE, "10.0.0.1")).expect("apply");
    h.apply(node("n2", "10.0.0.2")).expect("apply");
    h.apply(apiserver_slice("10.0.0.100")).expect("apply");
    h.apply(pod(
        "x",
        "a",
        NODE,
        Some("10.200.1.10"),
        json!({"app": "a"}),
    ))
    .expect("apply");
    h.apply(pod(
        "y",
        "b",
        NODE,
        Some("10.200.1.11"),
        json!({"app": "b"}),
    ))
    .expect("apply");
    h.apply(pod("y", "pending", NODE, None, json!({"app": "b"})))
        .expect("apply");
    h.apply(pod(
        "y",
        "far",
        "n2",
        Some("10.200.2.10"),
        json!({"app": "b"}),
    ))
    .expect("apply");
    h
}

fn start(h: &FakeHandle, scope: PodScope) -> Watcher {
    let mut config = WatchConfig::new(NODE);
    config.pod_scope = scope;
    Watcher::start(h.client(), config)
}

/// Waits (up to 10 s) for a snapshot satisfying `pred`.
async fn until(
    rx: &mut watch::Receiver<Option<Arc<Snapshot>>>,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let wait = async {
        loop {
            if let Some(s) = rx.borrow_and_update().clone()
                && pred(&s)
            {
                return s;
            }
            rx.changed().await.expect("watcher alive");
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out waiting for: {what}; last snapshot: {:#?}",
            rx.borrow()
        ),
    }
}

fn pod_names(s: &Snapshot) -> Vec<String> {
    s.topology.pods.iter().map(|p| p.full_name()).collect()
}

fn policy_names(s: &Snapshot) -> Vec<String> {
    s.policies.iter().map(|p| p.source_name()).collect()
}

#[tokio::test]
async fn first_snapshot_has_the_topology() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let s = w.ready().await;
    assert_eq!(pod_names(&s), ["x/a", "y/b", "y/far"]);
    assert_eq!(s.local_pods, ["x/a", "y/b"]);
    let ns: Vec<_> = s
        .topology
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(ns, ["x", "y"]);
    assert_eq!(s.topology.namespaces[0].labels["team"], "a");
    let a = s.topology.pod("x/a").expect("pod x/a");
    assert_eq!(
        a.ips,
        ["10.200.1.10".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(a.ports[0].name.as_deref(), Some("http"));
    assert_eq!(a.ports[0].container_port, 80);
    assert_eq!(a.service_account.as_deref(), Some("sa"));
    let node = s.topology.node.as_ref().expect("this node");
    assert_eq!(
        node.ips,
        ["10.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(node.labels["kubernetes.io/hostname"], NODE);
    assert_eq!(
        s.topology.remote_nodes.as_ref().expect("remote").ips,
        ["10.0.0.2".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(
        s.topology.kube_apiserver.as_ref().expect("apiserver").ips,
        ["10.0.0.100".parse::<std::net::IpAddr>().expect("ip")]
    );
    s.topology.validate("snapshot").expect("a valid topology");
    assert!(s.policies.is_empty() && s.status.is_empty());
}
