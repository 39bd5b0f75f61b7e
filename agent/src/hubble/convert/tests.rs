use super::*;
use policy_model::origin::PolicyKind;

fn web_policy() -> Arc<PolicyRef> {
    Arc::new(PolicyRef {
        kind: PolicyKind::CiliumNetworkPolicy,
        namespace: Some("x".into()),
        name: "web-ingress".into(),
        file: None,
        document: None,
    })
}

fn context() -> FlowContext {
    let pod = |ns: &str, name: &str, id: u32, ep: u32| {
        Arc::new(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels: vec![format!("k8s:app={name}")],
            identity: id,
            endpoint_id: ep,
        })
    };
    let mut pods = HashMap::new();
    pods.insert("10.200.1.10".parse().unwrap(), pod("x", "client", 1001, 1));
    pods.insert("10.200.1.11".parse().unwrap(), pod("x", "web", 1002, 2));
    let mut by_cookie = HashMap::new();
    by_cookie.insert(77, vec![web_policy()]);
    let mut endpoints = HashMap::new();
    endpoints.insert(
        2,
        Arc::new(EndpointRules {
            by_cookie,
            enforcing_ingress: vec![web_policy()],
            enforcing_egress: vec![],
            audit_enforcing_ingress: vec![],
            audit_enforcing_egress: vec![],
            logs_by_cookie: HashMap::from([(77, vec![Arc::from("web-in")])]),
            logs_by_rule: HashMap::from([(
                "CiliumNetworkPolicy x/web-ingress spec.ingress[0].toPorts[0]".to_string(),
                Arc::from("web-l7"),
            )]),
            redirects: vec![(
                Direction::Ingress,
                policy_model::PortKey::exact(6, 80),
                vec![web_policy()],
            )],
        }),
    );
    FlowContext {
        node: "node-1".into(),
        pods: Arc::new(pods),
        identities: Arc::new(HashMap::new()),
        endpoints,
    }
}

fn event(verdict: u8, reason: Reason, cookie: u32) -> FlowEvent {
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[10, 200, 1, 10]);
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&[10, 200, 1, 11]);
    FlowEvent {
        saddr,
        daddr,
        sport: 40000,
        dport: 81,
        src_identity: 1001,
        dst_identity: 1002,
        rule_cookie: cookie,
        endpoint_id: 2,
        family: 4,
        protocol: 6,
        verdict,
        reason: reason as u8,
        direction: 0,
        ..FlowEvent::default()
    }
}

#[test]
fn a_kernel_allow_names_the_rule_and_a_default_deny_the_enforcing_policy() {
    let ctx = context();
    let f = kernel_flow(&event(0, Reason::PassPolicy, 77), &ctx);
    assert_eq!(f.verdict, flow::Verdict::Forwarded as i32);
    assert_eq!(f.ingress_allowed_by.len(), 1);
    assert_eq!(f.ingress_allowed_by[0].name, "web-ingress");
    assert_eq!(f.ingress_allowed_by[0].kind, "CiliumNetworkPolicy");
    assert_eq!(f.policy_log, ["web-in"]);
    assert_eq!(f.source.as_ref().unwrap().pod_name, "client");
    assert_eq!(f.destination.as_ref().unwrap().id, 2);
    assert_eq!(f.node_name, "node-1");
    let d = kernel_flow(&event(1, Reason::DropNoPolicy, 0), &ctx);
    assert_eq!(d.verdict, flow::Verdict::Dropped as i32);
    assert_eq!(d.drop_reason_desc, flow::DropReason::PolicyDenied as i32);
    assert_eq!(d.ingress_denied_by[0].name, "web-ingress");
    // An established flow's packet is no policy decision: nothing named.
    let e = kernel_flow(&event(0, Reason::PassEstablished, 77), &ctx);
    assert!(e.ingress_allowed_by.is_empty());
}

#[test]
fn an_access_record_becomes_an_l7_flow_naming_policy_and_rule() {
    let ctx = context();
    let allowed = r#"{"method":"GET","path":"/public/a","authority":"10.200.1.11","status":200,"verdict":"Allowed","protocol":"Http1","src":"10.200.1.10:40000","dst":"10.200.1.11:80","src_identity":"1001","dst_identity":"1002","latency_us":120,"reason":"CiliumNetworkPolicy x/web-ingress spec.ingress[0].toPorts[0].rules.http[0]","type":"l7"}"#;
    let f = access_flow(allowed, &ctx).expect("a flow");
    assert_eq!(f.r#type, flow::FlowType::L7 as i32);
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Ingress as i32);
    let Some(flow::layer7::Record::Http(h)) = f.l7.as_ref().and_then(|l| l.record.clone()) else {
        panic!("no HTTP record")
    };
    assert_eq!(
        (h.code, h.method.as_str(), h.url.as_str()),
        (200, "GET", "http://10.200.1.11/public/a")
    );
    assert_eq!(f.l7.as_ref().unwrap().latency_ns, 120_000);
    assert_eq!(f.ingress_allowed_by[0].name, "web-ingress");
    assert_eq!(f.policy_log, ["web-l7"]);
    assert!(
        f.ingress_allowed_by[0]
            .labels
            .contains(&"portcullis:rule=spec.ingress[0].toPorts[0].rules.http[0]".to_string())
    );
    let denied = allowed
        .replace("\"Allowed\"", "\"Denied\"")
        .replace("\"status\":200", "\"status\":403")
        .replace(
            "CiliumNetworkPolicy x/web-ingress spec.ingress[0].toPorts[0].rules.http[0]",
            "x/web ingress: no HTTP rule matches",
        );
    let d = access_flow(&denied, &ctx).expect("a flow");
    assert_eq!(d.verdict, flow::Verdict::Dropped as i32);
    assert_eq!(d.ingress_denied_by[0].name, "web-ingress");
    // A line that is no request is no flow; a mangled one neither.
    assert!(access_flow(r#"{"client":"1.2.3.4:5","header":"x"}"#, &ctx).is_none());
    assert!(access_flow("not json", &ctx).is_none());
}

#[test]
fn a_dns_record_carries_query_answers_and_rcode() {
    let ctx = context();
    let line = r#"{"protocol":"dns","transport":"udp","src":"10.200.1.10:5353","dst":"10.200.1.11:53","src_identity":"1001","dst_identity":"1002","query":"web.allowed.lab","qtype":"A","rcode":"NOERROR","answers":"10.201.0.80, 10.201.0.81","verdict":"Allowed","latency_us":5,"reason":"","type":"l7"}"#;
    let f = access_flow(line, &ctx).expect("a flow");
    let Some(flow::layer7::Record::Dns(d)) = f.l7.as_ref().and_then(|l| l.record.clone()) else {
        panic!("no DNS record")
    };
    assert_eq!(d.query, "web.allowed.lab.");
    assert_eq!(d.ips, ["10.201.0.80", "10.201.0.81"]);
    assert_eq!(d.qtypes, ["A"]);
    assert_eq!(d.rcode, 0);
    assert!(matches!(
        f.l4.and_then(|l| l.protocol),
        Some(flow::layer4::Protocol::Udp(_))
    ));
}

#[test]
fn an_audit_event_passes_and_names_the_policy_that_would_drop_it() {
    let mut ctx = context();
    let mut rules = EndpointRules::clone(&ctx.endpoints[&2]);
    rules.audit_enforcing_ingress = vec![Arc::new(PolicyRef {
        name: "audited".into(),
        ..PolicyRef::clone(&web_policy())
    })];
    rules.enforcing_ingress.clear();
    ctx.endpoints.insert(2, Arc::new(rules));
    // An audited policy's default deny: no rule would allow it.
    let f = kernel_flow(&event(3, Reason::AuditNoPolicy, 0), &ctx);
    assert_eq!(f.verdict, flow::Verdict::Audit as i32);
    assert_eq!(f.drop_reason_desc, 0, "an audited flow is no drop");
    assert_eq!(f.ingress_denied_by.len(), 1);
    assert_eq!(f.ingress_denied_by[0].name, "audited");
    assert!(f.ingress_allowed_by.is_empty());
    // An audited deny rule: named by its cookie.
    let f = kernel_flow(&event(3, Reason::AuditDenied, 77), &ctx);
    assert_eq!(f.ingress_denied_by[0].name, "web-ingress");
}

#[test]
fn a_drop_names_only_enforced_policies_even_when_an_audited_one_also_selects() {
    let mut ctx = context();
    let mut rules = EndpointRules::clone(&ctx.endpoints[&2]);
    rules.audit_enforcing_ingress = vec![Arc::new(PolicyRef {
        name: "audited".into(),
        ..PolicyRef::clone(&web_policy())
    })];
    ctx.endpoints.insert(2, Arc::new(rules));
    let d = kernel_flow(&event(1, Reason::DropNoPolicy, 0), &ctx);
    let names: Vec<&str> = d
        .ingress_denied_by
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["web-ingress"]);
    let a = kernel_flow(&event(3, Reason::AuditNoPolicy, 0), &ctx);
    let names: Vec<&str> = a
        .ingress_denied_by
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["web-ingress", "audited"]);
}

/// An HTTP record of client -> web:80 with `verdict` and `reason`.
fn http_record(verdict: &str, reason: &str) -> String {
    serde_json::json!({
        "method": "GET", "path": "/admin", "authority": "web", "status": 200,
        "verdict": verdict, "protocol": "Http1",
        "src": "10.200.1.10:40000", "dst": "10.200.1.11:80",
        "src_identity": "1001", "dst_identity": "1002", "latency_us": 9,
        "reason": reason, "type": "l7",
    })
    .to_string()
}

#[test]
fn an_audited_request_passes_and_names_the_policies_that_would_deny_it() {
    let ctx = context();
    let reason = "x/web ingress: audit: no HTTP rule of the audited policies matches; \
                  CiliumNetworkPolicy x/web-audit spec.ingress[0].rules.http[0]; \
                  CiliumNetworkPolicy x/web-ingress spec.ingress[0].rules.http[1]";
    let f = access_flow(&http_record("Audit", reason), &ctx).expect("a flow");
    assert_eq!(f.verdict, flow::Verdict::Audit as i32);
    assert_eq!(f.drop_reason_desc, 0, "an audited request is no drop");
    assert_eq!(f.drop_reason, 0);
    assert!(f.ingress_allowed_by.is_empty());
    let names: Vec<&str> = f
        .ingress_denied_by
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["web-audit", "web-ingress"]);
    assert!(
        f.ingress_denied_by[0]
            .labels
            .contains(&"portcullis:rule=spec.ingress[0].rules.http[0]".to_string())
    );
    assert!(
        f.summary.contains("(Audit: x/web ingress: audit:"),
        "{}",
        f.summary
    );
    // The DNS and Kafka proxies write `audit`: the same verdict.
    let kafka = serde_json::json!({
        "protocol": "kafka", "src": "10.200.1.10:40000", "dst": "10.200.1.11:80",
        "api_key": "Produce", "api_version": 9, "correlation_id": 1, "client_id": "c",
        "topics": "t", "verdict": "audit", "latency_us": 1, "error": "",
        "reason": "x/web ingress: audit: no Kafka rule matches the request",
    })
    .to_string();
    let f = access_flow(&kafka, &ctx).expect("a flow");
    assert_eq!(f.verdict, flow::Verdict::Audit as i32);
    assert_eq!(f.drop_reason_desc, 0);
    // No policy named: the port's redirecting policies.
    assert_eq!(f.ingress_denied_by.len(), 1);
    assert_eq!(f.ingress_denied_by[0].name, "web-ingress");
}

#[test]
fn tls_records_closed_or_audited_are_l7_flows_without_a_record() {
    let ctx = context();
    let tls = |verdict: &str, sni: &str, reason: &str| {
        serde_json::json!({
            "protocol": "tls", "sni": sni, "verdict": verdict,
            "src": "10.200.1.10:40000", "dst": "10.200.1.11:80", "reason": reason,
        })
        .to_string()
    };
    let passed = tls(
        "Allowed",
        "a.test",
        "serverNames: passed through without termination",
    );
    assert!(access_flow(&passed, &ctx).is_none());
    let closed = tls(
        "Denied",
        "b.test",
        "x/web ingress: SNI b.test is not in serverNames [a.test]",
    );
    let f = access_flow(&closed, &ctx).expect("a flow");
    assert_eq!(f.r#type, flow::FlowType::L7 as i32);
    assert_eq!(f.verdict, flow::Verdict::Dropped as i32);
    assert!(f.l7.as_ref().is_some_and(|l| l.record.is_none()));
    assert_eq!(f.ingress_denied_by[0].name, "web-ingress");
    assert_eq!(
        f.summary,
        "TLS SNI b.test (Denied: x/web ingress: SNI b.test is not in serverNames [a.test])"
    );
    let audited = tls(
        "Audit",
        "",
        "audit: x/web ingress: TLS on a port whose rules have no serverNames; \
         CiliumNetworkPolicy x/web-tls spec.ingress[0]",
    );
    let f = access_flow(&audited, &ctx).expect("a flow");
    assert_eq!(f.verdict, flow::Verdict::Audit as i32);
    assert_eq!(f.drop_reason_desc, 0);
    assert_eq!(f.ingress_denied_by[0].name, "web-tls");
    assert!(
        f.summary.starts_with("TLS SNI (none) (Audit: "),
        "{}",
        f.summary
    );
}

#[test]
fn a_redirected_ports_audited_l7_policies_are_among_its_redirect_origins() {
    let yaml = "apiVersion: cilium.io/v2
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
    let topo = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
";
    let set = policy_model::load::load_str(yaml, "p.yaml").expect("test policy loads");
    let topo = policy_model::Topology::from_yaml(topo, "t.yaml").expect("test topology");
    let cluster = policy_model::Cluster::new(
        topo,
        set.rules().cloned().collect(),
        &policy_model::FqdnCache::default(),
    );
    let a = cluster
        .endpoints()
        .iter()
        .find(|e| e.full_name() == "ns1/a")
        .expect("endpoint a");
    let rules = endpoint_rules(&cluster.endpoint_policy(a));
    let port80: Vec<&str> = rules
        .redirects
        .iter()
        .filter(|(d, port, _)| *d == Direction::Ingress && port.matches(6, 80))
        .flat_map(|(_, _, origins)| origins.iter().map(|o| o.name.as_str()))
        .collect();
    assert_eq!(port80, ["a-http"]);
}

#[test]
fn a_world_address_in_a_cidr_group_shows_the_groups_labels() {
    let set = policy_model::load::load_str(
        "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners, labels: {tier: external}}
spec: {externalCIDRs: [10.201.7.0/24, 'fd00:201::7:0/112']}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out, namespace: x}
spec:
  endpointSelector: {}
  egress: [{toCIDRSet: [{cidrGroupRef: partners}]}]
",
        "p.yaml",
    )
    .expect("inputs load");
    let mut topo = policy_model::Topology::from_yaml(
        "namespaces: [{name: x}]\npods: [{namespace: x, name: client, ip: 10.200.1.10}]",
        "t.yaml",
    )
    .expect("topology");
    topo.cidr_groups = set.cidr_groups.clone();
    let engine = policy_model::incremental::IncrementalCluster::new(
        topo,
        set.policies.iter().map(|p| {
            (
                policy_model::incremental::PolicyKey::of(&p.origin),
                p.rules.clone(),
            )
        }),
        Default::default(),
        "node-1",
    );
    let ctx = FlowContext {
        identities: identity_labels(&engine),
        ..context()
    };
    for addr in ["10.201.7.9", "fd00:201::7:9"] {
        let ip: IpAddr = addr.parse().expect("ip");
        let id = engine.identity_of_ip(ip).0;
        let ep = ctx.endpoint(ip, id);
        assert_eq!(ep.identity, id);
        assert!(
            ep.labels
                .iter()
                .any(|l| l == "cidrgroup:io.cilium.policy.cidrgroupname/partners"),
            "{addr}: {:?}",
            ep.labels
        );
        assert!(
            ep.labels.iter().any(|l| l == "cidrgroup:tier=external"),
            "{:?}",
            ep.labels
        );
        assert!(
            ep.labels.iter().any(|l| l.starts_with("cidr:")),
            "{:?}",
            ep.labels
        );
    }
}
