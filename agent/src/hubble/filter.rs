//! Hubble's flow filters: `whitelist`/`blacklist` of `FlowFilter`s, each
//! compiled once per request (addresses, regular expressions, label
//! selectors) and matched against every flow. Within one filter every set
//! field must match, and within a field any of its values; a request
//! passes a flow that matches any whitelist filter (or there is none) and
//! no blacklist filter.
//!
//! A field this server cannot honour, or a value it cannot read, is an
//! error (gRPC InvalidArgument) naming the field and the value: a filter is
//! never silently widened.

use super::flow::{self, Flow, FlowFilter};
use ipnet::IpNet;
use regex::Regex;
use std::net::IpAddr;

/// A request's compiled filters.
#[derive(Default)]
pub struct Filters {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

/// Values (addresses, patterns, names...) one request's filters may hold
/// in all: each is compiled and kept for the request's life.
pub const MAX_FILTER_VALUES: usize = 1024;

/// How many values a filter holds.
fn values_in(f: &FlowFilter) -> usize {
    f.uuid.len()
        + f.source_ip.len()
        + f.source_pod.len()
        + f.source_fqdn.len()
        + f.source_label.len()
        + f.source_service.len()
        + f.source_workload.len()
        + f.destination_ip.len()
        + f.destination_pod.len()
        + f.destination_fqdn.len()
        + f.destination_label.len()
        + f.destination_service.len()
        + f.destination_workload.len()
        + f.traffic_direction.len()
        + f.verdict.len()
        + f.drop_reason_desc.len()
        + f.event_type.len()
        + f.http_status_code.len()
        + f.protocol.len()
        + f.source_port.len()
        + f.destination_port.len()
        + f.reply.len()
        + f.dns_query.len()
        + f.source_identity.len()
        + f.destination_identity.len()
        + f.http_method.len()
        + f.http_path.len()
        + f.http_url.len()
        + f.http_header.len()
        + f.tcp_flags.len()
        + f.node_name.len()
        + f.node_labels.len()
        + f.ip_version.len()
        + f.trace_id.len()
}

impl Filters {
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Filters, String> {
        let total: usize = whitelist.iter().chain(blacklist).map(values_in).sum();
        if total > MAX_FILTER_VALUES {
            return Err(format!(
                "the filters hold {total} values; at most {MAX_FILTER_VALUES} are served"
            ));
        }
        let compile = |list: &[FlowFilter], name: &str| {
            list.iter()
                .enumerate()
                .map(|(i, f)| Compiled::new(f).map_err(|e| format!("{name}[{i}].{e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Filters {
            whitelist: compile(whitelist, "whitelist")?,
            blacklist: compile(blacklist, "blacklist")?,
        })
    }

    pub fn matches(&self, f: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|c| c.matches(f)))
            && !self.blacklist.iter().any(|c| c.matches(f))
    }
}

/// `namespace/pod-prefix`, `namespace/` or `pod-prefix`.
struct PodMatch {
    namespace: Option<String>,
    prefix: String,
}

impl PodMatch {
    fn new(s: &str) -> PodMatch {
        match s.split_once('/') {
            Some((ns, pod)) => PodMatch {
                namespace: Some(ns.to_string()),
                prefix: pod.to_string(),
            },
            None => PodMatch {
                namespace: None,
                prefix: s.to_string(),
            },
        }
    }

    fn matches(&self, ep: Option<&flow::Endpoint>) -> bool {
        let Some(ep) = ep else { return false };
        if let Some(ns) = &self.namespace
            && ep.namespace != *ns
        {
            return false;
        }
        if self.prefix.is_empty() {
            // `ns/`: any pod of the namespace (not a non-pod endpoint).
            return !ep.namespace.is_empty();
        }
        !ep.pod_name.is_empty() && ep.pod_name.starts_with(&self.prefix)
    }
}

/// One requirement of a label selector (`k=v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`). A key without a source (`app`) matches
/// a label of any source (`k8s:app`).
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

fn label_value<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().find_map(|l| {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        let bare = k.split_once(':').map(|(_, b)| b).unwrap_or(k);
        (k == key || (!key.contains(':') && bare == key)).then_some(v)
    })
}

impl Requirement {
    fn matches(&self, labels: &[String]) -> bool {
        match self {
            Requirement::Eq(k, v) => label_value(labels, k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label_value(labels, k) != Some(v.as_str()),
            Requirement::Exists(k) => label_value(labels, k).is_some(),
            Requirement::NotExists(k) => label_value(labels, k).is_none(),
            Requirement::In(k, vs) => {
                label_value(labels, k).is_some_and(|v| vs.iter().any(|x| x == v))
            }
            Requirement::NotIn(k, vs) => {
                !label_value(labels, k).is_some_and(|v| vs.iter().any(|x| x == v))
            }
        }
    }
}

/// Splits a selector at the commas outside parentheses.
fn split_requirements(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
}

fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut reqs = Vec::new();
    for part in split_requirements(s) {
        let p = part.trim();
        if p.is_empty() {
            return Err(format!("{s:?}: an empty requirement"));
        }
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{p:?}: a set must be in parentheses"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some((k, v)) = p.split_once("!=") {
            Requirement::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Requirement::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some(k) = p.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_string())
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_string(), set(rest)?)
        } else if let Some((k, rest)) = p.split_once(" in ") {
            Requirement::In(k.trim().to_string(), set(rest)?)
        } else {
            Requirement::Exists(p.to_string())
        };
        let key = match &req {
            Requirement::Eq(k, _)
            | Requirement::NotEq(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => k,
        };
        if !valid_key(key) {
            return Err(format!("{p:?}: {key:?} is not a label key"));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

/// `*` matches any run of characters (node names, FQDNs).
fn glob(pattern: &str) -> Result<Regex, String> {
    let body = pattern
        .split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    Regex::new(&format!("^{body}$")).map_err(|e| format!("{pattern:?}: {e}"))
}

fn regexes(values: &[String], field: &str) -> Result<Vec<Regex>, String> {
    values
        .iter()
        .map(|v| {
            regex::RegexBuilder::new(v)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{field}: {v:?} is not a regular expression: {e}"))
        })
        .collect()
}

fn ports(values: &[String], field: &str) -> Result<Vec<u16>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<u16>()
                .map_err(|_| format!("{field}: {v:?} is not a port number"))
        })
        .collect()
}

fn nets(values: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{field}: {v:?} is neither an address nor a CIDR"))
        })
        .collect()
}

/// `404`, or `4+` (any 4xx).
enum Status {
    Exact(u32),
    Class(u32),
}

const PROTOCOLS: [&str; 9] = [
    "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "http", "dns", "kafka",
];

struct Compiled {
    uuid: Vec<String>,
    source_ip: Vec<IpNet>,
    destination_ip: Vec<IpNet>,
    source_pod: Vec<PodMatch>,
    destination_pod: Vec<PodMatch>,
    source_label: Vec<Vec<Requirement>>,
    destination_label: Vec<Vec<Requirement>>,
    source_fqdn: Vec<Regex>,
    destination_fqdn: Vec<Regex>,
    source_workload: Vec<flow::Workload>,
    destination_workload: Vec<flow::Workload>,
    source_identity: Vec<u32>,
    destination_identity: Vec<u32>,
    source_port: Vec<u16>,
    destination_port: Vec<u16>,
    traffic_direction: Vec<i32>,
    verdict: Vec<i32>,
    drop_reason: Vec<i32>,
    event_type: Vec<flow::EventTypeFilter>,
    http_status: Vec<Status>,
    protocol: Vec<String>,
    reply: Vec<bool>,
    dns_query: Vec<Regex>,
    http_method: Vec<String>,
    http_path: Vec<Regex>,
    http_url: Vec<Regex>,
    http_header: Vec<flow::HttpHeader>,
    node_name: Vec<Regex>,
    ip_version: Vec<i32>,
}

impl Compiled {
    fn new(f: &FlowFilter) -> Result<Compiled, String> {
        let unsupported = [
            ("source_service", f.source_service.is_empty()),
            ("destination_service", f.destination_service.is_empty()),
            ("tcp_flags", f.tcp_flags.is_empty()),
            ("trace_id", f.trace_id.is_empty()),
            ("node_labels", f.node_labels.is_empty()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, empty)| !empty) {
            return Err(format!(
                "{name}: this filter is not supported by portcullis (no flow carries it)"
            ));
        }
        let labels = |v: &[String], field: &str| {
            v.iter()
                .map(|s| parse_selector(s).map_err(|e| format!("{field}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let globs = |v: &[String], field: &str| {
            v.iter()
                .map(|s| glob(s).map_err(|e| format!("{field}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let protocol = f
            .protocol
            .iter()
            .map(|p| {
                let l = p.to_ascii_lowercase();
                if PROTOCOLS.contains(&l.as_str()) {
                    Ok(l)
                } else {
                    Err(format!(
                        "protocol: {p:?} is not one of {}",
                        PROTOCOLS.join(", ")
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http_status = f
            .http_status_code
            .iter()
            .map(|s| {
                let bad = || {
                    format!("http_status_code: {s:?} is neither a status (404) nor a class (4+)")
                };
                match s.strip_suffix('+') {
                    Some(c) => c
                        .parse::<u32>()
                        .ok()
                        .filter(|c| (1..=5).contains(c))
                        .map(Status::Class)
                        .ok_or_else(bad),
                    None => s
                        .parse::<u32>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .map(Status::Exact)
                        .ok_or_else(bad),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Compiled {
            uuid: f.uuid.clone(),
            source_ip: nets(&f.source_ip, "source_ip")?,
            destination_ip: nets(&f.destination_ip, "destination_ip")?,
            source_pod: f.source_pod.iter().map(|p| PodMatch::new(p)).collect(),
            destination_pod: f.destination_pod.iter().map(|p| PodMatch::new(p)).collect(),
            source_label: labels(&f.source_label, "source_label")?,
            destination_label: labels(&f.destination_label, "destination_label")?,
            source_fqdn: globs(&f.source_fqdn, "source_fqdn")?,
            destination_fqdn: globs(&f.destination_fqdn, "destination_fqdn")?,
            source_workload: f.source_workload.clone(),
            destination_workload: f.destination_workload.clone(),
            source_identity: f.source_identity.clone(),
            destination_identity: f.destination_identity.clone(),
            source_port: ports(&f.source_port, "source_port")?,
            destination_port: ports(&f.destination_port, "destination_port")?,
            traffic_direction: f.traffic_direction.clone(),
            verdict: f.verdict.clone(),
            drop_reason: f.drop_reason_desc.clone(),
            event_type: f.event_type.clone(),
            http_status,
            protocol,
            reply: f.reply.clone(),
            dns_query: regexes(&f.dns_query, "dns_query")?,
            http_method: f
                .http_method
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            http_path: regexes(&f.http_path, "http_path")?,
            http_url: regexes(&f.http_url, "http_url")?,
            http_header: f.http_header.clone(),
            node_name: globs(&f.node_name, "node_name")?,
            ip_version: f.ip_version.clone(),
        })
    }

    fn matches(&self, f: &Flow) -> bool {
        fn any<T>(list: &[T], pred: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(pred)
        }
        let ip = f.ip.as_ref();
        let addr = |s: Option<&String>| s.and_then(|s| s.parse::<IpAddr>().ok());
        let src_ip = addr(ip.map(|i| &i.source));
        let dst_ip = addr(ip.map(|i| &i.destination));
        let (sport, dport) = l4_ports(f);
        let src = f.source.as_ref();
        let dst = f.destination.as_ref();
        let empty: &[String] = &[];
        let http = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(flow::layer7::Record::Http(h)) => Some(h),
            _ => None,
        };
        let dns = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(flow::layer7::Record::Dns(d)) => Some(d),
            _ => None,
        };
        let workload = |ep: Option<&flow::Endpoint>, w: &flow::Workload| {
            ep.is_some_and(|ep| {
                ep.workloads.iter().any(|x| {
                    (w.name.is_empty() || x.name == w.name)
                        && (w.kind.is_empty() || x.kind == w.kind)
                })
            })
        };
        any(&self.uuid, |u| *u == f.uuid)
            && any(&self.source_ip, |n| src_ip.is_some_and(|a| n.contains(&a)))
            && any(&self.destination_ip, |n| {
                dst_ip.is_some_and(|a| n.contains(&a))
            })
            && any(&self.source_pod, |p| p.matches(src))
            && any(&self.destination_pod, |p| p.matches(dst))
            && any(&self.source_label, |reqs| {
                let l = src.map(|e| e.labels.as_slice()).unwrap_or(empty);
                src.is_some() && reqs.iter().all(|r| r.matches(l))
            })
            && any(&self.destination_label, |reqs| {
                let l = dst.map(|e| e.labels.as_slice()).unwrap_or(empty);
                dst.is_some() && reqs.iter().all(|r| r.matches(l))
            })
            && any(&self.source_fqdn, |g| {
                f.source_names.iter().any(|n| g.is_match(n))
            })
            && any(&self.destination_fqdn, |g| {
                f.destination_names.iter().any(|n| g.is_match(n))
            })
            && any(&self.source_workload, |w| workload(src, w))
            && any(&self.destination_workload, |w| workload(dst, w))
            && any(&self.source_identity, |i| {
                src.is_some_and(|e| e.identity == *i)
            })
            && any(&self.destination_identity, |i| {
                dst.is_some_and(|e| e.identity == *i)
            })
            && any(&self.source_port, |p| sport == Some(*p))
            && any(&self.destination_port, |p| dport == Some(*p))
            && any(&self.traffic_direction, |d| f.traffic_direction == *d)
            && any(&self.verdict, |v| f.verdict == *v)
            && any(&self.drop_reason, |r| f.drop_reason_desc == *r)
            && any(&self.event_type, |t| {
                f.event_type.as_ref().is_some_and(|e| {
                    e.r#type == t.r#type && (!t.match_sub_type || e.sub_type == t.sub_type)
                })
            })
            && any(&self.http_status, |s| {
                http.is_some_and(|h| match s {
                    Status::Exact(c) => h.code == *c,
                    Status::Class(c) => h.code / 100 == *c,
                })
            })
            && any(&self.protocol, |p| protocol_matches(f, p))
            && any(&self.reply, |r| {
                f.is_reply.as_ref().map(|b| b.value) == Some(*r)
            })
            && any(&self.dns_query, |re| {
                dns.is_some_and(|d| re.is_match(&d.query))
            })
            && any(&self.http_method, |m| http.is_some_and(|h| h.method == *m))
            && any(&self.http_path, |re| {
                http.is_some_and(|h| re.is_match(url_path(&h.url)))
            })
            && any(&self.http_url, |re| {
                http.is_some_and(|h| re.is_match(&h.url))
            })
            && any(&self.http_header, |want| {
                http.is_some_and(|h| {
                    h.headers
                        .iter()
                        .any(|x| x.key.eq_ignore_ascii_case(&want.key) && x.value == want.value)
                })
            })
            && any(&self.node_name, |g| g.is_match(&f.node_name))
            && any(&self.ip_version, |v| ip.is_some_and(|i| i.ip_version == *v))
    }
}

/// The path of a URL (`http://host/p?q` -> `/p?q`; a bare path as it is).
fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => url,
    }
}

/// Source and destination port of the flow's L4 header.
pub fn l4_ports(f: &Flow) -> (Option<u16>, Option<u16>) {
    use flow::layer4::Protocol as P;
    let p = |s: u32, d: u32| (u16::try_from(s).ok(), u16::try_from(d).ok());
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(P::Tcp(t)) => p(t.source_port, t.destination_port),
        Some(P::Udp(u)) => p(u.source_port, u.destination_port),
        Some(P::Sctp(s)) => p(s.source_port, s.destination_port),
        _ => (None, None),
    }
}

fn protocol_matches(f: &Flow, p: &str) -> bool {
    use flow::layer4::Protocol as P;
    let l4 = f.l4.as_ref().and_then(|l| l.protocol.as_ref());
    let l7 = f.l7.as_ref().and_then(|l| l.record.as_ref());
    match p {
        "tcp" => matches!(l4, Some(P::Tcp(_))),
        "udp" => matches!(l4, Some(P::Udp(_))),
        "sctp" => matches!(l4, Some(P::Sctp(_))),
        "icmp" => matches!(l4, Some(P::IcmPv4(_) | P::IcmPv6(_))),
        "icmpv4" => matches!(l4, Some(P::IcmPv4(_))),
        "icmpv6" => matches!(l4, Some(P::IcmPv6(_))),
        "http" => matches!(l7, Some(flow::layer7::Record::Http(_))),
        "dns" => matches!(l7, Some(flow::layer7::Record::Dns(_))),
        "kafka" => matches!(l7, Some(flow::layer7::Record::Kafka(_))),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
