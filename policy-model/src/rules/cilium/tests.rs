use super::*;
use crate::labels::{LabelSet, SOURCE_RESERVED};
use crate::rules::testing::*;

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
  egressDeny: [{{toFQDNs: [{{matchName: example.com}}], toCIDR: [10.0.0.0/8]}}]"
    ));
    assert_eq!(e.path, "spec.egressDeny[0].toFQDNs");
    assert!(e.reason.contains("toCIDR"), "{}", e.reason);
}

#[test]
fn to_fqdns_in_egress_deny_is_a_deny_entry_with_its_ports() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egressDeny:
  - toFQDNs: [{{matchName: api.example.com}}, {{matchPattern: '*.example.org'}}]
    toPorts: [{{ports: [{{port: '443', protocol: TCP}}]}}]"
    ));
    let entry = &r.egress.entries[0];
    assert!(entry.deny);
    assert_eq!(entry.path, "spec.egressDeny[0]");
    let peers: Vec<String> = entry.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        peers,
        [
            "fqdn matchName api.example.com",
            "fqdn matchPattern *.example.org"
        ]
    );
    assert_eq!(entry.ports.as_ref().map(Vec::len), Some(1));
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egressDeny: [{{toFQDNs: [{{matchPattern: 'a b'}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.egressDeny[0].toFQDNs[0]");
    // A deny carries no L7 rules, with toFQDNs as with any peer.
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egressDeny:
  - toFQDNs: [{{matchName: api.example.com}}]
    toPorts: [{{ports: [{{port: '53', protocol: UDP}}], rules: {{dns: [{{matchPattern: '*'}}]}}}}]"
    ));
    assert!(
        e.path.starts_with("spec.egressDeny[0].toPorts[0]"),
        "{}",
        e.path
    );
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
fn spec_log_value_is_carried_and_checked() {
    let base = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: ns1}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n";
    let r = cnp_ok(&format!("{base}  log: {{value: \"web ingress\"}}\n"));
    assert_eq!(r.log.as_deref(), Some("web ingress"));
    assert!(cnp_ok(base).log.is_none());
    let long = "x".repeat(33);
    let e = cnp_err(&format!("{base}  log: {{value: \"{long}\"}}\n"));
    assert_eq!(e.path, "spec.log.value");
    assert!(e.reason.contains("longer than 32"), "{e}");
    let e = cnp_err(&format!("{base}  log: {{value: \"tab\\there\"}}\n"));
    assert!(e.reason.contains("printable"), "{e}");
}

#[test]
fn the_audit_mode_annotation_audits_every_rule_of_the_policy() {
    let r = cnp_ok(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: ns1, annotations: {policy.cilium.io/audit-mode: \"True\"}}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n",
    );
    assert!(r.audit);
    let r = cnp_ok(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: ns1, annotations: {policy.cilium.io/audit-mode: \"false\"}}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n",
    );
    assert!(!r.audit);
}

#[test]
fn cidr_set_entries_name_cidr_groups() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toCIDRSet:
    - cidrGroupRef: partners
      except: [10.201.1.128/25]
    - cidrGroupSelector: {{matchLabels: {{team: a}}}}
    - cidr: 10.0.0.0/8"
    ));
    let peers = &r.egress.entries[0].peers;
    assert_eq!(peers.len(), 3);
    match &peers[0] {
        Peer::CidrGroup {
            group: CidrGroupRef::Name(n),
            except,
        } => {
            assert_eq!(n, "partners");
            assert_eq!(except.len(), 1);
        }
        other => panic!("expected a group reference, got {other:?}"),
    }
    match &peers[1] {
        Peer::CidrGroup {
            group: CidrGroupRef::Selector(sel),
            ..
        } => {
            let labels = LabelSet::new().with("cidrgroup", "team", "a");
            assert!(sel.matches(&labels));
            assert!(!sel.matches(&LabelSet::new().with("cidrgroup", "team", "b")));
        }
        other => panic!("expected a group selector, got {other:?}"),
    }
    assert!(matches!(peers[2], Peer::Cidr { .. }));
}

#[test]
fn cidr_set_group_errors_name_the_field() {
    let cases = [
        (
            "- {cidr: 10.0.0.0/8, cidrGroupRef: g}",
            "spec.egress[0].toCIDRSet[0]",
            "exclude each other",
        ),
        (
            "- {except: [10.0.0.0/8]}",
            "spec.egress[0].toCIDRSet[0].cidr",
            "is required",
        ),
        (
            "- {cidrGroupRef: ''}",
            "spec.egress[0].toCIDRSet[0].cidrGroupRef",
            "empty",
        ),
        (
            "- {cidrGroupRef: g, except: [bad]}",
            "spec.egress[0].toCIDRSet[0].except[0]",
            "bad",
        ),
        (
            "- cidrGroupSelector: {matchExpressions: [{key: a, operator: In}]}",
            "spec.egress[0].toCIDRSet[0].cidrGroupSelector",
            "",
        ),
    ];
    for (entry, path, reason) in cases {
        let e = cnp(&format!(
            "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  egress:\n  - toCIDRSet:\n    {entry}"
        ))
        .expect_err(entry);
        assert_eq!(e.path, path, "{entry}");
        assert!(e.reason.contains(reason), "{entry}: {}", e.reason);
    }
}
