use super::*;
use crate::identity::NumericIdentity;
use crate::l7::L7Parser;
use crate::load::load_str;
use crate::mapstate::MapVerdict::{Allow, Deny};
use crate::mapstate::{MapKey, MapVerdict, PortKey};
use crate::origin::PolicyKind;
use crate::rules::Direction;
use std::collections::BTreeSet;
use std::net::IpAddr;

const TOPO: &str = "
namespaces:
- {name: ns1, labels: {team: blue}}
- {name: ns2}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1, ports: [{name: http, containerPort: 8080}]}
- {namespace: ns1, name: a2, labels: {app: a}, ip: 10.0.1.3}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2, ports: [{name: http, containerPort: 9090}]}
- {namespace: ns2, name: c, labels: {app: c}, ip: 10.0.2.1}
node: {ips: [192.168.0.10], labels: {role: worker}}
kubeApiserver: {ips: [192.168.0.1]}
remoteNodes: {ips: [192.168.0.11]}
";

const TCP: u8 = 6;
const UDP: u8 = 17;

fn cluster_with(policies: &str, fqdn: &FqdnCache) -> Cluster {
    let set = load_str(policies, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    Cluster::new(topo, set.rules().cloned().collect(), fqdn)
}

fn cluster(policies: &str) -> Cluster {
    cluster_with(policies, &FqdnCache::default())
}

fn pol(c: &Cluster, pod: &str) -> EndpointPolicy {
    c.endpoint_policy(c.endpoint(pod).expect("pod in topology"))
}

fn id(c: &Cluster, pod: &str) -> NumericIdentity {
    c.endpoint(pod).expect("pod in topology").identity
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// The verdict of the kernel's lookup (`None` = no entry = drop).
fn verdict(
    p: &EndpointPolicy,
    d: Direction,
    remote: NumericIdentity,
    proto: u8,
    port: u16,
) -> Option<MapVerdict> {
    p.map.lookup(d, remote, proto, port).map(|(_, v)| v.verdict)
}

fn cnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: ns1}}\nspec:\n{spec}\n---\n"
    )
}

const ON_A: &str = "  endpointSelector: {matchLabels: {app: a}}\n";

#[test]
fn without_policy_both_directions_allow_everything() {
    let c = cluster("");
    let p = pol(&c, "ns1/a");
    assert!(!p.ingress_enforced && !p.egress_enforced);
    assert_eq!(p.map.len(), 2);
    for d in [Direction::Ingress, Direction::Egress] {
        let k = MapKey {
            direction: d,
            identity: NumericIdentity::ANY,
            port: PortKey::ANY,
        };
        assert_eq!(p.map.entries[&k].verdict, Allow);
        assert_eq!(p.provenance[&k][0].origin, None);
    }
    assert_eq!(
        verdict(&p, Direction::Ingress, NumericIdentity::WORLD, UDP, 9),
        Some(Allow)
    );
}

#[test]
fn identities_and_ipcache() {
    let c = cluster("");
    assert_eq!(
        id(&c, "ns1/a"),
        id(&c, "ns1/a2"),
        "same labels, same identity"
    );
    assert_ne!(id(&c, "ns1/a"), id(&c, "ns1/b"));
    assert!(id(&c, "ns1/a").0 >= NumericIdentity::FIRST_ENDPOINT);
    assert_eq!(c.identity_of_ip(ip("10.0.1.2")), id(&c, "ns1/b"));
    assert_eq!(c.identity_of_ip(ip("192.168.0.10")), NumericIdentity::HOST);
    assert_eq!(
        c.identity_of_ip(ip("192.168.0.1")),
        NumericIdentity::KUBE_APISERVER
    );
    assert_eq!(
        c.identity_of_ip(ip("192.168.0.11")),
        NumericIdentity::REMOTE_NODE
    );
    assert_eq!(c.identity_of_ip(ip("1.1.1.1")), NumericIdentity::WORLD_IPV4);
    assert_eq!(
        c.identity_of_ip(ip("2001:db8::1")),
        NumericIdentity::WORLD_IPV6
    );
    let ids: Vec<u16> = c.endpoints().iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(
        c.endpoint_by_ip(ip("10.0.2.1")).map(|e| e.full_name()),
        Some("ns2/c".into())
    );
}

#[test]
fn deny_beats_allow_across_policy_kinds() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: ns1}
spec:
  podSelector: {}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-b}
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
",
    );
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    assert!(p.ingress_enforced);
    assert_eq!(verdict(&p, Direction::Ingress, b, TCP, 80), Some(Deny));
    assert_eq!(verdict(&p, Direction::Ingress, b, TCP, 81), Some(Allow));
    assert_eq!(verdict(&p, Direction::Ingress, b, UDP, 80), Some(Allow));
    let c_id = id(&c, "ns2/c");
    assert_eq!(verdict(&p, Direction::Ingress, c_id, TCP, 80), Some(Allow));
    let kinds: Vec<PolicyKind> = p.enforcing[&Direction::Ingress]
        .iter()
        .map(|o| o.kind)
        .collect();
    assert!(kinds.contains(&PolicyKind::NetworkPolicy));
    assert!(kinds.contains(&PolicyKind::CiliumClusterwideNetworkPolicy));
}

#[test]
fn wildcard_deny_is_copied_into_an_identity_table() {
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "allow-b",
            &format!("{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]")
        ),
        cnp(
            "deny-80",
            &format!(
                "{ON_A}  ingressDeny: [{{toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
            )
        )
    ));
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    // The identity table of b must hold the wildcard deny itself.
    let k = MapKey {
        direction: Direction::Ingress,
        identity: b,
        port: PortKey::exact(TCP, 80),
    };
    assert_eq!(p.map.entries.get(&k).map(|v| v.verdict), Some(Deny));
    let wk = MapKey {
        identity: NumericIdentity::ANY,
        ..k
    };
    assert_eq!(p.map.entries.get(&wk).map(|v| v.verdict), Some(Deny));
    assert_eq!(verdict(&p, Direction::Ingress, b, TCP, 80), Some(Deny));
    assert_eq!(verdict(&p, Direction::Ingress, b, TCP, 81), Some(Allow));
    assert_eq!(verdict(&p, Direction::Ingress, b, UDP, 80), Some(Allow));
    let other = id(&c, "ns2/c");
    assert_eq!(verdict(&p, Direction::Ingress, other, TCP, 80), Some(Deny));
    assert_eq!(verdict(&p, Direction::Ingress, other, TCP, 81), None);
}

#[test]
fn wildcard_port_range_deny_is_copied_for_every_prefix() {
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "allow-b",
            &format!("{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]")
        ),
        cnp(
            "deny-range",
            &format!(
                "{ON_A}  ingressDeny: [{{toPorts: [{{ports: [{{port: '80', endPort: 90, protocol: TCP}}]}}]}}]"
            )
        )
    ));
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    for port in 75..=95u16 {
        let want = if (80..=90).contains(&port) {
            Deny
        } else {
            Allow
        };
        assert_eq!(
            verdict(&p, Direction::Ingress, b, TCP, port),
            Some(want),
            "port {port}"
        );
    }
}

#[test]
fn l4_only_allow_cancels_l7_rules() {
    let http = "rules: {http: [{method: GET, path: /public}]}";
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "l7",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], {http}}}]}}]"
            )
        ),
        cnp(
            "l4",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
            )
        )
    ));
    let p = pol(&c, "ns1/a");
    let k = MapKey {
        direction: Direction::Ingress,
        identity: id(&c, "ns1/b"),
        port: PortKey::exact(TCP, 80),
    };
    assert_eq!(p.map.entries[&k].redirect, Some(L7Parser::Http));
    let l7 = &p.l7[&k];
    assert!(l7.allow_all);
    assert_eq!(l7.rules.len(), 1);
}

#[test]
fn l3_only_allow_also_cancels_l7_rules_of_that_peer() {
    let c = cluster(&format!(
        "{}{}",
        cnp(
            "l7",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], rules: {{http: [{{}}]}}}}]}}]"
            )
        ),
        cnp(
            "l3",
            &format!("{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]")
        )
    ));
    let p = pol(&c, "ns1/a");
    let k = MapKey {
        direction: Direction::Ingress,
        identity: id(&c, "ns1/b"),
        port: PortKey::exact(TCP, 80),
    };
    assert!(p.l7[&k].allow_all);
}

#[test]
fn l7_rules_alone_are_enforced_and_two_rules_are_ored() {
    let rule = |path: &str| {
        format!(
            "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], rules: {{http: [{{path: {path}}}]}}}}]}}]"
        )
    };
    let c = cluster(&format!(
        "{}{}",
        cnp("one", &rule("/x")),
        cnp("two", &rule("/y"))
    ));
    let p = pol(&c, "ns1/a");
    let k = MapKey {
        direction: Direction::Ingress,
        identity: id(&c, "ns1/b"),
        port: PortKey::exact(TCP, 80),
    };
    let l7 = &p.l7[&k];
    assert_eq!(l7.parser, L7Parser::Http);
    assert!(!l7.allow_all);
    let names: Vec<&str> = l7.rules.iter().map(|(_, o, _)| o.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"one") && names.contains(&"two"));
    assert!(
        l7.rules
            .iter()
            .all(|(_, _, path)| path == "spec.ingress[0]")
    );
}

#[test]
fn default_allow_of_an_unenforced_direction_does_not_cancel_l7() {
    let c = cluster(&cnp(
        "l7",
        &format!(
            "{ON_A}  enableDefaultDeny: {{ingress: false}}\n  ingress: [{{toPorts: [{{ports: [{{port: '80', protocol: TCP}}], rules: {{http: [{{method: GET}}]}}}}]}}]"
        ),
    ));
    let p = pol(&c, "ns1/a");
    assert!(!p.ingress_enforced);
    let k = MapKey {
        direction: Direction::Ingress,
        identity: NumericIdentity::ANY,
        port: PortKey::exact(TCP, 80),
    };
    assert!(!p.l7[&k].allow_all);
    assert_eq!(p.map.entries[&k].redirect, Some(L7Parser::Http));
}

#[test]
fn conflicting_l7_parsers_on_one_key_deny_with_a_warning() {
    let port = |rules: &str| {
        format!(
            "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], rules: {rules}}}]}}]"
        )
    };
    let c = cluster(&format!(
        "{}{}",
        cnp("h", &port("{http: [{}]}")),
        cnp("k", &port("{kafka: [{topic: t}]}"))
    ));
    let p = pol(&c, "ns1/a");
    assert_eq!(
        verdict(&p, Direction::Ingress, id(&c, "ns1/b"), TCP, 80),
        Some(Deny)
    );
    assert!(
        p.warnings.iter().any(|w| w.contains("conflicting L7")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn from_requires_narrows_every_peer_of_the_direction() {
    let c = cluster(&cnp(
        "req",
        &format!(
            "{ON_A}  ingress:
  - fromRequires: [{{matchLabels: {{'k8s:io.kubernetes.pod.namespace': ns1}}}}]
  - fromEntities: [all]"
        ),
    ));
    let p = pol(&c, "ns1/a");
    assert_eq!(
        verdict(&p, Direction::Ingress, id(&c, "ns1/b"), TCP, 1),
        Some(Allow)
    );
    assert_eq!(
        verdict(&p, Direction::Ingress, id(&c, "ns2/c"), TCP, 1),
        None
    );
    assert_eq!(
        verdict(&p, Direction::Ingress, NumericIdentity::HOST, TCP, 1),
        None
    );
    // `all` with requirements is not the wildcard table.
    assert!(
        !p.map
            .entries
            .keys()
            .any(|k| k.direction == Direction::Ingress && k.identity == NumericIdentity::ANY)
    );
}

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
fn to_fqdns_allows_learned_addresses_only() {
    let mut fq = FqdnCache::default();
    fq.learn("API.Example.com.", ip("8.8.8.8"));
    fq.learn("other.org", ip("7.7.7.7"));
    fq.learn("api.example.com", ip("10.0.2.1")); // a pod address
    let c = cluster_with(
        &cnp(
            "fqdn",
            &format!("{ON_A}  egress: [{{toFQDNs: [{{matchName: api.example.com}}]}}]"),
        ),
        &fq,
    );
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    let learned = c.identity_of_ip(ip("8.8.8.8"));
    assert!(learned.is_local());
    assert_eq!(verdict(&p, e, learned, TCP, 443), Some(Allow));
    assert_eq!(
        verdict(&p, e, c.identity_of_ip(ip("9.9.9.9")), TCP, 443),
        None
    );
    assert_eq!(
        c.identity_of_ip(ip("7.7.7.7")),
        NumericIdentity::WORLD_IPV4,
        "names no toFQDNs selects get no identity"
    );
    assert_eq!(c.identity_of_ip(ip("10.0.2.1")), id(&c, "ns2/c"));
    assert_eq!(verdict(&p, e, id(&c, "ns2/c"), TCP, 443), None);
}

#[test]
fn deny_in_an_unenforced_direction_still_denies() {
    let c = cluster(&cnp(
        "deny-only",
        &format!(
            "{ON_A}  enableDefaultDeny: {{egress: false}}\n  egressDeny: [{{toEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '53'}}]}}]}}]"
        ),
    ));
    let p = pol(&c, "ns1/a");
    assert!(!p.egress_enforced);
    let e = Direction::Egress;
    let b = id(&c, "ns1/b");
    assert_eq!(verdict(&p, e, b, UDP, 53), Some(Deny));
    assert_eq!(verdict(&p, e, b, TCP, 53), Some(Deny));
    assert_eq!(verdict(&p, e, b, TCP, 54), Some(Allow));
    assert_eq!(verdict(&p, e, NumericIdentity::WORLD, TCP, 53), Some(Allow));
}

#[test]
fn deny_only_policy_enables_default_deny() {
    let c = cluster(&cnp(
        "deny-only",
        &format!("{ON_A}  egressDeny: [{{toEntities: [world]}}]"),
    ));
    let p = pol(&c, "ns1/a");
    assert!(p.egress_enforced);
    assert!(!p.ingress_enforced);
    assert_eq!(
        verdict(&p, Direction::Egress, NumericIdentity::WORLD, TCP, 1),
        Some(Deny)
    );
    assert_eq!(
        verdict(&p, Direction::Egress, id(&c, "ns1/b"), TCP, 1),
        None
    );
}

#[test]
fn ingress_named_port_resolves_against_the_endpoint() {
    let c = cluster(&cnp(
        "named",
        "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: http, protocol: TCP}]}]}]",
    ));
    let a = pol(&c, "ns1/a");
    let b = pol(&c, "ns1/b");
    let i = Direction::Ingress;
    let w = NumericIdentity::WORLD;
    assert_eq!(verdict(&a, i, w, TCP, 8080), Some(Allow));
    assert_eq!(verdict(&a, i, w, TCP, 9090), None);
    assert_eq!(verdict(&b, i, w, TCP, 9090), Some(Allow));
    assert_eq!(verdict(&b, i, w, TCP, 8080), None);
    // a2 has no port of that name: the rule gives it nothing.
    assert_eq!(verdict(&pol(&c, "ns1/a2"), i, w, TCP, 8080), None);
}

#[test]
fn ambiguous_egress_named_port_is_skipped_with_a_warning() {
    let c = cluster(&cnp(
        "named",
        &format!("{ON_A}  egress: [{{toPorts: [{{ports: [{{port: http}}]}}]}}]"),
    ));
    let p = pol(&c, "ns1/a");
    assert!(p.egress_enforced);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("\"http\""), "{}", p.warnings[0]);
    assert!(p.warnings[0].contains("8080") && p.warnings[0].contains("9090"));
    assert!(
        !p.map
            .entries
            .keys()
            .any(|k| k.direction == Direction::Egress),
        "no egress entry at all"
    );
}

#[test]
fn any_protocol_expands_and_ranges_decompose() {
    let c = cluster(&cnp(
        "ports",
        &format!(
            "{ON_A}  ingress: [{{toPorts: [{{ports: [{{port: '53'}}, {{port: '8000', endPort: 8003, protocol: TCP}}]}}]}}]"
        ),
    ));
    let p = pol(&c, "ns1/a");
    let keys: BTreeSet<PortKey> = p
        .map
        .entries
        .keys()
        .filter(|k| k.direction == Direction::Ingress)
        .map(|k| k.port)
        .collect();
    let want: BTreeSet<PortKey> = [
        PortKey::exact(6, 53),
        PortKey::exact(17, 53),
        PortKey::exact(132, 53),
        PortKey {
            protocol: 6,
            port: 8000,
            prefix_len: 14,
        },
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want);
}

#[test]
fn icmp_types_become_exact_keys() {
    let c = cluster(&cnp(
        "icmp",
        &format!(
            "{ON_A}  egress: [{{icmps: [{{fields: [{{type: 8}}, {{type: 128, family: IPv6}}]}}]}}]"
        ),
    ));
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    let w = NumericIdentity::WORLD;
    assert_eq!(verdict(&p, e, w, 1, 8), Some(Allow));
    assert_eq!(verdict(&p, e, w, 1, 0), None);
    assert_eq!(verdict(&p, e, w, 58, 128), Some(Allow));
    assert_eq!(verdict(&p, e, w, 58, 8), None);
    assert_eq!(verdict(&p, e, w, TCP, 8), None);
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

#[test]
fn provenance_names_the_rule_and_cookies_are_stable() {
    let text = cnp(
        "allow-b",
        &format!("{ON_A}  ingress: [{{}}, {{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]"),
    );
    let c = cluster(&text);
    let p = pol(&c, "ns1/a");
    let k = MapKey {
        direction: Direction::Ingress,
        identity: id(&c, "ns1/b"),
        port: PortKey::ANY,
    };
    let prov = &p.provenance[&k];
    assert_eq!(prov.len(), 1);
    assert_eq!(prov[0].rule, "spec.ingress[1]");
    assert_eq!(
        prov[0].origin.as_ref().map(|o| o.to_string()),
        Some("CiliumNetworkPolicy ns1/allow-b".into())
    );
    assert!(prov[0].peer.contains("app=b"), "{}", prov[0].peer);
    let again = pol(&cluster(&text), "ns1/a");
    assert_eq!(p.map.entries[&k].cookie, again.map.entries[&k].cookie);
    assert_ne!(p.map.entries[&k].cookie, 0);
}

#[test]
fn learned_addresses_share_the_identity_of_their_selector_set_and_cidrs() {
    let policies = cnp(
        "fqdn",
        &format!(
            "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}, {{matchName: api.example.com}}]}}, {{toCIDR: [8.8.0.0/16], toPorts: [{{ports: [{{port: '53'}}]}}]}}]"
        ),
    );
    let mut fq = FqdnCache::default();
    fq.learn("a.example.com", ip("8.8.8.8"));
    fq.learn("b.example.com", ip("9.9.9.9"));
    fq.learn("api.example.com", ip("9.9.9.10"));
    fq.learn("other.org", ip("7.7.7.7"));
    let c = cluster_with(&policies, &fq);
    let (in_cidr, plain, api) = (
        c.identity_of_ip(ip("8.8.8.8")),
        c.identity_of_ip(ip("9.9.9.9")),
        c.identity_of_ip(ip("9.9.9.10")),
    );
    assert!(in_cidr.is_local() && plain.is_local() && api.is_local());
    assert!(in_cidr != plain && plain != api && in_cidr != api);
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    assert_eq!(verdict(&p, e, in_cidr, UDP, 53), Some(Allow), "toCIDR");
    assert_eq!(verdict(&p, e, plain, TCP, 443), Some(Allow), "toFQDNs");
    let world = c.identity_of_ip(ip("7.7.7.7"));
    assert_eq!(world, NumericIdentity::WORLD_IPV4);
    assert_eq!(verdict(&p, e, world, UDP, 53), None);

    // A new address of a known selector set: one ipcache entry, and the
    // cluster resolved with it learned is the same, entry for entry.
    for (name, addr, expect) in [
        ("c.example.com.", "9.9.9.11", plain),
        ("d.example.com.", "8.8.4.4", in_cidr),
        ("api.example.com.", "5.5.5.5", api),
    ] {
        let mut incremental = c.clone();
        let LearnedAddress::Ipcache(prefix, id) = c.learned_address(ip(addr), &[name]) else {
            panic!("{addr} should need only an ipcache entry");
        };
        assert_eq!(id, expect, "{addr}");
        incremental.add_learned_address(prefix, id);
        let mut fq2 = fq.clone();
        fq2.learn(name, ip(addr));
        let full = cluster_with(&policies, &fq2);
        assert_eq!(incremental.ipcache(), full.ipcache(), "{addr}");
        assert_eq!(
            pol(&full, "ns1/a").map,
            p.map,
            "{addr}: no policy map change"
        );
    }
    // Names no selector selects, and addresses that keep their identity.
    assert_eq!(
        c.learned_address(ip("7.7.7.8"), &["other.org."]),
        LearnedAddress::Unchanged
    );
    assert_eq!(
        c.learned_address(ip("9.9.9.9"), &["b.example.com.", "x.example.com."]),
        LearnedAddress::Unchanged
    );
    assert_eq!(
        c.learned_address(ip("10.0.2.1"), &["b.example.com."]),
        LearnedAddress::Unchanged,
        "a pod address keeps its identity"
    );
    // A new label set, or an address whose set grows: resolve again.
    assert_eq!(
        c.learned_address(ip("2001:db8::1"), &["a.example.com."]),
        LearnedAddress::Resolve
    );
    assert_eq!(
        c.learned_address(ip("9.9.9.9"), &["b.example.com.", "api.example.com."]),
        LearnedAddress::Resolve
    );
}

#[test]
fn forgetting_a_learned_address_matches_a_resolve_without_it() {
    let policies = cnp(
        "fqdn",
        &format!(
            "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}, {{matchName: api.example.com}}]}}, {{toCIDR: [8.8.0.0/16], toPorts: [{{ports: [{{port: '53'}}]}}]}}]"
        ),
    );
    let mut fq = FqdnCache::default();
    for (name, addr) in [
        ("a.example.com", "8.8.8.8"),
        ("d.example.com", "8.8.4.4"),
        ("b.example.com", "9.9.9.9"),
        ("c.example.com", "9.9.9.11"),
        ("api.example.com", "9.9.9.10"),
    ] {
        fq.learn(name, ip(addr));
    }
    let c = cluster_with(&policies, &fq);
    for (name, addr) in [
        ("c.example.com.", "9.9.9.11"),
        ("d.example.com.", "8.8.4.4"),
    ] {
        let mut incremental = c.clone();
        let fallback = incremental
            .forget_learned_address(ip(addr))
            .expect("its identity keeps another address");
        let mut fq2 = fq.clone();
        fq2.names.remove(name);
        let full = cluster_with(&policies, &fq2);
        assert_eq!(incremental.ipcache(), full.ipcache(), "{addr}");
        assert_eq!(fallback, full.identity_of_ip(ip(addr)), "{addr}");
        assert_eq!(pol(&full, "ns1/a").map, pol(&c, "ns1/a").map, "{addr}");
    }
    // The last address of an identity, a pod, an unknown address: no.
    let mut c2 = c.clone();
    assert_eq!(c2.forget_learned_address(ip("9.9.9.10")), None);
    assert_eq!(c2.forget_learned_address(ip("10.0.1.1")), None);
    assert_eq!(c2.forget_learned_address(ip("1.1.1.1")), None);
    assert_eq!(c2.ipcache(), c.ipcache(), "nothing changed");
}
