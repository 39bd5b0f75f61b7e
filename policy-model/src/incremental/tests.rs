use super::*;
use crate::identity::NumericIdentity;
use crate::load::load_str;
use crate::mapstate::{MapChange, MapVerdict};
use crate::resolve::{Cluster, FqdnCache, Numbering};
use crate::rules::Direction;
use crate::topology::{NamespaceSpec, PodSpec, Topology};
use std::collections::BTreeMap;
use std::sync::Arc;

const TOPO: &str = "
namespaces:
- {name: ns1, labels: {team: blue}}
- {name: ns2}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1, node: n1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2, node: n1}
- {namespace: ns2, name: c, labels: {app: c}, ip: 10.0.2.1, node: n2}
node: {ips: [192.168.0.10]}
";

fn topo() -> Topology {
    Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid")
}

fn policy(yaml: &str) -> (PolicyKey, Vec<crate::rules::PolicyRule>) {
    let set = load_str(yaml, "p.yaml").expect("test policy loads");
    let p = set.policies.into_iter().next().expect("one object");
    (PolicyKey::of(&p.origin), p.rules)
}

const ALLOW_B_TO_A: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]
";

fn pod(ns: &str, name: &str, app: &str, ip: &str, node: &str) -> Arc<PodSpec> {
    Arc::new(PodSpec {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ip: Some(ip.parse().expect("literal address")),
        node: Some(node.into()),
        ..PodSpec::default()
    })
}

fn engine(policies: &[&str]) -> IncrementalCluster {
    IncrementalCluster::new(
        topo(),
        policies.iter().map(|p| policy(p)),
        FqdnCache::default(),
        "n1",
    )
}

fn id_of(e: &IncrementalCluster, name: &str) -> u16 {
    e.endpoints()
        .find(|ep| ep.full_name() == name)
        .map(|ep| ep.id)
        .expect("local endpoint")
}

#[test]
fn first_numbering_is_cluster_new_s() {
    let e = engine(&[ALLOW_B_TO_A]);
    let c = Cluster::new(topo(), policy(ALLOW_B_TO_A).1, &FqdnCache::default());
    assert_eq!(&e.state().identities, c.identities());
    for ep in c.endpoints().iter().filter(|ep| ep.namespace == "ns1") {
        assert_eq!(e.state().endpoints[&ep.id].0, *ep);
    }
    // Only the local pods are endpoints.
    assert_eq!(e.endpoints().count(), 2);
}

#[test]
fn a_released_identity_number_is_not_handed_out_again() {
    let mut e = engine(&[]);
    let c_id = e
        .state()
        .ipcache
        .get(&"10.0.2.1/32".parse().expect("literal"))
        .copied()
        .expect("remote pod in the ipcache");
    let d = e.apply(Change::PodDelete {
        namespace: "ns2".into(),
        name: "c".into(),
    });
    assert_eq!(d.identities_removed, vec![c_id]);
    assert!(e.identity(c_id).is_none());
    // The same labels come back: a new number above every one given.
    e.apply(Change::PodUpsert(pod("ns2", "c", "c", "10.0.2.1", "n2")));
    let again = e.state().ipcache[&"10.0.2.1/32".parse().expect("literal")];
    assert_ne!(again, c_id);
    assert!(again.0 > c_id.0);
    assert!(e.numbering().next_endpoint > again.0);
}

#[test]
fn a_relabel_moves_one_pod_and_keeps_the_others_numbers() {
    let mut e = engine(&[ALLOW_B_TO_A]);
    let before = e.numbering().clone();
    let a = id_of(&e, "ns1/a");
    e.apply(Change::PodUpsert(pod("ns1", "b", "x", "10.0.1.2", "n1")));
    assert_eq!(id_of(&e, "ns1/a"), a);
    assert_eq!(e.numbering().endpoints, before.endpoints);
    let a_labels = &e
        .identity(e.state().endpoints[&a].0.identity)
        .expect("id")
        .labels;
    assert_eq!(
        before.identities.get(a_labels),
        e.numbering().identities.get(a_labels)
    );
}

#[test]
fn a_new_local_pod_gets_the_lowest_free_endpoint_id() {
    let mut e = engine(&[]);
    let a = id_of(&e, "ns1/a");
    e.apply(Change::PodDelete {
        namespace: "ns1".into(),
        name: "a".into(),
    });
    let d = e.apply(Change::PodUpsert(pod("ns1", "z", "a", "10.0.1.9", "n1")));
    assert_eq!(id_of(&e, "ns1/z"), a);
    assert!(matches!(&d.endpoints[..], [EndpointChange::Upsert(ep)] if ep.id == a));
    // A remote pod is no endpoint.
    let d = e.apply(Change::PodUpsert(pod("ns2", "r", "a", "10.0.2.9", "n2")));
    assert!(d.endpoints.is_empty());
    assert!(d.policy.is_empty());
}

#[test]
fn a_policy_edit_changes_only_the_endpoint_it_selects() {
    let mut e = engine(&[]);
    let a = id_of(&e, "ns1/a");
    let d = e.apply(Change::PolicyUpsert {
        key: policy(ALLOW_B_TO_A).0,
        rules: policy(ALLOW_B_TO_A).1,
    });
    assert_eq!(d.policy.keys().copied().collect::<Vec<_>>(), vec![a]);
    assert!(d.ipcache.is_empty() && d.identities_added.is_empty());
    let b_identity = e.state().endpoints[&id_of(&e, "ns1/b")].0.identity;
    let pol = e.endpoint_policy(a).expect("endpoint a");
    assert_eq!(
        pol.map
            .lookup(Direction::Ingress, b_identity, 6, 80)
            .map(|(_, v)| v.verdict),
        Some(MapVerdict::Allow)
    );
    // Deleting it gives the default allow back, as deltas.
    let d = e.apply(Change::PolicyDelete(policy(ALLOW_B_TO_A).0));
    assert!(
        d.policy[&a]
            .iter()
            .any(|c| matches!(c, MapChange::Upsert(k, _) if k.identity == NumericIdentity::ANY))
    );
}

#[test]
fn a_new_remote_identity_adds_only_its_entries() {
    let mut e = engine(&[ALLOW_B_TO_A]);
    let a = id_of(&e, "ns1/a");
    let d = e.apply(Change::PodUpsert({
        let mut p = pod("ns1", "d", "b", "10.0.1.7", "n2");
        Arc::make_mut(&mut p)
            .labels
            .insert("extra".into(), "1".into());
        p
    }));
    let [added] = &d.identities_added[..] else {
        panic!("one identity added: {:?}", d.identities_added);
    };
    assert_eq!(
        d.ipcache,
        vec![IpcacheChange::Upsert(
            "10.0.1.7/32".parse().expect("literal"),
            added.id
        )]
    );
    let changes = &d.policy[&a];
    assert!(!changes.is_empty());
    assert!(
        changes
            .iter()
            .all(|c| matches!(c, MapChange::Upsert(k, _) if k.identity == added.id))
    );
}

#[test]
fn a_namespace_relabel_renumbers_its_pods() {
    let mut e = engine(&[]);
    let old: Vec<NumericIdentity> = e.endpoints().map(|ep| ep.identity).collect();
    let d = e.apply(Change::NamespaceUpsert(NamespaceSpec {
        name: "ns1".into(),
        labels: BTreeMap::from([("team".to_string(), "red".to_string())]),
        annotations: BTreeMap::new(),
    }));
    assert_eq!(d.identities_removed.len(), 2);
    assert_eq!(d.identities_added.len(), 2);
    let new: Vec<NumericIdentity> = e.endpoints().map(|ep| ep.identity).collect();
    assert!(old.iter().all(|o| !new.contains(o)));
    assert_eq!(
        d.endpoints.len(),
        2,
        "both local endpoints change identity: {:?}",
        d.endpoints
    );
}

#[test]
fn a_restart_with_the_numbering_gives_the_same_state() {
    let mut e = engine(&[ALLOW_B_TO_A]);
    e.apply(Change::PodDelete {
        namespace: "ns1".into(),
        name: "a".into(),
    });
    e.apply(Change::PodUpsert(pod("ns1", "a", "a", "10.0.1.1", "n1")));
    let numbering: Numbering = e.numbering().clone();
    let again = IncrementalCluster::with_numbering(
        e.topology(),
        e.policy_keys()
            .cloned()
            .map(|k| (k, Vec::new()))
            .collect::<Vec<_>>(),
        FqdnCache::default(),
        "n1",
        numbering,
    );
    // Same numbers for what exists; policies given again are resolved
    // the same way (here: given without rules, so only numbers compare).
    assert_eq!(again.numbering().endpoints, e.numbering().endpoints);
    assert_eq!(again.numbering().identities, e.numbering().identities);
    let full = IncrementalCluster::with_numbering(
        e.topology(),
        [policy(ALLOW_B_TO_A)],
        FqdnCache::default(),
        "n1",
        e.numbering().clone(),
    );
    assert_eq!(full.state(), e.state());
}

#[test]
fn learned_addresses_come_and_go_as_ipcache_deltas() {
    let fqdn_policy = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: f, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress: [{toFQDNs: [{matchName: api.example.com}]}]
";
    let mut e = engine(&[fqdn_policy]);
    let a = id_of(&e, "ns1/a");
    let ip = "203.0.113.5".parse().expect("literal");
    let d = e.apply(Change::Learned {
        name: "api.example.com".into(),
        ips: vec![ip],
    });
    let [added] = &d.identities_added[..] else {
        panic!("one FQDN identity: {d:?}");
    };
    assert_eq!(
        d.ipcache,
        vec![IpcacheChange::Upsert(ipnet::IpNet::from(ip), added.id)]
    );
    assert!(
        d.policy[&a]
            .iter()
            .all(|c| matches!(c, MapChange::Upsert(k, _) if k.identity == added.id))
    );
    // A second address of the same name: only an ipcache entry.
    let ip2 = "203.0.113.6".parse().expect("literal");
    let d = e.apply(Change::Learned {
        name: "api.example.com".into(),
        ips: vec![ip2],
    });
    assert_eq!(
        d.ipcache,
        vec![IpcacheChange::Upsert(ipnet::IpNet::from(ip2), added.id)]
    );
    assert!(d.policy.is_empty() && d.identities_added.is_empty());
    let d = e.apply(Change::Expired {
        name: "api.example.com".into(),
        ips: vec![ip, ip2],
    });
    assert_eq!(d.identities_removed, vec![added.id]);
    assert!(
        d.policy[&a]
            .iter()
            .all(|c| matches!(c, MapChange::Delete(k) if k.identity == added.id))
    );
}

#[test]
fn realized_applies_a_delta() {
    let mut e = engine(&[]);
    let mut held = e.state().realized();
    for c in [
        Change::PolicyUpsert {
            key: policy(ALLOW_B_TO_A).0,
            rules: policy(ALLOW_B_TO_A).1,
        },
        Change::PodDelete {
            namespace: "ns1".into(),
            name: "b".into(),
        },
        Change::PodUpsert(pod("ns1", "b2", "b", "10.0.1.3", "n1")),
    ] {
        let d = e.apply(c);
        held.apply(&d);
        assert_eq!(held, e.state().realized());
    }
}
