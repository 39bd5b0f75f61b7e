use std::net::SocketAddr;

use policy_model::l7::HttpRequest;
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};

use super::*;
use crate::http::judge::Judgement;

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
";

fn policy(policies: &str) -> ProxyPolicy {
    let set = load_str(policies, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

/// Ingress of a on 443 from b, SNI api.test only, in a policy named
/// `name` with `annotations`.
fn server_names(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: {name}
  namespace: ns1
  annotations: {{{annotations}}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: b}}}}]
    toPorts: [{{ports: [{{port: '443', protocol: TCP}}], serverNames: [api.test]}}]
"
    )
}

const B: &str = "10.0.1.2:40000";
const A_443: &str = "10.0.1.1:443";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

fn tls(sni: &str) -> ClientStart<'_> {
    ClientStart::Tls { sni: Some(sni) }
}

fn get() -> HttpRequest<'static> {
    HttpRequest {
        method: "GET",
        path: "/",
        authority: Some("api.test"),
        headers: &[],
    }
}

fn audit_reasons(faults: &[Refusal]) -> Vec<String> {
    faults.iter().map(Refusal::audit_reason).collect()
}

#[test]
fn an_endpoint_in_audit_mode_passes_an_sni_its_server_names_refuse() {
    let mut p = policy(&server_names("a-tls", ""));
    let refused = p.connection_plan(addr(B), addr(A_443), tls("other.test"));
    assert_eq!(
        refused,
        Err("ns1/a ingress: SNI other.test is not in serverNames [api.test]".to_string())
    );
    let allowed = p.connection_plan(addr(B), addr(A_443), tls("api.test"));
    assert_eq!(
        allowed,
        Ok(ConnDecision {
            plan: ConnPlan::Splice,
            audit_faults: Vec::new(),
        })
    );

    p.set_audited(|name| name == "ns1/a");
    let passed = p
        .connection_plan(addr(B), addr(A_443), tls("other.test"))
        .expect("passes in audit mode");
    assert_eq!(passed.plan, ConnPlan::Splice);
    assert_eq!(
        audit_reasons(&passed.audit_faults),
        [
            "audit: ns1/a ingress: SNI other.test is not in serverNames [api.test]; \
          CiliumNetworkPolicy ns1/a-tls spec.ingress[0]"
        ]
    );
    // What the server names admit is no audit.
    let allowed = p.connection_plan(addr(B), addr(A_443), tls("api.test"));
    assert_eq!(allowed.map(|d| d.audit_faults), Ok(Vec::new()));
    // Requests inside (were it terminated) carry the fault.
    let rules = p.http_rules_in(addr(B), addr(A_443), tls("other.test"));
    assert_eq!(rules.refusal, None);
    assert!(
        matches!(rules.judge(&get()), Judgement::Audit { .. }),
        "{:?}",
        rules.judge(&get())
    );
    let rules = p.http_rules_in(addr(B), addr(A_443), tls("api.test"));
    assert!(rules.judge(&get()).is_allowed());
}

#[test]
fn an_sni_only_an_audited_policys_server_names_refuse_passes_as_audit() {
    let p = policy(&server_names(
        "a-tls-audit",
        "policy.cilium.io/audit-mode: 'true'",
    ));
    let passed = p
        .connection_plan(addr(B), addr(A_443), tls("other.test"))
        .expect("the enforced policy allows the flow");
    assert_eq!(passed.plan, ConnPlan::Splice);
    assert_eq!(
        audit_reasons(&passed.audit_faults),
        [
            "audit: ns1/a ingress: audited policies: SNI other.test is not in serverNames \
             [api.test]; CiliumNetworkPolicy ns1/a-tls-audit spec.ingress[0]"
        ]
    );
    let allowed = p.connection_plan(addr(B), addr(A_443), tls("api.test"));
    assert_eq!(
        allowed,
        Ok(ConnDecision {
            plan: ConnPlan::Splice,
            audit_faults: Vec::new(),
        })
    );
}

#[test]
fn an_ends_l3_l4_audit_fault_reaches_the_spliced_connection() {
    // a's ingress allows nothing from b; a is in audit mode, b's egress
    // redirects.
    let p_text = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-none, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-out, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
  - toEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: '443', protocol: TCP}], serverNames: [api.test]}]
";
    let mut p = policy(p_text);
    assert!(
        p.connection_plan(addr(B), addr(A_443), tls("api.test"))
            .is_err()
    );
    p.set_audited(|name| name == "ns1/a");
    let passed = p
        .connection_plan(addr(B), addr(A_443), tls("api.test"))
        .expect("passes in audit mode");
    assert_eq!(passed.plan, ConnPlan::Splice);
    assert_eq!(
        audit_reasons(&passed.audit_faults),
        ["ns1/a ingress: audit: no policy entry allows the flow"]
    );
    // b's serverNames still close what they refuse.
    assert!(
        p.connection_plan(addr(B), addr(A_443), tls("other.test"))
            .is_err()
    );
}
