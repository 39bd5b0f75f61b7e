use super::*;
use crate::api::{CiliumPolicy, NetworkPolicy};
use crate::labels::{
    LabelSet, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, SOURCE_K8S, SOURCE_RESERVED, Selector,
};
use std::sync::Arc;

fn origin(kind: PolicyKind, ns: Option<&str>) -> Arc<PolicyRef> {
    Arc::new(PolicyRef {
        kind,
        namespace: ns.map(str::to_string),
        name: "p".into(),
        file: None,
        document: None,
    })
}

fn np(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let np: NetworkPolicy = serde_yaml_ng::from_str(yaml).expect("test NetworkPolicy parses");
    from_network_policy(&np, origin(PolicyKind::NetworkPolicy, Some("ns1")))
}

fn np_ok(yaml: &str) -> PolicyRule {
    let mut r = np(yaml).expect("valid NetworkPolicy");
    assert_eq!(r.len(), 1);
    r.remove(0)
}

/// A CNP in namespace `ns1`.
fn cnp(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let cp: CiliumPolicy = serde_yaml_ng::from_str(yaml).expect("test CNP parses");
    from_cilium_policy(
        &cp,
        Some("ns1"),
        origin(PolicyKind::CiliumNetworkPolicy, Some("ns1")),
    )
}

fn cnp_ok(yaml: &str) -> PolicyRule {
    let mut r = cnp(yaml).expect("valid CNP");
    assert_eq!(r.len(), 1);
    r.remove(0)
}

fn ccnp(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let cp: CiliumPolicy = serde_yaml_ng::from_str(yaml).expect("test CCNP parses");
    from_cilium_policy(
        &cp,
        None,
        origin(PolicyKind::CiliumClusterwideNetworkPolicy, None),
    )
}

fn cnp_err(yaml: &str) -> RuleError {
    cnp(yaml).expect_err("the CNP must be rejected")
}

/// Labels of a pod in `ns` (namespace labels included, as the topology
/// derives them).
fn pod(ns: &str, ns_labels: &[(&str, &str)], labels: &[(&str, &str)]) -> LabelSet {
    let mut l = LabelSet::new();
    for (k, v) in labels {
        l.insert(SOURCE_K8S, k, v);
    }
    l.insert(SOURCE_K8S, POD_NAMESPACE_LABEL, ns);
    for (k, v) in ns_labels {
        l.insert(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    l
}

fn endpoints_sel(p: &Peer) -> &Selector {
    match p {
        Peer::Endpoints(s) => s,
        other => panic!("expected an endpoints peer, got {other:?}"),
    }
}

fn subject_sel(r: &PolicyRule) -> &Selector {
    match &r.subject {
        Subject::Endpoints(s) => s,
        other => panic!("expected an endpoints subject, got {other:?}"),
    }
}

const NP_HEAD: &str = "metadata: {name: p, namespace: ns1}\n";

// ---------------------------------------------------------------------------
// NetworkPolicy

#[test]
fn np_without_policy_types_is_ingress_only_unless_it_has_egress() {
    let r = np_ok(&format!("{NP_HEAD}spec: {{podSelector: {{}}}}"));
    assert!(r.ingress.default_deny);
    assert!(!r.egress.default_deny);
    assert!(r.ingress.entries.is_empty());

    // Kubernetes defaulting looks at len(spec.egress): an empty list does
    // not imply Egress, one rule does.
    let r = np_ok(&format!("{NP_HEAD}spec: {{podSelector: {{}}, egress: []}}"));
    assert!(r.ingress.default_deny, "Ingress is always implied");
    assert!(!r.egress.default_deny, "egress: [] does not imply Egress");
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, egress: [{{}}]}}"
    ));
    assert!(r.ingress.default_deny);
    assert!(r.egress.default_deny, "an egress rule implies Egress");
    assert_eq!(r.egress.entries[0].peers, vec![Peer::All]);
}

#[test]
fn np_empty_policy_types_list_gets_the_kubernetes_defaults() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, policyTypes: [], egress: [{{}}]}}"
    ));
    assert!(r.ingress.default_deny);
    assert!(r.egress.default_deny);
}

#[test]
fn np_explicit_policy_types_replace_the_defaults() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, policyTypes: [Egress], ingress: [{{}}]}}"
    ));
    assert!(!r.ingress.default_deny);
    assert!(
        r.ingress.entries.is_empty(),
        "ingress rules are ignored when Ingress is not a policy type"
    );
    assert!(r.egress.default_deny);
    let e = np(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, policyTypes: [Ingress, egress]}}"
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.policyTypes[1]");
}

#[test]
fn np_subject_is_scoped_to_the_policy_namespace() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{matchLabels: {{app: web}}}}}}"
    ));
    let s = subject_sel(&r);
    assert!(s.matches(&pod("ns1", &[], &[("app", "web")])));
    assert!(!s.matches(&pod("ns2", &[], &[("app", "web")])));
    assert!(!s.matches(&pod("ns1", &[], &[("app", "db")])));
}

#[test]
fn np_missing_or_empty_from_means_every_peer_and_no_ports_means_all_ports() {
    for rule in ["{}", "{from: []}", "{from: [], ports: []}"] {
        let r = np_ok(&format!(
            "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{rule}]}}"
        ));
        let e = &r.ingress.entries[0];
        assert_eq!(e.peers, vec![Peer::All], "{rule}");
        assert_eq!(e.ports, None, "{rule}");
        assert!(!e.deny);
        assert_eq!(e.path, "spec.ingress[0]");
    }
}

#[test]
fn np_pod_selector_peer_is_own_namespace_only() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{app: a}}}}}}]}}]}}"
    ));
    let s = endpoints_sel(&r.ingress.entries[0].peers[0]);
    assert!(s.matches(&pod("ns1", &[], &[("app", "a")])));
    assert!(!s.matches(&pod("ns2", &[], &[("app", "a")])));
}

#[test]
fn np_namespace_and_pod_selector_in_one_peer_are_anded() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: blue}}}}
      podSelector: {{matchLabels: {{app: a}}}}"
    ));
    let peers = &r.ingress.entries[0].peers;
    assert_eq!(peers.len(), 1);
    let s = endpoints_sel(&peers[0]);
    assert!(s.matches(&pod("ns2", &[("team", "blue")], &[("app", "a")])));
    assert!(!s.matches(&pod("ns2", &[("team", "blue")], &[("app", "b")])));
    assert!(!s.matches(&pod("ns1", &[("team", "red")], &[("app", "a")])));
}

#[test]
fn np_separate_peers_are_ored() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: blue}}}}
    - podSelector: {{matchLabels: {{app: a}}}}"
    ));
    let peers = &r.ingress.entries[0].peers;
    assert_eq!(peers.len(), 2);
    let any = |l: &LabelSet| peers.iter().any(|p| endpoints_sel(p).matches(l));
    assert!(any(&pod("ns2", &[("team", "blue")], &[("app", "zzz")])));
    assert!(any(&pod("ns1", &[], &[("app", "a")])));
    assert!(!any(&pod("ns2", &[], &[("app", "a")])));
}

#[test]
fn np_empty_namespace_selector_selects_every_pod_but_no_reserved_identity() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}"
    ));
    let s = endpoints_sel(&r.ingress.entries[0].peers[0]);
    assert!(s.matches(&pod("ns1", &[], &[])));
    assert!(s.matches(&pod("kube-system", &[], &[("x", "y")])));
    assert!(!s.matches(&LabelSet::new().with(SOURCE_RESERVED, "host", "")));
    assert!(!s.matches(&LabelSet::new().with(SOURCE_RESERVED, "world", "")));
}

#[test]
fn np_ip_block_with_except() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec:
  podSelector: {{}}
  egress:
  - to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]"
    ));
    assert_eq!(
        r.egress.entries[0].peers,
        vec![Peer::Cidr {
            cidr: "10.0.0.0/8".parse().expect("literal"),
            except: vec!["10.1.0.0/16".parse().expect("literal")],
        }]
    );
    assert_eq!(
        r.egress.entries[0].peers[0].to_string(),
        "cidr 10.0.0.0/8 except 10.1.0.0/16"
    );
}

#[test]
fn np_ip_block_errors_name_their_path() {
    let e = np(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.0.0.0/33}}}}]}}]}}"
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.ingress[0].from[0].ipBlock.cidr");
    let e = np(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.0.0.0/16, 192.168.0.0/16]}}}}]}}]}}"
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.ingress[0].from[0].ipBlock.except[1]");
    assert!(e.reason.contains("not inside"), "{}", e.reason);
    let e = np(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.0.0.0/8}}, podSelector: {{}}}}]}}]}}"
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.ingress[0].from[0]");
    let e = np(&format!(
        "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{from: [{{}}]}}]}}"
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.ingress[0].from[0]");
}

#[test]
fn np_ports_default_to_tcp_and_support_end_port_and_names() {
    let r = np_ok(&format!(
        "{NP_HEAD}spec:
  podSelector: {{}}
  ingress:
  - ports:
    - port: 80
    - {{port: 8000, endPort: 8080, protocol: UDP}}
    - port: http
    - protocol: SCTP
    - port: '443'"
    ));
    let ports = r.ingress.entries[0].ports.clone().expect("ports");
    let got: Vec<(Protocol, PortSpec)> = ports.into_iter().map(|p| (p.protocol, p.port)).collect();
    assert_eq!(
        got,
        vec![
            (Protocol::Tcp, PortSpec::Range(80, 80)),
            (Protocol::Udp, PortSpec::Range(8000, 8080)),
            (Protocol::Tcp, PortSpec::Named("http".into())),
            (Protocol::Sctp, PortSpec::Any),
            (Protocol::Tcp, PortSpec::Range(443, 443)),
        ]
    );
    assert_eq!(r.ingress.entries[0].peers, vec![Peer::All]);
}

#[test]
fn np_port_errors_name_their_path() {
    let cases = [
        (
            "{port: 90, endPort: 80}",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "{port: 80, endPort: 70000}",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "{port: http, endPort: 90}",
            "spec.ingress[0].ports[0].endPort",
        ),
        ("{endPort: 90}", "spec.ingress[0].ports[0].endPort"),
        ("{port: 70000}", "spec.ingress[0].ports[0].port"),
        ("{port: -1}", "spec.ingress[0].ports[0].port"),
        ("{port: HTTP}", "spec.ingress[0].ports[0].port"),
        ("{port: a--b}", "spec.ingress[0].ports[0].port"),
        ("{port: -ab}", "spec.ingress[0].ports[0].port"),
        ("{port: '1234'}", "-"),
        ("{port: abcdefghijklmnop}", "spec.ingress[0].ports[0].port"),
        ("{port: '123-456'}", "spec.ingress[0].ports[0].port"),
        (
            "{port: 80, protocol: ICMP}",
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            "{port: 80, protocol: ANY}",
            "spec.ingress[0].ports[0].protocol",
        ),
    ];
    for (port, path) in cases {
        let res = np(&format!(
            "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{ports: [{port}]}}]}}"
        ));
        if path == "-" {
            assert!(res.is_ok(), "{port}: {res:?}");
        } else {
            assert_eq!(res.expect_err(port).path, path, "{port}");
        }
    }
    // 15 characters is the longest valid name.
    assert!(
        np(&format!(
            "{NP_HEAD}spec: {{podSelector: {{}}, ingress: [{{ports: [{{port: abcdefghijklmno}}]}}]}}"
        ))
        .is_ok()
    );
}

#[test]
fn np_needs_a_name() {
    let e = np("metadata: {namespace: ns1}\nspec: {podSelector: {}}").unwrap_err();
    assert_eq!(e.path, "metadata.name");
}

// ---------------------------------------------------------------------------
// CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy

const CNP_HEAD: &str = "metadata: {name: p}\n";

#[test]
fn cnp_ports_default_to_any_protocol() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts: [{{ports: [{{port: '53'}}, {{port: '80', protocol: TCP}}]}}]"
    ));
    let e = &r.ingress.entries[0];
    assert_eq!(
        e.peers,
        vec![Peer::All],
        "L4-only rule applies to all peers"
    );
    let ports = e.ports.as_ref().expect("ports");
    assert_eq!(ports[0].protocol, Protocol::Any);
    assert_eq!(ports[0].port, PortSpec::Range(53, 53));
    assert_eq!(ports[1].protocol, Protocol::Tcp);
    assert_eq!(
        Protocol::Any.expand(),
        &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
    );
}

#[test]
fn cnp_port_zero_or_empty_is_all_ports_and_end_port_makes_a_range() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toPorts: [{{ports: [{{port: '0', protocol: UDP}}, {{port: '', protocol: TCP}}, {{port: '1000', endPort: 2000}}, {{protocol: TCP}}]}}]"
    ));
    let ports: Vec<PortSpec> = r.egress.entries[0]
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(
        ports,
        vec![
            PortSpec::Any,
            PortSpec::Any,
            PortSpec::Range(1000, 2000),
            PortSpec::Any
        ]
    );
}

#[test]
fn cnp_subject_and_peers_are_scoped_to_the_namespace() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}, {{}}]"
    ));
    let s = subject_sel(&r);
    assert!(s.matches(&pod("ns1", &[], &[("app", "web")])));
    assert!(!s.matches(&pod("ns2", &[], &[("app", "web")])));
    let peers = &r.ingress.entries[0].peers;
    let client = endpoints_sel(&peers[0]);
    assert!(client.matches(&pod("ns1", &[], &[("app", "client")])));
    assert!(!client.matches(&pod("ns2", &[], &[("app", "client")])));
    let all = endpoints_sel(&peers[1]);
    assert!(all.matches(&pod("ns1", &[], &[])));
    assert!(!all.matches(&pod("ns2", &[], &[])));
    assert!(!all.matches(&LabelSet::new().with(SOURCE_RESERVED, "world", "")));
}

#[test]
fn cnp_peer_naming_a_namespace_is_not_rescoped() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - fromEndpoints:
    - matchLabels: {{'k8s:io.kubernetes.pod.namespace': ns2, app: c}}
    - matchExpressions: [{{key: io.kubernetes.pod.namespace, operator: Exists}}]"
    ));
    let peers = &r.ingress.entries[0].peers;
    let ns2 = endpoints_sel(&peers[0]);
    assert!(ns2.matches(&pod("ns2", &[], &[("app", "c")])));
    assert!(!ns2.matches(&pod("ns1", &[], &[("app", "c")])));
    let every_ns = endpoints_sel(&peers[1]);
    assert!(every_ns.matches(&pod("ns1", &[], &[])));
    assert!(every_ns.matches(&pod("ns3", &[], &[])));
}

#[test]
fn cnp_peer_on_namespace_labels_is_not_scoped() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - fromEndpoints:
    - matchLabels: {{'k8s:io.cilium.k8s.namespace.labels.team': blue}}
    - matchLabels: {{'io.cilium.k8s.namespace.labels.team': red}}"
    ));
    let peers = &r.ingress.entries[0].peers;
    assert!(endpoints_sel(&peers[0]).matches(&pod("ns2", &[("team", "blue")], &[])));
    assert!(endpoints_sel(&peers[1]).matches(&pod("ns3", &[("team", "red")], &[])));
    assert!(!endpoints_sel(&peers[1]).matches(&pod("ns3", &[("team", "blue")], &[])));
}

#[test]
fn cnp_reserved_peer_selectors_are_not_scoped() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{'reserved:host': ''}}}}]"
    ));
    let s = endpoints_sel(&r.ingress.entries[0].peers[0]);
    assert!(s.matches(&LabelSet::new().with(SOURCE_RESERVED, "host", "")));
}

#[test]
fn ccnp_peers_need_a_namespace_label_and_subject_is_cluster_wide() {
    let r = ccnp(
        "metadata: {name: p}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{}, {matchLabels: {app: c}}]",
    )
    .expect("valid CCNP")
    .remove(0);
    let s = subject_sel(&r);
    assert!(s.matches(&pod("ns1", &[], &[("app", "web")])));
    assert!(s.matches(&pod("ns9", &[], &[("app", "web")])));
    let peers = &r.ingress.entries[0].peers;
    let all = endpoints_sel(&peers[0]);
    assert!(all.matches(&pod("ns1", &[], &[])));
    assert!(all.matches(&pod("ns9", &[], &[])));
    assert!(!all.matches(&LabelSet::new().with(SOURCE_RESERVED, "host", "")));
    let c = endpoints_sel(&peers[1]);
    assert!(c.matches(&pod("ns9", &[], &[("app", "c")])));
    assert!(!c.matches(&LabelSet::new().with(SOURCE_K8S, "app", "c")));
}

#[test]
fn cnp_empty_ingress_rule_enables_default_deny_and_selects_nothing() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{}}]}}"
    ));
    assert!(r.ingress.default_deny);
    assert!(!r.egress.default_deny);
    assert_eq!(r.ingress.entries.len(), 1);
    assert!(r.ingress.entries[0].peers.is_empty());
    assert_eq!(r.ingress.entries[0].ports, None);
}

#[test]
fn cnp_without_rules_in_a_direction_does_not_enforce_it() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: []}}"
    ));
    assert!(!r.ingress.default_deny);
    assert!(!r.egress.default_deny);
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egressDeny: [{{toEntities: [world]}}]}}"
    ));
    assert!(r.egress.default_deny, "deny rules also enable default deny");
    assert!(r.egress.entries[0].deny);
    assert_eq!(r.egress.entries[0].path, "spec.egressDeny[0]");
}

#[test]
fn cnp_enable_default_deny_false_keeps_rules_but_not_default_deny() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  enableDefaultDeny: {{ingress: false}}
  ingress: [{{fromEntities: [world]}}]
  egress: [{{toEntities: [world]}}]"
    ));
    assert!(!r.ingress.default_deny);
    assert_eq!(r.ingress.entries.len(), 1);
    assert!(r.egress.default_deny, "unset egress keeps its default");
}

#[test]
fn cnp_deny_rules_are_marked_and_ordered_after_allows() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingressDeny: [{{fromCIDR: [10.0.0.0/8]}}]
  ingress: [{{fromEntities: [all]}}]"
    ));
    let e = &r.ingress.entries;
    assert_eq!(e.len(), 2);
    assert!(!e[0].deny && e[0].path == "spec.ingress[0]");
    assert!(e[1].deny && e[1].path == "spec.ingressDeny[0]");
    assert_eq!(e[0].peers, vec![Peer::Entity(Entity::All)]);
}

#[test]
fn cnp_specs_list_gives_one_rule_per_spec_with_paths() {
    let rules = cnp(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}}}
specs:
- {{endpointSelector: {{}}, description: first}}
- {{endpointSelector: {{}}}}"
    ))
    .expect("valid");
    let paths: Vec<&str> = rules.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["spec", "specs[0]", "specs[1]"]);
    assert_eq!(rules[1].description.as_deref(), Some("first"));
    assert_eq!(cnp(CNP_HEAD).unwrap_err().path, "spec");
    assert_eq!(
        cnp("metadata: {}\nspec: {endpointSelector: {}}")
            .unwrap_err()
            .path,
        "metadata.name"
    );
}

#[test]
fn kafka_role_and_api_key_together_is_rejected_with_its_path() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts:
    - ports: [{{port: '9092', protocol: TCP}}]
      rules: {{kafka: [{{role: produce, apiKey: produce}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].toPorts[0].rules.kafka");
    assert!(
        e.reason.contains("role") && e.reason.contains("apiKey"),
        "{}",
        e.reason
    );
}

#[test]
fn mixed_l7_types_on_one_port_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules: {{http: [{{}}], dns: [{{matchPattern: '*'}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toPorts[0].rules");
    assert!(
        e.reason.contains("http") && e.reason.contains("dns"),
        "{}",
        e.reason
    );
}

#[test]
fn l7_rules_in_a_deny_rule_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingressDeny:
  - toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules: {{http: [{{method: GET}}]}}"
    ));
    assert_eq!(e.path, "spec.ingressDeny[0].toPorts[0].rules");
    assert!(e.reason.contains("deny"), "{}", e.reason);
}

#[test]
fn to_fqdns_with_to_endpoints_is_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toFQDNs: [{{matchName: example.com}}]
    toEndpoints: [{{}}]"
    ));
    assert_eq!(e.path, "spec.egress[0].toFQDNs");
    assert!(e.reason.contains("toEndpoints"), "{}", e.reason);
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egressDeny: [{{toFQDNs: [{{matchName: example.com}}]}}]"
    ));
    assert_eq!(e.path, "spec.egressDeny[0].toFQDNs");
}

#[test]
fn two_kinds_of_l3_peer_in_one_rule_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress: [{{fromEndpoints: [{{}}], fromCIDR: [10.0.0.0/8]}}]"
    ));
    assert_eq!(e.path, "spec.ingress[0]");
    assert!(
        e.reason.contains("fromEndpoints") && e.reason.contains("fromCIDR"),
        "{}",
        e.reason
    );
}

#[test]
fn endpoint_selector_and_node_selector_together_is_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}specs:
- {{endpointSelector: {{}}}}
- {{endpointSelector: {{}}, nodeSelector: {{}}}}"
    ));
    assert_eq!(e.path, "specs[1]");
    assert!(e.reason.contains("nodeSelector"), "{}", e.reason);
    let e = cnp_err(&format!("{CNP_HEAD}spec: {{ingress: [{{}}]}}"));
    assert_eq!(e.path, "spec");
}

#[test]
fn node_selector_host_policy_is_rejected_not_ignored() {
    // Accepted and never enforced would leave the node open (issue 13, 15).
    let e = ccnp("metadata: {name: p}\nspec: {nodeSelector: {matchLabels: {role: worker}}, ingress: [{fromEntities: [cluster]}]}")
        .expect_err("a host policy must be rejected");
    assert_eq!(e.path, "spec.nodeSelector");
    assert!(e.reason.contains("not enforced"), "{}", e.reason);
    let e = cnp_err(&format!(
        "{CNP_HEAD}specs:\n- {{endpointSelector: {{}}}}\n- {{nodeSelector: {{}}}}"
    ));
    assert_eq!(e.path, "specs[1].nodeSelector");
}

#[test]
fn authentication_required_allows_nothing_and_keeps_default_deny() {
    // Issue 13, 14: the field used to be parsed and ignored (traffic
    // allowed as if it were absent).
    for dir in ["ingress", "egress"] {
        let peer = if dir == "ingress" {
            "fromEntities"
        } else {
            "toEntities"
        };
        for mode in ["required", "test-always-fail"] {
            let r = cnp_ok(&format!(
                "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  {dir}:\n  - {peer}: [all]\n    authentication: {{mode: {mode}}}"
            ));
            let d = if dir == "ingress" {
                &r.ingress
            } else {
                &r.egress
            };
            assert!(
                d.default_deny,
                "{dir} {mode}: the subject stays default-deny"
            );
            assert!(
                d.entries[0].peers.is_empty(),
                "{dir} {mode}: allows nothing"
            );
        }
        let r = cnp_ok(&format!(
            "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  {dir}:\n  - {peer}: [all]\n    authentication: {{mode: disabled}}"
        ));
        let d = if dir == "ingress" {
            &r.ingress
        } else {
            &r.egress
        };
        assert_eq!(
            d.entries[0].peers.len(),
            1,
            "{dir}: disabled changes nothing"
        );
    }
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEntities: [all]\n    authentication: {{mode: sometimes}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].authentication.mode");
}

#[test]
fn authentication_required_on_a_deny_rule_still_denies() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingressDeny:\n  - fromEntities: [world]\n    authentication: {{mode: required}}"
    ));
    assert_eq!(r.ingress.entries[0].peers.len(), 1);
    assert!(r.ingress.entries[0].deny);
}

#[test]
fn icmps_with_to_ports_is_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts: [{{ports: [{{port: '80'}}]}}]
    icmps: [{{fields: [{{type: 8}}]}}]"
    ));
    assert_eq!(e.path, "spec.ingress[0].icmps");
}

#[test]
fn icmp_fields_become_type_matches() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - icmps:
    - fields: [{{type: 8}}, {{type: EchoRequest, family: IPv6}}, {{type: TimeExceeded}}]"
    ));
    let e = &r.egress.entries[0];
    assert_eq!(e.peers, vec![Peer::All]);
    let got: Vec<(Protocol, PortSpec)> = e
        .ports
        .clone()
        .expect("icmp ports")
        .into_iter()
        .map(|p| (p.protocol, p.port))
        .collect();
    assert_eq!(
        got,
        vec![
            (Protocol::Icmp, PortSpec::Range(8, 8)),
            (Protocol::Icmpv6, PortSpec::Range(128, 128)),
            (Protocol::Icmp, PortSpec::Range(11, 11)),
        ]
    );
    for (field, path) in [
        ("{type: 256}", "spec.egress[0].icmps[0].fields[0].type"),
        ("{type: Bogus}", "spec.egress[0].icmps[0].fields[0].type"),
        (
            "{type: PacketTooBig}",
            "spec.egress[0].icmps[0].fields[0].type",
        ),
        (
            "{type: 8, family: IPv5}",
            "spec.egress[0].icmps[0].fields[0].family",
        ),
    ] {
        let e = cnp_err(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{icmps: [{{fields: [{field}]}}]}}]}}"
        ));
        assert_eq!(e.path, path, "{field}");
    }
}

#[test]
fn unknown_entity_is_rejected_with_its_index() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{fromEntities: [world, wrld]}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].fromEntities[1]");
    assert!(e.reason.contains("wrld"), "{}", e.reason);
    for name in [
        "all",
        "world",
        "world-ipv4",
        "world-ipv6",
        "cluster",
        "host",
        "remote-node",
        "kube-apiserver",
        "init",
        "health",
        "unmanaged",
        "ingress",
        "none",
    ] {
        assert_eq!(Entity::parse(name).map(Entity::name), Some(name));
    }
    assert_eq!(Entity::parse("World"), None, "entities are case-sensitive");
}

#[test]
fn cidr_parsing_truncates_and_accepts_bare_addresses() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toCIDR: [10.1.2.3/8, 192.168.1.1, 'fd00::1/64']"
    ));
    let cidrs: Vec<String> = r.egress.entries[0]
        .peers
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        cidrs,
        ["cidr 10.0.0.0/8", "cidr 192.168.1.1/32", "cidr fd00::/64"]
    );
}

#[test]
fn bad_cidrs_and_excepts_are_rejected_with_their_path() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{toCIDR: [10.0.0.0/8, 'not-a-cidr']}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toCIDR[1]");
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{toCIDRSet: [{{cidr: 10.0.0.0/16, except: [10.0.0.0/8]}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toCIDRSet[0].except[0]");
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{fromCIDRSet: [{{except: [10.0.0.0/8]}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].fromCIDRSet[0].cidr");
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{fromCIDRSet: [{{cidr: 1.2.3.4/40}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].fromCIDRSet[0].cidr");
}

#[test]
fn cnp_port_errors_name_their_path() {
    for (ports, path) in [
        (
            "{port: '90', endPort: 80}",
            "spec.ingress[0].toPorts[0].ports[0].endPort",
        ),
        (
            "{port: 'Not_A_Name'}",
            "spec.ingress[0].toPorts[0].ports[0].port",
        ),
        (
            "{port: '80', protocol: ICMP}",
            "spec.ingress[0].toPorts[0].ports[0].protocol",
        ),
        (
            "{port: '65536'}",
            "spec.ingress[0].toPorts[0].ports[0].port",
        ),
    ] {
        let e = cnp_err(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{toPorts: [{{ports: [{ports}]}}]}}]}}"
        ));
        assert_eq!(e.path, path, "{ports}");
    }
}

#[test]
fn l7_rules_need_one_specific_tcp_port() {
    let base = |ports: &str, rules: &str, dir: &str| {
        cnp(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, {dir}: [{{toPorts: [{{ports: [{ports}], rules: {rules}}}]}}]}}"
        ))
    };
    let http = "{http: [{method: GET}]}";
    assert_eq!(
        base("{protocol: TCP}", http, "ingress").unwrap_err().path,
        "spec.ingress[0].toPorts[0].ports[0].port"
    );
    assert_eq!(
        base("{port: '80', endPort: 81}", http, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].ports[0].endPort"
    );
    assert_eq!(
        base("{port: '80', protocol: UDP}", http, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].ports[0].protocol"
    );
    let dns = "{dns: [{matchPattern: '*'}]}";
    assert!(base("{port: '53', protocol: UDP}", dns, "egress").is_ok());
    assert_eq!(
        base("{port: '53', protocol: UDP}", dns, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].rules.dns"
    );
    let ok = base("{port: '80', protocol: TCP}", http, "ingress")
        .expect("valid")
        .remove(0);
    let pm = &ok.ingress.entries[0].ports.as_ref().expect("ports")[0];
    assert_eq!(pm.l7.as_deref().map(L7Rules::parser), Some(L7Parser::Http));
}

#[test]
fn unsupported_peer_kinds_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{toServices: [{{}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toServices");
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{fromGroups: [{{}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].fromGroups");
}

#[test]
fn from_requires_is_collected_and_scoped() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - fromRequires: [{{matchLabels: {{env: prod}}}}]
  - fromEndpoints: [{{}}]"
    ));
    assert_eq!(r.ingress.requires.len(), 1);
    let req = &r.ingress.requires[0];
    assert!(req.matches(&pod("ns1", &[], &[("env", "prod")])));
    assert!(!req.matches(&pod("ns2", &[], &[("env", "prod")])));
    // A rule with only fromRequires names no peer itself.
    assert!(r.ingress.entries[0].peers.is_empty());
}

#[test]
fn to_fqdns_becomes_an_fqdn_peer_and_bad_patterns_are_rejected() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress: [{{toFQDNs: [{{matchName: api.example.com}}, {{matchPattern: '*.example.org'}}]}}]"
    ));
    let peers: Vec<String> = r.egress.entries[0]
        .peers
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        peers,
        [
            "fqdn matchName api.example.com",
            "fqdn matchPattern *.example.org"
        ]
    );
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{toFQDNs: [{{matchName: a.com}}, {{}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toFQDNs[1]");
}

#[test]
fn protocol_helpers_round_trip() {
    for p in [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::Icmpv6,
        Protocol::Any,
    ] {
        assert_eq!(Protocol::from_number(p.number()), Some(p));
        assert_eq!(Protocol::parse(&p.to_string()), Some(p));
    }
    assert_eq!(Protocol::parse("tcp"), Some(Protocol::Tcp));
    assert_eq!(Protocol::parse("ICMPV6"), Some(Protocol::Icmpv6));
    assert_eq!(Protocol::parse("GRE"), None);
    assert_eq!(Protocol::from_number(47), None);
}

#[test]
fn policy_ref_display_names_kind_namespace_and_name() {
    assert_eq!(
        origin(PolicyKind::CiliumNetworkPolicy, Some("ns1")).to_string(),
        "CiliumNetworkPolicy ns1/p"
    );
    assert_eq!(
        origin(PolicyKind::CiliumClusterwideNetworkPolicy, None).to_string(),
        "CiliumClusterwideNetworkPolicy p"
    );
}

/// A CNP with one egress port rule whose body is `port_rule` (indented
/// under `- ports: [...]`).
fn tls_cnp(port: &str, port_rule: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: p, namespace: ns1}}
spec:
  endpointSelector: {{}}
  egress:
  - toPorts:
    - ports: [{port}]
{port_rule}"
    )
}

#[test]
fn tls_settings_parse_into_the_port() {
    let r = cnp_ok(&tls_cnp(
        "{port: '443', protocol: TCP}",
        "      serverNames: [Api.Example.com, '*.cdn.test']
      terminatingTLS: {secret: {name: term}, trustedCA: client-ca.crt}
      originatingTLS: {secret: {name: orig, namespace: other}}
      rules:
        http: [{path: /x}]",
    ));
    let ports = r.egress.entries[0].ports.as_ref().expect("ports");
    let tls = ports[0].tls.as_ref().expect("tls settings");
    assert_eq!(tls.server_names, vec!["api.example.com", "*.cdn.test"]);
    let term = tls.terminating.as_ref().expect("terminating");
    assert_eq!(term.name, "term");
    assert_eq!(term.namespace, None);
    assert_eq!(term.trusted_ca.as_deref(), Some("client-ca.crt"));
    let orig = tls.originating.as_ref().expect("originating");
    assert_eq!(orig.namespace.as_deref(), Some("other"));
    assert!(ports[0].l7.is_some());
}

#[test]
fn tls_settings_are_validated_with_their_path() {
    let cases = [
        (
            tls_cnp("{port: '443'}", "      serverNames: [ok.test, 'a b.test']"),
            "spec.egress[0].toPorts[0].serverNames[1]",
            "not a DNS name",
        ),
        (
            tls_cnp("{port: '443'}", "      terminatingTLS: {trustedCA: ca.crt}"),
            "spec.egress[0].toPorts[0].terminatingTLS.secret",
            "needs `secret",
        ),
        (
            tls_cnp(
                "{port: '443'}",
                "      originatingTLS: {secret: {name: ../x}}",
            ),
            "spec.egress[0].toPorts[0].originatingTLS.secret.name",
            "not a Kubernetes object name",
        ),
        (
            tls_cnp(
                "{port: '9092'}",
                "      serverNames: [k.test]\n      rules:\n        kafka: [{topic: t}]",
            ),
            "spec.egress[0].toPorts[0].rules",
            "not kafka rules",
        ),
        (
            tls_cnp("{port: '443', endPort: 445}", "      serverNames: [a.test]"),
            "spec.egress[0].toPorts[0].ports[0].endPort",
            "serverNames / TLS settings cannot apply to a port range",
        ),
        (
            tls_cnp(
                "{port: '443', protocol: UDP}",
                "      serverNames: [a.test]",
            ),
            "spec.egress[0].toPorts[0].ports[0].protocol",
            "need TCP",
        ),
    ];
    for (yaml, path, reason) in cases {
        let e = cnp_err(&yaml);
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.contains(reason), "{e}");
    }
    let deny = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  endpointSelector: {}
  egressDeny:
  - toPorts:
    - ports: [{port: '443'}]
      serverNames: [a.test]";
    assert!(cnp_err(deny).reason.contains("not allowed in a deny rule"));
}
