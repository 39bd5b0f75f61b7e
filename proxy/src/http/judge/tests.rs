use std::net::SocketAddr;

use policy_model::{Cluster, Direction, L7Parser};

use super::*;
use crate::policy::{PolicyHandle, SideFault};
use policy_model::load::load_str;
use policy_model::{FqdnCache, Topology};

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
- {namespace: ns1, name: c, labels: {app: c}, ips: [10.0.1.3, 'fd00::3']}
";

fn policy(policies: &str) -> ProxyPolicy {
    let set = load_str(policies, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

fn get<'a>(path: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        method: "GET",
        path,
        authority: Some("svc"),
        headers: &[],
    }
}

const INGRESS_A: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-in, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: '/public/.*'}]}}]
";

const EGRESS_B: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-out, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
  - toEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{path: '/public/x'}]}}]
";

#[test]
fn ingress_rules_of_the_destination_apply() {
    let p = policy(INGRESS_A);
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.refusal, None);
    assert_eq!(rules.sides.len(), 1);
    assert_eq!(rules.sides[0].direction, Direction::Ingress);
    assert_eq!(rules.sides[0].endpoint, "ns1/a");
    assert!(rules.judge(&get("/public/x")).is_allowed());
    assert!(!rules.judge(&get("/admin")).is_allowed());
    let post = HttpRequest {
        method: "POST",
        ..get("/public/x")
    };
    assert!(!rules.judge(&post).is_allowed());
    match rules.judge(&get("/public/y")) {
        Judgement::Allowed { rules, .. } => {
            assert_eq!(rules.len(), 1);
            assert!(rules[0].contains("a-in"), "{rules:?}");
        }
        other => panic!("expected allowed, got {other:?}"),
    }
}

#[test]
fn both_sides_must_allow() {
    let p = policy(&format!("{INGRESS_A}---\n{EGRESS_B}"));
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.sides.len(), 2);
    assert_eq!(rules.sides[0].direction, Direction::Egress);
    assert!(rules.judge(&get("/public/x")).is_allowed());
    // Ingress allows /public/y, egress does not.
    assert!(!rules.judge(&get("/public/y")).is_allowed());
}

#[test]
fn a_flow_nobody_redirects_is_refused() {
    let p = policy(INGRESS_A);
    // c -> b: no policy at all, allowed at L3, never redirected.
    let rules = p.http_rules(addr("10.0.1.3:40000"), addr("10.0.1.2:80"));
    assert_eq!(rules.refusal, Some(Refusal::NotRedirected(L7Parser::Http)));
    assert!(!rules.judge(&get("/public/x")).is_allowed());
}

#[test]
fn a_flow_denied_at_l4_is_refused() {
    let p = policy(INGRESS_A);
    // c -> a:80 is not allowed by a's ingress (only b is).
    let rules = p.http_rules(addr("10.0.1.3:40000"), addr("10.0.1.1:80"));
    assert!(
        matches!(
            rules.refusal,
            Some(Refusal::Side {
                fault: SideFault::NoEntry,
                ..
            })
        ),
        "{:?}",
        rules.refusal
    );
    // b -> a on another port.
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:81"));
    assert!(rules.refusal.is_some());
    assert!(!rules.judge(&get("/public/x")).is_allowed());
}

#[test]
fn the_empty_snapshot_denies_everything() {
    let p = ProxyPolicy::empty();
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.refusal, Some(Refusal::NotRedirected(L7Parser::Http)));
    assert!(!rules.judge(&get("/")).is_allowed());
}

#[test]
fn an_l4_allow_without_rules_cancels_the_l7_rules() {
    let p = policy(&format!(
        "{INGRESS_A}---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-l4, namespace: ns1}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: b}}}}]
    toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]
"
    ));
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert!(rules.judge(&get("/admin")).is_allowed());
}

#[test]
fn header_match_actions_are_returned_as_edits() {
    let p = policy(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-in, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts:
    - ports: [{port: '80', protocol: TCP}]
      rules:
        http:
        - path: /
          headerMatches:
          - {name: x-token, value: good, mismatch: REPLACE}
          - {name: x-extra, value: one, mismatch: ADD}
",
    );
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    let headers = [("x-token", "bad")];
    let req = HttpRequest {
        headers: &headers,
        ..get("/")
    };
    match rules.judge(&req) {
        Judgement::Allowed { edits, .. } => {
            assert_eq!(edits.len(), 2, "{edits:?}");
            assert_eq!(edits[0].action, MismatchAction::Replace);
            assert_eq!(edits[0].name, "x-token");
            assert_eq!(edits[0].value, "good");
            assert_eq!(edits[1].action, MismatchAction::Add);
        }
        other => panic!("expected allowed, got {other:?}"),
    }
}

#[test]
fn ipv6_and_mapped_addresses_find_the_endpoint() {
    let p = policy(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-in, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: c}}
  ingress:
  - toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{path: /ok}]}}]
",
    );
    let rules = p.http_rules(addr("[fd00::9]:40000"), addr("[fd00::3]:80"));
    assert_eq!(rules.refusal, None);
    assert!(rules.judge(&get("/ok")).is_allowed());
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("[::ffff:10.0.1.3]:80"));
    assert_eq!(
        rules.refusal, None,
        "a v4-mapped address is the v4 endpoint"
    );
    assert!(!rules.judge(&get("/no")).is_allowed());
}

#[test]
fn the_handle_swaps_snapshots() {
    let handle = PolicyHandle::deny_all();
    let before = handle.snapshot();
    assert!(
        !before
            .http_rules(addr("10.0.1.2:1"), addr("10.0.1.1:80"))
            .judge(&get("/public/x"))
            .is_allowed()
    );
    handle.update(policy(INGRESS_A));
    assert!(
        handle
            .snapshot()
            .http_rules(addr("10.0.1.2:1"), addr("10.0.1.1:80"))
            .judge(&get("/public/x"))
            .is_allowed()
    );
}

fn parts(method: &str, uri: &str) -> http::request::Parts {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "svc")
        .body(())
        .expect("literal request")
        .into_parts()
        .0
}

fn conn_addrs(client: &str, dst: &str) -> ConnAddrs {
    ConnAddrs {
        client: addr(client),
        original_dst: addr(dst),
        upstream: addr(dst),
    }
}

#[test]
fn decide_checks_the_head_before_any_rule() {
    let p = policy(INGRESS_A);
    let addrs = conn_addrs("10.0.1.2:40000", "10.0.1.1:80");
    let d = decide(&p, &addrs, None, &parts("CONNECT", "svc:443"));
    assert!(
        matches!(d, Decision::Rejected(Rejection::Refused(_))),
        "{d:?}"
    );
    let d = decide(&p, &addrs, None, &parts("GET", "/public/%2e%2e/admin"));
    assert!(
        matches!(d, Decision::Rejected(Rejection::UnsafePath(_))),
        "{d:?}"
    );
}

#[test]
fn decide_judges_with_the_connections_rules() {
    let p = policy(INGRESS_A);
    let addrs = conn_addrs("10.0.1.2:40000", "10.0.1.1:80");
    let Decision::Judged {
        judgement,
        src_identity,
        dst_identity,
        authority,
    } = decide(&p, &addrs, None, &parts("GET", "/public/x"))
    else {
        panic!("a plain GET is judged");
    };
    assert!(judgement.is_allowed(), "{judgement:?}");
    let rules = p.http_rules(addrs.client, addrs.original_dst);
    assert_eq!(
        (src_identity, dst_identity),
        (rules.src_identity, rules.dst_identity)
    );
    assert_eq!(authority.as_deref(), Some("svc"));
    let denied = decide(&p, &addrs, None, &parts("GET", "/private"));
    assert!(
        matches!(&denied, Decision::Judged { judgement: Judgement::Denied(denial), .. }
            if denial.to_string().ends_with("no HTTP rule matches")),
        "{denied:?}"
    );
    // A plaintext start on a port without TLS settings judges the same.
    let plain = decide(
        &p,
        &addrs,
        Some(ClientStart::Plaintext),
        &parts("GET", "/public/x"),
    );
    assert!(
        matches!(&plain, Decision::Judged { judgement, .. } if judgement.is_allowed()),
        "{plain:?}"
    );
}

/// The reason a denial carries, as the access log writes it.
fn denial_reason(judgement: &Judgement) -> String {
    match judgement {
        Judgement::Denied(denial) => {
            let (verdict, reason) = denial.logged();
            assert_eq!(verdict, crate::http::metrics::VerdictLabel::Denied);
            reason
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn denial_reasons_keep_their_texts() {
    let p = policy(INGRESS_A);
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(
        denial_reason(&rules.judge(&get("/admin"))),
        "ns1/a ingress: no HTTP rule matches"
    );
    let mut uncompiled = rules.clone();
    uncompiled.sides[0].policy = std::sync::Arc::new(crate::policy::SidePolicy {
        allow_all: false,
        set: Err("a bad regex".to_string()),
        origins: Vec::new(),
        audit: None,
    });
    assert_eq!(
        denial_reason(&uncompiled.judge(&get("/public/x"))),
        "ns1/a ingress: rules do not compile: a bad regex"
    );
    let unredirected = FlowRules {
        sides: Vec::new(),
        ..rules.clone()
    };
    assert_eq!(
        denial_reason(&unredirected.judge(&get("/"))),
        "no policy redirects this flow to the HTTP proxy"
    );
    let refused = |refusal| FlowRules {
        refusal: Some(refusal),
        ..rules.clone()
    };
    assert_eq!(
        denial_reason(&refused(Refusal::NotLocal).judge(&get("/"))),
        "the client is not a local endpoint"
    );
    let side = Refusal::Side {
        endpoint: "ns1/a".to_string(),
        direction: Direction::Ingress,
        fault: SideFault::OtherParser {
            found: L7Parser::Kafka,
            wanted: L7Parser::Http,
        },
    };
    assert_eq!(
        denial_reason(&refused(side).judge(&get("/"))),
        "ns1/a ingress: the port is redirected to the kafka proxy, not HTTP"
    );
}
