use super::*;
use crate::case::{default_root, load_case};
use portcullis_lab::LabNode;
use portcullis_lab::net::pod_namespaces;
use std::path::PathBuf;

/// A case file of the suite with `probes` (a YAML list, one flow-style
/// probe a line) in place of its own.
fn case(file: &str, probes: &str) -> Case {
    let root = default_root();
    let mut c = load_case(&root, &root.join("cases").join(file)).expect("case loads");
    // One flow-style probe a line; the indentation of the source is not YAML's.
    let probes: Vec<&str> = probes.lines().map(str::trim).collect();
    c.probes = serde_yaml_ng::from_str(&probes.join("\n")).expect("probes");
    c
}

/// The lab `lab up` would build for the case's topology.
fn lab(c: &Case) -> LabState {
    LabState {
        topology: PathBuf::from("topology.yaml"),
        policies: vec![],
        pods: pod_namespaces(&c.topology).expect("pods"),
        remote_pods: vec![],
        nodes: vec![LabNode::single()],
        pod_nodes: vec![],
        cluster: false,
        kubernetes: false,
        agent_args: vec![],
    }
}

fn plan(c: &Case, kafka_ok: bool) -> CasePlan {
    plan_case(c, &c.topology, &lab(c), kafka_ok).expect("plan")
}

fn summary(p: &CasePlan) -> Vec<String> {
    p.probes
        .iter()
        .map(|w| format!("{} {} -> {} {}", w.family, w.src_ns, w.dst, w.want))
        .collect()
}

const EGRESS: &str = "cilium-docs/http-egress.yaml";

#[test]
fn an_l4_probe_runs_in_both_families_with_the_models_verdict() {
    let c = case(
        EGRESS,
        "- {from: default/client, to: default/backend, port: 443, expect: denied}
         - {from: default/frontend, to: default/backend, port: 443, expect: allowed}",
    );
    let p = plan(&c, false);
    let client = lab(&c).namespace_of("default/client").expect("ns");
    let frontend = lab(&c).namespace_of("default/frontend").expect("ns");
    assert_eq!(
        summary(&p),
        [
            format!("v4 {client} -> 10.200.10.12 blocked"),
            format!("v6 {client} -> fd00:200::10:12 blocked"),
            format!("v4 {frontend} -> 10.200.10.12 connected"),
            format!("v6 {frontend} -> fd00:200::10:12 connected"),
        ]
    );
    assert_eq!(p.skipped, 0);
    let w = &p.probes[0];
    assert!(matches!(w.call, WireCall::L4));
    assert_eq!((w.model, w.expect), (Verdict::Denied, Expect::Denied));
    assert_eq!((w.protocol, w.port, w.src_ip), (Protocol::Tcp, 443, None));
}

#[test]
fn an_http_probe_is_sent_as_http1_and_http2_and_an_l7_denial_is_a_403() {
    let c = case(
        EGRESS,
        "- {from: default/client, to: default/backend, port: 80, http: {method: GET, path: /public}, expect: allowed}
         - {from: default/client, to: default/backend, port: 80, http: {path: /private}, expect: denied}",
    );
    let p = plan(&c, false);
    let families: Vec<_> = p.probes.iter().map(|w| (w.family, w.want)).collect();
    assert_eq!(
        families,
        [
            ("v4", Outcome::Http(200)),
            ("v4/h2", Outcome::Http(200)),
            ("v6", Outcome::Http(200)),
            ("v6/h2", Outcome::Http(200)),
            ("v4", Outcome::Http(403)),
            ("v4/h2", Outcome::Http(403)),
            ("v6", Outcome::Http(403)),
            ("v6/h2", Outcome::Http(403)),
        ]
    );
    let WireCall::Http(h) = &p.probes[5].call else {
        panic!("an HTTP call: {:?}", p.probes[5].call);
    };
    assert_eq!(
        (h.method.as_str(), h.path.as_str(), h.h2),
        ("GET", "/private", true)
    );
}

#[test]
fn probes_the_lab_cannot_send_are_skipped_and_counted() {
    let c = case(
        EGRESS,
        "- {from: default/client, to: default/backend, port: 80, expect: allowed, e2e: false}
         - {from: default/client, to: default/backend, port: 80, protocol: SCTP, expect: denied}
         - {from: default/client, to: default/backend, port: 3, protocol: ICMP, expect: denied}
         - {from: default/client, to-ip: 192.168.7.7, port: 80, expect: allowed}",
    );
    let p = plan(&c, false);
    assert!(p.probes.is_empty(), "{:?}", summary(&p));
    // `e2e: false` is not a skip: the probe is not meant for the wire.
    assert_eq!(p.skipped, 3);
}

#[test]
fn a_ping_runs_in_its_own_family_only() {
    let c = case(
        EGRESS,
        "- {from: default/frontend, to: default/backend, port: 8, protocol: ICMP, expect: allowed}
         - {from: default/frontend, to: default/backend, port: 128, protocol: ICMPv6, expect: allowed}",
    );
    let p = plan(&c, false);
    let families: Vec<_> = p.probes.iter().map(|w| (w.family, w.protocol)).collect();
    assert_eq!(families, [("v4", Protocol::Icmp), ("v6", Protocol::Icmpv6)]);
}

#[test]
fn extended_protocol_probes_are_raw_packets_and_igmp_is_ipv4_only() {
    let c = case(
        "cilium-docs/extended-vrrp-igmp.yaml",
        "- {from: default/frontend, to: default/frontend-dev, port: 0, protocol: VRRP, expect: allowed}
         - {from: default/client, to: default/frontend, port: 0, protocol: IGMP, expect: denied}
         - {from: default/frontend, to: default/frontend-dev, port: 112, protocol: VRRP, expect: denied}",
    );
    let p = plan(&c, false);
    let got: Vec<_> = p
        .probes
        .iter()
        .map(|w| (w.family, w.protocol, w.port, w.want))
        .collect();
    assert_eq!(
        got,
        [
            ("v4", Protocol::Vrrp, 0, Outcome::Connected),
            ("v6", Protocol::Vrrp, 0, Outcome::Connected),
            ("v4", Protocol::Igmp, 0, Outcome::Blocked),
        ]
    );
    assert!(p.probes.iter().all(|w| matches!(w.call, WireCall::L4)));
    // A port on a protocol without ports cannot be sent (nor judged).
    assert_eq!(p.skipped, 1);
    assert!(sends(Protocol::Gre, 0) && !sends(Protocol::Gre, 47));
}

#[test]
fn a_world_source_binds_its_address_and_a_world_destination_is_the_world_namespace() {
    let c = case(
        EGRESS,
        "- {from-ip: 10.201.0.1, to: default/backend, port: 443, expect: allowed}
         - {from: default/frontend, to-ip: 10.201.0.1, port: 443, expect: allowed}",
    );
    let p = plan(&c, false);
    let w = &p.probes[0];
    assert_eq!((w.src_ns.as_str(), w.src_ip), (WORLD_NS, Some(WORLD_V4)));
    // A world address has no IPv6 twin: one probe each.
    assert_eq!(p.probes.len(), 2);
    assert_eq!(p.probes[1].dst, WORLD_V4);
    assert_eq!(p.probes[1].src_ip, None);
}

#[test]
fn kafka_probes_are_skipped_without_a_broker_and_planned_with_one() {
    let c = case(
        "cilium-docs/kafka-roles.yaml",
        "- {from: default/empire-hq, to: default/kafka, port: 9092, kafka: {apiKey: produce, topics: [deathstar-plans]}, expect: allowed}",
    );
    let without = plan(&c, false);
    assert_eq!((without.probes.len(), without.skipped), (0, 1));
    let with = plan(&c, true);
    assert_eq!(with.probes.len(), 2);
    let WireCall::Kafka(k) = &with.probes[0].call else {
        panic!("a Kafka call: {:?}", with.probes[0].call);
    };
    assert_eq!(
        (k.api_key, k.topics.as_slice()),
        (0, ["deathstar-plans".to_string()].as_slice())
    );
}

#[test]
fn dns_and_to_fqdn_probes_go_through_the_clusters_dns_server() {
    let c = case(
        EGRESS,
        "- {from: default/frontend, to: kube-system/dns, port: 53, protocol: UDP, dns: example.com, expect: allowed}
         - {from: default/frontend, to-fqdn: example.com, to-ip: 10.201.0.1, port: 443, expect: allowed}",
    );
    let p = plan(&c, false);
    let WireCall::Dns(name) = &p.probes[0].call else {
        panic!("a DNS call: {:?}", p.probes[0].call);
    };
    assert_eq!(name, "example.com");
    assert_eq!(p.probes[0].want, Outcome::Dns(DNS_ANSWERED));
    let fqdn = p.probes.last().expect("to-fqdn probe");
    let dns_pod: IpAddr = "10.200.9.53".parse().expect("literal");
    assert_eq!(fqdn.resolve_first, [("example.com".to_string(), dns_pod)]);
    assert!(matches!(fqdn.call, WireCall::L4));
}

#[test]
fn to_fqdn_also_names_are_resolved_first_too() {
    let c = case(
        EGRESS,
        "- {from: default/frontend, to-fqdn: a.example.com, to-fqdn-also: [b.example.com], to-ip: 'fd00:201::5:5', port: 443, expect: denied}",
    );
    let p = plan(&c, false);
    let dns_pod: IpAddr = "10.200.9.53".parse().expect("literal");
    let probe = p.probes.last().expect("to-fqdn probe");
    assert_eq!(probe.family, "v6");
    assert_eq!(
        probe.resolve_first,
        [
            ("a.example.com".to_string(), dns_pod),
            ("b.example.com".to_string(), dns_pod)
        ]
    );
    // Both names go into the lab's zone, with the probe's address.
    let zone = super::super::servers::zone_for(std::slice::from_ref(&c));
    assert!(
        zone.contains("a.example.com. 30 AAAA fd00:201::5:5"),
        "{zone}"
    );
    assert!(
        zone.contains("b.example.com. 30 AAAA fd00:201::5:5"),
        "{zone}"
    );
}

#[test]
fn a_tls_probe_is_sent_with_and_without_h2() {
    let c = case(
        "tls/sni-egress.yaml",
        "- {from: shop/client, to-ip: 10.201.5.5, port: 443, tls: {sni: api.example.test}, expect: allowed}
         - {from: shop/client, to-ip: 10.201.5.5, port: 443, tls: {sni: evil.example.test}, expect: denied}",
    );
    let p = plan(&c, false);
    let families: Vec<_> = p.probes.iter().map(|w| (w.family, w.want)).collect();
    // Handshake-only probes: an admitted handshake is `connected`; one the
    // model denies is closed (`blocked`).
    assert_eq!(
        families,
        [
            ("v4/tls", Outcome::Connected),
            ("v4/h2s", Outcome::Connected),
            ("v4/tls", Outcome::Blocked),
            ("v4/h2s", Outcome::Blocked),
        ]
    );
    assert!(p.probes.iter().all(|w| matches!(w.call, WireCall::Tls(_))));
}

#[test]
fn the_dns_server_is_the_kube_dns_pod_else_the_world() {
    let c = case(EGRESS, "[]");
    let (pod, ip) = dns_server(&c.topology).expect("server");
    assert_eq!(pod.as_deref(), Some("kube-system/dns"));
    assert_eq!(ip.to_string(), "10.200.9.53");
    let mut topo = c.topology.clone();
    topo.pods.retain(|p| p.name != "dns");
    assert_eq!(dns_server(&topo), Some((None, WORLD_V4)));
}

/// The cluster lab `lab up` would build for a topology with `nodes:`
/// (pod namespaces named after the pods).
fn cluster_lab(c: &Case) -> LabState {
    let plan = portcullis_lab::cluster::plan(&c.topology).expect("cluster plan");
    let pods: Vec<(String, String, String)> = plan
        .topology
        .pods
        .iter()
        .map(|p| {
            let name = p.full_name();
            let ns = format!("pod-{}", name.replace('/', "-"));
            (name, ns, p.node.clone().expect("placed"))
        })
        .collect();
    LabState {
        topology: PathBuf::from("topology.yaml"),
        policies: vec![],
        pods: pods
            .iter()
            .map(|(p, ns, _)| (p.clone(), ns.clone()))
            .collect(),
        remote_pods: vec![],
        nodes: plan.nodes.iter().map(|n| n.lab_node()).collect(),
        pod_nodes: pods.into_iter().map(|(p, _, n)| (p, n)).collect(),
        cluster: true,
        kubernetes: false,
        agent_args: vec![],
    }
}

#[test]
fn a_node_side_sends_from_its_namespace_and_address_and_its_own_node_is_host() {
    let c = case(
        "cluster/to-entities-host-and-remote-node.yaml",
        "- {from: node/node-2, to: app/server-1, port: 80, expect: allowed}
         - {from: app/client-1, to: node/node-1, port: 80, expect: allowed}
         - {from: app/client-1, to: node/node-2, port: 80, expect: denied}
         - {from: app/client-2, to: node/node-2, port: 80, expect: allowed}",
    );
    let state = cluster_lab(&c);
    let p = plan_case(&c, &c.topology, &state, false).expect("plan");
    let rows: Vec<String> = p
        .probes
        .iter()
        .map(|w| {
            format!(
                "{} {} {:?} -> {} {:?}>{:?} {}",
                w.family,
                w.src_ns,
                w.src_ip,
                w.dst,
                w.src_node.as_deref(),
                w.dst_node.as_deref(),
                w.want
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            // No ingress policy on the servers.
            r#"v4 pc-node-node-2 Some(10.200.0.12) -> 10.200.31.10 Some("node-2")>Some("node-1") connected"#,
            r#"v6 pc-node-node-2 Some(fd00:200::12) -> fd00:200::31:10 Some("node-2")>Some("node-1") connected"#,
            // The clients may reach `host`: their own node only.
            r#"v4 pod-app-client-1 None -> 10.200.0.11 Some("node-1")>Some("node-1") connected"#,
            r#"v6 pod-app-client-1 None -> fd00:200::11 Some("node-1")>Some("node-1") connected"#,
            r#"v4 pod-app-client-1 None -> 10.200.0.12 Some("node-1")>Some("node-2") blocked"#,
            r#"v6 pod-app-client-1 None -> fd00:200::12 Some("node-1")>Some("node-2") blocked"#,
            r#"v4 pod-app-client-2 None -> 10.200.0.12 Some("node-2")>Some("node-2") connected"#,
            r#"v6 pod-app-client-2 None -> fd00:200::12 Some("node-2")>Some("node-2") connected"#,
        ]
    );
    assert_eq!(p.probes[0].src_pod, None);
    assert_eq!(p.probes[0].dst_pod.as_deref(), Some("app/server-1"));
}

#[test]
fn a_node_address_locates_in_that_nodes_namespace() {
    let c = case("cluster/entities-cluster.yaml", "[]");
    let state = cluster_lab(&c);
    let side = locate(
        &state,
        &c.topology,
        &None,
        &Some("10.200.0.12".into()),
        false,
    )
    .expect("node-2");
    assert_eq!(
        (side.ns.as_str(), side.node.as_deref(), side.binds),
        ("pc-node-node-2", Some("node-2"), true)
    );
    let pod = locate(
        &state,
        &c.topology,
        &Some("app/client-2".into()),
        &None,
        true,
    )
    .expect("client-2");
    assert_eq!(
        (pod.addr.to_string(), pod.node.as_deref(), pod.binds),
        ("fd00:200::32:11".to_string(), Some("node-2"), false)
    );
}
