//! DNS over TCP: a transparent listener (the original destination is the
//! accepted socket's local address), RFC 1035 §4.2.2 framing (two-byte
//! length prefix), queries answered in order, and forwarding to the
//! server over a marked connection per query.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::budget::{BudgetRefusal, SourceKey};
use super::exchange::{DnsShared, QueryAddrs, exchange};
use super::judge::Transport;
use super::metrics::DnsLimit;
use crate::listener::{FixedDestination, stopped};
use crate::policy::ProxyPolicy;
use crate::upstream::{UpstreamConfig, connect};

/// A listening socket with `IP_TRANSPARENT` (`IPV6_TRANSPARENT` and
/// `IPV6_V6ONLY` for IPv6).
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
        .map_err(|e| io::Error::new(e.kind(), format!("bind tcp {addr}: {e}")))?;
    socket.listen(1024)?;
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// Reads one length-prefixed message; `None` at a clean end of stream
/// before a new message.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut message).await?;
    Ok(Some(message))
}

/// Writes one length-prefixed message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &[u8],
) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes do not fit a DNS/TCP frame", message.len()),
        )
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    w.write_all(&framed).await?;
    w.flush().await
}

/// Sends `query` to the server over a new marked connection and reads
/// answers until one carries the query's id. The caller bounds the wait.
pub(crate) async fn forward(
    cfg: &UpstreamConfig,
    policy: &ProxyPolicy,
    addrs: QueryAddrs,
    id: u16,
    query: &[u8],
) -> io::Result<Vec<u8>> {
    let mut stream = connect(cfg, policy, addrs.client, addrs.upstream).await?;
    write_message(&mut stream, query).await?;
    loop {
        let Some(answer) = read_message(&mut stream).await? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection without answering",
            ));
        };
        if answer.len() >= 2 && answer[..2] == id.to_be_bytes() {
            return Ok(answer);
        }
    }
}

/// Accepts connections until shutdown.
pub(crate) fn serve(
    listener: TcpListener,
    fixed: Option<FixedDestination>,
    shared: Arc<DnsShared>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped(&mut shutdown) => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let addrs = match fixed {
                Some(f) => QueryAddrs {
                    client: f.client.unwrap_or(peer),
                    original_dst: f.original_dst,
                    upstream: f.upstream,
                },
                None => match stream.local_addr() {
                    Ok(dst) => QueryAddrs {
                        client: peer,
                        original_dst: dst,
                        upstream: dst,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "no original destination for a DNS connection");
                        continue;
                    }
                },
            };
            // Whose connection it is, from what the datapath knows of the
            // source address; refused before anything is read when that
            // source (or the proxy) holds its share. UDP has its own.
            let identity = shared
                .policy
                .snapshot()
                .dns_rules(addrs.client, addrs.original_dst, Transport::Tcp)
                .src_identity;
            let key = SourceKey::of(addrs.client.ip(), identity);
            let permit = match shared.tcp_connections.try_take(key, 1) {
                Ok(p) => p,
                Err(refusal) => {
                    let limit = match refusal {
                        BudgetRefusal::PerSource => DnsLimit::TcpConnectionsPerSource,
                        BudgetRefusal::Total => DnsLimit::TcpConnectionsTotal,
                    };
                    shared.metrics.limit_refusal(limit);
                    tracing::debug!(client = %addrs.client, source = %key, ?limit,
                        "DNS TCP connection refused by a limit");
                    continue;
                }
            };
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(stream, addrs, &shared, shutdown).await {
                    tracing::debug!(client = %addrs.client, error = %e, "DNS TCP connection ended");
                }
            });
        }
    })
}

/// Answers the queries of one connection in order until the client closes
/// it, sends no whole query within `tcp_first_query_timeout` (the first)
/// or `tcp_idle_timeout` (the next ones), or the proxy shuts down.
async fn serve_connection(
    mut stream: TcpStream,
    addrs: QueryAddrs,
    shared: &DnsShared,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut wait = (
        shared.config.tcp_first_query_timeout,
        DnsLimit::TcpFirstQueryTimeout,
    );
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(wait.0, read_message(&mut stream)) => r,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        let query = match next {
            Err(_) => {
                shared.metrics.limit_refusal(wait.1);
                return Ok(());
            }
            Ok(read) => match read? {
                Some(query) => query,
                None => return Ok(()),
            },
        };
        wait = (shared.config.tcp_idle_timeout, DnsLimit::TcpIdleTimeout);
        if let Some(answer) = exchange(shared, Transport::Tcp, addrs, &query).await {
            write_message(&mut stream, &answer).await?;
        }
    }
}
