//! The transparent DNS proxy, UDP and TCP: judges every question name
//! against the client's egress DNS rules, answers a denial itself (REFUSED,
//! or NXDOMAIN), forwards an allowed query unchanged to the server it was
//! sent to, and learns name -> addresses from the answer before the client
//! gets it, so `toFQDNs` rules allow an address before the client can use
//! it. In audit mode (the client's, or an audited policy's rules) a query
//! its policy would deny is forwarded and learned from as an allowed one,
//! and logged with verdict `Audit`.
//!
//! - [`parse`]: queries and answers (pure, fuzzed);
//! - [`judge`]: the rules of a query's flow and the verdict (pure);
//! - [`deny`]: REFUSED / NXDOMAIN / SERVFAIL / FORMERR responses;
//! - [`learn`]: addresses an answer teaches, and the agent's
//!   [`NameLearner`];
//! - [`metrics`]: queries by verdict, hold time, learn timeouts;
//! - [`fuzz`]: the whole no-I/O path of a message, for fuzzing;
//! - [`DnsProxy`]: the listeners the agent starts.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::conn::{FixedDestination, ListenerSet, transparent_listener};
use crate::policy::PolicyHandle;
use crate::upstream::UpstreamConfig;

pub mod deny;
mod exchange;
pub mod fuzz;
pub mod judge;
pub mod learn;
pub mod metrics;
pub mod parse;
mod question;
mod reply;
mod sockets;
mod tcp;
mod udp;
mod upstream_socket;
mod upstreams;

#[cfg(test)]
mod tests;

pub use deny::DenyResponse;
pub use judge::{DnsDenial, DnsJudgement, DnsRules, Transport, decide};
pub use learn::{LearnedNames, NameLearner, NoLearner};
pub use metrics::{DnsLimit, DnsMetrics, DnsVerdict, TransportLabel};

/// The DNS proxy port the datapath redirects to ([`crate::ports::DNS`]).
pub const DNS_PROXY_PORT: u16 = crate::ports::DNS;

/// How the DNS proxy listens, answers, forwards and learns.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The port of the transparent listeners (UDP and TCP).
    pub port: u16,
    /// The answer to a denied query.
    pub deny_response: DenyResponse,
    /// Upstream sockets: mark and source address (as the HTTP proxy's).
    pub upstream: UpstreamConfig,
    /// Bound on the server's answer (connect included, for TCP); past it
    /// the client gets SERVFAIL.
    pub upstream_timeout: Duration,
    /// Bound on holding an allowed answer for the learner; past it the
    /// answer is released anyway (and `dns_learn_timeouts` counts it).
    pub learn_timeout: Duration,
    /// Learned TTLs below this are raised to it.
    pub min_ttl: Duration,
    /// Addresses learned per name and answer (the first in answer order).
    pub max_ips_per_name: usize,
    /// A TCP connection with no new query for this long is closed; a
    /// query's message must also arrive whole within it.
    pub tcp_idle_timeout: Duration,
    /// A TCP connection whose first query has not arrived whole this long
    /// after accept is closed (`TcpFirstQueryTimeout`).
    pub tcp_first_query_timeout: Duration,
    /// UDP queries served at once; more are dropped unanswered and counted
    /// as `overloaded`. TCP connections do not take from it, so they
    /// cannot starve UDP.
    pub max_in_flight: usize,
    /// Upstream UDP queries a socket takes before a new socket (a new port
    /// the kernel picks at random) takes the next ones; 1: a fresh port per
    /// query, so an off-path spoofer must guess port and id together.
    pub queries_per_upstream_socket: u32,
    /// Send question names in a random letter case (DNS 0x20) and accept
    /// only answers that echo it exactly (the client gets its own case
    /// back). Turn off for a server that does not preserve case.
    pub randomize_case: bool,
    /// UDP queries a second one source (a pod's address, or one non-pod
    /// identity) may send on average, `udp_burst_per_source` at once; more
    /// are dropped unanswered before they are judged
    /// (`UdpRatePerSource`). 0: no limit.
    pub udp_queries_per_second_per_source: u32,
    /// See `udp_queries_per_second_per_source`.
    pub udp_burst_per_source: u32,
    /// TCP connections served at once, all sources together; one more is
    /// closed at accept (`TcpConnectionsTotal`).
    pub max_tcp_connections: usize,
    /// TCP connections served at once for one source (a pod's address, or
    /// one non-pod identity); one more is closed at accept
    /// (`TcpConnectionsPerSource`).
    pub max_tcp_connections_per_source: usize,
}

impl DnsConfig {
    /// The datapath's configuration: port 15053, upstream sockets marked
    /// 0xa00 from the client's address, REFUSED for denials.
    pub fn datapath() -> Self {
        DnsConfig {
            port: DNS_PROXY_PORT,
            deny_response: DenyResponse::Refused,
            upstream: UpstreamConfig::datapath(),
            upstream_timeout: Duration::from_secs(2),
            learn_timeout: Duration::from_millis(100),
            min_ttl: Duration::ZERO,
            max_ips_per_name: 50,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_first_query_timeout: Duration::from_secs(2),
            max_in_flight: 4096,
            queries_per_upstream_socket: 1,
            udp_queries_per_second_per_source: 5_000,
            udp_burst_per_source: 5_000,
            randomize_case: true,
            max_tcp_connections: 2048,
            max_tcp_connections_per_source: 64,
        }
    }

    /// As [`datapath`](Self::datapath), with plain unmarked upstream
    /// sockets from the node's address (tests, tools).
    pub fn plain() -> Self {
        DnsConfig {
            upstream: UpstreamConfig::plain(),
            ..DnsConfig::datapath()
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig::datapath()
    }
}

/// A running DNS proxy: its listener tasks, metrics and a shutdown switch.
/// Dropping it does not stop it; call [`DnsProxy::shutdown`].
pub struct DnsProxy {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    metrics: Arc<DnsMetrics>,
    listeners: ListenerSet,
}

impl std::fmt::Debug for DnsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsProxy")
            .field("udp_addrs", &self.udp_addrs)
            .field("tcp_addrs", &self.tcp_addrs)
            .finish_non_exhaustive()
    }
}

impl DnsProxy {
    /// Starts the transparent listeners, UDP and TCP, on
    /// `0.0.0.0:config.port` and `[::]:config.port` (`IP_TRANSPARENT`,
    /// needs CAP_NET_ADMIN) in the calling thread's network namespace.
    /// Must be called inside a tokio runtime.
    pub fn start(
        policy: PolicyHandle,
        config: DnsConfig,
        learner: Arc<dyn NameLearner>,
    ) -> io::Result<DnsProxy> {
        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port));
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.port));
        let udp = [udp::transparent_socket(v4)?, udp::transparent_socket(v6)?];
        let tcp = [
            transparent_listener(v4, "bind tcp")?,
            transparent_listener(v6, "bind tcp")?,
        ];
        let mut proxy = DnsProxy::new();
        let (shared, in_flight) = proxy.shared(policy, config, learner);
        for socket in udp {
            proxy.udp_addrs.push(socket.local_addr()?);
            let task = udp::serve(
                socket,
                udp::UdpMode::Transparent,
                shared.clone(),
                in_flight.clone(),
                proxy.listeners.subscribe(),
            );
            proxy.listeners.push(task);
        }
        for listener in tcp {
            proxy.tcp_addrs.push(listener.local_addr()?);
            let task = tcp::serve(listener, None, shared.clone(), proxy.listeners.subscribe());
            proxy.listeners.push(task);
        }
        tracing::info!(udp = ?proxy.udp_addrs, tcp = ?proxy.tcp_addrs, "DNS proxy listening");
        Ok(proxy)
    }

    /// Serves queries received on `udp` and connections accepted on `tcp`
    /// as if they had been redirected to `dest.original_dst`, forwarding
    /// allowed queries to `dest.upstream`: the proxy without the datapath
    /// (tests, tools). UDP answers come from `udp` itself.
    pub fn serve_with_fixed_destination(
        udp: UdpSocket,
        tcp: TcpListener,
        policy: PolicyHandle,
        config: DnsConfig,
        learner: Arc<dyn NameLearner>,
        dest: FixedDestination,
    ) -> io::Result<DnsProxy> {
        let mut proxy = DnsProxy::new();
        let (shared, in_flight) = proxy.shared(policy, config, learner);
        // Room for a burst, as the transparent listeners have.
        sockets::set_receive_buffer(&socket2::SockRef::from(&udp), sockets::LISTENER_RCVBUF)?;
        proxy.udp_addrs.push(udp.local_addr()?);
        proxy.tcp_addrs.push(tcp.local_addr()?);
        proxy.listeners.push(udp::serve(
            udp,
            udp::UdpMode::Fixed(dest),
            shared.clone(),
            in_flight.clone(),
            proxy.listeners.subscribe(),
        ));
        proxy.listeners.push(tcp::serve(
            tcp,
            Some(dest),
            shared,
            proxy.listeners.subscribe(),
        ));
        Ok(proxy)
    }

    fn new() -> DnsProxy {
        DnsProxy {
            udp_addrs: Vec::new(),
            tcp_addrs: Vec::new(),
            metrics: Arc::new(DnsMetrics::new()),
            listeners: ListenerSet::default(),
        }
    }

    fn shared(
        &self,
        policy: PolicyHandle,
        config: DnsConfig,
        learner: Arc<dyn NameLearner>,
    ) -> (Arc<exchange::DnsShared>, Arc<Semaphore>) {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let replies = Arc::new(reply::ReplySockets::default());
        let shared = Arc::new(exchange::DnsShared {
            policy,
            learner,
            metrics: self.metrics.clone(),
            udp_upstreams: upstreams::UdpUpstreams::new(
                replies.clone(),
                upstreams::AnswerGuard {
                    rotate_after: config.queries_per_upstream_socket,
                    randomize_case: config.randomize_case,
                },
                self.metrics.clone(),
            ),
            udp_rate: crate::budget::SourceRate::new(
                config.udp_queries_per_second_per_source,
                config.udp_burst_per_source,
            ),
            tcp_connections: crate::budget::SourceBudget::new(
                config.max_tcp_connections as u64,
                config.max_tcp_connections_per_source as u64,
            ),
            reply_sockets: replies,
            config,
        });
        (shared, in_flight)
    }

    /// The UDP addresses listened on.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The TCP addresses listened on.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The DNS proxy's metrics.
    pub fn metrics(&self) -> Arc<DnsMetrics> {
        self.metrics.clone()
    }

    /// The `/metrics` text of the DNS proxy.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// Stops receiving and accepting and waits for the listener tasks.
    /// Queries already being answered finish on their own.
    pub async fn shutdown(self) {
        self.listeners.shutdown().await;
    }
}
