//! DNS over TCP: connections accepted on the shared skeleton (the original
//! destination is the accepted socket's local address), RFC 1035 §4.2.2
//! framing (two-byte length prefix), queries answered in order, each
//! awaited step by step ([`exchange`]), and forwarding to the server over a
//! marked connection per query.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::exchange::{Answered, DnsShared, Judged, judge};
use super::judge::Transport;
use super::metrics::DnsLimit;
use super::sockets::no_answer_within;
use crate::budget;
use crate::conn::{AcceptLog, ConnAddrs, FixedDestination, accept_loop, stopped};
use crate::policy::ProxyPolicy;
use crate::upstream::{UpstreamConfig, connect};

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
    addrs: ConnAddrs,
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

/// What the DNS TCP accept loop says when it cannot take a connection.
const ACCEPT_LOG: AcceptLog = AcceptLog {
    accept_failed: "DNS TCP accept failed",
    no_original_dst: "no original destination for a DNS connection",
};

/// Accepts connections until shutdown. Whose connection it is comes from
/// what the datapath knows of the source address; it is refused before
/// anything is read when that source (or the proxy) holds its share. UDP
/// has its own.
pub(crate) fn serve(
    listener: TcpListener,
    fixed: Option<FixedDestination>,
    shared: Arc<DnsShared>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    accept_loop(
        listener,
        shutdown,
        fixed,
        ACCEPT_LOG,
        move |stream, addrs, shutdown| {
            let key = shared.policy.snapshot().budget_key(addrs.client.ip());
            let Some(permit) = budget::admit(&shared.tcp_connections, key, |why, key| {
                let limit = DnsLimit::tcp_connections(why);
                shared.metrics.limit_refusal(limit);
                tracing::debug!(client = %addrs.client, source = %key, ?limit,
                    "DNS TCP connection refused by a limit");
            }) else {
                return;
            };
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(stream, addrs, &shared, shutdown).await {
                    tracing::debug!(client = %addrs.client, error = %e, "DNS TCP connection ended");
                }
            });
        },
    )
}

/// Answers the queries of one connection in order until the client closes
/// it, sends no whole query within `tcp_first_query_timeout` (the first)
/// or `tcp_idle_timeout` (the next ones), or the proxy shuts down.
async fn serve_connection(
    mut stream: TcpStream,
    addrs: ConnAddrs,
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
        if let Some(answer) = exchange(shared, addrs, &query).await {
            write_message(&mut stream, &answer).await?;
        }
    }
}

/// Answers one query message of a connection, waiting for each step;
/// `None`: send nothing back. (UDP runs the same steps inline.)
async fn exchange(shared: &DnsShared, addrs: ConnAddrs, bytes: &[u8]) -> Option<Vec<u8>> {
    let fwd = match judge(shared, Transport::Tcp, addrs, bytes) {
        Judged::Nothing => return None,
        Judged::Answer(response) => return Some(response),
        Judged::Forward(fwd) => fwd,
    };
    let config = &shared.config;
    let policy = shared.policy.snapshot();
    let exchanged = tokio::time::timeout(
        config.upstream_timeout,
        forward(&config.upstream, &policy, addrs, fwd.query_id(), bytes),
    )
    .await
    .unwrap_or_else(|_| Err(no_answer_within(config.upstream_timeout)));
    Some(match exchanged {
        Err(e) => fwd.failed(shared, &e),
        Ok(answer) => match fwd.answered(shared, answer) {
            Answered::Ready(answer) => answer,
            Answered::Held(held) => held.release(shared).await,
        },
    })
}
