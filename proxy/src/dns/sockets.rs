//! UDP sockets kept across queries, so a query costs datagrams and no
//! socket setup: `reply.rs` sends the answers from the original
//! destinations, `upstreams.rs` the queries to the servers. Here: what
//! they and the listeners share (sizes, receive buffers, the batched
//! send, the timeout error).
//!
//! Both queue what they send and send it with one `sendmmsg` per socket
//! at the end of each batch of datagrams read (the listener's queries, a
//! reader's answers): a batch wakes the server and the client once, not
//! once per datagram.

use std::io;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use socket2::Socket;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest DNS message over UDP (and the receive buffer).
pub(crate) const MAX_UDP: usize = 65_535;

/// Receive buffer of the listening sockets: room for a burst of queries
/// (a few thousand datagrams) while the workers catch up, instead of
/// drops in the kernel.
pub(crate) const LISTENER_RCVBUF: usize = 8 << 20;

/// Datagrams read from a socket per wake-up before other tasks get a turn.
pub(crate) const BATCH: usize = 64;

/// Asks for a receive buffer of `bytes`: past `net.core.rmem_max` with
/// CAP_NET_ADMIN (`SO_RCVBUFFORCE`), else as much as `rmem_max` allows.
pub(crate) fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_ok() {
        return Ok(());
    }
    socket.set_recv_buffer_size(bytes)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent across a panic (single inserts/removes).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Messages per `sendmmsg` call.
const SENDMMSG_MAX: usize = 64;

/// Sends datagrams with one `sendmmsg` (each to its address, or to the
/// connected peer for `None`); how many went out, from the first. An error
/// only when the first could not go (`WouldBlock`: the buffer is full).
pub(super) fn send_many(
    socket: &UdpSocket,
    messages: &[(&[u8], Option<SocketAddr>)],
) -> io::Result<usize> {
    let messages = &messages[..messages.len().min(SENDMMSG_MAX)];
    if let [(bytes, to)] = messages {
        return match to {
            Some(to) => socket.try_send_to(bytes, *to),
            None => socket.try_send(bytes),
        }
        .map(|_| 1);
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = messages.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = messages
        .iter()
        .map(|(_, to)| to.map(SockaddrStorage::from))
        .collect();
    socket.try_io(Interest::WRITABLE, || {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(messages.len(), None);
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &iovs,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        match sent.count() {
            // Not expected for a non-empty batch; never report no progress
            // as success (the callers loop until everything went).
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    })
}

/// The error of a query the server did not answer in time.
pub(crate) fn no_answer_within(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {timeout:?}"),
    )
}
