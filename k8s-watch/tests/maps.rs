//! End to end: the objects served by the (fake) API server, through the
//! watcher's snapshot, end in the same per-endpoint map state as the same
//! objects loaded from YAML files with the same topology (file mode).

use k8s_watch::fake::FakeApiServer;
use k8s_watch::{PodScope, WatchConfig, Watcher};
use policy_model::{Cluster, FqdnCache, PolicySet, Topology};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The cluster's objects, as a user would write them.
fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "front", "labels": {"tier": "web"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "back", "labels": {"tier": "data"}}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "role": "edge"}},
               "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n2", "labels": {"kubernetes.io/hostname": "n2"}},
               "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"namespace": "default", "name": "kubernetes"},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.100"]}], "ports": [{"port": 6443}]}),
        pod(
            "front",
            "web",
            "n1",
            "10.200.1.10",
            json!({"app": "web"}),
            "web",
            &[("http", 8080)],
        ),
        pod(
            "back",
            "db",
            "n1",
            "10.200.1.20",
            json!({"app": "db"}),
            "db",
            &[("pg", 5432), ("metrics", 9090)],
        ),
        pod(
            "back",
            "cache",
            "n2",
            "10.200.2.30",
            json!({"app": "cache"}),
            "default",
            &[("redis", 6379)],
        ),
    ]
}

fn pod(
    ns: &str,
    name: &str,
    node: &str,
    ip: &str,
    labels: Value,
    sa: &str,
    ports: &[(&str, u16)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": ns, "name": name, "labels": labels},
           "spec": {"nodeName": node, "serviceAccountName": sa,
                    "containers": [{"name": "main", "image": "x", "ports": ports}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// The same cluster as a topology file.
const TOPOLOGY: &str = r#"
namespaces:
  - {name: back, labels: {tier: data}}
  - {name: front, labels: {tier: web}}
pods:
  - {namespace: back, name: cache, labels: {app: cache}, ips: [10.200.2.30], serviceAccount: default, node: n2,
     ports: [{name: redis, containerPort: 6379, protocol: TCP}]}
  - {namespace: back, name: db, labels: {app: db}, ips: [10.200.1.20], serviceAccount: db, node: n1,
     ports: [{name: pg, containerPort: 5432, protocol: TCP}, {name: metrics, containerPort: 9090, protocol: TCP}]}
  - {namespace: front, name: web, labels: {app: web}, ips: [10.200.1.10], serviceAccount: web, node: n1,
     ports: [{name: http, containerPort: 8080, protocol: TCP}]}
node: {ips: [10.0.0.1], labels: {kubernetes.io/hostname: n1, role: edge}}
kubeApiserver: {ips: [10.0.0.100]}
remoteNodes: {ips: [10.0.0.2]}
"#;

fn policies() -> Vec<Value> {
    vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"namespace": "back", "name": "db-from-web"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "policyTypes": ["Ingress"],
                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "web"}},
                                               "podSelector": {"matchLabels": {"app": "web"}}}],
                                     "ports": [{"port": "pg", "protocol": "TCP"}]}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"namespace": "front", "name": "web-egress"},
               "spec": {"podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"tier": "data"}}}]},
                                   {"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
                                    "ports": [{"port": 443, "protocol": "TCP"}]}]}}),
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"namespace": "back", "name": "cache-l7"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "cache"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"io.kubernetes.pod.namespace": "back"}}],
                                     "toPorts": [{"ports": [{"port": "6379", "protocol": "TCP"}]}]},
                                    {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "front"}}],
                                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                                                  "rules": {"http": [{"method": "GET", "path": "/public/.*"}]}}]}],
                        "egress": [{"toEntities": ["kube-apiserver"]}]}}),
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "host-and-metrics"},
               "specs": [{"endpointSelector": {},
                          "ingress": [{"fromEntities": ["host", "remote-node"]}]},
                         {"endpointSelector": {"matchLabels": {"app": "db"}},
                          "ingressDeny": [{"fromEntities": ["world"],
                                           "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]}]}]}),
    ]
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn watched_objects_end_in_the_same_maps_as_file_mode() {
    // Kubernetes mode.
    let (_url, h) = FakeApiServer::start().await.expect("fake starts");
    for o in objects().into_iter().chain(policies()) {
        h.apply(o).expect("apply");
    }
    let mut config = WatchConfig::new("n1");
    config.pod_scope = PodScope::Cluster;
    let w = Watcher::start(h.client(), config);
    let snap = tokio::time::timeout(Duration::from_secs(10), w.ready())
        .await
        .expect("a snapshot within 10 s");
    assert!(snap.status.iter().all(|s| s.valid), "{:#?}", snap.status);
    assert_eq!(snap.policies.len(), 4);
    let watched_rules = snap.policy_set().expect("loads").rules().cloned().collect();
    let watched = Cluster::new(snap.topology.clone(), watched_rules, &FqdnCache::default());

    // File mode: the same policies as YAML files, the same topology.
    let dir = TempDir(std::env::temp_dir().join(format!("k8s-watch-maps-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    for (i, p) in policies().iter().enumerate() {
        let yaml = serde_yaml_ng::to_string(p).expect("yaml");
        std::fs::write(dir.0.join(format!("{i:02}.yaml")), yaml).expect("write");
    }
    let set = PolicySet::load_paths(&[&dir.0]).expect("files load");
    let topology = Topology::from_yaml(TOPOLOGY, "topology.yaml").expect("topology");
    assert_eq!(
        snap.topology, topology,
        "the watched topology is the file's"
    );
    let files = Cluster::new(
        topology,
        set.rules().cloned().collect(),
        &FqdnCache::default(),
    );

    assert_eq!(watched.endpoints().len(), 3);
    let mut non_empty = 0;
    for ep in files.endpoints() {
        let from_file = files.endpoint_policy(ep);
        let other = watched.endpoint(&ep.full_name()).expect("same endpoints");
        let from_watch = watched.endpoint_policy(other);
        let who = ep.full_name();
        assert_eq!(from_watch.identity, from_file.identity, "{who}: identity");
        assert_eq!(
            from_watch.ingress_enforced, from_file.ingress_enforced,
            "{who}"
        );
        assert_eq!(
            from_watch.egress_enforced, from_file.egress_enforced,
            "{who}"
        );
        assert_eq!(from_watch.map, from_file.map, "{who}: map state");
        assert_eq!(
            from_watch.l7.keys().collect::<Vec<_>>(),
            from_file.l7.keys().collect::<Vec<_>>(),
            "{who}: redirected keys"
        );
        if !from_file.map.entries.is_empty() {
            non_empty += 1;
        }
    }
    assert_eq!(non_empty, 3, "every endpoint has policy map entries");
    assert_eq!(watched.ipcache(), files.ipcache(), "ipcache");
}
