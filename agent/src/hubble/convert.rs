//! Hubble flows from what the agent sees: the kernel's flow events (L3/L4
//! verdicts) and the proxies' access records (L7), with the endpoints'
//! names and labels and the policies that decided.
//!
//! [`FlowContext`] is the agent's view at one moment (pods by address,
//! identities' labels, each local endpoint's deciding rules by the cookie
//! the kernel reports); the daemon's loop publishes a new one when the
//! cluster or the policy changes, and the flow pump converts with it.

// Hubble still fills `drop_reason` and `Summary`, which its proto marks
// deprecated; so do these flows.
#![allow(deprecated)]

use super::flow::{self, Flow};
use policy_model::Direction;
use policy_model::origin::PolicyRef;
use redirect_ebpf::{FlowEvent, Reason};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A pod as flows name it.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// `k8s:key=value`, with `k8s:io.kubernetes.pod.namespace=NS`.
    pub labels: Vec<String>,
    pub identity: u32,
    /// The local endpoint id (0 on another node).
    pub endpoint_id: u32,
}

/// What decided for one local endpoint: the policies behind each rule
/// cookie the kernel can report, and the policies that make each direction
/// default-deny.
#[derive(Debug, Clone, Default)]
pub struct EndpointRules {
    pub by_cookie: HashMap<u32, Vec<Arc<PolicyRef>>>,
    pub enforcing_ingress: Vec<Arc<PolicyRef>>,
    pub enforcing_egress: Vec<Arc<PolicyRef>>,
    /// The audited policies that would make each direction default-deny.
    pub audit_enforcing_ingress: Vec<Arc<PolicyRef>>,
    pub audit_enforcing_egress: Vec<Arc<PolicyRef>>,
    /// `spec.log.value` of the rules behind each cookie.
    pub logs_by_cookie: HashMap<u32, Vec<Arc<str>>>,
    /// `spec.log.value` by `Kind ns/name rule-path` (the proxies name
    /// their rules so).
    pub logs_by_rule: HashMap<String, Arc<str>>,
    /// The redirected ports and the policies whose L7 rules they serve.
    pub redirects: Vec<(Direction, policy_model::PortKey, Vec<Arc<PolicyRef>>)>,
}

/// Every pod of the cluster by address.
pub type Pods = Arc<HashMap<IpAddr, Arc<PodInfo>>>;
/// Labels of identities that are not pods.
pub type IdentityLabels = Arc<HashMap<u32, Vec<String>>>;

/// The agent's view the flows are written with.
#[derive(Debug, Clone, Default)]
pub struct FlowContext {
    pub node: String,
    pub pods: Pods,
    /// Labels of identities that are not pods (reserved, CIDR, FQDN).
    pub identities: IdentityLabels,
    /// Local endpoint id -> its deciding rules.
    pub endpoints: HashMap<u16, Arc<EndpointRules>>,
}

/// The context, shared between the loop (writer) and the pump (reader).
pub type SharedContext = Arc<std::sync::RwLock<Arc<FlowContext>>>;

/// Hubble's monitor message types (`event_type.type`).
pub mod event_type {
    pub const DROP: i32 = 1;
    pub const TRACE: i32 = 4;
    pub const POLICY_VERDICT: i32 = 9;
    pub const ACCESS_LOG: i32 = 129;
}

/// A policy as Hubble names it, with Cilium's policy labels.
pub fn policy(p: &PolicyRef) -> flow::Policy {
    let kind = p.kind.as_str();
    let mut labels = vec![
        format!("k8s:io.cilium.k8s.policy.derived-from={kind}"),
        format!("k8s:io.cilium.k8s.policy.name={}", p.name),
    ];
    if let Some(ns) = &p.namespace {
        labels.push(format!("k8s:io.cilium.k8s.policy.namespace={ns}"));
    }
    labels.push("k8s:io.cilium.k8s.policy.source=portcullis".into());
    flow::Policy {
        name: p.name.clone(),
        namespace: p.namespace.clone().unwrap_or_default(),
        labels,
        revision: 0,
        kind: kind.to_string(),
    }
}

impl FlowContext {
    /// The endpoint at `ip` with identity `id`.
    pub fn endpoint(&self, ip: IpAddr, id: u32) -> flow::Endpoint {
        if let Some(p) = self.pods.get(&ip.to_canonical()) {
            return flow::Endpoint {
                id: p.endpoint_id,
                identity: if id != 0 { id } else { p.identity },
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                pod_name: p.name.clone(),
                ..flow::Endpoint::default()
            };
        }
        let labels = self
            .identities
            .get(&id)
            .cloned()
            .unwrap_or_else(|| reserved_label(id).map(|l| vec![l]).unwrap_or_default());
        flow::Endpoint {
            identity: id,
            labels,
            ..flow::Endpoint::default()
        }
    }

    /// The policies behind a kernel verdict of `endpoint`: the rule that
    /// matched, or, when nothing matched, the policies that made the
    /// direction default-deny.
    fn deciding(
        &self,
        endpoint: u16,
        dir: Direction,
        cookie: u32,
        no_entry: bool,
        audit: bool,
    ) -> Vec<flow::Policy> {
        let Some(rules) = self.endpoints.get(&endpoint) else {
            return vec![];
        };
        let audit_default: Vec<Arc<PolicyRef>>;
        let list = if no_entry {
            // The policies of the direction's default deny: enforced ones
            // (a drop, or an audited endpoint's would-be drop) and audited
            // ones (an audited policy's would-be drop).
            let (enforced, audited) = match dir {
                Direction::Ingress => (&rules.enforcing_ingress, &rules.audit_enforcing_ingress),
                Direction::Egress => (&rules.enforcing_egress, &rules.audit_enforcing_egress),
            };
            // A drop is the enforced policies' doing; an AUDIT may be the
            // audited policies' too.
            let audited: &[Arc<PolicyRef>] = if audit { audited } else { &[] };
            audit_default = enforced.iter().chain(audited).cloned().collect();
            &audit_default
        } else {
            match rules.by_cookie.get(&cookie) {
                Some(l) => l,
                None => return vec![],
            }
        };
        let mut out: Vec<flow::Policy> = Vec::new();
        for p in list {
            let p = policy(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// `reserved:NAME` for Cilium's reserved identities.
fn reserved_label(id: u32) -> Option<String> {
    policy_model::identity::RESERVED
        .iter()
        .find(|(n, _)| n.0 == id)
        .map(|(_, name)| format!("reserved:{name}"))
}

fn timestamp(unix_ns: u128) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: i64::try_from(unix_ns / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(unix_ns % 1_000_000_000).unwrap_or(0),
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn l4(protocol: u8, sport: u16, dport: u16) -> Option<flow::Layer4> {
    use flow::layer4::Protocol as P;
    let (s, d) = (u32::from(sport), u32::from(dport));
    let p = match protocol {
        6 => P::Tcp(flow::Tcp {
            source_port: s,
            destination_port: d,
            flags: None,
        }),
        17 => P::Udp(flow::Udp {
            source_port: s,
            destination_port: d,
        }),
        132 => P::Sctp(flow::Sctp {
            source_port: s,
            destination_port: d,
        }),
        // The datapath reports ICMP's type and code in the port fields.
        1 => P::IcmPv4(flow::IcmPv4 { r#type: s, code: d }),
        58 => P::IcmPv6(flow::IcmPv6 { r#type: s, code: d }),
        _ => return None,
    };
    Some(flow::Layer4 { protocol: Some(p) })
}

fn ip_of(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(*b)
    }
}

fn ip_header(s: IpAddr, d: IpAddr) -> flow::Ip {
    flow::Ip {
        source: s.to_string(),
        destination: d.to_string(),
        ip_version: if s.is_ipv4() {
            flow::IpVersion::IPv4 as i32
        } else {
            flow::IpVersion::IPv6 as i32
        },
        encrypted: false,
    }
}

/// Hubble's drop reason for the datapath's.
fn drop_reason(r: Option<Reason>) -> flow::DropReason {
    use flow::DropReason as D;
    match r {
        Some(Reason::DropPolicyDenied) => D::PolicyDeny,
        Some(Reason::DropNoPolicy | Reason::DropRevoked) => D::PolicyDenied,
        Some(Reason::DropSpoofed) => D::InvalidSourceIp,
        Some(Reason::DropProxyUnavailable | Reason::DropRedirectAtEgress) => {
            D::ProxyRedirectionNotSupportedForProtocol
        }
        Some(Reason::DropMalformed) => D::InvalidPacketDropped,
        Some(Reason::DropFragment) => D::IpFragmentationNotSupported,
        Some(Reason::DropNotIp) => D::UnsupportedL3Protocol,
        _ => D::Unknown,
    }
}

fn summary(f: &Flow, reason: &str) -> String {
    let proto = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(flow::layer4::Protocol::Tcp(_)) => "TCP",
        Some(flow::layer4::Protocol::Udp(_)) => "UDP",
        Some(flow::layer4::Protocol::Sctp(_)) => "SCTP",
        Some(flow::layer4::Protocol::IcmPv4(_)) => "ICMPv4",
        Some(flow::layer4::Protocol::IcmPv6(_)) => "ICMPv6",
        None => "IP",
    };
    format!("{proto} {reason}")
}

/// A kernel verdict as a Hubble flow.
pub fn kernel_flow(ev: &FlowEvent, ctx: &FlowContext) -> Flow {
    let (s, d) = (ip_of(ev.family, &ev.saddr), ip_of(ev.family, &ev.daddr));
    let reason = Reason::from_code(ev.reason);
    let dir = if ev.direction == 0 {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let (verdict, event_type, sub_type) = match ev.verdict {
        1 => (
            flow::Verdict::Dropped,
            event_type::DROP,
            drop_reason(reason) as i32,
        ),
        2 => (flow::Verdict::Redirected, event_type::POLICY_VERDICT, 0),
        3 => (flow::Verdict::Audit, event_type::POLICY_VERDICT, 0),
        _ => (flow::Verdict::Forwarded, event_type::POLICY_VERDICT, 0),
    };
    let no_entry = matches!(reason, Some(Reason::DropNoPolicy | Reason::AuditNoPolicy));
    let decided_by_policy = matches!(
        reason,
        Some(
            Reason::DropNoPolicy
                | Reason::DropPolicyDenied
                | Reason::PassPolicy
                | Reason::Redirect
                | Reason::AuditDenied
                | Reason::AuditNoPolicy
        )
    );
    let policy_log: Vec<String> = if decided_by_policy && !no_entry {
        ctx.endpoints
            .get(&ev.endpoint_id)
            .and_then(|r| r.logs_by_cookie.get(&ev.rule_cookie))
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    } else {
        vec![]
    };
    let policies = if decided_by_policy {
        let audit = verdict == flow::Verdict::Audit;
        ctx.deciding(ev.endpoint_id, dir, ev.rule_cookie, no_entry, audit)
    } else {
        vec![]
    };
    let mut f = Flow {
        time: Some(timestamp(crate::time::monotonic_to_wall(ev.timestamp_ns).0)),
        uuid: uuid::Uuid::new_v4().to_string(),
        verdict: verdict as i32,
        ip: Some(ip_header(s, d)),
        l4: l4(ev.protocol, ev.sport, ev.dport),
        source: Some(ctx.endpoint(s, ev.src_identity)),
        destination: Some(ctx.endpoint(d, ev.dst_identity)),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: ctx.node.clone(),
        event_type: Some(flow::CiliumEventType {
            r#type: event_type,
            sub_type,
        }),
        traffic_direction: match dir {
            Direction::Ingress => flow::TrafficDirection::Ingress as i32,
            Direction::Egress => flow::TrafficDirection::Egress as i32,
        },
        is_reply: Some(matches!(reason, Some(Reason::PassReply)).into()),
        proxy_port: u32::from(ev.proxy_port),
        policy_log,
        ..Flow::default()
    };
    if verdict == flow::Verdict::Audit {
        // Passed; the policies named are the ones that would drop it.
        match dir {
            Direction::Ingress => f.ingress_denied_by = policies,
            Direction::Egress => f.egress_denied_by = policies,
        }
    } else if verdict == flow::Verdict::Dropped {
        f.drop_reason = sub_type as u32;
        f.drop_reason_desc = sub_type;
        match dir {
            Direction::Ingress => f.ingress_denied_by = policies,
            Direction::Egress => f.egress_denied_by = policies,
        }
    } else {
        match dir {
            Direction::Ingress => f.ingress_allowed_by = policies,
            Direction::Egress => f.egress_allowed_by = policies,
        }
    }
    let why = reason
        .map(|r| format!("{r:?}"))
        .unwrap_or_else(|| format!("reason-{}", ev.reason));
    f.summary = summary(&f, &why);
    f
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Policies named in a proxy's reason (`Kind ns/name path; ...`).
fn policies_in(reason: &str) -> Vec<flow::Policy> {
    let mut out: Vec<flow::Policy> = Vec::new();
    for part in reason.split("; ") {
        let mut words = part.split(' ');
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let kind = match kind {
            "NetworkPolicy" => policy_model::origin::PolicyKind::NetworkPolicy,
            "CiliumNetworkPolicy" => policy_model::origin::PolicyKind::CiliumNetworkPolicy,
            "CiliumClusterwideNetworkPolicy" => {
                policy_model::origin::PolicyKind::CiliumClusterwideNetworkPolicy
            }
            _ => continue,
        };
        let (namespace, name) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, name.to_string()),
        };
        let mut p = policy(&PolicyRef {
            kind,
            namespace,
            name,
            file: None,
            document: None,
        });
        // The rule that matched, where the proxy names it.
        if let Some(rule) = words.next() {
            p.labels.push(format!("portcullis:rule={rule}"));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// An access record of a proxy as a Hubble L7 flow; `None` for a line
/// that is no request (a header edit, a connection a policy change
/// closed, a TLS connection passed through).
///
/// Verdicts, whatever the protocol: `Allowed` forwarded (the policies
/// named allowed it), `UpstreamError` an error, `Audit` forwarded although
/// a policy would deny it (the policies named would: `*_denied_by`, as
/// the kernel's AUDIT flows), anything else dropped.
pub fn access_flow(line: &str, ctx: &FlowContext) -> Option<Flow> {
    let v: Value = serde_json::from_str(line).ok()?;
    let src: SocketAddr = str_of(&v, "src").parse().ok()?;
    let dst: SocketAddr = str_of(&v, "dst").parse().ok()?;
    let identity = |k: &str| -> u32 {
        match &v[k] {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        }
    };
    let (sid, did) = (identity("src_identity"), identity("dst_identity"));
    let verdict_text = str_of(&v, "verdict");
    let allowed = matches!(verdict_text, "Allowed" | "allowed");
    // Forwarded although a policy would deny it.
    let audit = matches!(verdict_text, "Audit" | "audit");
    // Allowed but the upstream failed: forwarded, and an error.
    let upstream_error = matches!(verdict_text, "UpstreamError" | "upstream_error");
    let reason = str_of(&v, "reason");
    let latency_ns = v["latency_us"].as_u64().unwrap_or(0).saturating_mul(1000);
    let protocol = str_of(&v, "protocol");
    let (record, l4proto, code) = match protocol {
        "dns" => {
            let answers: Vec<String> = str_of(&v, "answers")
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            let ips = answers
                .iter()
                .filter(|a| a.parse::<IpAddr>().is_ok())
                .cloned()
                .collect();
            let rcode = rcode_number(str_of(&v, "rcode"));
            let proto = if str_of(&v, "transport") == "tcp" {
                6
            } else {
                17
            };
            let query = str_of(&v, "query");
            let query = if query.ends_with('.') || query.is_empty() {
                query.to_string()
            } else {
                format!("{query}.")
            };
            (
                Some(flow::layer7::Record::Dns(flow::Dns {
                    query,
                    ips,
                    qtypes: vec![str_of(&v, "qtype").to_string()],
                    rrtypes: vec![],
                    rcode,
                    observation_source: "proxy".into(),
                    ..flow::Dns::default()
                })),
                proto,
                rcode,
            )
        }
        "kafka" => (
            Some(flow::layer7::Record::Kafka(flow::Kafka {
                error_code: if str_of(&v, "error").is_empty() {
                    0
                } else {
                    -1
                },
                api_version: v["api_version"].as_i64().unwrap_or(0) as i32,
                api_key: str_of(&v, "api_key").to_string(),
                correlation_id: v["correlation_id"].as_i64().unwrap_or(0) as i32,
                topic: str_of(&v, "topics").to_string(),
            })),
            6,
            0,
        ),
        // A TLS connection closed, or passed only in audit mode: a flow
        // without a record (Hubble has none for TLS). One passed through
        // is no decision of an L7 rule.
        "tls" if !allowed && !upstream_error => (None, 6, 0),
        "tls" => return None,
        _ if v.get("method").is_some() => {
            let status = v["status"].as_u64().unwrap_or(0) as u32;
            let authority = str_of(&v, "authority");
            let path = str_of(&v, "path");
            let url = if authority.is_empty() {
                path.to_string()
            } else {
                format!("http://{authority}{path}")
            };
            let proto_label = match protocol {
                "Http2" | "h2" | "HTTP/2" => "HTTP/2",
                "Grpc" | "grpc" => "HTTP/2",
                _ => "HTTP/1.1",
            };
            (
                Some(flow::layer7::Record::Http(flow::Http {
                    code: status,
                    method: str_of(&v, "method").to_string(),
                    url,
                    protocol: proto_label.to_string(),
                    headers: vec![],
                })),
                6,
                status,
            )
        }
        _ => return None,
    };
    let _ = code;
    // The proxy that judged: the destination's (ingress) when the
    // destination is a local endpoint, else the source's (egress).
    let dst_pod = ctx.pods.get(&dst.ip().to_canonical());
    let ingress = dst_pod.is_some_and(|p| p.endpoint_id != 0);
    let mut policies = policies_in(reason);
    // The judging side's endpoint (ingress: the destination's).
    let judge = if ingress {
        dst_pod
    } else {
        ctx.pods.get(&src.ip().to_canonical())
    }
    .and_then(|p| ctx.endpoints.get(&(p.endpoint_id as u16)));
    let policy_log: Vec<String> = judge
        .map(|rules| {
            reason
                .split("; ")
                .filter_map(|part| {
                    let rule = part.split_once(".rules.").map_or(part, |(r, _)| r);
                    rules.logs_by_rule.get(rule).map(|l| l.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if policies.is_empty() {
        // A denial or an AUDIT names no rule (none matched, or an end's
        // L3/L4 entry would refuse): the policies whose L7 rules the
        // judging side's port is redirected for, audited ones included.
        let (side, dir) = if ingress {
            (dst_pod, Direction::Ingress)
        } else {
            (ctx.pods.get(&src.ip().to_canonical()), Direction::Egress)
        };
        if let Some(rules) = side.and_then(|p| ctx.endpoints.get(&(p.endpoint_id as u16))) {
            for (d, port, origins) in &rules.redirects {
                if *d == dir && port.matches(l4proto, dst.port()) {
                    for o in origins {
                        let p = policy(o);
                        if !policies.contains(&p) {
                            policies.push(p);
                        }
                    }
                }
            }
        }
    }
    let mut f = Flow {
        time: Some(timestamp(now_ns())),
        uuid: uuid::Uuid::new_v4().to_string(),
        verdict: if allowed {
            flow::Verdict::Forwarded as i32
        } else if audit {
            flow::Verdict::Audit as i32
        } else if upstream_error {
            flow::Verdict::Error as i32
        } else {
            flow::Verdict::Dropped as i32
        },
        ip: Some(ip_header(src.ip().to_canonical(), dst.ip().to_canonical())),
        l4: l4(l4proto, src.port(), dst.port()),
        source: Some(ctx.endpoint(src.ip().to_canonical(), sid)),
        destination: Some(ctx.endpoint(dst.ip().to_canonical(), did)),
        r#type: flow::FlowType::L7 as i32,
        node_name: ctx.node.clone(),
        l7: Some(flow::Layer7 {
            r#type: flow::L7FlowType::Response as i32,
            latency_ns,
            record,
        }),
        event_type: Some(flow::CiliumEventType {
            r#type: event_type::ACCESS_LOG,
            sub_type: 0,
        }),
        traffic_direction: if ingress {
            flow::TrafficDirection::Ingress as i32
        } else {
            flow::TrafficDirection::Egress as i32
        },
        is_reply: Some(true.into()),
        policy_log,
        ..Flow::default()
    };
    if !allowed && !upstream_error && !audit {
        f.drop_reason_desc = flow::DropReason::PolicyDenied as i32;
        f.drop_reason = f.drop_reason_desc as u32;
    }
    // An AUDIT passed; the policies named are the ones that would deny.
    match (allowed || upstream_error, ingress) {
        (true, true) => f.ingress_allowed_by = policies,
        (true, false) => f.egress_allowed_by = policies,
        (false, true) => f.ingress_denied_by = policies,
        (false, false) => f.egress_denied_by = policies,
    }
    f.summary = if protocol == "tls" {
        let sni = match str_of(&v, "sni") {
            "" => "(none)",
            sni => sni,
        };
        format!("TLS SNI {sni} ({verdict_text}: {reason})")
    } else {
        l7_summary(&f, verdict_text, reason)
    };
    Some(f)
}

fn l7_summary(f: &Flow, verdict: &str, reason: &str) -> String {
    match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(flow::layer7::Record::Http(h)) => {
            format!(
                "{} {} {} => {} ({verdict}: {reason})",
                h.protocol, h.method, h.url, h.code
            )
        }
        Some(flow::layer7::Record::Dns(d)) => format!(
            "DNS Answer \"{}\" {} rcode {} ({verdict}: {reason})",
            d.ips.join(","),
            d.query,
            d.rcode
        ),
        Some(flow::layer7::Record::Kafka(k)) => format!(
            "Kafka {} v{} topic {} ({verdict}: {reason})",
            k.api_key, k.api_version, k.topic
        ),
        None => String::new(),
    }
}

/// The number of a DNS response code's mnemonic (`NOERROR` 0, `REFUSED` 5).
fn rcode_number(name: &str) -> u32 {
    match name.to_ascii_uppercase().as_str() {
        "NOERROR" | "NO ERROR" => 0,
        "FORMERR" | "FORM ERROR" => 1,
        "SERVFAIL" | "SERVER FAILURE" => 2,
        "NXDOMAIN" | "NON-EXISTENT DOMAIN" => 3,
        "NOTIMP" | "NOT IMPLEMENTED" => 4,
        "REFUSED" | "QUERY REFUSED" => 5,
        other => other.parse().unwrap_or(0),
    }
}

/// Every pod of the cluster by address.
pub fn pods_of(engine: &policy_model::incremental::IncrementalCluster) -> Pods {
    let local: HashMap<String, u16> = engine.endpoints().map(|e| (e.full_name(), e.id)).collect();
    let mut pods = HashMap::new();
    for p in engine.pods() {
        let full = p.full_name();
        let mut labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("k8s:{k}={v}"))
            .collect();
        labels.push(format!("k8s:io.kubernetes.pod.namespace={}", p.namespace));
        let identity = p
            .addresses()
            .first()
            .map(|a| engine.identity_of_ip(*a).0)
            .unwrap_or(0);
        let info = Arc::new(PodInfo {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels,
            identity,
            endpoint_id: local.get(&full).map(|id| u32::from(*id)).unwrap_or(0),
        });
        for a in p.addresses() {
            pods.insert(a.to_canonical(), info.clone());
        }
    }
    Arc::new(pods)
}

/// The labels of the identities that are not pods: reserved ones and the
/// node-local CIDR and FQDN ones (a CIDR group member's carry its
/// `cidrgroup:` labels, as Hubble shows them).
pub fn identity_labels(engine: &policy_model::incremental::IncrementalCluster) -> IdentityLabels {
    let identities = engine
        .state()
        .identities
        .values()
        .filter(|i| i.kind != policy_model::identity::IdentityKind::Endpoint)
        .map(|i| (i.id.0, label_strings(&i.labels)))
        .collect();
    Arc::new(identities)
}

fn label_strings(l: &policy_model::labels::LabelSet) -> Vec<String> {
    l.iter()
        .map(|(k, v)| {
            if v.value.is_empty() {
                format!("{}:{k}", v.source)
            } else {
                format!("{}:{k}={}", v.source, v.value)
            }
        })
        .collect()
}

/// The deciding rules of one local endpoint, from its resolved policy.
pub fn endpoint_rules(policy: &policy_model::resolve::EndpointPolicy) -> EndpointRules {
    let mut by_cookie: HashMap<u32, Vec<Arc<PolicyRef>>> = HashMap::new();
    let mut logs_by_cookie: HashMap<u32, Vec<Arc<str>>> = HashMap::new();
    let mut logs_by_rule: HashMap<String, Arc<str>> = HashMap::new();
    let mut redirects = Vec::new();
    for c in policy.provenance.values().flatten() {
        if let (Some(o), Some(log)) = (&c.origin, &c.log) {
            logs_by_rule.insert(format!("{o} {}", c.rule), log.clone());
        }
    }
    for (key, value) in &policy.map.entries {
        if by_cookie.contains_key(&value.cookie) && value.redirect.is_none() {
            continue;
        }
        let origins = policy
            .provenance
            .get(key)
            .map(|cs| {
                let mut v: Vec<Arc<PolicyRef>> = Vec::new();
                for c in cs {
                    if let Some(o) = &c.origin
                        && !v.contains(o)
                    {
                        v.push(o.clone());
                    }
                }
                v
            })
            .unwrap_or_default();
        if value.redirect.is_some() {
            // The audited policies whose L7 rules the port is judged by
            // too (an AUDIT may be theirs).
            let mut redirected = origins.clone();
            if let Some(a) = policy.l7.get(key).and_then(|l| l.audit.as_deref()) {
                let plain = a.rules.iter().map(|(_, origin, _)| origin);
                for o in plain.chain(a.tls.iter().map(|t| &t.origin)) {
                    if !redirected.contains(o) {
                        redirected.push(o.clone());
                    }
                }
            }
            redirects.push((key.direction, key.port, redirected));
        }
        let mut logs: Vec<Arc<str>> = Vec::new();
        for c in policy.provenance.get(key).into_iter().flatten() {
            if let Some(l) = &c.log
                && !logs.contains(l)
            {
                logs.push(l.clone());
            }
        }
        logs_by_cookie.insert(value.cookie, logs);
        by_cookie.insert(value.cookie, origins);
    }
    let enforcing = |d: Direction| policy.enforcing.get(&d).cloned().unwrap_or_default();
    let audit_enforcing =
        |d: Direction| policy.audit_enforcing.get(&d).cloned().unwrap_or_default();
    EndpointRules {
        by_cookie,
        enforcing_ingress: enforcing(Direction::Ingress),
        enforcing_egress: enforcing(Direction::Egress),
        audit_enforcing_ingress: audit_enforcing(Direction::Ingress),
        audit_enforcing_egress: audit_enforcing(Direction::Egress),
        logs_by_cookie,
        logs_by_rule,
        redirects,
    }
}

#[cfg(test)]
mod tests;
