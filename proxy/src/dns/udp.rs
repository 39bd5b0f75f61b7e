//! DNS over UDP: the transparent listening sockets (original destination
//! from `IP_RECVORIGDSTADDR`); replies go out from the original
//! destination and queries to the server over the sockets of
//! [`super::sockets`].

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
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::exchange::{DnsShared, QueryAddrs, exchange};
use super::judge::Transport;
use super::metrics::{DnsVerdict, TransportLabel};
use super::sockets::{LISTENER_RCVBUF, MAX_UDP, set_receive_buffer};
use crate::listener::{FixedDestination, stopped};

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

/// Receives one datagram with its sender and original destination.
async fn recv_with_orig_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    socket
        .async_io(Interest::READABLE, || {
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
        .await
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

/// Receives queries until shutdown; each runs in its own task (at most
/// `max_in_flight` at once, the rest are dropped and counted).
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
            let received = tokio::select! {
                r = receive(&socket, mode, &mut buf) => r,
                _ = stopped(&mut shutdown) => return,
            };
            let (len, peer, addrs) = match received {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS UDP receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                shared
                    .metrics
                    .query(TransportLabel::Udp, DnsVerdict::Overloaded);
                continue;
            };
            let query = buf[..len].to_vec();
            let shared = shared.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Some(answer) = exchange(&shared, Transport::Udp, addrs, &query).await else {
                    return;
                };
                let sent = match mode {
                    UdpMode::Transparent => {
                        shared
                            .reply_sockets
                            .send(addrs.original_dst, addrs.client, &answer)
                            .await
                    }
                    UdpMode::Fixed(_) => socket.send_to(&answer, peer).await.map(|_| ()),
                };
                if let Err(e) = sent {
                    tracing::warn!(client = %addrs.client, error = %e, "cannot send the DNS answer");
                }
            });
        }
    })
}

/// One datagram, its sender and its addresses for the policy; `None`:
/// skip it.
async fn receive(
    socket: &UdpSocket,
    mode: UdpMode,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr, QueryAddrs)>> {
    match mode {
        UdpMode::Fixed(f) => {
            let (len, peer) = socket.recv_from(buf).await?;
            Ok(Some((
                len,
                peer,
                QueryAddrs {
                    client: f.client.unwrap_or(peer),
                    original_dst: f.original_dst,
                    upstream: f.upstream,
                },
            )))
        }
        UdpMode::Transparent => {
            let (len, peer, orig_dst) = recv_with_orig_dst(socket, buf).await?;
            let Some(orig_dst) = orig_dst else {
                tracing::warn!(client = %peer, "DNS datagram without its original destination; dropped");
                return Ok(None);
            };
            Ok(Some((
                len,
                peer,
                QueryAddrs {
                    client: peer,
                    original_dst: orig_dst,
                    upstream: orig_dst,
                },
            )))
        }
    }
}
