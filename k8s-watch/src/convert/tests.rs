//! Unit tests of the conversions.

use super::*;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("a pod")
}

#[test]
fn pod_with_addresses_ports_and_service_account() {
    let p = pod(json!({
        "metadata": {"namespace": "x", "name": "a", "labels": {"app": "a"}},
        "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [
            {"name": "c1", "ports": [{"name": "http", "containerPort": 80},
                                     {"containerPort": 9000, "protocol": "UDP"}]},
            {"name": "c2", "ports": [{"name": "http", "containerPort": 8080},
                                     {"name": "big", "containerPort": 70000}]}]},
        "status": {"phase": "Running", "podIP": "10.0.1.1",
                   "podIPs": [{"ip": "10.0.1.1"}, {"ip": "fd00::1"}]}
    }));
    let ep = pod_endpoint(&p).expect("an endpoint");
    assert_eq!(ep.node_name.as_deref(), Some("n1"));
    assert_eq!(ep.spec.full_name(), "x/a");
    assert_eq!(
        ep.spec.ips,
        [
            "10.0.1.1".parse::<IpAddr>().expect("ip"),
            "fd00::1".parse().expect("ip")
        ]
    );
    assert_eq!(ep.spec.service_account.as_deref(), Some("sa"));
    let ports: Vec<_> = ep
        .spec
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.container_port, p.protocol.clone()))
        .collect();
    // The second `http` and the out-of-range port are dropped; the
    // protocol defaults to TCP.
    assert_eq!(
        ports,
        [
            (Some("http".into()), 80, Some("TCP".into())),
            (None, 9000, Some("UDP".into()))
        ]
    );
}

#[test]
fn pods_that_are_not_endpoints() {
    let pending = pod(
        json!({"metadata": {"name": "p"}, "spec": {"containers": []},
                             "status": {"phase": "Pending"}}),
    );
    assert_eq!(pod_endpoint(&pending), Err(PodSkip::NoAddress));
    let host = pod(json!({"metadata": {"name": "h"},
                          "spec": {"hostNetwork": true, "containers": []},
                          "status": {"podIP": "10.0.0.1"}}));
    assert_eq!(pod_endpoint(&host), Err(PodSkip::HostNetwork));
    let done = pod(
        json!({"metadata": {"name": "d"}, "spec": {"containers": []},
                          "status": {"phase": "Succeeded", "podIP": "10.0.1.2"}}),
    );
    assert_eq!(pod_endpoint(&done), Err(PodSkip::Finished));
    let garbage = pod(
        json!({"metadata": {"name": "g"}, "spec": {"containers": []},
                             "status": {"podIP": "not-an-ip"}}),
    );
    assert_eq!(pod_endpoint(&garbage), Err(PodSkip::NoAddress));
}

#[test]
fn node_addresses_are_internal_and_external_ips() {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "203.0.113.1"},
            {"type": "InternalIP", "address": "10.0.0.1"}]}
    }))
    .expect("a node");
    let info = node_info(&n);
    assert_eq!(info.name, "n1");
    assert_eq!(info.labels["zone"], "a");
    assert_eq!(
        info.ips,
        [
            "10.0.0.1".parse::<IpAddr>().expect("ip"),
            "203.0.113.1".parse().expect("ip")
        ]
    );
}

#[test]
fn apiserver_endpoints_not_ready_are_left_out() {
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "kubernetes"},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.100"]},
            {"addresses": ["10.0.0.101"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.102"], "conditions": {"ready": false}}]
    }))
    .expect("a slice");
    assert_eq!(
        apiserver_ips(&s),
        [
            "10.0.0.100".parse::<IpAddr>().expect("ip"),
            "10.0.0.101".parse().expect("ip")
        ]
    );
}

#[test]
fn raw_policy_gets_type_meta_and_loses_managed_fields() {
    // As a list item: no apiVersion/kind.
    let obj: DynamicObject = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "x", "resourceVersion": "42",
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"endpointSelector": {}}
    }))
    .expect("an object");
    let raw = raw_policy(PolicyKind::CiliumNetworkPolicy, &obj);
    assert_eq!(raw.namespace.as_deref(), Some("x"));
    assert_eq!(raw.name, "p");
    assert_eq!(raw.resource_version, "42");
    let v: serde_json::Value = serde_json::from_str(&raw.json).expect("json");
    assert_eq!(v["apiVersion"], "cilium.io/v2");
    assert_eq!(v["kind"], "CiliumNetworkPolicy");
    assert!(v["metadata"].get("managedFields").is_none());
    policy_model::load::load_str(&raw.json, "t").expect("loads");

    let ccnp = raw_policy(PolicyKind::CiliumClusterwideNetworkPolicy, &obj);
    assert_eq!(ccnp.namespace, None);
}

#[test]
fn policy_resources_name_the_real_urls() {
    let ar = policy_resource(PolicyKind::NetworkPolicy);
    assert_eq!(
        (ar.api_version.as_str(), ar.plural.as_str()),
        ("networking.k8s.io/v1", "networkpolicies")
    );
    let ar = policy_resource(PolicyKind::CiliumClusterwideNetworkPolicy);
    assert_eq!(
        (
            ar.api_version.as_str(),
            ar.kind.as_str(),
            ar.plural.as_str()
        ),
        (
            "cilium.io/v2",
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies"
        )
    );
}

#[test]
fn cidr_groups_convert_with_their_labels_or_name_the_bad_field() {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
        "metadata": {"name": "partners", "labels": {"team": "a"}, "resourceVersion": "3"},
        "spec": {"externalCIDRs": ["10.201.1.0/24", "fd00:201::/64"]}
    }))
    .expect("object");
    let g = cidr_group(&obj).expect("valid group");
    assert_eq!(g.name, "partners");
    assert_eq!(g.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(g.cidrs.len(), 2);

    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
        "metadata": {"name": "bad"},
        "spec": {"externalCIDRs": ["10.0.0.0/8", "10.0.0.300/32"]}
    }))
    .expect("object");
    let e = cidr_group(&bad).expect_err("bad CIDR");
    assert!(e.contains("CiliumCIDRGroup/bad"), "{e}");
    assert!(e.contains("spec.externalCIDRs[1]"), "{e}");
}
