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
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::upstream::UpstreamConfig;
use crate::listener::FixedDestination;
use crate::policy::PolicyHandle;

mod conn;
pub mod deny;
pub mod fuzz;
pub mod judge;
pub mod metrics;
pub mod parse;

#[cfg(test)]
mod tests;

pub use judge::{KafkaJudgement, KafkaRefusal, KafkaRules};
pub use metrics::{KafkaMetrics, KafkaVerdictLabel};
pub use parse::{KafkaFrame, ParseError, TopicRef, Topics, parse_request};

/// The Kafka proxy port the datapath redirects to; must equal
/// `agentd::proxy_port(L7Parser::Kafka)`.
pub const KAFKA_PROXY_PORT: u16 = 15092;

/// How the Kafka proxy listens and forwards.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The port of the transparent listeners.
    pub port: u16,
    /// Upstream sockets: mark and source address (as the HTTP proxy's).
    pub upstream: UpstreamConfig,
    /// Largest request frame accepted; a larger one closes the connection.
    pub max_request_frame: usize,
    /// Largest response frame relayed; a larger one closes the connection.
    pub max_response_frame: usize,
    /// Requests forwarded or denied whose responses are not yet written;
    /// the client is not read past this.
    pub max_in_flight: usize,
}

impl KafkaConfig {
    /// The datapath's configuration: port 15092, upstream sockets marked
    /// 0xa00 from the client's address, 100 MiB request frames.
    pub fn datapath() -> Self {
        KafkaConfig {
            port: KAFKA_PROXY_PORT,
            upstream: UpstreamConfig::datapath(),
            max_request_frame: parse::DEFAULT_MAX_FRAME,
            max_response_frame: 1024 * 1024 * 1024,
            max_in_flight: 1024,
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
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl KafkaProxy {
    /// Starts the transparent listeners on `0.0.0.0:config.port` and
    /// `[::]:config.port` (`IP_TRANSPARENT`, needs CAP_NET_ADMIN) in the
    /// calling thread's network namespace. Must be called inside a tokio
    /// runtime. The original destination of a connection is its local
    /// address.
    pub fn start(policy: PolicyHandle, config: KafkaConfig) -> io::Result<KafkaProxy> {
        let v4 = crate::listener::transparent_listener(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            config.port,
        )))?;
        let v6 = crate::listener::transparent_listener(SocketAddr::from((
            Ipv6Addr::UNSPECIFIED,
            config.port,
        )))?;
        let mut proxy = KafkaProxy::new();
        let shared = proxy.shared(policy, config);
        for listener in [v4, v6] {
            proxy.local_addrs.push(listener.local_addr()?);
            let task =
                conn::accept_loop(listener, shared.clone(), proxy.shutdown.subscribe(), None);
            proxy.tasks.push(task);
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
        let task = conn::accept_loop(listener, shared, proxy.shutdown.subscribe(), Some(dest));
        proxy.tasks.push(task);
        Ok(proxy)
    }

    fn new() -> KafkaProxy {
        let (shutdown, _) = watch::channel(false);
        KafkaProxy {
            local_addrs: Vec::new(),
            metrics: Arc::new(KafkaMetrics::new()),
            shutdown,
            tasks: Vec::new(),
        }
    }

    fn shared(&self, policy: PolicyHandle, config: KafkaConfig) -> Arc<conn::KafkaShared> {
        Arc::new(conn::KafkaShared {
            policy,
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
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Bound on waiting for the upstream to answer a forwarded request before
/// the connection is given up.
pub(crate) const UPSTREAM_IDLE: Duration = Duration::from_secs(300);
