//! DNS over UDP: the transparent listening sockets (original destination
//! from `IP_RECVORIGDSTADDR`); replies go out from the original
//! destination ([`super::reply`]) and queries to the server over the
//! sockets of [`super::upstreams`]. No task per query: the listener judges each
//! datagram as it reads it, the upstream socket's reader finishes it when
//! the answer comes; only an answer held for the learner waits in a task.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage, recvmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::exchange::{self, Answered, DnsShared, Forwarding, Judged};
use super::judge::Transport;
use super::metrics::{DnsLimit, DnsVerdict, TransportLabel};
use super::sockets::{BATCH, LISTENER_RCVBUF, MAX_UDP, set_receive_buffer};
use crate::conn::{ConnAddrs, FixedDestination, stopped};

/// A transparent UDP socket bound to `addr` that reports each datagram's
/// original destination (`IP_TRANSPARENT` + `IP_RECVORIGDSTADDR`, or the
/// IPv6 twins with `IPV6_V6ONLY`). Needs CAP_NET_ADMIN.
pub(crate) fn transparent_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
        setsockopt(&socket, sockopt::Ipv4OrigDstAddr, &true).map_err(io::Error::from)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
        setsockopt(&socket, sockopt::Ipv6OrigDstAddr, &true).map_err(io::Error::from)?;
    }
    set_receive_buffer(&socket, LISTENER_RCVBUF)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind udp {addr}: {e}")))?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// Receives one datagram with its sender and original destination, if
/// one is queued (`WouldBlock` otherwise).
fn try_recv_with_orig_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    socket.try_io(Interest::READABLE, || {
        let mut cmsg = nix::cmsg_space!(nix::libc::sockaddr_in6);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(cmsg.as_mut_slice()),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let peer = msg
            .address
            .as_ref()
            .and_then(storage_to_std)
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        let orig_dst = msg.cmsgs().ok().and_then(|mut cmsgs| {
            cmsgs.find_map(|c| match c {
                ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                    Some(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(a))))
                }
                ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                    Some(SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(a))))
                }
                _ => None,
            })
        });
        Ok((msg.bytes, peer, orig_dst))
    })
}

fn storage_to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

/// How the listening socket learns a query's original destination.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UdpMode {
    /// From `IP_RECVORIGDSTADDR`; replies from the original destination.
    Transparent,
    /// Fixed; replies from the listening socket.
    Fixed(FixedDestination),
}

/// Receives queries until shutdown and runs each inline, without a task
/// per query: judged, then denied at once or sent to the server; the
/// upstream socket's reader finishes it when the answer comes (see
/// [`answered`]). At most `max_in_flight` queries are in flight; more are
/// dropped and counted.
pub(crate) fn serve(
    socket: UdpSocket,
    mode: UdpMode,
    shared: Arc<DnsShared>,
    in_flight: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_UDP];
        loop {
            tokio::select! {
                ready = socket.readable() => {
                    if let Err(e) = ready {
                        tracing::warn!(error = %e, "DNS UDP socket failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
            for _ in 0..BATCH {
                let (len, peer, addrs) = match try_receive(&socket, mode, &mut buf) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS UDP receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        break;
                    }
                };
                let reply = match mode {
                    UdpMode::Transparent => Reply::Transparent {
                        from: addrs.original_dst,
                        client: addrs.client,
                    },
                    UdpMode::Fixed(_) => Reply::Socket {
                        socket: socket.clone(),
                        peer,
                    },
                };
                query(&shared, &in_flight, addrs, reply, &buf[..len]);
            }
            // What this batch sends goes out together: queries to the
            // servers, then the proxy's own answers.
            shared.udp_upstreams.flush();
            shared.reply_sockets.flush();
            // Let the upstream readers (same thread) take their turn.
            tokio::task::yield_now().await;
        }
    })
}

/// Where an answer goes back.
enum Reply {
    /// To the client, from the query's original destination.
    Transparent {
        from: SocketAddr,
        client: SocketAddr,
    },
    /// From the listening socket (fixed-destination mode).
    Socket {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
    },
}

impl Reply {
    /// Transparent: queued for the next `reply_sockets.flush()`; fixed:
    /// sent now.
    fn send(self, shared: &DnsShared, answer: Vec<u8>) {
        match self {
            Reply::Transparent { from, client } => shared.reply_sockets.send(from, client, answer),
            Reply::Socket { socket, peer } => match socket.try_send_to(&answer, peer) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::spawn(async move {
                        if let Err(e) = socket.send_to(&answer, peer).await {
                            tracing::warn!(client = %peer, error = %e, "cannot send the DNS answer");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(client = %peer, error = %e, "cannot send the DNS answer")
                }
            },
        }
    }
}

/// One query: judged and answered, or sent to the server.
fn query(
    shared: &Arc<DnsShared>,
    in_flight: &Arc<Semaphore>,
    addrs: ConnAddrs,
    reply: Reply,
    bytes: &[u8],
) {
    // Whose query it is, from what the datapath knows of the source
    // address; over its rate it is dropped before any other work.
    let key = shared.policy.snapshot().budget_key(addrs.client.ip());
    if !shared.udp_rate.allow(key, std::time::Instant::now()) {
        shared.metrics.limit_refusal(DnsLimit::UdpRatePerSource);
        return;
    }
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        shared
            .metrics
            .query(TransportLabel::Udp, DnsVerdict::Overloaded);
        return;
    };
    match exchange::judge(shared, Transport::Udp, addrs, bytes) {
        Judged::Nothing => {}
        Judged::Answer(answer) => reply.send(shared, answer),
        Judged::Forward(fwd) => {
            let on_answer = {
                let shared = shared.clone();
                Box::new(move |answer| answered(shared, fwd, answer, reply, permit))
            };
            let config = &shared.config;
            shared.udp_upstreams.send(
                &config.upstream,
                &shared.policy.snapshot(),
                addrs,
                bytes,
                config.upstream_timeout,
                on_answer,
            );
        }
    }
}

/// The server's answer (or why none) to a forwarded query: released at
/// once when the learner already has its names, else held in a task until
/// the learner acknowledges (bounded).
fn answered(
    shared: Arc<DnsShared>,
    fwd: Forwarding,
    answer: io::Result<Vec<u8>>,
    reply: Reply,
    permit: OwnedSemaphorePermit,
) {
    let response = match answer {
        Err(e) => fwd.failed(&shared, &e),
        Ok(answer) => match fwd.answered(&shared, answer) {
            Answered::Ready(response) => response,
            Answered::Held(held) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let response = held.release(&shared).await;
                    reply.send(&shared, response);
                    shared.reply_sockets.flush();
                });
                return;
            }
        },
    };
    drop(permit);
    reply.send(&shared, response);
}

/// One datagram, its sender and its addresses for the policy; `None`:
/// skip it; `WouldBlock`: none queued.
fn try_receive(
    socket: &UdpSocket,
    mode: UdpMode,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr, ConnAddrs)>> {
    match mode {
        UdpMode::Fixed(f) => {
            let (len, peer) = socket.try_recv_from(buf)?;
            Ok(Some((
                len,
                peer,
                ConnAddrs {
                    client: f.client.unwrap_or(peer),
                    original_dst: f.original_dst,
                    upstream: f.upstream,
                },
            )))
        }
        UdpMode::Transparent => {
            let (len, peer, orig_dst) = try_recv_with_orig_dst(socket, buf)?;
            let Some(orig_dst) = orig_dst else {
                tracing::warn!(client = %peer, "DNS datagram without its original destination; dropped");
                return Ok(None);
            };
            Ok(Some((
                len,
                peer,
                ConnAddrs {
                    client: peer,
                    original_dst: orig_dst,
                    upstream: orig_dst,
                },
            )))
        }
    }
}
