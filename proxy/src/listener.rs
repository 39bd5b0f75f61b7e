//! The HTTP proxy's front door on port 15001: transparent listeners for
//! the datapath, or a fixed-destination one for tests and tools, each
//! connection admitted under the limits and handed to [`crate::tls::serve`]
//! (TLS by its ClientHello, else HTTP).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::conn::{AcceptLog, FixedDestination, ListenerSet, accept_loop, transparent_listener};
use crate::http::HttpSettings;
use crate::http::metrics::HttpMetrics;
use crate::limits::{ConnectionLimits, LimitConfig};
use crate::policy::PolicyHandle;
use crate::upstream::UpstreamConfig;

/// How the proxy listens and connects.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The HTTP proxy port the datapath redirects to (15001).
    pub http_port: u16,
    pub upstream: UpstreamConfig,
    /// Bound on waiting for a new connection's first bytes.
    pub detect_timeout: Duration,
    /// Bound on receiving an HTTP/1 request head (slowloris); default
    /// [`crate::limits::DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// Connection caps and the idle timeout (see [`crate::limits`]).
    pub limits: LimitConfig,
    /// Secrets of `terminatingTLS` / `originatingTLS` (default: none, so
    /// ports with TLS contexts deny).
    pub tls_secrets: crate::secrets::TlsSecrets,
}

impl ProxyConfig {
    /// The datapath's configuration: port 15001, upstream sockets marked
    /// 0xa00 from the client's address.
    pub fn datapath() -> Self {
        ProxyConfig {
            http_port: crate::ports::HTTP,
            upstream: UpstreamConfig::datapath(),
            detect_timeout: Duration::from_secs(10),
            header_timeout: crate::limits::DEFAULT_HEADER_TIMEOUT,
            limits: LimitConfig::from_process(),
            tls_secrets: Default::default(),
        }
    }
}

/// A running proxy: its listener tasks, shared metrics and a shutdown
/// switch. Dropping it does not stop it; call [`Proxy::shutdown`].
#[derive(Debug)]
pub struct Proxy {
    local_addrs: Vec<SocketAddr>,
    metrics: Arc<HttpMetrics>,
    listeners: ListenerSet,
}

impl Proxy {
    /// Starts the transparent HTTP listeners on `0.0.0.0:port` and
    /// `[::]:port` (`IP_TRANSPARENT`, needs CAP_NET_ADMIN), in the calling
    /// thread's network namespace. Must be called inside a tokio runtime.
    /// The original destination of a connection is its local address.
    pub fn start(policy: PolicyHandle, config: ProxyConfig) -> io::Result<Proxy> {
        let v4 = transparent_listener(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.http_port)),
            "bind",
        )?;
        let v6 = transparent_listener(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.http_port)),
            "bind",
        )?;
        let mut proxy = Proxy::new();
        let settings = proxy.settings(policy, &config);
        for listener in [v4, v6] {
            proxy.local_addrs.push(listener.local_addr()?);
            let task = serve(
                listener,
                settings.clone(),
                proxy.listeners.subscribe(),
                None,
            );
            proxy.listeners.push(task);
        }
        tracing::info!(addrs = ?proxy.local_addrs, "HTTP proxy listening");
        Ok(proxy)
    }

    /// Serves connections accepted on `listener` as if they had been
    /// redirected to `dest.original_dst`, forwarding to `dest.upstream`:
    /// the proxy without the datapath (tests, tools).
    pub fn serve_with_fixed_destination(
        listener: TcpListener,
        policy: PolicyHandle,
        config: ProxyConfig,
        dest: FixedDestination,
    ) -> io::Result<Proxy> {
        let mut proxy = Proxy::new();
        let settings = proxy.settings(policy, &config);
        proxy.local_addrs.push(listener.local_addr()?);
        let task = serve(listener, settings, proxy.listeners.subscribe(), Some(dest));
        proxy.listeners.push(task);
        Ok(proxy)
    }

    fn new() -> Proxy {
        Proxy {
            local_addrs: Vec::new(),
            metrics: Arc::new(HttpMetrics::new()),
            listeners: ListenerSet::default(),
        }
    }

    fn settings(&self, policy: PolicyHandle, config: &ProxyConfig) -> Arc<HttpSettings> {
        Arc::new(HttpSettings {
            policy,
            metrics: self.metrics.clone(),
            upstream: config.upstream.clone(),
            detect_timeout: config.detect_timeout,
            header_timeout: config.header_timeout,
            tls_secrets: config.tls_secrets.clone(),
            limits: ConnectionLimits::new(config.limits, self.metrics.limits().clone()),
        })
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> Arc<HttpMetrics> {
        self.metrics.clone()
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// Stops accepting, asks open connections to finish gracefully and
    /// waits for the listeners to stop.
    pub async fn shutdown(self) {
        self.listeners.shutdown().await;
    }
}

/// What the HTTP accept loop says when it cannot take a connection.
const ACCEPT_LOG: AcceptLog = AcceptLog {
    accept_failed: "accept failed",
    no_original_dst: "no original destination for an accepted connection",
};

/// Accepts on `listener` until shutdown: each connection is admitted under
/// the limits (the datapath has said whose it is: the peer address is the
/// real source), before a byte is read, and served by [`crate::tls::serve`].
fn serve(
    listener: TcpListener,
    settings: Arc<HttpSettings>,
    shutdown: watch::Receiver<bool>,
    fixed: Option<FixedDestination>,
) -> JoinHandle<()> {
    accept_loop(
        listener,
        shutdown,
        fixed,
        ACCEPT_LOG,
        move |stream, addrs, shutdown| {
            let source = settings.policy.snapshot().source_key(addrs.client.ip());
            let permit = match settings.limits.admit(source) {
                Ok(permit) => permit,
                Err(limit) => {
                    // A refused connection is closed at once.
                    tracing::debug!(client = %addrs.client, dst = %addrs.original_dst, %limit, "connection refused by a limit");
                    drop(stream);
                    return;
                }
            };
            tokio::spawn(crate::tls::serve(
                stream,
                addrs,
                settings.clone(),
                shutdown.clone(),
                permit,
            ));
        },
    )
}
