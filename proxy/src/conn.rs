//! The connection skeleton every proxy shares: the addresses of a
//! redirected connection, the transparent listener, the accept loop and
//! the set of listener tasks with its shutdown switch. Each proxy hands
//! the loop what to do with an accepted connection; nothing here knows a
//! protocol.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The addresses of one redirected connection (or DNS query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAddrs {
    /// The client, as the policy sees it.
    pub client: SocketAddr,
    /// The destination the client connected to, as the policy sees it.
    pub original_dst: SocketAddr,
    /// Where allowed requests are forwarded (the original destination,
    /// except in fixed-destination mode).
    pub upstream: SocketAddr,
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

impl ConnAddrs {
    /// The addresses of a connection from `peer` accepted on a socket whose
    /// local address is `local`: the original destination under the
    /// datapath's redirect, unless `fixed` says otherwise.
    pub fn accepted(
        peer: SocketAddr,
        fixed: Option<FixedDestination>,
        local: impl FnOnce() -> io::Result<SocketAddr>,
    ) -> io::Result<ConnAddrs> {
        Ok(match fixed {
            Some(f) => ConnAddrs {
                client: f.client.unwrap_or(peer),
                original_dst: f.original_dst,
                upstream: f.upstream,
            },
            None => {
                let dst = local()?;
                ConnAddrs {
                    client: peer,
                    original_dst: dst,
                    upstream: dst,
                }
            }
        })
    }
}

/// A listening TCP socket with `IP_TRANSPARENT` (`IPV6_TRANSPARENT` and
/// `IPV6_V6ONLY` for IPv6, so the two listeners of a port do not overlap).
/// `what` names it in the bind error (`bind tcp [::]:15053: ...`).
pub(crate) fn transparent_listener(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
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
        .map_err(|e| io::Error::new(e.kind(), format!("{what} {addr}: {e}")))?;
    socket.listen(1024)?;
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// Resolves once shutdown is requested; never if the [`ListenerSet`] was
/// dropped without a shutdown.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What an accept loop says when it cannot take a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptLog {
    /// `accept()` failed (out of descriptors and the like).
    pub accept_failed: &'static str,
    /// The accepted socket has no local address.
    pub no_original_dst: &'static str,
}

/// Accepts connections on `listener` until shutdown and hands each, with
/// its addresses, to `on_conn` (which admits it under the proxy's limits
/// and spawns its task). A failed accept backs off and goes on.
pub(crate) fn accept_loop<F>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    fixed: Option<FixedDestination>,
    log: AcceptLog,
    mut on_conn: F,
) -> JoinHandle<()>
where
    F: FnMut(TcpStream, ConnAddrs, &watch::Receiver<bool>) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped(&mut shutdown) => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{}", log.accept_failed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let addrs = match ConnAddrs::accepted(peer, fixed, || stream.local_addr()) {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::warn!(error = %e, "{}", log.no_original_dst);
                    continue;
                }
            };
            on_conn(stream, addrs, &shutdown);
        }
    })
}

/// A proxy's running listener tasks and their shutdown switch. Dropping
/// it does not stop them; call [`ListenerSet::shutdown`].
#[derive(Debug)]
pub(crate) struct ListenerSet {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for ListenerSet {
    fn default() -> Self {
        ListenerSet {
            shutdown: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }
}

impl ListenerSet {
    /// A receiver that turns true at [`shutdown`](Self::shutdown).
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Keeps a listener task, awaited at shutdown.
    pub(crate) fn push(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Stops the listeners (and tells every connection that watches the
    /// switch) and waits for the listener tasks.
    pub(crate) async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
