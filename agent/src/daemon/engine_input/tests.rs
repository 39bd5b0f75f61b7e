use super::*;
use crate::daemon::changes::{LocalPods, Policies, PolicyDelta, TopologyDelta, object_keys};
use policy_model::{FqdnCache, PolicySet};

const TOPOLOGY: &str = r#"
namespaces:
  - {name: t1, labels: {tenant: one}}
  - {name: t2, labels: {tenant: two}}
pods:
  - {namespace: t1, name: a, labels: {app: a}, ips: [10.200.1.10]}
  - {namespace: t1, name: b, labels: {app: b}, ips: [10.200.1.11]}
  - {namespace: t2, name: c, labels: {app: c}, ips: [10.200.2.10], node: other}
world: {ips: [10.201.0.53]}
"#;

const A: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

const A_EDITED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": t2}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

const B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-in, namespace: t1}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
"#;

fn snapshot(topology: &str, policies: &[&str]) -> InputSnapshot {
    let topology = Topology::from_yaml(topology, "topology.yaml").expect("topology");
    let mut set = PolicySet::default();
    for (n, text) in policies.iter().enumerate() {
        set.extend(policy_model::load::load_str(text, &format!("p{n}.yaml")).expect("policy"));
    }
    InputSnapshot {
        local_pods: LocalPods::only(topology.pods_on(NODE).map(|p| p.full_name()).collect()),
        topology: std::sync::Arc::new(topology),
        policies: Policies(vec![std::sync::Arc::new(set)]),
    }
}

const NODE: &str = "lab-node";

fn engine_of(s: &InputSnapshot) -> IncrementalCluster {
    IncrementalCluster::new(
        (*s.topology).clone(),
        policies_by_key(s),
        FqdnCache::default(),
        NODE,
    )
}

/// The delta the inputs report going from `old` to `new` (every object
/// of both as if in one changed file).
fn delta(old: &InputSnapshot, new: &InputSnapshot) -> Changes {
    let mut policies = PolicyDelta::default();
    policies.file(
        &object_keys(&old.policies.0[0]),
        &object_keys(&new.policies.0[0]),
    );
    policies.files_changed.push("p.yaml".into());
    policies.upserted = new.policies.0.clone();
    let topology = TopologyDelta::between(&old.topology, &new.topology);
    Changes {
        policies,
        topology: (!topology.is_empty()).then_some(topology),
    }
}

/// Takes `engine` from `old` to `new` with the changes `changes_for`
/// gives; checks the result equals a build from scratch (same numbers).
fn step(engine: &mut IncrementalCluster, old: &InputSnapshot, new: &InputSnapshot) -> usize {
    let hosts = hosts_of(&new.topology);
    let changes = match changes_for(engine, new, &delta(old, new), hosts) {
        EngineInput::Changes(c) => c,
        EngineInput::Rebuild => panic!("no rebuild expected"),
    };
    let n = changes.len();
    for c in changes {
        engine.apply(c);
    }
    let scratch = IncrementalCluster::with_numbering(
        (*new.topology).clone(),
        policies_by_key(new),
        FqdnCache::default(),
        NODE,
        engine.numbering().clone(),
    );
    assert_eq!(
        engine.state(),
        scratch.state(),
        "the engine differs from a build of the new inputs"
    );
    n
}

#[test]
fn each_edit_of_the_inputs_becomes_the_changes_that_reach_the_same_state() {
    let s0 = snapshot(TOPOLOGY, &[A, B]);
    let mut engine = engine_of(&s0);
    // Nothing changed: no change.
    assert_eq!(step(&mut engine, &s0, &s0), 0);
    // One policy edited: one upsert (B is in the same "file", unchanged).
    let s1 = snapshot(TOPOLOGY, &[A_EDITED, B]);
    assert_eq!(step(&mut engine, &s0, &s1), 1);
    // One deleted.
    let s2 = snapshot(TOPOLOGY, &[A_EDITED]);
    assert_eq!(step(&mut engine, &s1, &s2), 1);
    // Added back.
    let s3 = snapshot(TOPOLOGY, &[A_EDITED, B]);
    assert_eq!(step(&mut engine, &s2, &s3), 1);
    // A pod relabelled, one removed, one added; a namespace relabelled.
    let t = TOPOLOGY
        .replace("name: b, labels: {app: b}", "name: b, labels: {app: a}")
        .replace(
            "  - {namespace: t2, name: c, labels: {app: c}, ips: [10.200.2.10], node: other}\n",
            "  - {namespace: t2, name: d, labels: {app: d}, ips: [10.200.2.11]}\n",
        )
        .replace("{tenant: two}", "{tenant: deux}");
    let s4 = snapshot(&t, &[A_EDITED, B]);
    assert_eq!(step(&mut engine, &s3, &s4), 4);
    // The API server's address: a hosts change.
    let t5 = format!("{t}kubeApiserver: {{ips: [10.201.0.1]}}\n");
    let s5 = snapshot(&t5, &[A_EDITED, B]);
    assert_eq!(step(&mut engine, &s4, &s5), 1);
}

#[test]
fn a_new_world_entry_rebuilds_and_node_addresses_are_the_nodes() {
    let s0 = snapshot(TOPOLOGY, &[A]);
    let engine = engine_of(&s0);
    let other = snapshot(&TOPOLOGY.replace("10.201.0.53", "10.201.0.54"), &[A]);
    let hosts = hosts_of(&other.topology);
    assert_eq!(
        changes_for(&engine, &other, &delta(&s0, &other), hosts),
        EngineInput::Rebuild
    );
    let addrs: BTreeSet<IpAddr> = ["10.201.255.254".parse().expect("address")].into();
    let hosts = with_node_addresses(hosts_of(&s0.topology), &addrs);
    assert_eq!(
        hosts.node.as_ref().map(|n| n.ips.clone()),
        Some(vec!["10.201.255.254".parse().expect("address")])
    );
    let EngineInput::Changes(c) = changes_for(&engine, &s0, &Changes::default(), hosts) else {
        panic!("no rebuild expected");
    };
    assert!(matches!(c.as_slice(), [Change::Hosts(_)]), "{c:?}");
}

/// The sets of `texts`, one per file `f{i}.yaml`.
fn per_file(texts: &[&str]) -> Vec<std::sync::Arc<PolicySet>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            std::sync::Arc::new(
                policy_model::load::load_str(t, &format!("f{i}.yaml")).expect("policy"),
            )
        })
        .collect()
}

#[test]
fn an_object_two_files_define_keeps_the_unchanged_files_rules() {
    let topology = Topology::from_yaml(TOPOLOGY, "topology.yaml").expect("topology");
    let snap = |sets: Vec<std::sync::Arc<PolicySet>>| InputSnapshot {
        local_pods: LocalPods::only(topology.pods_on(NODE).map(|p| p.full_name()).collect()),
        topology: std::sync::Arc::new(topology.clone()),
        policies: Policies(sets),
    };
    // a-out in two files; the second file is edited.
    let old = snap(per_file(&[A, A_EDITED]));
    let edited = A_EDITED.replace("8080", "9090");
    let new_sets = per_file(&[A, &edited]);
    let new = snap(new_sets.clone());
    let mut engine = engine_of(&old);
    let mut delta = Changes::default();
    delta.policies.files_changed.push("f1.yaml".into());
    delta.policies.upserted = vec![new_sets[1].clone()];
    delta.policies.updated = object_keys(&new_sets[1]);
    let hosts = hosts_of(&new.topology);
    let EngineInput::Changes(changes) = changes_for(&engine, &new, &delta, hosts) else {
        panic!("no rebuild expected");
    };
    assert_eq!(changes.len(), 1, "{changes:?}");
    for c in changes {
        engine.apply(c);
    }
    let scratch = IncrementalCluster::with_numbering(
        (*new.topology).clone(),
        policies_by_key(&new),
        FqdnCache::default(),
        NODE,
        engine.numbering().clone(),
    );
    assert_eq!(engine.state(), scratch.state());
    let key = policy_model::incremental::PolicyKey::of(&new_sets[0].policies[0].origin);
    assert_eq!(
        engine.policy(&key).map(<[_]>::len),
        Some(2),
        "both files' rules"
    );
}

const GROUP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners}
spec: {externalCIDRs: [10.201.5.0/24]}
"#;

const GROUP_MOVED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners}
spec: {externalCIDRs: [10.201.6.0/24]}
"#;

const TO_GROUP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-partners, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDRSet: [{cidrGroupRef: partners}]
"#;

#[test]
fn cidr_groups_of_the_policy_files_reach_the_engine_and_their_edits_are_one_change() {
    let none = BTreeSet::new();
    let s0 = snapshot(TOPOLOGY, &[TO_GROUP]);
    let mut engine = IncrementalCluster::new(
        engine_topology(&s0, &none),
        policies_by_key(&s0),
        FqdnCache::default(),
        NODE,
    );
    let allowed = |e: &IncrementalCluster, ip: &str| {
        let id = e.identity_of_ip(ip.parse().expect("ip"));
        let a = e
            .endpoints()
            .find(|ep| ep.name == "a")
            .expect("pod a is local");
        e.endpoint_policy(a.id)
            .expect("a's policy")
            .map
            .lookup(policy_model::Direction::Egress, id, 6, 443)
            .is_some()
    };
    assert!(
        !allowed(&engine, "10.201.5.1"),
        "no group yet: nothing allowed"
    );
    for (old, new, ip) in [
        (&s0, snapshot(TOPOLOGY, &[TO_GROUP, GROUP]), "10.201.5.1"),
        (
            &s0,
            snapshot(TOPOLOGY, &[TO_GROUP, GROUP_MOVED]),
            "10.201.6.1",
        ),
    ] {
        let hosts = hosts_of(&new.topology);
        let changes = match changes_for(&engine, &new, &delta(old, &new), hosts) {
            EngineInput::Changes(c) => c,
            EngineInput::Rebuild => panic!("no rebuild expected"),
        };
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(changes[0], Change::CidrGroups(_)));
        for c in changes {
            engine.apply(c);
        }
        assert!(allowed(&engine, ip), "{ip} is in the group now");
        let scratch = IncrementalCluster::with_numbering(
            engine_topology(&new, &none),
            policies_by_key(&new),
            FqdnCache::default(),
            NODE,
            engine.numbering().clone(),
        );
        assert_eq!(engine.state(), scratch.state());
    }
    assert!(!allowed(&engine, "10.201.5.1"), "moved out of the group");
}
