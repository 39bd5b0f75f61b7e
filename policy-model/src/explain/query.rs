//! The question `explain` answers and its answer: a flow between two
//! peers (with an optional L7 request), the verdict, the layer that took
//! it and the rules behind it.

use crate::identity::NumericIdentity;
use crate::l7::L7Parser;
use crate::origin::PolicyRef;
use crate::rules::{Direction, Protocol};
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// One side of a flow as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowPeer {
    /// `namespace/pod`.
    Pod(String),
    /// Any address (a pod's address resolves to that pod).
    Ip(IpAddr),
}

/// An HTTP request to judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequestSpec {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
}

/// A Kafka request to judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRequestSpec {
    pub api_key: i16,
    pub api_version: i16,
    pub client_id: Option<String>,
    pub topics: Vec<String>,
}

/// A TLS connection to judge: its ClientHello's SNI and, optionally, one
/// HTTP request sent inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRequestSpec {
    pub sni: Option<String>,
    pub http: Option<HttpRequestSpec>,
}

/// The L7 part of a flow question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L7Request {
    Http(HttpRequestSpec),
    Dns {
        name: String,
    },
    Kafka(KafkaRequestSpec),
    /// A TLS connection (served by the HTTP proxy).
    Tls(TlsRequestSpec),
}

impl L7Request {
    pub(super) fn parser(&self) -> L7Parser {
        match self {
            L7Request::Http(_) => L7Parser::Http,
            L7Request::Dns { .. } => L7Parser::Dns,
            L7Request::Kafka(_) => L7Parser::Kafka,
            L7Request::Tls(_) => L7Parser::Http,
        }
    }
}

/// A question about one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    pub from: FlowPeer,
    pub to: FlowPeer,
    /// The destination address was learned from DNS answers for this name
    /// (several names: comma-separated). Informational: the cluster holds
    /// what was learned.
    pub to_fqdn: Option<String>,
    pub protocol: Protocol,
    /// Destination port; the ICMP type for ICMP.
    pub port: u16,
    pub l7: Option<L7Request>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        })
    }
}

/// Which layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layer {
    L3,
    L4,
    L7,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::L3 => "L3",
            Layer::L4 => "L4",
            Layer::L7 => "L7",
        })
    }
}

/// A policy as named in a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyName {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&PolicyRef> for PolicyName {
    fn from(r: &PolicyRef) -> Self {
        PolicyName {
            kind: r.kind.to_string(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

/// One reason behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Whose policy: the source's egress or the destination's ingress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    /// Field path of the deciding rule, e.g. `spec.ingress[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub message: String,
}

/// What a flow endpoint resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub identity: NumericIdentity,
    pub identity_labels: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    pub layer: Layer,
    pub reasons: Vec<Reason>,
    pub source: ResolvedPeer,
    pub destination: ResolvedPeer,
    /// Whether the flow is redirected to the L7 proxy.
    pub redirected: bool,
    /// Allowed, but an audited policy would drop it (it passes, reported
    /// as AUDIT): why. Empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<Reason>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &ResolvedPeer| match (&p.pod, &p.ip) {
            (Some(pod), _) => pod.clone(),
            (None, Some(ip)) => ip.to_string(),
            _ => "?".into(),
        };
        writeln!(
            f,
            "{} at {}: {} (identity {}) -> {} (identity {}){}",
            self.verdict.to_string().to_uppercase(),
            self.layer,
            name(&self.source),
            self.source.identity,
            name(&self.destination),
            self.destination.identity,
            if self.redirected {
                " [redirected to the L7 proxy]"
            } else {
                ""
            }
        )?;
        for r in &self.reasons {
            writeln!(f, "  - {}", reason_line(r))?;
        }
        if !self.audit.is_empty() {
            writeln!(
                f,
                "AUDIT: with the audited policies enforced this flow would be DENIED; it passes and is reported as AUDIT"
            )?;
            for r in &self.audit {
                writeln!(f, "  - {}", reason_line(r))?;
            }
        }
        Ok(())
    }
}

/// One reason as a line: `[direction] Kind ns/name rule: message`.
fn reason_line(r: &Reason) -> String {
    let mut line = String::new();
    if let Some(d) = r.direction {
        line.push_str(&format!("[{d}] "));
    }
    if let Some(p) = &r.policy {
        match &p.namespace {
            Some(ns) => line.push_str(&format!("{} {}/{}", p.kind, ns, p.name)),
            None => line.push_str(&format!("{} {}", p.kind, p.name)),
        }
        if let Some(rule) = &r.rule {
            line.push_str(&format!(" {rule}"));
        }
        line.push_str(": ");
    }
    line.push_str(&r.message);
    line
}

/// A question that cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("unknown pod {0:?} (not in the topology)")]
    UnknownPod(String),
    #[error("{0}")]
    Invalid(String),
}
