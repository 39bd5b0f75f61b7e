use super::*;
use crate::labels::Selector;
use crate::origin::{PolicyKind, PolicyRef};
use crate::rules::{DirectionRules, RuleEntry, Subject};
use std::collections::BTreeMap;
use std::sync::Arc;

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn group(name: &str, labels: &[(&str, &str)], cidrs: &[&str]) -> CidrGroup {
    CidrGroup {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        cidrs: cidrs.iter().map(|c| net(c)).collect(),
    }
}

fn rule(peers: Vec<Peer>) -> PolicyRule {
    PolicyRule {
        origin: Arc::new(PolicyRef {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: Some("ns1".into()),
            name: "p".into(),
            file: None,
            document: None,
        }),
        path: "spec".into(),
        description: None,
        subject: Subject::Endpoints(Selector::all()),
        ingress: DirectionRules::default(),
        egress: DirectionRules {
            default_deny: true,
            entries: vec![RuleEntry {
                path: "spec.egress[0]".into(),
                deny: false,
                peers,
                ports: None,
            }],
            requires: vec![],
        },
        audit: false,
        log: None,
    }
}

fn by_name(n: &str, except: &[&str]) -> Peer {
    Peer::CidrGroup {
        group: CidrGroupRef::Name(n.into()),
        except: except.iter().map(|e| net(e)).collect(),
    }
}

fn cidr(c: &str, except: &[&str]) -> Peer {
    Peer::Cidr {
        cidr: net(c),
        except: except.iter().map(|e| net(e)).collect(),
    }
}

#[test]
fn a_reference_becomes_the_groups_cidrs() {
    let groups = [group("g", &[], &["10.201.1.0/24", "fd00:201::/64"])];
    let out = expand_rule(&rule(vec![by_name("g", &[])]), &groups);
    assert_eq!(
        out.egress.entries[0].peers,
        vec![cidr("10.201.1.0/24", &[]), cidr("fd00:201::/64", &[])]
    );
}

#[test]
fn a_missing_group_selects_nothing() {
    let out = expand_rule(&rule(vec![by_name("nope", &[])]), &[]);
    assert!(out.egress.entries[0].peers.is_empty());
    assert!(out.egress.default_deny);
}

#[test]
fn except_applies_to_the_cidrs_it_falls_in_and_drops_covered_ones() {
    let groups = [group(
        "g",
        &[],
        &["10.201.1.0/24", "10.201.2.0/24", "10.201.3.7/32"],
    )];
    let out = expand_rule(
        &rule(vec![by_name("g", &["10.201.1.128/25", "10.201.3.0/24"])]),
        &groups,
    );
    assert_eq!(
        out.egress.entries[0].peers,
        vec![
            cidr("10.201.1.0/24", &["10.201.1.128/25"]),
            cidr("10.201.2.0/24", &[]),
        ]
    );
}

#[test]
fn a_selector_takes_every_matching_group_and_each_cidr_once() {
    let sel = Selector::compile(
        &crate::api::LabelSelector {
            match_labels: [("team".to_string(), "a".to_string())].into(),
            match_expressions: vec![],
        },
        crate::topology::cidr_group::SOURCE_CIDR_GROUP,
    )
    .expect("selector compiles");
    let groups = [
        group("one", &[("team", "a")], &["10.201.1.0/24"]),
        group("two", &[("team", "b")], &["10.201.2.0/24"]),
        group(
            "three",
            &[("team", "a")],
            &["10.201.1.0/24", "10.201.3.0/24"],
        ),
    ];
    let peer = Peer::CidrGroup {
        group: CidrGroupRef::Selector(sel),
        except: vec![],
    };
    let out = expand_rule(&rule(vec![peer]), &groups);
    assert_eq!(
        out.egress.entries[0].peers,
        vec![cidr("10.201.1.0/24", &[]), cidr("10.201.3.0/24", &[])]
    );
}

#[test]
fn the_first_group_of_a_name_wins() {
    let groups = [
        group("g", &[("a", "1")], &["10.201.1.0/24"]),
        group("g", &[("a", "2")], &["10.201.2.0/24"]),
    ];
    let out = expand_rule(&rule(vec![by_name("g", &[])]), &groups);
    assert_eq!(
        out.egress.entries[0].peers,
        vec![cidr("10.201.1.0/24", &[])]
    );
    let mut labels = LabelSet::new();
    add_group_labels(&net("10.201.2.0/24"), &groups, &mut labels);
    assert!(labels.is_empty());
}

#[test]
fn members_carry_the_group_name_and_labels() {
    let groups = [
        group("g", &[("team", "a")], &["10.201.1.0/24"]),
        group("h", &[], &["10.201.1.0/24", "10.201.2.0/24"]),
    ];
    let mut labels = LabelSet::new();
    add_group_labels(&net("10.201.1.0/24"), &groups, &mut labels);
    let shown = labels.to_string();
    assert!(
        shown.contains("cidrgroup:io.cilium.policy.cidrgroupname/g"),
        "{shown}"
    );
    assert!(
        shown.contains("cidrgroup:io.cilium.policy.cidrgroupname/h"),
        "{shown}"
    );
    assert!(shown.contains("cidrgroup:team=a"), "{shown}");
    // Only the exact CIDR a group lists is labelled.
    let mut inner = LabelSet::new();
    add_group_labels(&net("10.201.1.5/32"), &groups, &mut inner);
    assert!(inner.is_empty());
}

#[test]
fn rules_without_groups_are_left_alone() {
    let rules = vec![rule(vec![cidr("10.0.0.0/8", &[])])];
    assert_eq!(expand_cidr_groups(rules.clone(), &[]), rules);
}

/// A cluster of the shared test topology with the groups of `groups`
/// (YAML documents) and the policies of `policies`.
fn cluster_of(groups: &str, policies: &str) -> crate::Cluster {
    let set = crate::load::load_str(&format!("{groups}---\n{policies}"), "p.yaml")
        .expect("test inputs load");
    let mut topo = crate::Topology::from_yaml(crate::resolve::testing::TOPO, "t.yaml")
        .expect("test topology is valid");
    topo.cidr_groups = set.cidr_groups.clone();
    crate::Cluster::new(topo, set.rules().cloned().collect(), &Default::default())
}

#[test]
fn a_cluster_resolves_group_peers_and_labels_their_identities() {
    use crate::resolve::testing::{ON_A, TCP, cnp, id, ip, pol, verdict};
    use crate::rules::Direction;
    let groups = "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners, labels: {team: a}}
spec: {externalCIDRs: [203.0.113.0/24, '2001:db8::/64']}
";
    let policy = cnp(
        "g",
        &format!(
            "{ON_A}  egress:\n  - toCIDRSet:\n    - {{cidrGroupRef: partners, except: [203.0.113.128/25]}}\n  egressDeny:\n  - toCIDRSet: [{{cidrGroupRef: missing}}]"
        ),
    );
    let c = cluster_of(groups, &policy);
    let a = pol(&c, "ns1/a");
    let inside = c.identity_of_ip(ip("203.0.113.5"));
    let excepted = c.identity_of_ip(ip("203.0.113.200"));
    let v6 = c.identity_of_ip(ip("2001:db8::5"));
    assert!(verdict(&a, Direction::Egress, inside, TCP, 80).is_some());
    assert!(verdict(&a, Direction::Egress, v6, TCP, 80).is_some());
    assert!(verdict(&a, Direction::Egress, excepted, TCP, 80).is_none());
    let labels = c
        .identity(inside)
        .expect("group CIDR identity")
        .labels
        .to_string();
    assert!(
        labels.contains("cidrgroup:io.cilium.policy.cidrgroupname/partners"),
        "{labels}"
    );
    assert!(labels.contains("cidrgroup:team=a"), "{labels}");
    assert!(labels.contains("cidr:203.0.113.0/24"), "{labels}");
    let _ = id(&c, "ns1/a");

    // The same policy without the group: nothing is allowed through it.
    let c = cluster_of("", &policy);
    let a = pol(&c, "ns1/a");
    let world = c.identity_of_ip(ip("203.0.113.5"));
    assert!(verdict(&a, Direction::Egress, world, TCP, 80).is_none());
}
