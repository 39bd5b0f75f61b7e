//! The listeners: transparent ones for the datapath, and a fixed-destination
//! one for tests and tools.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{ConnAddrs, HttpSettings};
use crate::limits::{ConnectionLimits, LimitConfig};
use crate::metrics::ProxyMetrics;
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
            http_port: 15001,
            upstream: UpstreamConfig::datapath(),
            detect_timeout: Duration::from_secs(10),
            header_timeout: crate::limits::DEFAULT_HEADER_TIMEOUT,
            limits: LimitConfig::from_process(),
            tls_secrets: Default::default(),
        }
    }
}

/// Where a fixed-destination listener sends its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDestination {
    /// The client address the policy sees; `None`: the peer address.
    pub client: Option<SocketAddr>,
    /// The original destination the policy sees.
    pub original_dst: SocketAddr,
    /// Where allowed requests go.
    pub upstream: SocketAddr,
}

/// A running proxy: its listener tasks, shared metrics and a shutdown
/// switch. Dropping it does not stop it; call [`Proxy::shutdown`].
#[derive(Debug)]
pub struct Proxy {
    local_addrs: Vec<SocketAddr>,
    metrics: Arc<ProxyMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts the transparent HTTP listeners on `0.0.0.0:port` and
    /// `[::]:port` (`IP_TRANSPARENT`, needs CAP_NET_ADMIN), in the calling
    /// thread's network namespace. Must be called inside a tokio runtime.
    /// The original destination of a connection is its local address.
    pub fn start(policy: PolicyHandle, config: ProxyConfig) -> io::Result<Proxy> {
        let v4 = transparent_listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.http_port)))?;
        let v6 = transparent_listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.http_port)))?;
        let mut proxy = Proxy::new();
        let settings = proxy.settings(policy, &config);
        for listener in [v4, v6] {
            proxy.local_addrs.push(listener.local_addr()?);
            let task = accept_loop(listener, settings.clone(), proxy.shutdown.subscribe(), None);
            proxy.tasks.push(task);
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
        let task = accept_loop(listener, settings, proxy.shutdown.subscribe(), Some(dest));
        proxy.tasks.push(task);
        Ok(proxy)
    }

    fn new() -> Proxy {
        let (shutdown, _) = watch::channel(false);
        Proxy {
            local_addrs: Vec::new(),
            metrics: Arc::new(ProxyMetrics::new()),
            shutdown,
            tasks: Vec::new(),
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
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.metrics.clone()
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// Stops accepting, asks open connections to finish gracefully and
    /// waits for the listeners to stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A listening socket with `IP_TRANSPARENT` (`IPV6_TRANSPARENT` and
/// `IPV6_V6ONLY` for IPv6, so the two listeners do not overlap).
pub(crate) fn transparent_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    socket.listen(1024)?;
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// Resolves once shutdown is requested; never if the [`Proxy`] was
/// dropped without a shutdown.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn accept_loop(
    listener: TcpListener,
    settings: Arc<HttpSettings>,
    mut shutdown: watch::Receiver<bool>,
    fixed: Option<FixedDestination>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = crate::listener::stopped(&mut shutdown) => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep going.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let addrs = match fixed {
                Some(f) => ConnAddrs {
                    client: f.client.unwrap_or(peer),
                    original_dst: f.original_dst,
                    upstream: f.upstream,
                },
                None => match stream.local_addr() {
                    Ok(dst) => ConnAddrs {
                        client: peer,
                        original_dst: dst,
                        upstream: dst,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "no original destination for an accepted connection");
                        continue;
                    }
                },
            };
            // The datapath has said whose connection it is (the peer
            // address is the real source): the limits apply now, before a
            // byte is read. A refused connection is closed at once.
            let source = settings.policy.snapshot().source_key(addrs.client.ip());
            let permit = match settings.limits.admit(source) {
                Ok(permit) => permit,
                Err(limit) => {
                    tracing::debug!(client = %addrs.client, dst = %addrs.original_dst, %limit, "connection refused by a limit");
                    drop(stream);
                    continue;
                }
            };
            tokio::spawn(crate::tls::serve(
                stream,
                addrs,
                settings.clone(),
                shutdown.clone(),
                permit,
            ));
        }
    })
}
