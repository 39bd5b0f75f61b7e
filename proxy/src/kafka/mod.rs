//! The transparent Kafka proxy: reads every request frame a redirected
//! client sends, judges it against the source's egress and the local
//! destination's ingress Kafka rules, forwards allowed requests in order
//! over one upstream connection per client connection, and answers a
//! denied request itself with the API's authorization error
//! (TOPIC_AUTHORIZATION_FAILED per topic), in sequence with the responses
//! of the requests before it.
//!
//! - [`parse`]: request frames and the topics they address; topic IDs
//!   learned from Metadata responses (pure, fuzzed);
//! - [`judge`]: the rules of a connection and the verdict (pure);
//! - [`deny`]: the denial response of each API;
//! - [`metrics`]: requests by API and verdict, latency, connections;
//! - [`fuzz`]: the no-I/O path of a frame, for fuzzing;
//! - [`KafkaProxy`]: the listeners the agent starts.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::budget::SourceBudget;
use crate::conn::{FixedDestination, ListenerSet, transparent_listener};
use crate::policy::PolicyHandle;
use crate::upstream::UpstreamConfig;

mod conn;
pub mod deny;
pub mod fuzz;
pub mod judge;
pub mod metrics;
pub mod parse;

#[cfg(test)]
mod tests;

pub use judge::{KafkaDenial, KafkaJudgement, KafkaRules};
pub use metrics::{KafkaLimit, KafkaMetrics, KafkaVerdictLabel};
pub use parse::{KafkaFrame, ParseError, TopicRef, Topics, parse_request};

/// The Kafka proxy port the datapath redirects to
/// ([`crate::ports::KAFKA`]).
pub const KAFKA_PROXY_PORT: u16 = crate::ports::KAFKA;

/// How the Kafka proxy listens and forwards.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The port of the transparent listeners.
    pub port: u16,
    /// Upstream sockets: mark and source address (as the HTTP proxy's).
    pub upstream: UpstreamConfig,
    /// Largest request frame accepted: a larger length closes the
    /// connection before a byte of the frame is buffered (`frame_too_large`).
    pub max_request_frame: usize,
    /// Largest response frame relayed; a larger one closes the connection.
    pub max_response_frame: usize,
    /// Requests forwarded or denied whose responses are not yet written;
    /// the client is not read past this.
    pub max_in_flight: usize,
    /// Connections served at once, all sources together; one more is
    /// closed at accept (`connections_total`).
    pub max_connections: usize,
    /// Connections served at once for one source (a pod's address, or one
    /// non-pod identity such as world); one more is closed at accept
    /// (`connections_per_source`).
    pub max_connections_per_source: usize,
    /// Bytes of request frames buffered at once, all connections together;
    /// a frame that does not fit closes its connection (`buffer_total`).
    pub buffer_budget: usize,
    /// Bytes of request frames buffered at once for one source
    /// (`buffer_per_source`).
    pub buffer_budget_per_source: usize,
    /// Bound from accept to the first whole request frame
    /// (`first_request_timeout`).
    pub first_request_timeout: Duration,
    /// Bound from a frame's length to its last byte (`frame_timeout`).
    pub frame_timeout: Duration,
    /// A connection that sends no new request for this long is closed
    /// (`idle_timeout`; Kafka's own `connections.max.idle.ms` is 10 min).
    pub idle_timeout: Duration,
}

impl KafkaConfig {
    /// The datapath's configuration: port 15092, upstream sockets marked
    /// 0xa00 from the client's address, 16 MiB request frames, 4096
    /// connections (256 per source), 256 MiB of buffered frames (64 MiB per
    /// source), 10 s to the first request, 30 s per frame, 10 min idle.
    pub fn datapath() -> Self {
        KafkaConfig {
            port: KAFKA_PROXY_PORT,
            upstream: UpstreamConfig::datapath(),
            max_request_frame: parse::DEFAULT_MAX_FRAME,
            max_response_frame: 1024 * 1024 * 1024,
            max_in_flight: 1024,
            max_connections: 4096,
            max_connections_per_source: 256,
            buffer_budget: 256 * 1024 * 1024,
            buffer_budget_per_source: 64 * 1024 * 1024,
            first_request_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
        }
    }

    /// As [`datapath`](Self::datapath), with plain unmarked upstream
    /// sockets from the node's address (tests, tools).
    pub fn plain() -> Self {
        KafkaConfig {
            upstream: UpstreamConfig::plain(),
            ..KafkaConfig::datapath()
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig::datapath()
    }
}

/// A running Kafka proxy: its listener tasks, metrics and a shutdown
/// switch. Dropping it does not stop it; call [`KafkaProxy::shutdown`].
#[derive(Debug)]
pub struct KafkaProxy {
    local_addrs: Vec<SocketAddr>,
    metrics: Arc<KafkaMetrics>,
    listeners: ListenerSet,
}

impl KafkaProxy {
    /// Starts the transparent listeners on `0.0.0.0:config.port` and
    /// `[::]:config.port` (`IP_TRANSPARENT`, needs CAP_NET_ADMIN) in the
    /// calling thread's network namespace. Must be called inside a tokio
    /// runtime. The original destination of a connection is its local
    /// address.
    pub fn start(policy: PolicyHandle, config: KafkaConfig) -> io::Result<KafkaProxy> {
        let v4 = transparent_listener(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port)),
            "bind",
        )?;
        let v6 = transparent_listener(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.port)),
            "bind",
        )?;
        let mut proxy = KafkaProxy::new();
        let shared = proxy.shared(policy, config);
        for listener in [v4, v6] {
            proxy.local_addrs.push(listener.local_addr()?);
            let task =
                conn::accept_loop(listener, shared.clone(), proxy.listeners.subscribe(), None);
            proxy.listeners.push(task);
        }
        tracing::info!(addrs = ?proxy.local_addrs, "Kafka proxy listening");
        Ok(proxy)
    }

    /// Serves connections accepted on `listener` as if they had been
    /// redirected to `dest.original_dst`, forwarding to `dest.upstream`:
    /// the proxy without the datapath (tests, tools).
    pub fn serve_with_fixed_destination(
        listener: TcpListener,
        policy: PolicyHandle,
        config: KafkaConfig,
        dest: FixedDestination,
    ) -> io::Result<KafkaProxy> {
        let mut proxy = KafkaProxy::new();
        let shared = proxy.shared(policy, config);
        proxy.local_addrs.push(listener.local_addr()?);
        let task = conn::accept_loop(listener, shared, proxy.listeners.subscribe(), Some(dest));
        proxy.listeners.push(task);
        Ok(proxy)
    }

    fn new() -> KafkaProxy {
        KafkaProxy {
            local_addrs: Vec::new(),
            metrics: Arc::new(KafkaMetrics::new()),
            listeners: ListenerSet::default(),
        }
    }

    fn shared(&self, policy: PolicyHandle, config: KafkaConfig) -> Arc<conn::KafkaShared> {
        Arc::new(conn::KafkaShared {
            policy,
            connections: SourceBudget::new(
                config.max_connections as u64,
                config.max_connections_per_source as u64,
            ),
            buffered: SourceBudget::new(
                config.buffer_budget as u64,
                config.buffer_budget_per_source as u64,
            ),
            config,
            metrics: self.metrics.clone(),
            topic_ids: Default::default(),
        })
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The Kafka proxy's metrics.
    pub fn metrics(&self) -> Arc<KafkaMetrics> {
        self.metrics.clone()
    }

    /// The `/metrics` text of the Kafka proxy.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// Stops accepting and waits for the listener tasks. Open connections
    /// finish on their own.
    pub async fn shutdown(self) {
        self.listeners.shutdown().await;
    }
}

/// Bound on waiting for the upstream to answer a forwarded request before
/// the connection is given up.
pub(crate) const UPSTREAM_IDLE: Duration = Duration::from_secs(300);
