//! Upstream connections: marked so the datapath neither redirects them
//! again nor judges them twice, optionally from the client's own address
//! so the destination (and its ingress policy in the kernel) sees the real
//! source. redirect-ebpf records such flows in conntrack
//! (`CT_PROXY_UPSTREAM`) and hands their replies back to this socket.

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::policy::ProxyPolicy;

pub use crate::ports::FROM_PROXY_MARK;

/// Which source address upstream connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSource {
    /// The node's own address (the kernel picks it).
    Node,
    /// The client's IP (port chosen by the kernel), with `IP_TRANSPARENT`:
    /// the destination sees the client's address. Needs CAP_NET_ADMIN.
    ClientIp,
}

/// How the proxy connects upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `SO_MARK` of upstream sockets; `None` leaves them unmarked (tests
    /// outside the datapath; setting a mark needs CAP_NET_ADMIN).
    pub mark: Option<u32>,
    pub source: UpstreamSource,
    pub connect_timeout: Duration,
}

impl UpstreamConfig {
    /// What the datapath expects: marked 0xa00, from the client's address.
    pub fn datapath() -> Self {
        UpstreamConfig {
            mark: Some(FROM_PROXY_MARK),
            source: UpstreamSource::ClientIp,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Plain connections from the node address, unmarked (tests).
    pub fn plain() -> Self {
        UpstreamConfig {
            mark: None,
            source: UpstreamSource::Node,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether an upstream connection to `dst` comes from the client's
/// address: with [`UpstreamSource::ClientIp`], only towards a pod of the
/// cluster under `policy` (the snapshot the request was judged under), so
/// the destination's ingress policy (on its own node, for a pod on another
/// node) judges the client's identity, as without the proxy. The reply of
/// a local destination comes back through its pod veth, that of a pod on
/// another node through the uplink, and in both the datapath hands it to
/// the proxy (`to_pod` and `to_uplink` remember the proxy's flow). Towards
/// the world the node's own address is the source: a reply from outside
/// the cluster would be routed to the client pod itself.
pub fn bind_client_address(cfg: &UpstreamConfig, policy: &ProxyPolicy, dst: IpAddr) -> bool {
    cfg.source == UpstreamSource::ClientIp && policy.is_pod(dst)
}

/// Opens a TCP connection to `dst` as configured, for client `client`,
/// under the snapshot `policy`.
pub async fn connect(
    cfg: &UpstreamConfig,
    policy: &ProxyPolicy,
    client: SocketAddr,
    dst: SocketAddr,
) -> io::Result<TcpStream> {
    let domain = Domain::for_address(dst);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(mark) = cfg.mark {
        socket.set_mark(mark)?;
    }
    if bind_client_address(cfg, policy, dst.ip()) {
        let ip = client.ip().to_canonical();
        let same_family = ip.is_ipv4() == dst.is_ipv4();
        if !same_family {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("client {ip} and destination {dst} are of different address families"),
            ));
        }
        if dst.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    tokio::time::timeout(cfg.connect_timeout, socket.connect(dst))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {dst}")))?
}

/// A client connection to the upstream of one downstream connection.
#[derive(Debug)]
pub enum UpstreamConn {
    Http1(http1::SendRequest<Incoming>),
    Http2(http2::SendRequest<Incoming>),
}

impl UpstreamConn {
    /// Whether the connection can take no more requests.
    pub fn is_closed(&self) -> bool {
        match self {
            UpstreamConn::Http1(s) => s.is_closed(),
            UpstreamConn::Http2(s) => s.is_closed(),
        }
    }
}

/// Connects and handshakes; the connection task runs until the upstream
/// or the last sender goes away.
pub async fn open(
    cfg: &UpstreamConfig,
    policy: &ProxyPolicy,
    client: SocketAddr,
    dst: SocketAddr,
    h2: bool,
) -> Result<UpstreamConn, UpstreamError> {
    let stream = connect(cfg, policy, client, dst)
        .await
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    handshake(stream, dst, h2).await
}

/// As [`open`], with TLS to the upstream (`originatingTLS`): the server's
/// certificate is verified for `name` by `config`.
pub async fn open_tls(
    cfg: &UpstreamConfig,
    policy: &ProxyPolicy,
    client: SocketAddr,
    dst: SocketAddr,
    h2: bool,
    config: std::sync::Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> Result<UpstreamConn, UpstreamError> {
    let stream = connect(cfg, policy, client, dst)
        .await
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    let tls = tokio::time::timeout(
        cfg.connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| UpstreamError::Tls {
        dst,
        reason: "TLS handshake timed out".into(),
    })?
    .map_err(|e| UpstreamError::Tls {
        dst,
        reason: e.to_string(),
    })?;
    // HTTP/2 only when the server chose it by ALPN (offered when the
    // client speaks h2); otherwise HTTP/1.1.
    let h2 = h2 && tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    handshake(tls, dst, h2).await
}

/// The HTTP client handshake on a connected stream; the connection task
/// runs until the upstream or the last sender goes away.
async fn handshake<I>(stream: I, dst: SocketAddr, h2: bool) -> Result<UpstreamConn, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { dst, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%dst, error = %e, "upstream h2 connection ended");
            }
        });
        Ok(UpstreamConn::Http2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { dst, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%dst, error = %e, "upstream h1 connection ended");
            }
        });
        Ok(UpstreamConn::Http1(sender))
    }
}

/// An upstream that could not be reached or failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {dst}: {source}")]
    Connect { dst: SocketAddr, source: io::Error },
    #[error("TLS to upstream {dst} failed: {reason}")]
    Tls { dst: SocketAddr, reason: String },
    #[error("HTTP handshake with upstream {dst} failed: {source}")]
    Handshake {
        dst: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {dst} failed the request: {source}")]
    Request {
        dst: SocketAddr,
        source: hyper::Error,
    },
}
