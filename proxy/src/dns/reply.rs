//! [`ReplySockets`]: one transparent socket per original destination
//! (the server address a client asked), bound to it with
//! `IP_TRANSPARENT` + `SO_REUSEADDR`, that sends the answers from there.
//! It is never connected, so the datapath never assigns a client's
//! packet to it (only a connected UDP socket is a per-flow proxy
//! socket there). Answers are queued and sent with one `sendmmsg` per
//! socket at the end of each batch (see [`super::sockets`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::sockets::{lock, send_many};

/// Reply sockets kept at most. A node's clients ask a handful of servers;
/// past this the cache starts over rather than growing without bound.
const MAX_REPLY_SOCKETS: usize = 256;

/// Transparent reply sockets, one per original destination, and the
/// answers queued for them.
#[derive(Default)]
pub(crate) struct ReplySockets {
    sockets: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    /// (from, client, answer), sent by the next [`flush`](Self::flush).
    outbox: Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>,
}

impl ReplySockets {
    /// Queues `answer` to `client` from `from` (the query's original
    /// destination) for the next [`flush`](Self::flush).
    pub(crate) fn send(&self, from: SocketAddr, client: SocketAddr, answer: Vec<u8>) {
        lock(&self.outbox).push((from, client, answer));
    }

    /// Sends the queued answers, a `sendmmsg` per reply socket: at once,
    /// or from a task for what the socket's buffer cannot take.
    pub(crate) fn flush(self: &Arc<Self>) {
        let mut out = std::mem::take(&mut *lock(&self.outbox));
        if out.is_empty() {
            return;
        }
        // Stable: each client's answers keep their order.
        out.sort_by_key(|(from, _, _)| *from);
        for group in out.chunk_by(|a, b| a.0 == b.0) {
            let from = group[0].0;
            let socket = match self.socket(from) {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!(%from, error = %e, "cannot send DNS answers");
                    continue;
                }
            };
            let mut sent = 0;
            while sent < group.len() {
                let batch: Vec<(&[u8], Option<SocketAddr>)> = group[sent..]
                    .iter()
                    .map(|(_, client, answer)| (answer.as_slice(), Some(*client)))
                    .collect();
                match send_many(&socket, &batch) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket's buffer is full: the rest waits for room.
                        let rest: Vec<(SocketAddr, Vec<u8>)> = group[sent..]
                            .iter()
                            .map(|(_, client, answer)| (*client, answer.clone()))
                            .collect();
                        let sockets = self.clone();
                        let socket = socket.clone();
                        tokio::spawn(async move {
                            for (client, answer) in rest {
                                if let Err(e) = socket.send_to(&answer, client).await {
                                    sockets.failed(from, &socket, client, &e);
                                    return;
                                }
                            }
                        });
                        break;
                    }
                    Err(e) => {
                        // This answer cannot go; the others may.
                        self.failed(from, &socket, group[sent].1, &e);
                        sent += 1;
                    }
                }
            }
        }
    }

    /// Forgets a socket that failed to send; the next answer makes a new
    /// one.
    fn failed(&self, from: SocketAddr, socket: &Arc<UdpSocket>, client: SocketAddr, e: &io::Error) {
        tracing::warn!(%client, %from, error = %e, "cannot send the DNS answer");
        let mut sockets = lock(&self.sockets);
        if sockets.get(&from).is_some_and(|s| Arc::ptr_eq(s, socket)) {
            sockets.remove(&from);
        }
    }

    fn socket(&self, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let mut sockets = lock(&self.sockets);
        if let Some(socket) = sockets.get(&from) {
            return Ok(socket.clone());
        }
        let socket = Arc::new(transparent_reply_socket(from)?);
        if sockets.len() >= MAX_REPLY_SOCKETS {
            sockets.clear();
        }
        sockets.insert(from, socket.clone());
        Ok(socket)
    }
}

/// A socket bound to `from` with `IP_TRANSPARENT` and `SO_REUSEADDR`
/// (beside the listener and other proxies' sockets), that only sends.
fn transparent_reply_socket(from: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(from), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if from.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
    }
    // Nothing is read from it: keep what could queue there small.
    socket.set_recv_buffer_size(1)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&from.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind reply socket {from}: {e}")))?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}
