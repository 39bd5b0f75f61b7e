use super::*;
use crate::load::load_str;
use crate::resolve::FqdnCache;
use crate::topology::Topology;

const TOPO: &str = "
namespaces:
- {name: ns1, labels: {team: blue}}
- {name: ns2}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1, ports: [{name: http, containerPort: 8080}]}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
- {namespace: ns2, name: c, labels: {app: c}, ip: 10.0.2.1}
node: {ips: [192.168.0.10]}
kubeApiserver: {ips: [192.168.0.1]}
";

const ON_A: &str = "  endpointSelector: {matchLabels: {app: a}}\n";

fn cluster_with(policies: &str, fqdn: &FqdnCache) -> Cluster {
    let set = load_str(policies, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    Cluster::new(topo, set.rules().cloned().collect(), fqdn)
}

fn cluster(policies: &str) -> Cluster {
    cluster_with(policies, &FqdnCache::default())
}

fn cnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: ns1}}\nspec:\n{spec}\n---\n"
    )
}

fn pod(name: &str) -> FlowPeer {
    FlowPeer::Pod(name.into())
}

fn addr(s: &str) -> FlowPeer {
    FlowPeer::Ip(s.parse().expect("literal address"))
}

fn q(from: FlowPeer, to: FlowPeer, protocol: Protocol, port: u16) -> FlowQuery {
    FlowQuery {
        from,
        to,
        to_fqdn: None,
        protocol,
        port,
        l7: None,
    }
}

fn get(method: &str, path: &str) -> Option<L7Request> {
    Some(L7Request::Http(HttpRequestSpec {
        method: method.into(),
        path: path.into(),
        ..Default::default()
    }))
}

fn run(c: &Cluster, q: &FlowQuery) -> Explanation {
    explain(c, q).expect("answerable question")
}

/// `[b -> a] ingress` rule from b on TCP/80 with HTTP GET /public.
fn l7_rule(name: &str, path: &str) -> String {
    cnp(
        name,
        &format!(
            "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}], rules: {{http: [{{method: GET, path: {path}}}]}}}}]}}]"
        ),
    )
}

#[test]
fn no_policy_allows_at_l3_and_says_why() {
    let c = cluster("");
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.layer, Layer::L3);
    assert!(!e.redirected);
    assert_eq!(e.reasons.len(), 2, "egress of b and ingress of a");
    assert!(e.reasons.iter().all(|r| r.policy.is_none()));
    assert!(e.reasons[0].message.contains("default deny"));
    assert_eq!(e.source.pod.as_deref(), Some("ns1/b"));
    assert_eq!(
        e.destination.identity,
        c.endpoint("ns1/a").expect("a").identity
    );
}

#[test]
fn deny_beats_allow_across_kinds_and_names_the_deny() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: ns1}
spec: {podSelector: {}, ingress: [{}]}
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
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!(e.verdict, Verdict::Denied);
    assert_eq!(e.layer, Layer::L4);
    assert_eq!(e.reasons.len(), 1, "{:?}", e.reasons);
    let r = &e.reasons[0];
    assert_eq!(r.direction, Some(Direction::Ingress));
    let p = r.policy.as_ref().expect("a policy");
    assert_eq!(p.kind, "CiliumClusterwideNetworkPolicy");
    assert_eq!(p.namespace, None);
    assert_eq!(p.name, "deny-b");
    assert_eq!(r.rule.as_deref(), Some("spec.ingressDeny[0]"));
    assert!(r.message.contains("deny wins"), "{}", r.message);
    // Another port: the NetworkPolicy allows, at L3.
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 81));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.layer, Layer::L3);
    let np = e
        .reasons
        .iter()
        .find_map(|r| r.policy.as_ref())
        .expect("a policy reason");
    assert_eq!(
        (np.kind.as_str(), np.namespace.as_deref(), np.name.as_str()),
        ("NetworkPolicy", Some("ns1"), "allow-all")
    );
}

#[test]
fn wildcard_deny_on_a_port_beats_an_identity_allow_on_all_ports() {
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
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!(e.verdict, Verdict::Denied);
    assert_eq!(e.layer, Layer::L4);
    assert_eq!(
        e.reasons[0].policy.as_ref().map(|p| p.name.as_str()),
        Some("deny-80")
    );
    // Check the map directly as well.
    let a = c.endpoint("ns1/a").expect("a");
    let b = c.endpoint("ns1/b").expect("b").identity;
    let pol = c.endpoint_policy(a);
    let (k, v) = pol
        .map
        .lookup(Direction::Ingress, b, 6, 80)
        .expect("an entry");
    assert_eq!(k.identity, b, "decided in b's own table");
    assert_eq!(v.verdict, crate::mapstate::MapVerdict::Deny);
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 81));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.layer, Layer::L3);
}

#[test]
fn default_deny_reason_names_the_enforcing_policy_and_layer() {
    let c = cluster(&cnp(
        "only-b-80",
        &format!(
            "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
        ),
    ));
    let ok = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!((ok.verdict, ok.layer), (Verdict::Allowed, Layer::L4));
    let r = ok
        .reasons
        .iter()
        .find(|r| r.policy.is_some())
        .expect("the allowing rule");
    assert_eq!(r.rule.as_deref(), Some("spec.ingress[0]"));
    assert_eq!(
        r.policy
            .as_ref()
            .map(|p| (p.kind.as_str(), p.namespace.as_deref())),
        Some(("CiliumNetworkPolicy", Some("ns1")))
    );

    let other_port = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 81));
    assert_eq!(
        (other_port.verdict, other_port.layer),
        (Verdict::Denied, Layer::L4)
    );
    assert!(other_port.reasons[0].message.contains("other ports"));
    let unknown_peer = run(&c, &q(pod("ns2/c"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!(
        (unknown_peer.verdict, unknown_peer.layer),
        (Verdict::Denied, Layer::L3)
    );
    let r = &unknown_peer.reasons[0];
    assert_eq!(r.direction, Some(Direction::Ingress));
    assert_eq!(
        r.policy.as_ref().map(|p| p.name.as_str()),
        Some("only-b-80")
    );
    assert!(r.message.contains("default deny"), "{}", r.message);
}

#[test]
fn l7_rule_allows_matching_and_denies_other_requests() {
    let c = cluster(&l7_rule("l7", "/public"));
    let mut fq = q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80);
    let e = run(&c, &fq);
    assert_eq!(e.verdict, Verdict::Allowed);
    assert!(e.redirected);
    assert_eq!(e.layer, Layer::L4, "no request given: L4 decided");
    assert!(
        e.reasons
            .iter()
            .any(|r| r.message.contains("give the request"))
    );

    fq.l7 = get("GET", "/public");
    let e = run(&c, &fq);
    assert_eq!((e.verdict, e.layer), (Verdict::Allowed, Layer::L7));
    let r = e.reasons.last().expect("L7 reason");
    assert_eq!(r.policy.as_ref().map(|p| p.name.as_str()), Some("l7"));
    assert_eq!(r.rule.as_deref(), Some("spec.ingress[0]"));

    fq.l7 = get("POST", "/public");
    let e = run(&c, &fq);
    assert_eq!((e.verdict, e.layer), (Verdict::Denied, Layer::L7));
    assert!(e.redirected);
    assert!(
        e.reasons[0].message.contains("no http rule"),
        "{}",
        e.reasons[0].message
    );

    fq.l7 = Some(L7Request::Dns {
        name: "x.com".into(),
    });
    let e = run(&c, &fq);
    assert_eq!(e.verdict, Verdict::Denied, "a DNS request on an HTTP port");
}

#[test]
fn l4_only_allow_cancels_l7_rules_in_explain() {
    let c = cluster(&format!(
        "{}{}",
        l7_rule("l7", "/public"),
        cnp(
            "l4",
            &format!(
                "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
            )
        )
    ));
    let mut fq = q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80);
    fq.l7 = get("DELETE", "/private");
    let e = run(&c, &fq);
    assert_eq!((e.verdict, e.layer), (Verdict::Allowed, Layer::L7));
    assert!(e.redirected);
    assert!(
        e.reasons.iter().any(|r| r.message.contains("cancels")),
        "{:?}",
        e.reasons
    );
}

#[test]
fn l7_rules_of_two_policies_are_ored() {
    let c = cluster(&format!("{}{}", l7_rule("one", "/x"), l7_rule("two", "/y")));
    let mut fq = q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80);
    for (path, by) in [("/x", "one"), ("/y", "two")] {
        fq.l7 = get("GET", path);
        let e = run(&c, &fq);
        assert_eq!(e.verdict, Verdict::Allowed, "{path}");
        assert_eq!(
            e.reasons
                .last()
                .and_then(|r| r.policy.as_ref())
                .map(|p| p.name.as_str()),
            Some(by)
        );
    }
    fq.l7 = get("GET", "/z");
    let e = run(&c, &fq);
    assert_eq!(e.verdict, Verdict::Denied);
    let msg = &e.reasons[0].message;
    assert!(msg.contains("ns1/one") && msg.contains("ns1/two"), "{msg}");
}

#[test]
fn egress_of_the_source_is_checked_too() {
    let c = cluster(&cnp(
        "b-egress",
        "  endpointSelector: {matchLabels: {app: b}}\n  egress: [{toEntities: [world]}]",
    ));
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80));
    assert_eq!(e.verdict, Verdict::Denied);
    assert_eq!(e.reasons[0].direction, Some(Direction::Egress));
    let e = run(&c, &q(pod("ns1/b"), addr("1.1.1.1"), Protocol::Udp, 53));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.destination.identity, NumericIdentity::WORLD_IPV4);
    assert_eq!(e.destination.pod, None);
}

#[test]
fn a_pod_address_resolves_to_the_pod() {
    let c = cluster(&cnp(
        "from-b",
        &format!("{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}]}}]"),
    ));
    let e = run(&c, &q(addr("10.0.1.2"), addr("10.0.1.1"), Protocol::Tcp, 1));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.source.pod.as_deref(), Some("ns1/b"));
    assert_eq!(e.destination.pod.as_deref(), Some("ns1/a"));
}

#[test]
fn neither_side_local_is_allowed_with_a_reason() {
    let c = cluster("");
    let e = run(&c, &q(addr("1.1.1.1"), addr("2.2.2.2"), Protocol::Tcp, 1));
    assert_eq!(e.verdict, Verdict::Allowed);
    assert!(e.reasons[0].message.contains("neither side"));
}

#[test]
fn bad_questions_are_errors() {
    let c = cluster("");
    assert_eq!(
        explain(&c, &q(pod("ns1/zz"), pod("ns1/a"), Protocol::Tcp, 1)),
        Err(ExplainError::UnknownPod("ns1/zz".into()))
    );
    assert!(matches!(
        explain(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Any, 1)),
        Err(ExplainError::Invalid(_))
    ));
}

#[test]
fn icmp_types_are_matched() {
    let c = cluster(&cnp(
        "ping",
        &format!(
            "{ON_A}  ingress: [{{fromEntities: [cluster], icmps: [{{fields: [{{type: EchoRequest}}]}}]}}]"
        ),
    ));
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Icmp, 8));
    assert_eq!((e.verdict, e.layer), (Verdict::Allowed, Layer::L4));
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Icmp, 13));
    assert_eq!(e.verdict, Verdict::Denied);
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Icmpv6, 8));
    assert_eq!(e.verdict, Verdict::Denied);
}

#[test]
fn cidr_except_and_pod_addresses() {
    let c = cluster(&cnp(
        "cidr",
        &format!("{ON_A}  egress: [{{toCIDRSet: [{{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}}]}}]"),
    ));
    let to = |a: &str| run(&c, &q(pod("ns1/a"), addr(a), Protocol::Tcp, 443)).verdict;
    assert_eq!(to("10.5.5.5"), Verdict::Allowed);
    assert_eq!(to("10.9.1.1"), Verdict::Denied);
    assert_eq!(to("10.0.1.2"), Verdict::Denied, "pod b is not world");
    assert_eq!(to("11.0.0.1"), Verdict::Denied);
}

#[test]
fn fqdn_allows_a_learned_address_but_not_an_unlearned_one() {
    let mut fq = FqdnCache::default();
    fq.learn("api.example.com", "8.8.8.8".parse().expect("literal"));
    let c = cluster_with(
        &cnp(
            "fqdn",
            &format!("{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}]}}]"),
        ),
        &fq,
    );
    let mut query = q(pod("ns1/a"), addr("8.8.8.8"), Protocol::Tcp, 443);
    query.to_fqdn = Some("api.example.com".into());
    let e = run(&c, &query);
    assert_eq!(e.verdict, Verdict::Allowed);
    // FQDN identities carry the selector as label, as Cilium's `fqdn:` labels.
    assert!(
        e.destination.identity_labels.contains("fqdn:*.example.com"),
        "{}",
        e.destination.identity_labels
    );
    let e = run(&c, &q(pod("ns1/a"), addr("9.9.9.9"), Protocol::Tcp, 443));
    assert_eq!((e.verdict, e.layer), (Verdict::Denied, Layer::L3));
}

#[test]
fn fqdn_deny_names_the_deny_rule_also_for_an_address_an_allowed_name_shares() {
    let mut fq = FqdnCache::default();
    fq.learn("www.example.com", "8.8.8.8".parse().expect("literal"));
    fq.learn("ads.example.com", "8.8.8.8".parse().expect("literal"));
    fq.learn("ads.example.com", "2001:db8::8".parse().expect("literal"));
    let c = cluster_with(
        &cnp(
            "fqdn-deny",
            &format!(
                "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}]}}]\n  egressDeny: [{{toFQDNs: [{{matchName: ads.example.com}}]}}]"
            ),
        ),
        &fq,
    );
    for (dst, name) in [
        ("8.8.8.8", "www.example.com"),
        ("8.8.8.8", "ads.example.com"),
        ("2001:db8::8", "ads.example.com"),
    ] {
        let mut query = q(pod("ns1/a"), addr(dst), Protocol::Tcp, 443);
        query.to_fqdn = Some(name.into());
        let e = run(&c, &query);
        assert_eq!(e.verdict, Verdict::Denied, "{dst} ({name})");
        let r = &e.reasons[0];
        assert_eq!(
            r.policy.as_ref().map(|p| p.name.as_str()),
            Some("fqdn-deny"),
            "{dst} ({name})"
        );
        assert_eq!(
            r.rule.as_deref(),
            Some("spec.egressDeny[0]"),
            "{dst} ({name})"
        );
        assert!(
            r.message.contains("ads.example.com"),
            "{dst} ({name}): {}",
            r.message
        );
    }
}

#[test]
fn entities_host_and_kube_apiserver() {
    let c = cluster(&cnp(
        "ents",
        &format!(
            "{ON_A}  ingress: [{{fromEntities: [host]}}]\n  egress: [{{toEntities: [kube-apiserver], toPorts: [{{ports: [{{port: '443', protocol: TCP}}]}}]}}]"
        ),
    ));
    let e = run(
        &c,
        &q(addr("192.168.0.10"), pod("ns1/a"), Protocol::Tcp, 22),
    );
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.source.identity, NumericIdentity::HOST);
    let e = run(&c, &q(addr("192.168.0.1"), pod("ns1/a"), Protocol::Tcp, 22));
    assert_eq!(e.verdict, Verdict::Denied);
    let e = run(
        &c,
        &q(pod("ns1/a"), addr("192.168.0.1"), Protocol::Tcp, 443),
    );
    assert_eq!((e.verdict, e.layer), (Verdict::Allowed, Layer::L4));
    let e = run(&c, &q(pod("ns1/a"), addr("192.168.0.1"), Protocol::Tcp, 80));
    assert_eq!((e.verdict, e.layer), (Verdict::Denied, Layer::L4));
}

#[test]
fn non_enforced_direction_allows_everything_except_denies() {
    let c = cluster(&cnp(
        "deny-c",
        &format!(
            "{ON_A}  enableDefaultDeny: {{ingress: false}}\n  ingressDeny: [{{fromEndpoints: [{{matchLabels: {{'k8s:io.kubernetes.pod.namespace': ns2}}}}]}}]"
        ),
    ));
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Udp, 5353));
    assert_eq!((e.verdict, e.layer), (Verdict::Allowed, Layer::L3));
    let e = run(&c, &q(pod("ns2/c"), pod("ns1/a"), Protocol::Udp, 5353));
    assert_eq!((e.verdict, e.layer), (Verdict::Denied, Layer::L3));
    assert_eq!(e.reasons[0].rule.as_deref(), Some("spec.ingressDeny[0]"));
}

#[test]
fn dns_rules_judge_names() {
    let c = cluster(&cnp(
        "dns",
        &format!(
            "{ON_A}  egress: [{{toEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '53', protocol: UDP}}], rules: {{dns: [{{matchPattern: '*.example.com'}}]}}}}]}}]"
        ),
    ));
    let mut fq = q(pod("ns1/a"), pod("ns1/b"), Protocol::Udp, 53);
    fq.l7 = Some(L7Request::Dns {
        name: "www.example.com".into(),
    });
    assert_eq!(run(&c, &fq).verdict, Verdict::Allowed);
    fq.l7 = Some(L7Request::Dns {
        name: "www.example.org".into(),
    });
    let e = run(&c, &fq);
    assert_eq!((e.verdict, e.layer), (Verdict::Denied, Layer::L7));
    assert_eq!(e.reasons[0].direction, Some(Direction::Egress));
}

#[test]
fn display_summarises_verdict_layer_and_reasons() {
    let c = cluster(&cnp(
        "only-b-80",
        &format!(
            "{ON_A}  ingress: [{{fromEndpoints: [{{matchLabels: {{app: b}}}}], toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]}}]"
        ),
    ));
    let text = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 81)).to_string();
    assert!(text.starts_with("DENIED at L4: ns1/b"), "{text}");
    assert!(
        text.contains("[ingress] CiliumNetworkPolicy ns1/only-b-80: "),
        "{text}"
    );
}

#[test]
fn an_audited_policy_shows_both_verdicts() {
    let c = cluster(
        "apiVersion: cilium.io/v2
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
",
    );
    // c is not allowed by the audited policy: allowed, audited.
    let e = explain(&c, &q(pod("ns2/c"), pod("ns1/a"), Protocol::Tcp, 80)).expect("explains");
    assert_eq!(e.verdict, Verdict::Allowed);
    assert_eq!(e.audit.len(), 1, "{e}");
    let p = e.audit[0].policy.as_ref().expect("the audited policy");
    assert_eq!(p.name, "a-from-b");
    let text = e.to_string();
    assert!(
        text.contains("AUDIT: with the audited policies enforced this flow would be DENIED"),
        "{text}"
    );
    // b is: allowed, nothing to audit.
    let e = explain(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80)).expect("explains");
    assert_eq!(e.verdict, Verdict::Allowed);
    assert!(e.audit.is_empty(), "{e}");
}

#[test]
fn audited_l7_rules_and_an_audited_namespace_show_both_verdicts() {
    let c = cluster(
        "apiVersion: cilium.io/v2
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
",
    );
    let mut query = q(pod("ns1/b"), pod("ns1/a"), Protocol::Tcp, 80);
    query.l7 = get("GET", "/private");
    let e = explain(&c, &query).expect("explains");
    assert_eq!(e.verdict, Verdict::Allowed, "{e}");
    assert!(e.redirected, "{e}");
    assert_eq!(e.audit.len(), 1, "{e}");
    assert!(e.audit[0].message.contains("no http rule allows"), "{e}");
    query.l7 = get("GET", "/public");
    assert!(explain(&c, &query).expect("explains").audit.is_empty());

    // The same policy enforced, in a namespace annotated for audit.
    let set = load_str(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-http, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: /public}]}}]
",
        "p.yaml",
    )
    .expect("loads");
    let topo = TOPO.replace(
        "{name: ns1, labels: {team: blue}}",
        "{name: ns1, labels: {team: blue}, annotations: {policy.cilium.io/audit-mode: 'true'}}",
    );
    let topo = Topology::from_yaml(&topo, "t.yaml").expect("valid");
    let c = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    query.l7 = get("GET", "/private");
    let e = explain(&c, &query).expect("explains");
    assert_eq!(e.verdict, Verdict::Allowed, "{e}");
    assert!(
        e.audit[0]
            .message
            .contains("namespace's policy.cilium.io/audit-mode"),
        "{e}"
    );
    // At L3/L4 too: c may not reach a at all.
    let e = explain(&c, &q(pod("ns2/c"), pod("ns1/a"), Protocol::Tcp, 80)).expect("explains");
    assert_eq!(e.verdict, Verdict::Allowed, "{e}");
    assert!(!e.audit.is_empty(), "{e}");
}

#[test]
fn extended_protocols_are_judged_as_whole_protocols_and_any_does_not_include_them() {
    let c = cluster(&cnp(
        "gre-from-b",
        &format!(
            "{ON_A}  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: b}}}}]\n    toPorts: [{{ports: [{{protocol: GRE}}, {{protocol: TCP, port: '80'}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: c, k8s:io.kubernetes.pod.namespace: ns2}}}}]\n    toPorts: [{{ports: [{{protocol: ANY}}]}}]\n  egress:\n  - toPorts: [{{ports: [{{protocol: ESP}}, {{protocol: AH}}]}}]\n  egressDeny:\n  - toPorts: [{{ports: [{{protocol: AH}}]}}]"
        ),
    ));
    let verdict = |from: &str, to: &str, p: Protocol, port: u16| {
        run(&c, &q(pod(from), pod(to), p, port)).verdict
    };
    assert_eq!(
        verdict("ns1/b", "ns1/a", Protocol::Gre, 0),
        Verdict::Allowed
    );
    let e = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Gre, 0));
    assert!(
        e.reasons.iter().any(|r| r.message.contains("on GRE")),
        "{:?}",
        e.reasons
    );
    // Only GRE: not another extended protocol, and ANY stands for TCP,
    // UDP and SCTP, never for GRE.
    assert_eq!(
        verdict("ns1/b", "ns1/a", Protocol::Ipip, 0),
        Verdict::Denied
    );
    let ipip = run(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Ipip, 0));
    assert!(
        ipip.reasons
            .iter()
            .any(|r| r.message.ends_with("on IPIP (other protocols are allowed)")),
        "{:?}",
        ipip.reasons
    );
    assert_eq!(verdict("ns2/c", "ns1/a", Protocol::Gre, 0), Verdict::Denied);
    assert_eq!(
        verdict("ns2/c", "ns1/a", Protocol::Sctp, 9),
        Verdict::Allowed
    );
    // Egress: ESP allowed, AH denied over its allow.
    assert_eq!(
        verdict("ns1/a", "ns2/c", Protocol::Esp, 0),
        Verdict::Allowed
    );
    assert_eq!(verdict("ns1/a", "ns2/c", Protocol::Ah, 0), Verdict::Denied);
    assert_eq!(
        verdict("ns1/a", "ns2/c", Protocol::Tcp, 80),
        Verdict::Denied
    );
    // A port on a protocol without ports is a question with no answer.
    assert!(matches!(
        explain(&c, &q(pod("ns1/b"), pod("ns1/a"), Protocol::Gre, 80)),
        Err(ExplainError::Invalid(m)) if m.contains("GRE has no ports")
    ));
}

#[test]
fn an_l3_allow_admits_the_extended_protocols_and_a_port_allow_does_not() {
    let c = cluster(&cnp(
        "l3-from-b",
        &format!(
            "{ON_A}  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: b}}}}]\n  - fromEndpoints: [{{matchLabels: {{app: c, k8s:io.kubernetes.pod.namespace: ns2}}}}]\n    toPorts: [{{ports: [{{port: '0'}}]}}]"
        ),
    ));
    for p in Protocol::EXTENDED {
        let from_b = run(&c, &q(pod("ns1/b"), pod("ns1/a"), p, 0));
        assert_eq!(from_b.verdict, Verdict::Allowed, "{p} from b (L3 allow)");
        let from_c = run(&c, &q(pod("ns2/c"), pod("ns1/a"), p, 0));
        assert_eq!(
            from_c.verdict,
            Verdict::Denied,
            "{p} from c (TCP/UDP/SCTP only)"
        );
    }
}
