//! A Cilium `toPorts` entry (`PortRule`: ports, L7 rules, TLS settings)
//! and an `icmps` field, as the port matches of a rule entry.

use super::parse::parse_port;
use super::rule::{Direction, PortMatch, PortSpec, Protocol, RuleError, rerr};
use super::tls::port_tls;
use crate::api::{self, IntOrString, PortRule};
use crate::l7::{L7Parser, L7Rules};
use std::sync::Arc;

pub(super) fn cilium_port_rule(
    pr: &PortRule,
    deny: bool,
    dir: Direction,
    path: &str,
) -> Result<Vec<PortMatch>, RuleError> {
    if pr.listener.is_some() {
        return Err(rerr(
            format!("{path}.listener"),
            "Envoy listeners are not supported by portcullis",
        ));
    }
    let l7 = match &pr.rules {
        None => None,
        Some(rules) => {
            if deny {
                return Err(rerr(
                    format!("{path}.rules"),
                    "L7 rules are not allowed in a deny rule",
                ));
            }
            let mut kinds = Vec::new();
            if rules.http.is_some() {
                kinds.push("http");
            }
            if rules.kafka.is_some() {
                kinds.push("kafka");
            }
            if rules.dns.is_some() {
                kinds.push("dns");
            }
            if rules.l7proto.is_some() || rules.l7.is_some() {
                kinds.push("l7proto");
            }
            if kinds.len() > 1 {
                return Err(rerr(
                    format!("{path}.rules"),
                    format!(
                        "mixed L7 rule types on one port ({}); use one protocol per port",
                        kinds.join(", ")
                    ),
                ));
            }
            if let Some(http) = &rules.http {
                crate::l7::http::HttpRuleSet::compile(http)
                    .map_err(|e| rerr(format!("{path}.rules.http"), e.to_string()))?;
                Some(Arc::new(L7Rules::Http(http.clone())))
            } else if let Some(k) = &rules.kafka {
                crate::l7::kafka::KafkaRuleSet::compile(k)
                    .map_err(|e| rerr(format!("{path}.rules.kafka"), e.to_string()))?;
                Some(Arc::new(L7Rules::Kafka(k.clone())))
            } else if let Some(d) = &rules.dns {
                if dir == Direction::Ingress {
                    return Err(rerr(
                        format!("{path}.rules.dns"),
                        "DNS rules are only supported on egress",
                    ));
                }
                crate::l7::dns::DnsRuleSet::compile(d)
                    .map_err(|e| rerr(format!("{path}.rules.dns"), e.to_string()))?;
                Some(Arc::new(L7Rules::Dns(d.clone())))
            } else if kinds.is_empty() {
                None
            } else {
                return Err(rerr(
                    format!("{path}.rules"),
                    "generic l7proto rules are not supported by portcullis",
                ));
            }
        }
    };
    if deny
        && (pr.server_names.is_some()
            || pr.terminating_tls.is_some()
            || pr.originating_tls.is_some())
    {
        return Err(rerr(
            path,
            "serverNames / TLS settings are not allowed in a deny rule",
        ));
    }
    let tls = port_tls(pr, l7.as_deref(), path)?;
    let mut out = Vec::new();
    let ports: Vec<api::PortProtocol> = if pr.ports.is_empty() {
        vec![api::PortProtocol::default()]
    } else {
        pr.ports.clone()
    };
    for (i, pp) in ports.iter().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        let protocol = match pp.protocol.as_deref() {
            None | Some("") => Protocol::Any,
            Some(s) => match Protocol::parse(s) {
                Some(Protocol::Icmp | Protocol::Icmpv6) | None => {
                    return Err(rerr(
                        format!("{ppath}.protocol"),
                        format!(
                            "{s:?} is not TCP, UDP, SCTP, ANY or an extended protocol \
                             (VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH); use `icmps` for ICMP"
                        ),
                    ));
                }
                Some(pr) => pr,
            },
        };
        if protocol.is_extended() {
            out.push(extended_port(
                pp,
                protocol,
                l7.is_some(),
                tls.is_some(),
                &ppath,
            )?);
            continue;
        }
        let port = parse_port(pp.port.as_ref(), pp.end_port, &ppath)?;
        if l7.is_some() || tls.is_some() {
            let what = if l7.is_some() {
                "L7 rules"
            } else {
                "serverNames / TLS settings"
            };
            match &port {
                PortSpec::Any => {
                    return Err(rerr(
                        format!("{ppath}.port"),
                        format!("{what} need a specific port"),
                    ));
                }
                PortSpec::Range(lo, hi) if lo != hi => {
                    return Err(rerr(
                        format!("{ppath}.endPort"),
                        format!("{what} cannot apply to a port range"),
                    ));
                }
                _ => {}
            }
            if tls.is_some() && protocol == Protocol::Udp {
                return Err(rerr(
                    format!("{ppath}.protocol"),
                    "serverNames / TLS settings need TCP",
                ));
            }
        }
        if let Some(rules) = &l7
            && rules.parser() != L7Parser::Dns
            && protocol == Protocol::Udp
        {
            return Err(rerr(
                format!("{ppath}.protocol"),
                format!("{} rules need TCP", rules.parser()),
            ));
        }
        out.push(PortMatch {
            protocol,
            port,
            l7: l7.clone(),
            tls: tls.clone(),
        });
    }
    Ok(out)
}

/// A port entry of an extended protocol (VRRP, IGMP, GRE, IPIP, IPV6, ESP,
/// AH): these carry no ports, so, as in Cilium, the port must be absent or
/// 0 (`"0"`, or `""`), with no `endPort`; the entry matches the whole
/// protocol. Nothing can be redirected to a proxy over them.
fn extended_port(
    pp: &api::PortProtocol,
    protocol: Protocol,
    l7: bool,
    tls: bool,
    ppath: &str,
) -> Result<PortMatch, RuleError> {
    let no_port = match &pp.port {
        None => true,
        Some(IntOrString::Int(i)) => *i == 0,
        Some(IntOrString::String(s)) => s.is_empty() || s == "0",
    };
    if !no_port {
        let given = match &pp.port {
            Some(IntOrString::Int(i)) => i.to_string(),
            Some(IntOrString::String(s)) => format!("{s:?}"),
            None => String::new(),
        };
        return Err(rerr(
            format!("{ppath}.port"),
            format!("{protocol} has no ports: the port must be 0 or absent, not {given}"),
        ));
    }
    if pp.end_port.is_some_and(|e| e != 0) {
        return Err(rerr(
            format!("{ppath}.endPort"),
            format!("{protocol} has no ports: endPort must be absent"),
        ));
    }
    if l7 || tls {
        let what = if l7 {
            "L7 rules"
        } else {
            "serverNames / TLS settings"
        };
        return Err(rerr(
            format!("{ppath}.protocol"),
            format!("{what} need TCP (or UDP for DNS), not {protocol}"),
        ));
    }
    Ok(PortMatch {
        protocol,
        port: PortSpec::Any,
        l7: None,
        tls: None,
    })
}

pub(super) fn icmp_field(f: &api::IcmpField, path: &str) -> Result<PortMatch, RuleError> {
    let family = f.family.as_deref().unwrap_or("IPv4");
    let protocol = match family {
        "IPv4" => Protocol::Icmp,
        "IPv6" => Protocol::Icmpv6,
        other => {
            return Err(rerr(
                format!("{path}.family"),
                format!("{other:?} is not IPv4 or IPv6"),
            ));
        }
    };
    let t = match &f.icmp_type {
        IntOrString::Int(i) if (0..=255).contains(i) => *i as u16,
        IntOrString::Int(i) => {
            return Err(rerr(format!("{path}.type"), format!("{i} is not 0..255")));
        }
        IntOrString::String(s) => icmp_type_by_name(protocol, s).ok_or_else(|| {
            rerr(
                format!("{path}.type"),
                format!("unknown ICMP type name {s:?} for {family}"),
            )
        })?,
    };
    Ok(PortMatch {
        protocol,
        port: PortSpec::Range(t, t),
        l7: None,
        tls: None,
    })
}

/// ICMP type names as Cilium accepts them.
fn icmp_type_by_name(p: Protocol, name: &str) -> Option<u16> {
    let v4: &[(&str, u16)] = &[
        ("EchoReply", 0),
        ("DestinationUnreachable", 3),
        ("Redirect", 5),
        ("Echo", 8),
        ("EchoRequest", 8),
        ("RouterAdvertisement", 9),
        ("RouterSelection", 10),
        ("TimeExceeded", 11),
        ("ParameterProblem", 12),
        ("Timestamp", 13),
        ("TimestampReply", 14),
        ("Photuris", 40),
        ("ExtendedEchoRequest", 42),
        ("ExtendedEchoReply", 43),
    ];
    let v6: &[(&str, u16)] = &[
        ("DestinationUnreachable", 1),
        ("PacketTooBig", 2),
        ("TimeExceeded", 3),
        ("ParameterProblem", 4),
        ("EchoRequest", 128),
        ("EchoReply", 129),
        ("MulticastListenerQuery", 130),
        ("MulticastListenerReport", 131),
        ("MulticastListenerDone", 132),
        ("RouterSolicitation", 133),
        ("RouterAdvertisement", 134),
        ("NeighborSolicitation", 135),
        ("NeighborAdvertisement", 136),
        ("RedirectMessage", 137),
        ("RouterRenumbering", 138),
        ("ICMPNodeInformationQuery", 139),
        ("ICMPNodeInformationResponse", 140),
        ("InverseNeighborDiscoverySolicitation", 141),
        ("InverseNeighborDiscoveryAdvertisement", 142),
        ("HomeAgentAddressDiscoveryRequest", 144),
        ("HomeAgentAddressDiscoveryReply", 145),
        ("MobilePrefixSolicitation", 146),
        ("MobilePrefixAdvertisement", 147),
        ("DuplicateAddressRequestCodeSuffix", 157),
        ("DuplicateAddressConfirmationCodeSuffix", 158),
        ("ExtendedEchoRequest", 160),
        ("ExtendedEchoReply", 161),
    ];
    let table = if p == Protocol::Icmp { v4 } else { v6 };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests;
