use super::*;
use crate::rules::Peer;
use crate::rules::testing::*;

#[test]
fn cnp_ports_default_to_any_protocol() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts: [{{ports: [{{port: '53'}}, {{port: '80', protocol: TCP}}]}}]"
    ));
    let e = &r.ingress.entries[0];
    assert_eq!(
        e.peers,
        vec![Peer::All],
        "L4-only rule applies to all peers"
    );
    let ports = e.ports.as_ref().expect("ports");
    assert_eq!(ports[0].protocol, Protocol::Any);
    assert_eq!(ports[0].port, PortSpec::Range(53, 53));
    assert_eq!(ports[1].protocol, Protocol::Tcp);
    assert_eq!(
        Protocol::Any.expand(),
        &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
    );
}

#[test]
fn cnp_port_zero_or_empty_is_all_ports_and_end_port_makes_a_range() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toPorts: [{{ports: [{{port: '0', protocol: UDP}}, {{port: '', protocol: TCP}}, {{port: '1000', endPort: 2000}}, {{protocol: TCP}}]}}]"
    ));
    let ports: Vec<PortSpec> = r.egress.entries[0]
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(
        ports,
        vec![
            PortSpec::Any,
            PortSpec::Any,
            PortSpec::Range(1000, 2000),
            PortSpec::Any
        ]
    );
}

#[test]
fn kafka_role_and_api_key_together_is_rejected_with_its_path() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts:
    - ports: [{{port: '9092', protocol: TCP}}]
      rules: {{kafka: [{{role: produce, apiKey: produce}}]}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].toPorts[0].rules.kafka");
    assert!(
        e.reason.contains("role") && e.reason.contains("apiKey"),
        "{}",
        e.reason
    );
}

#[test]
fn mixed_l7_types_on_one_port_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules: {{http: [{{}}], dns: [{{matchPattern: '*'}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toPorts[0].rules");
    assert!(
        e.reason.contains("http") && e.reason.contains("dns"),
        "{}",
        e.reason
    );
}

#[test]
fn l7_rules_in_a_deny_rule_are_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingressDeny:
  - toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules: {{http: [{{method: GET}}]}}"
    ));
    assert_eq!(e.path, "spec.ingressDeny[0].toPorts[0].rules");
    assert!(e.reason.contains("deny"), "{}", e.reason);
}

#[test]
fn icmps_with_to_ports_is_rejected() {
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts: [{{ports: [{{port: '80'}}]}}]
    icmps: [{{fields: [{{type: 8}}]}}]"
    ));
    assert_eq!(e.path, "spec.ingress[0].icmps");
}

#[test]
fn icmp_fields_become_type_matches() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress:
  - icmps:
    - fields: [{{type: 8}}, {{type: EchoRequest, family: IPv6}}, {{type: TimeExceeded}}]"
    ));
    let e = &r.egress.entries[0];
    assert_eq!(e.peers, vec![Peer::All]);
    let got: Vec<(Protocol, PortSpec)> = e
        .ports
        .clone()
        .expect("icmp ports")
        .into_iter()
        .map(|p| (p.protocol, p.port))
        .collect();
    assert_eq!(
        got,
        vec![
            (Protocol::Icmp, PortSpec::Range(8, 8)),
            (Protocol::Icmpv6, PortSpec::Range(128, 128)),
            (Protocol::Icmp, PortSpec::Range(11, 11)),
        ]
    );
    for (field, path) in [
        ("{type: 256}", "spec.egress[0].icmps[0].fields[0].type"),
        ("{type: Bogus}", "spec.egress[0].icmps[0].fields[0].type"),
        (
            "{type: PacketTooBig}",
            "spec.egress[0].icmps[0].fields[0].type",
        ),
        (
            "{type: 8, family: IPv5}",
            "spec.egress[0].icmps[0].fields[0].family",
        ),
    ] {
        let e = cnp_err(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{icmps: [{{fields: [{field}]}}]}}]}}"
        ));
        assert_eq!(e.path, path, "{field}");
    }
}

#[test]
fn cnp_port_errors_name_their_path() {
    for (ports, path) in [
        (
            "{port: '90', endPort: 80}",
            "spec.ingress[0].toPorts[0].ports[0].endPort",
        ),
        (
            "{port: 'Not_A_Name'}",
            "spec.ingress[0].toPorts[0].ports[0].port",
        ),
        (
            "{port: '80', protocol: ICMP}",
            "spec.ingress[0].toPorts[0].ports[0].protocol",
        ),
        (
            "{port: '65536'}",
            "spec.ingress[0].toPorts[0].ports[0].port",
        ),
    ] {
        let e = cnp_err(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{toPorts: [{{ports: [{ports}]}}]}}]}}"
        ));
        assert_eq!(e.path, path, "{ports}");
    }
}

#[test]
fn l7_rules_need_one_specific_tcp_port() {
    let base = |ports: &str, rules: &str, dir: &str| {
        cnp(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, {dir}: [{{toPorts: [{{ports: [{ports}], rules: {rules}}}]}}]}}"
        ))
    };
    let http = "{http: [{method: GET}]}";
    assert_eq!(
        base("{protocol: TCP}", http, "ingress").unwrap_err().path,
        "spec.ingress[0].toPorts[0].ports[0].port"
    );
    assert_eq!(
        base("{port: '80', endPort: 81}", http, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].ports[0].endPort"
    );
    assert_eq!(
        base("{port: '80', protocol: UDP}", http, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].ports[0].protocol"
    );
    let dns = "{dns: [{matchPattern: '*'}]}";
    assert!(base("{port: '53', protocol: UDP}", dns, "egress").is_ok());
    assert_eq!(
        base("{port: '53', protocol: UDP}", dns, "ingress")
            .unwrap_err()
            .path,
        "spec.ingress[0].toPorts[0].rules.dns"
    );
    let ok = base("{port: '80', protocol: TCP}", http, "ingress")
        .expect("valid")
        .remove(0);
    let pm = &ok.ingress.entries[0].ports.as_ref().expect("ports")[0];
    assert_eq!(pm.l7.as_deref().map(L7Rules::parser), Some(L7Parser::Http));
}

#[test]
fn extended_protocols_match_the_whole_protocol_with_no_port() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  ingress:
  - toPorts: [{{ports: [{{protocol: GRE}}, {{protocol: vrrp, port: '0'}}, {{protocol: Esp, port: 0}}, {{protocol: AH, port: ''}}, {{protocol: IPIP}}, {{protocol: IPv6}}, {{protocol: IGMP}}]}}]
  egressDeny:
  - toPorts: [{{ports: [{{protocol: ESP}}]}}]"
    ));
    let got: Vec<(Protocol, PortSpec)> = r.ingress.entries[0]
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .map(|p| (p.protocol, p.port))
        .collect();
    assert_eq!(
        got,
        [
            Protocol::Gre,
            Protocol::Vrrp,
            Protocol::Esp,
            Protocol::Ah,
            Protocol::Ipip,
            Protocol::Ipv6Encap,
            Protocol::Igmp
        ]
        .map(|p| (p, PortSpec::Any))
    );
    let deny = &r.egress.entries[0];
    assert!(deny.deny);
    assert_eq!(
        deny.ports.as_ref().expect("ports")[0].protocol,
        Protocol::Esp
    );
}

#[test]
fn extended_protocol_errors_name_the_field_and_why() {
    let at = "spec.ingress[0].toPorts[0].ports[0]";
    for (ports, field, reason) in [
        (
            "{protocol: GRE, port: 80}",
            "port",
            "GRE has no ports: the port must be 0 or absent, not 80",
        ),
        (
            "{protocol: esp, port: '500'}",
            "port",
            "ESP has no ports: the port must be 0 or absent, not \"500\"",
        ),
        (
            "{protocol: AH, port: https}",
            "port",
            "AH has no ports: the port must be 0 or absent, not \"https\"",
        ),
        (
            "{protocol: VRRP, endPort: 90}",
            "endPort",
            "VRRP has no ports: endPort must be absent",
        ),
        (
            "{protocol: OSPF}",
            "protocol",
            "\"OSPF\" is not TCP, UDP, SCTP, ANY or an extended protocol (VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH); use `icmps` for ICMP",
        ),
    ] {
        let e = cnp_err(&format!(
            "{CNP_HEAD}spec: {{endpointSelector: {{}}, ingress: [{{toPorts: [{{ports: [{ports}]}}]}}]}}"
        ));
        assert_eq!(e.path, format!("{at}.{field}"), "{ports}");
        assert_eq!(e.reason, reason, "{ports}");
    }
    // Nothing is redirected over a protocol without ports.
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec: {{endpointSelector: {{}}, egress: [{{toPorts: [{{ports: [{{protocol: GRE}}], rules: {{dns: [{{matchName: a.b}}]}}}}]}}]}}"
    ));
    assert_eq!(e.path, "spec.egress[0].toPorts[0].ports[0].protocol");
    assert_eq!(e.reason, "L7 rules need TCP (or UDP for DNS), not GRE");
}
