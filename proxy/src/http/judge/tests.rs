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

/// Ingress of a on 80 from b: GET /public only, in an audited policy.
const AUDITED_A: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-audit
  namespace: ns1
  annotations: {policy.cilium.io/audit-mode: 'true'}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: /public}]}}]
";

/// The reason an AUDIT carries, and its edits.
fn audit_reason(judgement: Judgement) -> (String, Vec<HeaderEdit>) {
    assert!(judgement.forwards() && !judgement.is_allowed());
    let forwarding = judgement.clone().into_forwarding().expect("forwarded");
    assert_eq!(forwarding.verdict, VerdictLabel::Audit);
    match judgement {
        Judgement::Audit { reason, edits } => {
            assert_eq!(forwarding.reason, reason);
            (reason, edits)
        }
        other => panic!("expected an audit, got {other:?}"),
    }
}

#[test]
fn a_request_only_an_audited_policy_denies_passes_as_audit() {
    let p = policy(AUDITED_A);
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.refusal, None);
    assert!(rules.sides[0].policy.audited_rules().is_some());
    let (reason, edits) = audit_reason(rules.judge(&get("/admin")));
    assert_eq!(
        reason,
        "ns1/a ingress: audit: no HTTP rule of the audited policies matches; \
         CiliumNetworkPolicy ns1/a-audit spec.ingress[0].rules.http[0]"
    );
    assert!(edits.is_empty());
    // What the audited policy allows is plainly allowed.
    let allowed = rules.judge(&get("/public"));
    assert!(allowed.is_allowed(), "{allowed:?}");
    let forwarding = allowed.into_forwarding().expect("forwarded");
    assert_eq!(forwarding.verdict, VerdictLabel::Allowed);
    assert_eq!(forwarding.reason, "ns1/a ingress: allow-all");
}

#[test]
fn an_audited_policy_beside_an_enforcing_one_denies_nothing_more_and_widens_nothing() {
    let p = policy(&format!("{INGRESS_A}---\n{AUDITED_A}"));
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    // The audit verdict ORs both policies' rules: what the enforced rules
    // allow, it allows too.
    assert!(rules.judge(&get("/public/x")).is_allowed());
    // What only the audited policy allows is still denied.
    assert_eq!(
        denial_reason(&rules.judge(&get("/public"))),
        "ns1/a ingress: no HTTP rule matches"
    );
}

#[test]
fn an_endpoint_in_audit_mode_passes_what_its_rules_deny() {
    let mut p = policy(INGRESS_A);
    p.set_audited(|name| name == "ns1/a");
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert!(rules.sides[0].audited);
    assert!(rules.judge(&get("/public/x")).is_allowed());
    let (reason, _) = audit_reason(rules.judge(&get("/admin")));
    assert_eq!(
        reason,
        "ns1/a ingress: audit: no HTTP rule matches; \
         CiliumNetworkPolicy ns1/a-in spec.ingress[0].rules.http[0]"
    );
    let mut uncompiled = rules.clone();
    uncompiled.sides[0].policy = std::sync::Arc::new(crate::policy::SidePolicy {
        allow_all: false,
        set: Err("a bad regex".to_string()),
        origins: Vec::new(),
        audit: None,
    });
    let (reason, _) = audit_reason(uncompiled.judge(&get("/public/x")));
    assert_eq!(
        reason,
        "ns1/a ingress: audit: rules do not compile: a bad regex"
    );
    // Another endpoint in audit mode changes nothing for a.
    p.set_audited(|name| name == "ns1/b");
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(
        denial_reason(&rules.judge(&get("/admin"))),
        "ns1/a ingress: no HTTP rule matches"
    );
}

#[test]
fn the_side_in_audit_mode_adds_no_edits_and_the_other_side_still_decides() {
    let edits_a = "apiVersion: cilium.io/v2
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
        - path: /public/.*
          headerMatches: [{name: x-extra, value: one, mismatch: ADD}]
";
    let mut p = policy(&format!("{edits_a}---\n{EGRESS_B}"));
    p.set_audited(|name| name == "ns1/b");
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.sides.len(), 2);
    // b's egress (audited) denies /public/y, a's ingress allows it with
    // its edit.
    let (reason, edits) = audit_reason(rules.judge(&get("/public/y")));
    assert!(
        reason.starts_with("ns1/b egress: audit: no HTTP rule matches; "),
        "{reason}"
    );
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].name, "x-extra");
    // a (not audited) denying is a denial.
    assert_eq!(
        denial_reason(&rules.judge(&get("/admin"))),
        "ns1/a ingress: no HTTP rule matches"
    );
}

#[test]
fn an_audited_ends_l3_l4_refusal_passes_as_audit() {
    // a's ingress allows c only: b -> a:80 has no entry there; b's egress
    // redirects it.
    let only_c = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-from-c, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: c}}]
";
    let mut p = policy(&format!("{only_c}---\n{EGRESS_B}"));
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
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
    p.set_audited(|name| name == "ns1/a");
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    assert_eq!(rules.refusal, None);
    assert_eq!(rules.audit_faults.len(), 1);
    let (reason, _) = audit_reason(rules.judge(&get("/public/x")));
    assert_eq!(
        reason,
        "ns1/a ingress: audit: no policy entry allows the flow"
    );
    // b's egress rules still decide.
    assert_eq!(
        denial_reason(&rules.judge(&get("/admin"))),
        "ns1/b egress: no HTTP rule matches"
    );
}

#[test]
fn a_refusal_is_a_denial_even_in_audit_mode() {
    let mut p = policy(INGRESS_A);
    p.set_audited(|_| true);
    // c -> b: nobody redirects it to the HTTP proxy.
    let rules = p.http_rules(addr("10.0.1.3:40000"), addr("10.0.1.2:80"));
    assert_eq!(rules.refusal, Some(Refusal::NotRedirected(L7Parser::Http)));
    assert!(!rules.judge(&get("/public/x")).forwards());
    let rules = p.http_rules(addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    let refused = FlowRules {
        refusal: Some(Refusal::NotLocal),
        ..rules
    };
    assert_eq!(
        denial_reason(&refused.judge(&get("/public/x"))),
        "the client is not a local endpoint"
    );
}
