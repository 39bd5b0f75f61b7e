//! L7 visibility without enforcement: the annotation
//! `policy.cilium.io/proxy-visibility: "<Ingress/80/TCP/HTTP>,<Egress/53/UDP/DNS>"`
//! on a pod (or its namespace) redirects those ports to a proxy for access
//! records only. Resolution adds the redirect to entries that already
//! allow the port; nothing L3/L4 policy allows is denied by it.

use std::collections::BTreeMap;
use std::fmt;

use super::rule::{Direction, Protocol};
use crate::l7::L7Parser;

/// The annotation, as Cilium users write it.
pub const PROXY_VISIBILITY_ANNOTATION: &str = "policy.cilium.io/proxy-visibility";

/// One `<Direction/port/protocol/parser>` entry of the annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Visibility {
    pub direction: Direction,
    pub port: u16,
    pub protocol: Protocol,
    pub parser: L7Parser,
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        };
        let proto = match self.protocol {
            Protocol::Udp => "UDP",
            _ => "TCP",
        };
        let parser = match self.parser {
            L7Parser::Http => "HTTP",
            L7Parser::Dns => "DNS",
            L7Parser::Kafka => "Kafka",
        };
        write!(f, "<{dir}/{}/{proto}/{parser}>", self.port)
    }
}

/// Parses the annotation's value: comma-separated
/// `<Ingress|Egress/port/TCP|UDP/HTTP|DNS|Kafka>` entries. HTTP and Kafka
/// run over TCP only; DNS over TCP or UDP. The error names the entry and
/// what is wrong with it.
pub fn parse_visibility(value: &str) -> Result<Vec<Visibility>, String> {
    let mut out = Vec::new();
    for raw in value.split(',') {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let inner = entry
            .strip_prefix('<')
            .and_then(|e| e.strip_suffix('>'))
            .ok_or_else(|| format!("{entry:?}: an entry is <Direction/port/protocol/parser>"))?;
        let parts: Vec<&str> = inner.split('/').map(str::trim).collect();
        let [dir, port, proto, parser] = parts[..] else {
            return Err(format!(
                "{entry:?}: an entry has four parts, <Direction/port/protocol/parser>"
            ));
        };
        let direction = match dir.to_ascii_lowercase().as_str() {
            "ingress" => Direction::Ingress,
            "egress" => Direction::Egress,
            _ => {
                return Err(format!(
                    "{entry:?}: direction {dir:?} is not Ingress or Egress"
                ));
            }
        };
        let port: u16 = match port.parse() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(format!(
                    "{entry:?}: port {port:?} is not a number in 1..65535"
                ));
            }
        };
        let protocol = match Protocol::parse(proto) {
            Some(p @ (Protocol::Tcp | Protocol::Udp)) => p,
            _ => return Err(format!("{entry:?}: protocol {proto:?} is not TCP or UDP")),
        };
        let parser = match parser.to_ascii_lowercase().as_str() {
            "http" => L7Parser::Http,
            "dns" => L7Parser::Dns,
            "kafka" => L7Parser::Kafka,
            _ => {
                return Err(format!(
                    "{entry:?}: parser {parser:?} is not HTTP, DNS or Kafka"
                ));
            }
        };
        if protocol == Protocol::Udp && parser != L7Parser::Dns {
            return Err(format!("{entry:?}: {parser} runs over TCP only"));
        }
        let v = Visibility {
            direction,
            port,
            protocol,
            parser,
        };
        if let Some(other) = out.iter().find(|o: &&Visibility| {
            (o.direction, o.port, o.protocol) == (direction, port, protocol)
        }) {
            if other.parser != parser {
                return Err(format!(
                    "{entry:?}: {other} already names another parser for this port"
                ));
            }
            continue;
        }
        out.push(v);
    }
    out.sort();
    Ok(out)
}

/// The visibility of a pod: its own annotation, else its namespace's.
/// A value that does not parse gives none (visibility never enforces, so
/// nothing is opened by ignoring it; [`crate::topology::Topology::validate`]
/// and the Kubernetes conversion report it).
pub fn visibility_of(
    pod: &BTreeMap<String, String>,
    namespace: Option<&BTreeMap<String, String>>,
) -> Vec<Visibility> {
    pod.get(PROXY_VISIBILITY_ANNOTATION)
        .or_else(|| namespace.and_then(|n| n.get(PROXY_VISIBILITY_ANNOTATION)))
        .and_then(|v| parse_visibility(v).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cilium_s_examples_and_rejects_the_rest_by_name() {
        let v =
            parse_visibility("<Ingress/80/TCP/HTTP>, <Egress/53/UDP/DNS>,<Egress/9092/TCP/Kafka>")
                .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].to_string(), "<Ingress/80/TCP/HTTP>");
        assert!(v.iter().any(|e| e.to_string() == "<Egress/53/UDP/DNS>"));
        assert_eq!(parse_visibility("").unwrap(), vec![]);
        for (bad, why) in [
            ("Ingress/80/TCP/HTTP", "an entry is"),
            ("<Ingress/80/TCP>", "four parts"),
            ("<Sideways/80/TCP/HTTP>", "direction \"Sideways\""),
            ("<Ingress/0/TCP/HTTP>", "port \"0\""),
            ("<Ingress/70000/TCP/HTTP>", "port \"70000\""),
            ("<Ingress/80/SCTP/HTTP>", "protocol \"SCTP\""),
            ("<Ingress/80/TCP/Redis>", "parser \"Redis\""),
            ("<Ingress/80/UDP/HTTP>", "runs over TCP only"),
            (
                "<Ingress/80/TCP/HTTP>,<Ingress/80/TCP/Kafka>",
                "another parser",
            ),
        ] {
            let e = parse_visibility(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_pod_s_annotation_wins_over_its_namespace_s() {
        let ann =
            |v: &str| BTreeMap::from([(PROXY_VISIBILITY_ANNOTATION.to_string(), v.to_string())]);
        let ns = ann("<Egress/53/UDP/DNS>");
        assert_eq!(visibility_of(&BTreeMap::new(), Some(&ns))[0].port, 53);
        assert_eq!(
            visibility_of(&ann("<Ingress/80/TCP/HTTP>"), Some(&ns))[0].port,
            80
        );
        assert!(visibility_of(&ann("<bad>"), Some(&ns)).is_empty());
    }
}
