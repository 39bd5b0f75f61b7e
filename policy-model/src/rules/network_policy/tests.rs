use super::*;
use crate::labels::{LabelSet, SOURCE_RESERVED};
use crate::rules::PortSpec;
use crate::rules::testing::*;

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
