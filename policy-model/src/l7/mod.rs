//! Layer-7 rule matchers: pure functions over parsed requests.
//!
//! Each protocol compiles the wire rules of one port (`toPorts[].rules`) into
//! a rule set once, then judges requests against it with no I/O and no
//! allocation on the common path. The semantics are Cilium's:
//!
//! - [`http`]: `rules.http` (Envoy's header matchers plus Cilium's
//!   `headerMatches` with mismatch actions);
//! - [`dns`]: `rules.dns` and `toFQDNs` selectors (`matchName`,
//!   `matchPattern`);
//! - [`kafka`]: `rules.kafka` (roles, API keys, versions, client IDs, topics);
//! - [`tls`]: `serverNames`, `terminatingTLS`, `originatingTLS`: what the
//!   proxy does with a TLS (or plaintext) connection on a redirected port.
//!
//! All three report invalid rules with one error type, [`L7RuleError`].
//! [`L7Rules`] are the wire rules of one port, as a policy states them;
//! [`L7Parser`] is the proxy parser they need.

use std::fmt;

use crate::api::{FqdnSelector, HttpRule, KafkaRule};

pub mod dns;
mod error;
pub mod http;
pub mod kafka;
pub mod tls;

pub use dns::{DnsRuleSet, FqdnPattern, normalize_name};
pub use error::{L7Protocol, L7RuleError};
pub use http::{HeaderAction, HttpRequest, HttpRuleSet, HttpVerdict};
pub use kafka::{KafkaRequest, KafkaRuleSet, KafkaVerdict};

/// L7 rules attached to a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L7Rules {
    Http(Vec<HttpRule>),
    Dns(Vec<FqdnSelector>),
    Kafka(Vec<KafkaRule>),
}

/// Which proxy parser a redirected port needs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum L7Parser {
    Http,
    Dns,
    Kafka,
}

impl fmt::Display for L7Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L7Parser::Http => "http",
            L7Parser::Dns => "dns",
            L7Parser::Kafka => "kafka",
        })
    }
}

impl L7Rules {
    /// The parser these rules need.
    pub fn parser(&self) -> L7Parser {
        match self {
            L7Rules::Http(_) => L7Parser::Http,
            L7Rules::Dns(_) => L7Parser::Dns,
            L7Rules::Kafka(_) => L7Parser::Kafka,
        }
    }
}
