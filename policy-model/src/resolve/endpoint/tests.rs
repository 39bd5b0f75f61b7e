use super::*;
use crate::identity::NumericIdentity;
use crate::l7::L7Parser;
use crate::mapstate::MapVerdict::{Allow, Deny};
use crate::mapstate::{MapKey, PortKey};
use crate::origin::PolicyKind;
use crate::resolve::testing::*;
use crate::rules::Direction;

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

/// (verdict, audited) of the kernel's lookup.
fn audit_verdict(
    p: &EndpointPolicy,
    remote: NumericIdentity,
    proto: u8,
    port: u16,
) -> Option<(crate::mapstate::MapVerdict, bool)> {
    p.map
        .lookup(Direction::Ingress, remote, proto, port)
        .map(|(_, v)| (v.verdict, v.audit))
}

const AUDITED_ALLOW_B: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-from-b
  namespace: ns1
  annotations: {policy.cilium.io/audit-mode: 'true'}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
";

#[test]
fn an_audited_policy_alone_enforces_nothing_and_marks_what_it_would_drop() {
    let c = cluster(AUDITED_ALLOW_B);
    let p = pol(&c, "ns1/a");
    let (b, c_id) = (id(&c, "ns1/b"), id(&c, "ns2/c"));
    assert!(!p.ingress_enforced, "only an audited policy selects a");
    assert_eq!(p.audit_enforcing[&Direction::Ingress][0].name, "a-from-b");
    // What it allows: plain allow. What it would drop: allowed, audited.
    assert_eq!(audit_verdict(&p, b, TCP, 80), Some((Allow, false)));
    assert_eq!(audit_verdict(&p, b, TCP, 81), Some((Allow, true)));
    assert_eq!(audit_verdict(&p, c_id, TCP, 80), Some((Allow, true)));
    // Would be dropped for want of a rule: no rule's cookie.
    let (_, v) = p.map.lookup(Direction::Ingress, c_id, TCP, 80).unwrap();
    assert_eq!(v.cookie, 0);
    // Egress is untouched.
    assert_eq!(
        p.map
            .lookup(Direction::Egress, c_id, TCP, 80)
            .map(|(_, v)| (v.verdict, v.audit)),
        Some((Allow, false))
    );
}

#[test]
fn an_audited_deny_under_an_enforced_allow_passes_audited_and_names_its_rule() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-80
  namespace: ns1
  annotations: {policy.cilium.io/audit-mode: 'true'}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
",
    );
    let p = pol(&c, "ns1/a");
    let (b, c_id) = (id(&c, "ns1/b"), id(&c, "ns2/c"));
    assert!(p.ingress_enforced);
    assert_eq!(audit_verdict(&p, b, TCP, 80), Some((Allow, true)));
    assert_eq!(audit_verdict(&p, b, TCP, 81), Some((Allow, false)));
    let key = p.map.lookup(Direction::Ingress, b, TCP, 80).unwrap().0;
    let why = &p.provenance[key];
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0].origin.as_ref().unwrap().name, "deny-80");
    assert!(why[0].deny);
    assert_ne!(p.map.entries[key].cookie, 0);
    // The enforced policy's default deny still drops c.
    assert_eq!(verdict(&p, Direction::Ingress, c_id, TCP, 80), None);
}

#[test]
fn an_audited_allow_widens_nothing_an_enforced_policy_denies() {
    let c = cluster(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-from-c, namespace: ns1}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: c}}}}}}], ports: [{{port: 443}}]}}]
---
{AUDITED_ALLOW_B}"
    ));
    let p = pol(&c, "ns1/a");
    let (b, c_id) = (id(&c, "ns1/b"), id(&c, "ns2/c"));
    assert!(p.ingress_enforced);
    // b:80 is only allowed by the audited policy: dropped, and by no rule.
    let (key, v) = p
        .map
        .lookup(Direction::Ingress, b, TCP, 80)
        .expect("an explicit entry");
    assert_eq!((v.verdict, v.audit, v.cookie), (Deny, false, 0), "{key:?}");
    // c:443 is allowed with every policy enforced too: not audited.
    assert_eq!(audit_verdict(&p, c_id, TCP, 443), Some((Allow, false)));
    assert_eq!(verdict(&p, Direction::Ingress, c_id, TCP, 80), None);
}

const AUDITED_HTTP_B: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-http
  namespace: ns1
  annotations: {policy.cilium.io/audit-mode: 'true'}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: /public}]}}]
";

#[test]
fn an_audited_l7_policy_alone_redirects_and_passes_every_request() {
    let c = cluster(AUDITED_HTTP_B);
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    let (key, v) = p.map.lookup(Direction::Ingress, b, TCP, 80).unwrap();
    // Redirected so the proxy sees the requests, and not an L3/L4 audit.
    assert_eq!(
        (v.verdict, v.redirect, v.audit),
        (Allow, Some(L7Parser::Http), false)
    );
    let l7 = &p.l7[key];
    assert!(l7.allow_all && l7.rules.is_empty() && !l7.visibility);
    let audit = l7.audit.as_deref().expect("the audited rules");
    assert!(!audit.allow_all);
    assert_eq!(audit.rules.len(), 1);
    assert_eq!(audit.rules[0].1.name, "a-http");
}

#[test]
fn audited_l7_rules_beside_an_enforced_l4_allow_are_judged_for_audit_only() {
    let c = cluster(&format!(
        "{}{AUDITED_HTTP_B}",
        cnp(
            "l4",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
            )
        )
    ));
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    let (key, v) = p.map.lookup(Direction::Ingress, b, TCP, 80).unwrap();
    assert_eq!(
        (v.verdict, v.redirect, v.audit),
        (Allow, Some(L7Parser::Http), false)
    );
    let l7 = &p.l7[key];
    assert!(l7.allow_all && l7.rules.is_empty());
    // The audit verdict: the enforced L4 allow cancels the audited rules too.
    assert!(l7.audit.as_deref().expect("audit verdict").allow_all);
    // The enforced policy's provenance: the L4 rule, not the audited one.
    assert!(p.provenance[key].iter().all(|c| c.scope == Scope::Both));
}

#[test]
fn audited_l7_rules_beside_enforced_ones_widen_nothing() {
    let rule = "rules: {http: [{method: POST}]}";
    let c = cluster(&format!(
        "{}{AUDITED_HTTP_B}",
        cnp(
            "l7",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], {rule}}}]}}]"
            )
        )
    ));
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    let (key, _) = p.map.lookup(Direction::Ingress, b, TCP, 80).unwrap();
    let l7 = &p.l7[key];
    // Enforced: only the POST rule.
    assert!(!l7.allow_all);
    assert_eq!(l7.rules.len(), 1);
    assert_eq!(l7.rules[0].1.name, "l7");
    // Audit: both, OR-ed.
    assert_eq!(l7.audit.as_deref().expect("audit").rules.len(), 2);
}

/// A cluster whose pod `ns1/a` carries `visibility` as its
/// `policy.cilium.io/proxy-visibility` annotation.
fn visible_cluster(visibility: &str, policies: &str) -> Cluster {
    let topo = TOPO.replace(
        "name: a, labels: {app: a},",
        &format!(
            "name: a, labels: {{app: a}}, annotations: {{policy.cilium.io/proxy-visibility: '{visibility}'}},"
        ),
    );
    let set = crate::load::load_str(policies, "p.yaml").expect("test policies load");
    let topo = crate::topology::Topology::from_yaml(&topo, "t.yaml").expect("valid");
    Cluster::new(topo, set.rules().cloned().collect(), &Default::default())
}

/// (verdict, redirect, visibility-only) of the kernel's lookup.
fn visible(
    p: &EndpointPolicy,
    d: Direction,
    remote: NumericIdentity,
    proto: u8,
    port: u16,
) -> Option<(crate::mapstate::MapVerdict, Option<L7Parser>, bool)> {
    p.map.lookup(d, remote, proto, port).map(|(k, v)| {
        (
            v.verdict,
            v.redirect,
            p.l7.get(k).is_some_and(|l| l.visibility),
        )
    })
}

#[test]
fn visibility_without_policy_redirects_only_the_named_ports() {
    let c = visible_cluster("<Ingress/80/TCP/HTTP>,<Egress/53/UDP/DNS>", "");
    let p = pol(&c, "ns1/a");
    let b = id(&c, "ns1/b");
    let http = Some(L7Parser::Http);
    assert_eq!(
        visible(&p, Direction::Ingress, b, TCP, 80),
        Some((Allow, http, true))
    );
    assert_eq!(
        visible(&p, Direction::Ingress, b, TCP, 81),
        Some((Allow, None, false))
    );
    assert_eq!(
        visible(&p, Direction::Ingress, b, UDP, 80),
        Some((Allow, None, false))
    );
    let dns = Some(L7Parser::Dns);
    assert_eq!(
        visible(&p, Direction::Egress, b, UDP, 53),
        Some((Allow, dns, true))
    );
    assert_eq!(
        visible(&p, Direction::Egress, b, TCP, 80),
        Some((Allow, None, false))
    );
    assert!(p.l7.values().all(|l| l.allow_all && l.rules.is_empty()));
    // Another pod of the same identity without the annotation: untouched.
    let a2 = pol(&c, "ns1/a2");
    assert_eq!(
        visible(&a2, Direction::Ingress, b, TCP, 80),
        Some((Allow, None, false))
    );
}

#[test]
fn visibility_never_allows_what_policy_denies_and_keeps_policy_s_l7_rules() {
    let c = visible_cluster(
        "<Ingress/80/TCP/HTTP>,<Ingress/8080/TCP/HTTP>",
        &format!(
            "{}{}",
            cnp(
                "b-any",
                &format!("{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]")
            ),
            cnp(
                "c-l7",
                &format!(
                    "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: c}}, matchExpressions: [{{key: io.kubernetes.pod.namespace, operator: Exists}}]}}], toPorts: [{{ports: [{{port: '8080', protocol: TCP}}], rules: {{http: [{{method: GET}}]}}}}]}}]"
                )
            )
        ),
    );
    let p = pol(&c, "ns1/a");
    let (b, c_id, a2) = (id(&c, "ns1/b"), id(&c, "ns2/c"), id(&c, "ns1/a2"));
    let http = Some(L7Parser::Http);
    // b is allowed on every port: 80 is recorded, other ports untouched.
    assert_eq!(
        visible(&p, Direction::Ingress, b, TCP, 80),
        Some((Allow, http, true))
    );
    assert_eq!(
        visible(&p, Direction::Ingress, b, TCP, 22),
        Some((Allow, None, false))
    );
    // c is not allowed on 80: still dropped (no entry), visibility or not.
    assert_eq!(visible(&p, Direction::Ingress, c_id, TCP, 80), None);
    assert_eq!(visible(&p, Direction::Ingress, a2, TCP, 80), None);
    // c's 8080 keeps the policy's GET rule (not a pass-all).
    let (k, _) = p.map.lookup(Direction::Ingress, c_id, TCP, 8080).unwrap();
    assert!(!p.l7[k].allow_all && !p.l7[k].visibility);
}

#[test]
fn a_deny_under_a_visibility_port_stays_a_deny() {
    let c = visible_cluster(
        "<Ingress/80/TCP/HTTP>",
        &cnp(
            "deny-b",
            &format!(
                "{ON_A}  enableDefaultDeny: {{ingress: false}}\n  ingressDeny: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]"
            ),
        ),
    );
    let p = pol(&c, "ns1/a");
    let (b, c_id) = (id(&c, "ns1/b"), id(&c, "ns2/c"));
    assert_eq!(
        visible(&p, Direction::Ingress, b, TCP, 80),
        Some((Deny, None, false))
    );
    assert_eq!(
        visible(&p, Direction::Ingress, c_id, TCP, 80),
        Some((Allow, Some(L7Parser::Http), true))
    );
}
