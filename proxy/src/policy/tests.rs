//! The shared side vocabulary: one refusal, one compile, one lookup for
//! every parser, saying what each parser's own types said before.

use std::net::SocketAddr;
use std::sync::Arc;

use policy_model::l7::{DnsRuleSet, HttpRuleSet, KafkaRuleSet};
use policy_model::load::load_str;
use policy_model::resolve::L7Policy;
use policy_model::rules::{L7Rules, PolicyKind, PolicyRef};
use policy_model::{Cluster, Direction, FqdnCache, L7Parser, Topology};

use super::*;

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
";

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-out, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
  - toEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: '80', protocol: TCP}]
      rules: {http: [{path: '/x'}]}
    - ports: [{port: '9092', protocol: TCP}]
      rules: {kafka: [{topic: t}]}
    - ports: [{port: '53', protocol: UDP}]
      rules: {dns: [{matchName: a.example}]}
";

fn policy() -> ProxyPolicy {
    let set = load_str(POLICY, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

#[test]
fn refusals_read_as_each_parser_said_them() {
    let side = |fault| Refusal::Side {
        endpoint: "ns1/a".into(),
        direction: Direction::Egress,
        fault,
    };
    let cases = [
        (
            Refusal::NotRedirected(L7Parser::Http),
            "no policy redirects this flow to the HTTP proxy",
        ),
        (
            Refusal::NotRedirected(L7Parser::Kafka),
            "no policy redirects this flow to the Kafka proxy",
        ),
        (Refusal::NotLocal, "the client is not a local endpoint"),
        (
            side(SideFault::NoEntry),
            "ns1/a egress: no policy entry allows the flow",
        ),
        (
            side(SideFault::DeniedAtL4),
            "ns1/a egress: the flow is denied at L3/L4",
        ),
        (
            side(SideFault::NotRedirected(L7Parser::Dns)),
            "ns1/a egress: the flow is allowed without a DNS redirect",
        ),
        (
            side(SideFault::OtherParser {
                found: L7Parser::Dns,
                wanted: L7Parser::Http,
            }),
            "ns1/a egress: the port is redirected to the dns proxy, not HTTP",
        ),
        (
            side(SideFault::OtherParser {
                found: L7Parser::Http,
                wanted: L7Parser::Kafka,
            }),
            "ns1/a egress: the port is redirected to the http proxy, not Kafka",
        ),
        (
            side(SideFault::MissingRules(L7Parser::Dns)),
            "ns1/a egress: redirected without DNS rules",
        ),
        (
            Refusal::Tls("no serverNames match".into()),
            "no serverNames match",
        ),
    ];
    for (refusal, text) in cases {
        assert_eq!(refusal.to_string(), text);
    }
}

#[test]
fn a_key_with_another_parsers_rules_compiles_to_deny_all() {
    let origin = Arc::new(PolicyRef {
        kind: PolicyKind::CiliumNetworkPolicy,
        namespace: Some("ns1".into()),
        name: "p".into(),
        file: None,
        document: None,
    });
    let l7 = |parser| L7Policy {
        parser,
        allow_all: false,
        rules: vec![(
            Arc::new(L7Rules::Kafka(Vec::new())),
            origin.clone(),
            "spec.egress[0]".into(),
        )],
        tls: Vec::new(),
        audit: None,
        visibility: false,
    };
    let http = SidePolicy::<HttpRuleSet>::compile(&l7(L7Parser::Http));
    let why = http.compile_error().expect("foreign rules deny");
    assert!(
        why.ends_with("spec.egress[0] attaches Kafka rules to an HTTP-redirected port"),
        "{why}"
    );
    let dns = SidePolicy::<DnsRuleSet>::compile(&l7(L7Parser::Dns));
    let why = dns.compile_error().expect("foreign rules deny");
    assert!(
        why.ends_with("spec.egress[0] attaches kafka rules to a DNS-redirected port"),
        "{why}"
    );
    let kafka = SidePolicy::<KafkaRuleSet>::compile(&l7(L7Parser::Kafka));
    assert_eq!(kafka.compile_error(), None);
}

#[test]
fn one_lookup_finds_each_parsers_side() {
    let p = policy();
    let client = addr("10.0.1.2:40000");
    let http = p.flow_rules::<HttpRuleSet>(client, addr("10.0.1.1:80"));
    assert_eq!(http.refusal, None);
    assert_eq!(http.sides.len(), 1);
    assert_eq!(http.sides[0].endpoint, "ns1/b");
    assert!(http.sides[0].policy.origins[0].ends_with(".rules.http[0]"));
    let kafka = p.flow_rules::<KafkaRuleSet>(client, addr("10.0.1.1:9092"));
    assert_eq!(kafka.refusal, None);
    assert!(kafka.sides[0].policy.origins[0].ends_with(".rules.kafka[0]"));
    // The HTTP port seen by the Kafka proxy: another parser's redirect.
    let wrong = p.flow_rules::<KafkaRuleSet>(client, addr("10.0.1.1:80"));
    assert_eq!(
        wrong.refusal.map(|r| r.to_string()).as_deref(),
        Some("ns1/b egress: the port is redirected to the http proxy, not Kafka")
    );
    let (_, _, dns) = p.egress_rules::<DnsRuleSet>(client, addr("10.0.1.1:53"), 17);
    assert!(dns.expect("a DNS redirect").policy.origins[0].ends_with(".rules.dns[0]"));
    let (_, _, not_local) =
        p.egress_rules::<DnsRuleSet>(addr("10.9.9.9:1"), addr("10.0.1.1:53"), 17);
    assert_eq!(not_local.err(), Some(Refusal::NotLocal));
}

#[test]
fn the_snapshot_knows_its_local_endpoints() {
    let p = policy();
    assert!(p.is_local("10.0.1.1".parse().expect("literal")));
    assert!(p.is_local("::ffff:10.0.1.2".parse().expect("literal")));
    assert!(!p.is_local("10.201.0.1".parse().expect("literal")));
    assert!(!ProxyPolicy::empty().is_local("10.0.1.1".parse().expect("literal")));
}

/// Two replicas of `b` (one identity, the same rules) and `a`.
const REPLICAS: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
- {namespace: ns1, name: b2, labels: {app: b}, ip: 10.0.1.3}
";

fn replicas(policy: &str) -> Cluster {
    let set = load_str(policy, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(REPLICAS, "t.yaml").expect("test topology is valid");
    Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default())
}

fn http_side(p: &ProxyPolicy, client: &str) -> Arc<SidePolicy<HttpRuleSet>> {
    let rules = p.flow_rules::<HttpRuleSet>(addr(client), addr("10.0.1.1:80"));
    assert_eq!(rules.refusal, None);
    rules.sides[0].policy.clone()
}

#[test]
fn replicas_share_one_compile_and_an_unchanged_endpoint_keeps_it() {
    let cluster = replicas(POLICY);
    let first = ProxyPolicy::build(&cluster, |_| true, None);
    let (b, b2) = (
        http_side(&first, "10.0.1.2:40000"),
        http_side(&first, "10.0.1.3:40000"),
    );
    assert!(Arc::ptr_eq(&b, &b2), "equal rules compile once");
    // The same rules again: the next snapshot keeps the compiled set.
    let again = ProxyPolicy::build(&replicas(POLICY), |_| true, Some(&first));
    assert!(Arc::ptr_eq(&b, &http_side(&again, "10.0.1.2:40000")));
    // Changed rules are compiled anew, and judge by the new rules.
    let changed = ProxyPolicy::build(
        &replicas(&POLICY.replace("/x", "/y")),
        |_| true,
        Some(&first),
    );
    let fresh = http_side(&changed, "10.0.1.2:40000");
    assert!(!Arc::ptr_eq(&b, &fresh));
    assert!(fresh.origins[0].ends_with(".rules.http[0]"));
    assert!(format!("{:?}", fresh.set).contains("\"/y\""));
    assert!(format!("{:?}", b.set).contains("\"/x\""));
}

#[test]
fn a_remote_endpoint_is_an_identity_not_a_local_endpoint() {
    let cluster = replicas(POLICY);
    let p = ProxyPolicy::build(&cluster, |ep| ep.name != "b2", None);
    assert!(p.is_local("10.0.1.2".parse().expect("literal")));
    assert!(!p.is_local("10.0.1.3".parse().expect("literal")));
    // Its flows are judged by the local side only: b2's egress is its own
    // node's business, a's ingress has no L7 rules, so nothing redirects.
    let from_remote = p.flow_rules::<HttpRuleSet>(addr("10.0.1.3:40000"), addr("10.0.1.1:80"));
    assert!(from_remote.sides.is_empty());
    // It keeps its identity: the same as its local replica's.
    assert_eq!(
        p.budget_key("10.0.1.3".parse().expect("literal")),
        crate::budget::SourceKey::of(
            "10.0.1.3".parse().expect("literal"),
            cluster.endpoint("ns1/b").expect("b").identity
        )
    );
}
