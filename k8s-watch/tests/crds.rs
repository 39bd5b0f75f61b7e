//! The CRDs of `deploy/kubernetes/crds/` against the objects they must
//! take and the ones they must refuse. The fake API server serves the
//! custom kinds with exactly those files' schemas (compiled in; pruning
//! and types from the structural part, then the value checks), so each
//! object here goes through a strict server-side dry run
//! (`fieldValidation=Strict&dryRun=All`), as `kubectl apply
//! --dry-run=server` sends it to a cluster with these CRDs:
//! - every field portcullis's parser reads (a rule built from
//!   `policy_model::api` with every field set: a field added to the parser
//!   fails to compile here until it is added, and fails the test until the
//!   CRDs have it), including `rules.kafka`, which Cilium 1.20's CRD no
//!   longer has;
//! - every policy of the conformance cases;
//! - CiliumCIDRGroups and ClusterNetworkPolicies;
//! - typos (unknown fields) and out-of-range values, refused with the
//!   field's path;
//! - and the CRDs themselves, read as `apiextensions.k8s.io/v1` objects.

#[path = "support/project_policies.rs"]
mod project_policies;

use http_body_util::BodyExt;
use k8s_watch::fake::{FakeApiServer, FakeHandle};
use policy_model::api::{
    Authentication, CidrRule, DefaultDenyConfig, EgressRule, FqdnSelector, HeaderMatch, HttpRule,
    IcmpField, IcmpRule, IngressRule, IntOrString, KafkaRule, L7Rules, LabelSelector,
    LabelSelectorRequirement, LogConfig, MismatchAction, PortProtocol, PortRule, Rule, RuleLabel,
    SecretRef, SelectorOperator, TlsContext,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A request to the fake: status code and body (or `Null`).
async fn call(fake: &FakeHandle, method: &str, uri: &str, body: Option<&Value>) -> (u16, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(bytes))
        .expect("a request");
    let resp = fake.client().send(req).await.expect("an answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The collection URL of an object's kind.
fn collection(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let plural = match obj["kind"].as_str().unwrap_or_default() {
        "NetworkPolicy" => "networkpolicies",
        "CiliumNetworkPolicy" => "ciliumnetworkpolicies",
        "CiliumClusterwideNetworkPolicy" => "ciliumclusterwidenetworkpolicies",
        "CiliumCIDRGroup" => "ciliumcidrgroups",
        "ClusterNetworkPolicy" => "clusternetworkpolicies",
        other => panic!("no URL for kind {other:?}"),
    };
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{plural}"),
    }
}

/// A strict server-side dry run of a create.
async fn dry_run(fake: &FakeHandle, obj: &Value) -> (u16, Value) {
    let uri = format!("{}?dryRun=All&fieldValidation=Strict", collection(obj));
    call(fake, "POST", &uri, Some(obj)).await
}

async fn fake_with_namespaces(objects: &[Value]) -> FakeHandle {
    let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
    let namespaces: BTreeSet<&str> = objects
        .iter()
        .filter_map(|p| p.pointer("/metadata/namespace").and_then(Value::as_str))
        .collect();
    for ns in namespaces {
        fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .expect("a namespace");
    }
    fake
}

fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [("app".to_string(), app.to_string())].into(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: SelectorOperator::NotIn,
            values: vec!["test".into()],
        }],
    }
}

fn secret() -> SecretRef {
    SecretRef {
        namespace: Some("default".into()),
        name: "tls".into(),
    }
}

fn port_rules(rules: L7Rules) -> Vec<PortRule> {
    let tls = TlsContext {
        secret: Some(secret()),
        trusted_ca: Some("ca.crt".into()),
        certificate: Some("tls.crt".into()),
        private_key: Some("tls.key".into()),
    };
    vec![PortRule {
        ports: vec![
            PortProtocol {
                port: Some(IntOrString::String("8080".into())),
                end_port: Some(8090),
                protocol: Some("TCP".into()),
            },
            PortProtocol {
                port: Some(IntOrString::Int(53)),
                end_port: None,
                protocol: Some("udp".into()),
            },
            PortProtocol {
                port: Some(IntOrString::String("http-alt".into())),
                end_port: None,
                protocol: None,
            },
        ],
        rules: Some(rules),
        server_names: Some(vec!["api.example.com".into()]),
        terminating_tls: Some(tls.clone()),
        originating_tls: Some(tls),
        listener: Some(
            json!({"envoyConfig": {"kind": "CiliumEnvoyConfig", "name": "envoy"},
                              "name": "listener", "priority": 10}),
        ),
    }]
}

fn l7_rules() -> L7Rules {
    L7Rules {
        http: Some(vec![HttpRule {
            method: Some("GET".into()),
            path: Some("/api/.*".into()),
            host: Some("api.example.com".into()),
            headers: vec!["X-Token: t".into()],
            header_matches: vec![HeaderMatch {
                name: "X-Key".into(),
                value: Some("v".into()),
                mismatch: Some(MismatchAction::Replace),
                secret: Some(secret()),
            }],
        }]),
        kafka: Some(vec![KafkaRule {
            role: Some("produce".into()),
            api_key: Some("produce".into()),
            api_version: Some("9".into()),
            client_id: Some("client-1".into()),
            topic: Some("orders".into()),
        }]),
        dns: Some(vec![FqdnSelector {
            match_name: Some("www.example.com".into()),
            match_pattern: Some("*.example.com".into()),
        }]),
        l7proto: Some("envoy.filters.network.redis".into()),
        l7: Some(vec![json!({"command": "get"})]),
    }
}

fn icmps() -> Vec<IcmpRule> {
    vec![IcmpRule {
        fields: vec![
            IcmpField {
                family: Some("IPv4".into()),
                icmp_type: IntOrString::Int(8),
            },
            IcmpField {
                family: Some("IPv6".into()),
                icmp_type: IntOrString::String("EchoRequest".into()),
            },
        ],
    }]
}

fn cidr_set() -> Vec<CidrRule> {
    vec![
        CidrRule {
            cidr: Some("10.0.0.0/8".into()),
            cidr_group_ref: None,
            cidr_group_selector: None,
            except: vec!["10.1.0.0/16".into()],
        },
        CidrRule {
            cidr: None,
            cidr_group_ref: Some("partners".into()),
            cidr_group_selector: None,
            except: Vec::new(),
        },
        CidrRule {
            cidr: None,
            cidr_group_ref: None,
            cidr_group_selector: Some(selector("partners")),
            except: Vec::new(),
        },
    ]
}

/// A rule with every field of the parser's types set (struct literals
/// without `..Default::default()`, so a new field must be added here).
fn every_field_rule() -> Rule {
    let ingress = IngressRule {
        from_endpoints: Some(vec![selector("a")]),
        from_requires: Some(vec![selector("b")]),
        from_cidr: Some(vec!["192.0.2.0/24".into(), "192.0.2.7".into()]),
        from_cidr_set: Some(cidr_set()),
        from_entities: Some(vec!["world".into(), "kube-apiserver".into()]),
        from_groups: Some(vec![json!({"aws": {"labels": {"k": "v"},
            "securityGroupsIds": ["sg-1"], "securityGroupsNames": ["web"], "region": "eu-west-1"}})]),
        from_nodes: Some(vec![selector("node")]),
        to_ports: Some(port_rules(l7_rules())),
        icmps: Some(icmps()),
        authentication: Some(Authentication {
            mode: "required".into(),
        }),
    };
    let egress = EgressRule {
        to_endpoints: Some(vec![selector("c")]),
        to_requires: Some(vec![selector("d")]),
        to_cidr: Some(vec!["2001:db8::/32".into()]),
        to_cidr_set: Some(cidr_set()),
        to_entities: Some(vec!["cluster".into(), "world-ipv6".into()]),
        to_services: Some(vec![
            json!({"k8sService": {"serviceName": "db", "namespace": "default"}}),
            json!({"k8sServiceSelector": {"selector": {"matchLabels": {"app": "db"}},
                                          "namespace": "default"}}),
        ]),
        to_groups: Some(vec![json!({"aws": {"region": "eu-west-1"}})]),
        to_nodes: Some(vec![selector("node")]),
        to_fqdns: Some(vec![FqdnSelector {
            match_name: Some("api.example.com".into()),
            match_pattern: Some("**.example.com".into()),
        }]),
        to_ports: Some(port_rules(l7_rules())),
        icmps: Some(icmps()),
        authentication: Some(Authentication {
            mode: "disabled".into(),
        }),
    };
    Rule {
        endpoint_selector: Some(selector("web")),
        node_selector: None,
        ingress: Some(vec![ingress.clone()]),
        ingress_deny: Some(vec![ingress]),
        egress: Some(vec![egress.clone()]),
        egress_deny: Some(vec![egress]),
        enable_default_deny: Some(DefaultDenyConfig {
            ingress: Some(true),
            egress: Some(false),
        }),
        labels: vec![RuleLabel {
            key: "team".into(),
            value: "web".into(),
            source: "k8s".into(),
        }],
        description: Some("every field".into()),
        log: Some(LogConfig {
            value: "web-rule".into(),
        }),
    }
}

/// A CNP and a CCNP with the every-field rule in `spec` and, for host
/// policies, a nodeSelector twin in `specs`.
fn every_field_policies() -> Vec<Value> {
    let rule = every_field_rule();
    let host = Rule {
        endpoint_selector: None,
        node_selector: Some(selector("node")),
        ..rule.clone()
    };
    let spec = serde_json::to_value(&rule).expect("serialises");
    let specs = serde_json::to_value(vec![rule, host]).expect("serialises");
    vec![
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "every-field", "namespace": "default"},
               "spec": spec, "specs": specs}),
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "every-field"}, "spec": spec, "specs": specs}),
    ]
}

fn kafka_policy() -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "kafka-orders", "namespace": "shop"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [{
            "fromEndpoints": [{"matchLabels": {"app": "billing"}}],
            "toPorts": [{
                "ports": [{"port": "9092", "protocol": "TCP"}],
                "rules": {"kafka": [
                    {"role": "consume", "topic": "orders"},
                    {"apiKey": "produce", "apiVersion": "9", "clientID": "billing-1",
                     "topic": "invoices"},
                ]},
            }],
        }],
    }})
}

fn cidr_group() -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
           "metadata": {"name": "partners", "labels": {"app": "partners"}},
           "spec": {"externalCIDRs": ["198.51.100.0/24", "2001:db8:1::/48"]}})
}

fn cluster_policies() -> Vec<Value> {
    vec![
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "sensitive-ns"},
        "spec": {
            "tier": "Admin", "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}},
            "ingress": [
                {"name": "from-monitoring", "action": "Accept",
                 "from": [{"namespaces": {"matchLabels": {"team": "monitoring"}}}],
                 "ports": [{"portNumber": {"protocol": "TCP", "port": 9090}}]},
                {"name": "nobody-else", "action": "Deny",
                 "from": [{"namespaces": {}}]},
            ],
            "egress": [
                {"name": "dns", "action": "Pass",
                 "to": [{"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                  "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}],
                 "ports": [{"portNumber": {"protocol": "UDP", "port": 53}},
                           {"portRange": {"protocol": "TCP", "start": 8000, "end": 8999}},
                           {"namedPort": "dns-tcp"}]},
                {"action": "Accept", "to": [{"networks": ["203.0.113.0/24", "2001:db8::/32"]}]},
                {"action": "Accept", "to": [{"domainNames": ["api.example.com", "*.example.org"]}]},
                {"action": "Deny", "to": [{"nodes": {"matchExpressions": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}]},
            ],
        }}),
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "default-deny"},
            "spec": {"tier": "Baseline", "priority": 0,
                     "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
                     "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}}),
    ]
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        v => v.clone(),
    }
}

#[tokio::test]
async fn every_parser_field_the_project_policies_and_the_new_kinds_pass() {
    let mut objects = every_field_policies();
    objects.push(kafka_policy());
    objects.push(cidr_group());
    objects.extend(cluster_policies());
    let policies = project_policies::project_policies();
    assert!(policies.len() > 50, "found {} policies", policies.len());
    objects.extend(policies);
    // What the CRDs take, the parser must read too (its types refuse
    // unknown fields).
    for o in objects.iter().filter(|o| {
        matches!(
            o["kind"].as_str(),
            Some("CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")
        )
    }) {
        serde_json::from_value::<policy_model::api::CiliumPolicy>(o.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", o["metadata"]["name"]));
    }
    let fake = fake_with_namespaces(&objects).await;
    for o in &objects {
        let (code, body) = dry_run(&fake, o).await;
        assert_eq!(
            code, 201,
            "{} {}: {body:#}",
            o["kind"], o["metadata"]["name"]
        );
        // Nothing was pruned: the dry run's object is the one sent (less
        // its nulls, which the API server drops).
        for field in ["spec", "specs"] {
            assert!(
                body[field] == without_nulls(&o[field]),
                "{} {}: {field} came back changed: {:#}",
                o["kind"],
                o["metadata"]["name"],
                body[field]
            );
        }
    }
}

#[tokio::test]
async fn a_kafka_policy_is_stored_with_its_kafka_rules() {
    let kafka = kafka_policy();
    let fake = fake_with_namespaces(std::slice::from_ref(&kafka)).await;
    let (code, body) = call(&fake, "POST", &collection(&kafka), Some(&kafka)).await;
    assert_eq!(code, 201, "{body:#}");
    let (code, got) = call(
        &fake,
        "GET",
        "/apis/cilium.io/v2/namespaces/shop/ciliumnetworkpolicies/kafka-orders",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        got.pointer("/spec/ingress/0/toPorts/0/rules/kafka"),
        kafka.pointer("/spec/ingress/0/toPorts/0/rules/kafka")
    );
}

/// A copy of `obj` with `pointer`'s value replaced (a missing parent is
/// an error in the test).
fn with(obj: &Value, pointer: &str, value: Value) -> Value {
    let mut o = obj.clone();
    let (parent, field) = pointer.rsplit_once('/').expect("a pointer");
    let target = o.pointer_mut(parent).expect("the parent exists");
    match target {
        Value::Array(a) => a[field.parse::<usize>().expect("an index")] = value,
        t => t[field] = value,
    }
    o
}

fn without(obj: &Value, pointer: &str) -> Value {
    let mut o = obj.clone();
    let (parent, field) = pointer.rsplit_once('/').expect("a pointer");
    o.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("an object")
        .remove(field);
    o
}

#[tokio::test]
async fn typos_and_bad_values_are_refused_with_their_field() {
    let kafka = kafka_policy();
    let ccnp = every_field_policies().remove(1);
    let group = cidr_group();
    let anp = cluster_policies().remove(0);
    let port0 = "/spec/ingress/0/toPorts/0";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "a misspelt toPorts",
            with(
                &kafka,
                "/spec/ingress/0",
                json!({"toPort": [{"ports": [{"port": "80"}]}]}),
            ),
            400,
            "unknown field \"spec.ingress[0].toPort\"",
        ),
        (
            "a misspelt kafka field",
            with(
                &kafka,
                &format!("{port0}/rules/kafka/0"),
                json!({"topics": "orders"}),
            ),
            400,
            "unknown field \"spec.ingress[0].toPorts[0].rules.kafka[0].topics\"",
        ),
        (
            "an unknown Kafka role",
            with(
                &kafka,
                &format!("{port0}/rules/kafka/0/role"),
                json!("produces"),
            ),
            422,
            "spec.ingress[0].toPorts[0].rules.kafka[0].role: Unsupported value: \"produces\"",
        ),
        (
            "a port out of range",
            with(&kafka, &format!("{port0}/ports/0/port"), json!("99999")),
            422,
            "spec.ingress[0].toPorts[0].ports[0].port: Invalid value: \"99999\"",
        ),
        (
            "an unknown protocol",
            with(&kafka, &format!("{port0}/ports/0/protocol"), json!("TPC")),
            422,
            "spec.ingress[0].toPorts[0].ports[0].protocol: Invalid value: \"TPC\"",
        ),
        (
            "an unknown entity",
            with(&kafka, "/spec/ingress/0", json!({"fromEntities": ["wrld"]})),
            422,
            "spec.ingress[0].fromEntities[0]: Unsupported value: \"wrld\"",
        ),
        (
            "a rule that selects nothing",
            without(&kafka, "/spec/endpointSelector"),
            422,
            "spec in body must validate one and only one schema (oneOf)",
        ),
        (
            "a log value over 32 characters",
            with(&ccnp, "/spec/log/value", json!("x".repeat(33))),
            422,
            "spec.log.value: Too long",
        ),
        (
            "an address where a CIDR group needs a CIDR",
            with(&group, "/spec/externalCIDRs/0", json!("198.51.100.7")),
            422,
            "spec.externalCIDRs[0]: Invalid value: \"198.51.100.7\"",
        ),
        (
            "a CIDR group without CIDRs",
            without(&group, "/spec/externalCIDRs"),
            422,
            "spec.externalCIDRs: Required value",
        ),
        (
            "a tier in the wrong case",
            with(&anp, "/spec/tier", json!("admin")),
            422,
            "spec.tier: Unsupported value: \"admin\"",
        ),
        (
            "a priority over 1000",
            with(&anp, "/spec/priority", json!(1001)),
            422,
            "spec.priority in body should be less than or equal to 1000",
        ),
        (
            "two kinds of peer in one",
            with(
                &anp,
                "/spec/egress/1/to/0",
                json!({"networks": ["203.0.113.0/24"], "namespaces": {}}),
            ),
            422,
            "spec.egress[1].to[0] in body should have at most 1 properties",
        ),
        (
            "a misspelt subject field",
            with(&anp, "/spec/subject", json!({"namespace": {}})),
            400,
            "unknown field \"spec.subject.namespace\"",
        ),
        (
            "a wildcard in the middle of a domain name",
            with(
                &anp,
                "/spec/egress/2/to/0/domainNames/0",
                json!("api.*.example.com"),
            ),
            422,
            "spec.egress[2].to[0].domainNames[0]",
        ),
    ];
    let fake = fake_with_namespaces(std::slice::from_ref(&kafka)).await;
    for (what, obj, want_code, want) in cases {
        let (code, status) = dry_run(&fake, &obj).await;
        let message = status["message"].as_str().unwrap_or_default();
        assert_eq!(code, want_code, "{what}: {message}");
        assert!(message.contains(want), "{what}: {message}");
    }
    assert_eq!(fake.resource_version(), 1, "only the namespace was stored");
}

#[tokio::test]
async fn the_crds_are_served_read_only_and_follow_the_served_kinds() {
    let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (code, list) = call(&fake, "GET", crds, None).await;
    assert_eq!(code, 200);
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        names(&list),
        [
            "ciliumcidrgroups.cilium.io",
            "ciliumclusterwidenetworkpolicies.cilium.io",
            "ciliumnetworkpolicies.cilium.io",
            "clusternetworkpolicies.policy.networking.k8s.io",
        ]
    );
    let (code, cnp) = call(
        &fake,
        "GET",
        &format!("{crds}/ciliumnetworkpolicies.cilium.io"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(cnp["kind"], "CustomResourceDefinition");
    assert_eq!(
        cnp["spec"]["names"]["shortNames"],
        json!(["cnp", "ciliumnp"])
    );
    assert!(
        cnp.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/ingress/items/properties/toPorts/items/properties/rules/properties/kafka")
            .is_some()
    );
    let (code, _) = call(
        &fake,
        "DELETE",
        &format!("{crds}/ciliumnetworkpolicies.cilium.io"),
        None,
    )
    .await;
    assert_eq!(code, 405);
    fake.set_served("CiliumNetworkPolicy", false);
    let (_, list) = call(&fake, "GET", crds, None).await;
    assert_eq!(names(&list).len(), 3);
    fake.set_served("CiliumNetworkPolicy", true);
    let (_, list) = call(&fake, "GET", crds, None).await;
    assert_eq!(names(&list).len(), 4);
}
