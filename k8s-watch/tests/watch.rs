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

fn lists_of(h: &FakeHandle, path: &str) -> usize {
    h.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && !r.contains("watch=true"))
        .count()
}

/// Watch requests to `path` so far.
fn watches_of(h: &FakeHandle, path: &str) -> usize {
    h.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && r.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn add_modify_delete_of_each_kind() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    w.ready().await;

    // Policies: add, modify, delete each kind.
    h.apply(np_allow_from("y", "np", "b", "a")).expect("apply");
    h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    h.apply(ccnp("ccnp", "80")).expect("apply");
    let s = until(&mut rx, "three policies", |s| s.policies.len() == 3).await;
    assert_eq!(
        policy_names(&s),
        [
            "k8s:NetworkPolicy/y/np",
            "k8s:CiliumNetworkPolicy/x/cnp",
            "k8s:CiliumClusterwideNetworkPolicy/ccnp"
        ]
    );
    assert!(s.status.iter().all(|st| st.valid), "{:?}", s.status);
    let set = s.policy_set().expect("snapshot policies load");
    assert_eq!(set.policies.len(), 3);

    h.apply(np_allow_from("y", "np", "b", "other"))
        .expect("apply");
    h.apply(cnp("x", "cnp", "a", "443")).expect("apply");
    h.apply(ccnp("ccnp", "8080")).expect("apply");
    let s = until(&mut rx, "modified policies", |s| {
        s.policies.iter().all(|p| {
            p.json.contains("\"other\"")
                || p.json.contains("\"443\"")
                || p.json.contains("\"8080\"")
        })
    })
    .await;
    assert_eq!(s.policies.len(), 3);
    let np = s
        .policy(PolicyKind::NetworkPolicy, Some("y"), "np")
        .expect("np");
    let v: Value = serde_json::from_str(&np.json).expect("json");
    assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(v["kind"], "NetworkPolicy");
    assert_eq!(
        v["metadata"]["resourceVersion"].as_str(),
        Some(np.resource_version.as_str())
    );

    h.delete("NetworkPolicy", Some("y"), "np").expect("delete");
    h.delete("CiliumNetworkPolicy", Some("x"), "cnp")
        .expect("delete");
    h.delete("CiliumClusterwideNetworkPolicy", None, "ccnp")
        .expect("delete");
    until(&mut rx, "no policies", |s| {
        s.policies.is_empty() && s.status.is_empty()
    })
    .await;

    // Pods: add, relabel, gain an address, delete.
    h.apply(pod(
        "x",
        "new",
        NODE,
        Some("10.200.1.12"),
        json!({"app": "n"}),
    ))
    .expect("apply");
    until(&mut rx, "pod x/new", |s| s.topology.pod("x/new").is_some()).await;
    h.apply(pod(
        "x",
        "new",
        NODE,
        Some("10.200.1.12"),
        json!({"app": "m"}),
    ))
    .expect("apply");
    until(&mut rx, "pod x/new relabelled", |s| {
        s.topology
            .pod("x/new")
            .is_some_and(|p| p.labels["app"] == "m")
    })
    .await;
    h.apply(pod(
        "y",
        "pending",
        NODE,
        Some("10.200.1.13"),
        json!({"app": "b"}),
    ))
    .expect("apply");
    until(&mut rx, "pending pod got an address", |s| {
        s.topology.pod("y/pending").is_some()
    })
    .await;
    h.delete("Pod", Some("x"), "new").expect("delete");
    until(&mut rx, "pod x/new gone", |s| {
        s.topology.pod("x/new").is_none()
    })
    .await;

    // Namespaces, nodes, the apiserver slice.
    h.apply(namespace("x", json!({"team": "c"})))
        .expect("apply");
    h.apply(namespace("z", json!({}))).expect("apply");
    until(&mut rx, "namespace changes", |s| {
        s.topology
            .namespace("x")
            .is_some_and(|n| n.labels["team"] == "c")
            && s.topology.namespace("z").is_some()
    })
    .await;
    h.delete("Namespace", None, "z").expect("delete");
    until(&mut rx, "namespace z gone", |s| {
        s.topology.namespace("z").is_none()
    })
    .await;
    h.apply(node(NODE, "10.0.0.11")).expect("apply");
    h.apply(apiserver_slice("10.0.0.101")).expect("apply");
    h.delete("Node", None, "n2").expect("delete");
    until(&mut rx, "node and apiserver changes", |s| {
        s.topology
            .node
            .as_ref()
            .is_some_and(|n| n.ips[0].to_string() == "10.0.0.11")
            && s.topology
                .kube_apiserver
                .as_ref()
                .is_some_and(|a| a.ips[0].to_string() == "10.0.0.101")
            && s.topology.remote_nodes.is_none()
    })
    .await;
}

#[tokio::test]
async fn pods_of_this_node_only_with_a_field_selector() {
    let h = cluster().await;
    let w = start(&h, PodScope::ThisNode);
    let s = w.ready().await;
    assert_eq!(pod_names(&s), ["x/a", "y/b"]);
    assert_eq!(s.local_pods, ["x/a", "y/b"]);
    assert!(
        h.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?")
                && r.contains("fieldSelector=spec.nodeName%3Dn1")),
        "{:#?}",
        h.requests()
    );
}

/// Changes made while no watch is open arrive once watches resume from
/// their last resourceVersion, without a relist.
#[tokio::test]
async fn a_dropped_watch_resumes_without_losing_events() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    w.ready().await;
    h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    until(&mut rx, "cnp", |s| s.policies.len() == 1).await;
    let pod_lists = lists_of(&h, "/api/v1/pods");
    let cnp_lists = lists_of(&h, "/apis/cilium.io/v2/ciliumnetworkpolicies");

    h.hold_watches(true);
    h.drop_watches();
    h.apply(np_allow_from("y", "np", "b", "a")).expect("apply");
    h.delete("CiliumNetworkPolicy", Some("x"), "cnp")
        .expect("delete");
    h.apply(cnp("x", "cnp2", "a", "443")).expect("apply");
    h.delete("Pod", Some("y"), "b").expect("delete");
    h.apply(pod(
        "x",
        "c",
        NODE,
        Some("10.200.1.20"),
        json!({"app": "c"}),
    ))
    .expect("apply");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.hold_watches(false);

    let s = until(&mut rx, "changes made during the gap", |s| {
        policy_names(s) == ["k8s:NetworkPolicy/y/np", "k8s:CiliumNetworkPolicy/x/cnp2"]
            && pod_names(s) == ["x/a", "x/c", "y/far"]
    })
    .await;
    assert!(s.status.iter().all(|st| st.valid));
    assert_eq!(
        lists_of(&h, "/api/v1/pods"),
        pod_lists,
        "pods were relisted"
    );
    assert_eq!(
        lists_of(&h, "/apis/cilium.io/v2/ciliumnetworkpolicies"),
        cnp_lists,
        "policies were relisted"
    );
}

/// A resume after compaction gets 410 Gone; the relist replaces the store,
/// so objects deleted during the gap disappear.
#[tokio::test]
async fn compaction_forces_a_relist_and_the_snapshot_is_still_right() {
    let h = cluster().await;
    let mut registry = prometheus_client::registry::Registry::default();
    let mut config = WatchConfig::new(NODE);
    config.metrics = k8s_watch::WatchMetrics::register(&mut registry);
    let w = Watcher::start(h.client(), config);
    let mut rx = w.subscribe();
    w.ready().await;
    h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    h.apply(ccnp("ccnp", "80")).expect("apply");
    until(&mut rx, "two policies", |s| s.policies.len() == 2).await;
    let pod_lists = lists_of(&h, "/api/v1/pods");
    let pod_watches = watches_of(&h, "/api/v1/pods");

    h.hold_watches(true);
    h.drop_watches();
    // The pods' stream must have ended (its resume is held) before the
    // changes, or a slow machine delivers them live and nothing relists.
    for _ in 0..200 {
        if watches_of(&h, "/api/v1/pods") > pod_watches {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        watches_of(&h, "/api/v1/pods") > pod_watches,
        "the pods' watch did not come back after the drop"
    );
    h.delete("CiliumNetworkPolicy", Some("x"), "cnp")
        .expect("delete");
    h.apply(ccnp("ccnp", "8080")).expect("apply");
    h.apply(np_allow_from("y", "np", "b", "a")).expect("apply");
    h.delete("Pod", Some("x"), "a").expect("delete");
    h.delete("Namespace", None, "x").expect("delete");
    h.apply(node("n3", "10.0.0.3")).expect("apply");
    h.compact();
    h.hold_watches(false);

    let s = until(&mut rx, "state after the relist", |s| {
        policy_names(s)
            == [
                "k8s:NetworkPolicy/y/np",
                "k8s:CiliumClusterwideNetworkPolicy/ccnp",
            ]
            && s.policies[1].json.contains("\"8080\"")
            && pod_names(s) == ["y/b", "y/far"]
            && s.topology.namespace("x").is_none()
            && s.topology
                .remote_nodes
                .as_ref()
                .is_some_and(|r| r.ips.len() == 2)
    })
    .await;
    assert_eq!(s.status.len(), 2);
    assert!(
        lists_of(&h, "/api/v1/pods") > pod_lists,
        "pods were not relisted"
    );

    // Watching works again after the relist.
    h.apply(cnp("x", "again", "a", "53")).expect("apply");
    until(&mut rx, "a policy after the relist", |s| {
        s.policies.len() == 3
    })
    .await;
}

/// Bookmarks move the watchers' resourceVersion without changing the
/// snapshot; after one, a compaction does not even force a relist.
#[tokio::test]
async fn bookmarks_do_not_disturb() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    w.ready().await;
    h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    let before = until(&mut rx, "cnp", |s| s.policies.len() == 1).await;
    let pod_lists = lists_of(&h, "/api/v1/pods");

    for _ in 0..5 {
        h.bookmark();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !rx.has_changed().expect("alive"),
        "a bookmark changed the snapshot"
    );
    assert_eq!(rx.borrow().as_deref(), Some(&*before));

    // Every watch now holds the current resourceVersion: resuming after a
    // compaction at that version needs no relist.
    h.hold_watches(true);
    h.drop_watches();
    h.compact();
    h.hold_watches(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.apply(np_allow_from("y", "np", "b", "a")).expect("apply");
    until(&mut rx, "np after bookmarks", |s| s.policies.len() == 2).await;
    assert_eq!(
        lists_of(&h, "/api/v1/pods"),
        pod_lists,
        "pods were relisted"
    );
}

/// An invalid update leaves the last valid version in force; an invalid
/// new object is reported and left out.
#[tokio::test]
async fn invalid_cnp_is_reported_and_the_previous_version_kept() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    w.ready().await;
    let good_rv = h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    until(&mut rx, "cnp", |s| s.policies.len() == 1).await;

    let mut bad = cnp("x", "cnp", "a", "6443");
    bad["spec"]["egress"][0]["toPortz"] = json!([]);
    let bad_rv = h.apply(bad).expect("apply");
    let s = until(&mut rx, "cnp invalid", |s| {
        s.status_of(PolicyKind::CiliumNetworkPolicy, Some("x"), "cnp")
            .is_some_and(|st| !st.valid)
    })
    .await;
    let st = s
        .status_of(PolicyKind::CiliumNetworkPolicy, Some("x"), "cnp")
        .expect("status");
    let reason = st.reason.as_deref().expect("a reason");
    assert!(reason.contains("toPortz"), "{reason}");
    assert!(
        reason.contains(&format!("resourceVersion {bad_rv} is invalid")),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("resourceVersion {good_rv} stays in force")),
        "{reason}"
    );
    let kept = s
        .policy(PolicyKind::CiliumNetworkPolicy, Some("x"), "cnp")
        .expect("previous version in force");
    assert_eq!(kept.resource_version, good_rv.to_string());
    assert!(!kept.json.contains("toPortz"));

    let mut new_bad = cnp("y", "broken", "b", "80");
    new_bad["spec"]["endpointSelector"] = json!({"matchLabels": "not-a-map"});
    h.apply(new_bad).expect("apply");
    let s = until(&mut rx, "new invalid cnp reported", |s| {
        s.status_of(PolicyKind::CiliumNetworkPolicy, Some("y"), "broken")
            .is_some()
    })
    .await;
    let st = s
        .status_of(PolicyKind::CiliumNetworkPolicy, Some("y"), "broken")
        .expect("status");
    assert!(!st.valid);
    assert!(
        st.reason
            .as_deref()
            .is_some_and(|r| r.contains("no valid version"))
    );
    assert!(
        s.policy(PolicyKind::CiliumNetworkPolicy, Some("y"), "broken")
            .is_none()
    );
    assert_eq!(s.policies.len(), 1);
    s.policy_set().expect("what is in force loads");

    // Fixed: the new version is in force.
    h.apply(cnp("x", "cnp", "a", "443")).expect("apply");
    until(&mut rx, "cnp valid again", |s| {
        s.status_of(PolicyKind::CiliumNetworkPolicy, Some("x"), "cnp")
            .is_some_and(|st| st.valid)
            && s.policy(PolicyKind::CiliumNetworkPolicy, Some("x"), "cnp")
                .is_some_and(|p| p.json.contains("\"443\""))
    })
    .await;
}

/// A cluster without the Cilium CRDs still gets snapshots; CRDs installed
/// later are picked up.
#[tokio::test]
async fn missing_cilium_crds_are_an_empty_set() {
    let h = cluster().await;
    h.set_served("CiliumNetworkPolicy", false);
    h.set_served("CiliumClusterwideNetworkPolicy", false);
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    let s = w.ready().await;
    assert!(s.policies.is_empty());
    h.set_served("CiliumNetworkPolicy", true);
    h.apply(cnp("x", "cnp", "a", "6443")).expect("apply");
    until(&mut rx, "cnp after the CRD appeared", |s| {
        s.policies.len() == 1
    })
    .await;
}

#[tokio::test]
async fn cidr_groups_are_watched_into_the_topology() {
    let h = cluster().await;
    let w = start(&h, PodScope::Cluster);
    let mut rx = w.subscribe();
    let s = w.ready().await;
    assert!(s.topology.cidr_groups.is_empty());
    let group = |cidrs: Value| {
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
               "metadata": {"name": "partners", "labels": {"team": "a"}},
               "spec": {"externalCIDRs": cidrs}})
    };
    h.apply(group(json!(["10.201.1.0/24"]))).expect("apply");
    let s = until(&mut rx, "one CIDR group", |s| {
        s.topology.cidr_groups.len() == 1
    })
    .await;
    let g = &s.topology.cidr_groups[0];
    assert_eq!(g.name, "partners");
    assert_eq!(g.labels.get("team").map(String::as_str), Some("a"));
    h.apply(group(json!(["10.201.1.0/24", "fd00:201::/64"])))
        .expect("apply");
    until(&mut rx, "the group's second CIDR", |s| {
        s.topology
            .cidr_groups
            .first()
            .is_some_and(|g| g.cidrs.len() == 2)
    })
    .await;
    h.delete("CiliumCIDRGroup", None, "partners")
        .expect("delete");
    until(&mut rx, "no CIDR group", |s| {
        s.topology.cidr_groups.is_empty()
    })
    .await;
}
