//! The portcullis transparent L7 proxy.
//!
//! The kernel redirects flows whose policy carries L7 rules to this proxy
//! (BPF TPROXY, `bpf_sk_assign`); the proxy accepts them on a transparent
//! listener, learns the original destination from the accepted socket,
//! judges every request against the current policy snapshot and forwards
//! allowed requests upstream on a marked socket the datapath neither
//! redirects again nor loses the source identity of.
//!
//! - [`policy`]: which rules apply to a connection: the snapshot, and one
//!   side-policy vocabulary (compiled rules, refusal, lookup) for every
//!   parser (pure);
//! - [`http`]: HTTP/1.1, HTTP/2 and gRPC: parse, judge (`decide`), deny,
//!   serve, forward;
//! - [`dns`]: the transparent DNS proxy (UDP and TCP): parse, judge,
//!   deny, forward, and learn names for `toFQDNs`;
//! - [`kafka`]: the transparent Kafka proxy: parse each request's topics,
//!   judge, deny with the API's authorization error, forward in order;
//! - [`tls`]: `serverNames`, `terminatingTLS`, `originatingTLS` on the
//!   HTTP port: judge the ClientHello, splice or terminate, originate;
//! - [`conn`]: the connection skeleton the three proxies share (addresses,
//!   transparent listener, accept loop, listener set);
//! - [`ports`]: the proxy ports and the upstream mark (the datapath
//!   contract);
//! - [`upstream`]: marked, optionally transparent upstream sockets;
//! - [`secrets`]: the certificates of `terminatingTLS` / `originatingTLS`;
//! - [`access_log`]: the typed access record every proxy logs with;
//! - [`limits`]: per-source and global connection caps, idle timeouts;
//! - [`metrics`]: the metrics skeleton; each proxy registers its own into
//!   the caller's registry (`register`) or renders them alone;
//! - [`Proxy`]: the HTTP listeners the agent starts.
#![forbid(unsafe_code)]

pub mod policy;

pub mod access_log;
pub mod budget;
pub mod conn;
pub mod ports;

pub use http::judge::{HttpRules, Judgement};
pub use policy::{PolicyHandle, ProxyPolicy, Refusal};
pub mod dns;
pub mod http;
pub mod kafka;
pub mod limits;
mod listener;
pub mod metrics;
pub mod secrets;
pub mod tls;
pub mod upstream;

pub use conn::{ConnAddrs, FixedDestination};
pub use dns::{DnsConfig, DnsProxy, LearnedNames, NameLearner};
pub use http::metrics::HttpMetrics;
pub use kafka::{KAFKA_PROXY_PORT, KafkaConfig, KafkaProxy};
pub use limits::{ConnectionLimits, LimitConfig, SourceKey};
pub use listener::{Proxy, ProxyConfig};
pub use secrets::TlsSecrets;
pub use upstream::{FROM_PROXY_MARK, UpstreamConfig, UpstreamSource};
