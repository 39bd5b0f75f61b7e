use crate::identity::NumericIdentity;
use crate::mapstate::MapVerdict::Allow;
use crate::mapstate::{MapKey, PortKey};
use crate::resolve::testing::*;
use crate::rules::Direction;

#[test]
fn entities_select_their_identities() {
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "cluster",
            "  endpointSelector: {matchLabels: {app: a}}\n  ingress: [{fromEntities: [cluster]}]"
        ),
        cnp(
            "world",
            "  endpointSelector: {matchLabels: {app: b}}\n  ingress: [{fromEntities: [world, kube-apiserver]}]"
        )
    ));
    let a = pol(&c, "ns1/a");
    let b = pol(&c, "ns1/b");
    let i = Direction::Ingress;
    let c_id = id(&c, "ns2/c");
    assert_eq!(verdict(&a, i, c_id, TCP, 1), Some(Allow));
    assert_eq!(verdict(&a, i, NumericIdentity::HOST, TCP, 1), Some(Allow));
    assert_eq!(
        verdict(&a, i, NumericIdentity::REMOTE_NODE, TCP, 1),
        Some(Allow)
    );
    assert_eq!(
        verdict(&a, i, NumericIdentity::KUBE_APISERVER, TCP, 1),
        Some(Allow)
    );
    assert_eq!(verdict(&a, i, NumericIdentity::WORLD_IPV4, TCP, 1), None);
    assert_eq!(verdict(&a, i, NumericIdentity::WORLD, TCP, 1), None);

    assert_eq!(verdict(&b, i, NumericIdentity::WORLD, TCP, 1), Some(Allow));
    assert_eq!(
        verdict(&b, i, NumericIdentity::WORLD_IPV4, TCP, 1),
        Some(Allow)
    );
    assert_eq!(
        verdict(&b, i, NumericIdentity::WORLD_IPV6, TCP, 1),
        Some(Allow)
    );
    assert_eq!(
        verdict(&b, i, NumericIdentity::KUBE_APISERVER, TCP, 1),
        Some(Allow)
    );
    assert_eq!(verdict(&b, i, NumericIdentity::HOST, TCP, 1), None);
    assert_eq!(verdict(&b, i, c_id, TCP, 1), None);
}

#[test]
fn host_entity_and_all_entity() {
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "host",
            "  endpointSelector: {matchLabels: {app: a}}\n  ingress: [{fromEntities: [host]}]"
        ),
        cnp(
            "all",
            "  endpointSelector: {matchLabels: {app: b}}\n  egress: [{toEntities: [all]}]"
        )
    ));
    let a = pol(&c, "ns1/a");
    assert_eq!(
        verdict(&a, Direction::Ingress, NumericIdentity::HOST, TCP, 1),
        Some(Allow)
    );
    assert_eq!(
        verdict(&a, Direction::Ingress, NumericIdentity::REMOTE_NODE, TCP, 1),
        None
    );
    let b = pol(&c, "ns1/b");
    assert!(b.egress_enforced);
    let wk = MapKey {
        direction: Direction::Egress,
        identity: NumericIdentity::ANY,
        port: PortKey::ANY,
    };
    assert_eq!(b.map.entries.get(&wk).map(|v| v.verdict), Some(Allow));
    assert!(
        b.provenance[&wk][0].origin.is_some(),
        "from the rule, not the default"
    );
}

#[test]
fn cidr_with_except_selects_world_addresses_but_never_pods() {
    let c = cluster(&cnp(
        "cidr",
        &format!("{ON_A}  egress: [{{toCIDRSet: [{{cidr: 10.0.0.0/8, except: [10.0.2.0/24]}}]}}]"),
    ));
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    let world_in = c.identity_of_ip(ip("10.5.5.5"));
    assert!(c.identity(world_in).expect("known").is_world());
    assert_eq!(verdict(&p, e, world_in, TCP, 1), Some(Allow));
    let excepted = c.identity_of_ip(ip("10.0.2.99"));
    assert_ne!(excepted, world_in);
    assert_eq!(verdict(&p, e, excepted, TCP, 1), None);
    // Pod addresses inside the CIDR keep their endpoint identity.
    assert_eq!(
        verdict(&p, e, c.identity_of_ip(ip("10.0.1.2")), TCP, 1),
        None
    );
    assert_eq!(
        verdict(&p, e, c.identity_of_ip(ip("10.0.2.1")), TCP, 1),
        None
    );
    assert_eq!(
        verdict(&p, e, c.identity_of_ip(ip("11.0.0.1")), TCP, 1),
        None
    );
}

#[test]
fn np_namespace_selector_selects_pods_of_matching_namespaces() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-blue, namespace: ns2}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]
",
    );
    let p = pol(&c, "ns2/c");
    let i = Direction::Ingress;
    assert_eq!(verdict(&p, i, id(&c, "ns1/a"), TCP, 1), Some(Allow));
    assert_eq!(verdict(&p, i, id(&c, "ns1/b"), UDP, 1), Some(Allow));
    assert_eq!(verdict(&p, i, id(&c, "ns2/c"), TCP, 1), None);
    assert_eq!(verdict(&p, i, NumericIdentity::HOST, TCP, 1), None);
    // The policy lives in ns2: ns1 pods are not its subjects.
    assert!(!pol(&c, "ns1/a").ingress_enforced);
}
