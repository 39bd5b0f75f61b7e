//! UDP sockets kept across queries, so a query costs datagrams and no
//! socket setup:
//!
//! - [`ReplySockets`]: one transparent socket per original destination
//!   (the server address a client asked), bound to it with
//!   `IP_TRANSPARENT` + `SO_REUSEADDR`, that sends the answers from there.
//!   It is never connected, so the datapath never assigns a client's
//!   packet to it (only a connected UDP socket is a per-flow proxy
//!   socket there).
//! - [`UdpUpstreams`]: one connected upstream socket per (source address,
//!   server), shared by the queries in flight to that server. Each query
//!   goes out under an id the proxy picks (unpredictable, unique among
//!   the socket's queries in flight); an answer is handed to the query
//!   whose id and first question it carries, with the client's id put
//!   back. Other datagrams are dropped. A socket closes after an idle
//!   period without queries.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::exchange::QueryAddrs;
use super::parse::HEADER_LEN;
use crate::http::upstream::{UpstreamConfig, bind_client_address};

/// Largest DNS message over UDP (and the receive buffer).
pub(crate) const MAX_UDP: usize = 65_535;

/// Reply sockets kept at most. A node's clients ask a handful of servers;
/// past this the cache starts over rather than growing without bound.
const MAX_REPLY_SOCKETS: usize = 256;

/// An upstream socket with no query for this long (and none in flight)
/// is closed.
const UPSTREAM_IDLE: Duration = Duration::from_secs(10);

/// Receive buffer of the listening sockets: room for a burst of queries
/// (a few thousand datagrams) while the workers catch up, instead of
/// drops in the kernel.
pub(crate) const LISTENER_RCVBUF: usize = 8 << 20;

/// Receive buffer of a shared upstream socket: the answers of all its
/// queries in flight.
const UPSTREAM_RCVBUF: usize = 4 << 20;

/// Tries at drawing a query id not in flight on a socket. With at most
/// `max_in_flight` (4096 by default) of the 65,536 ids taken, a draw is
/// free with probability >= 15/16.
const ID_DRAWS: usize = 64;

/// Asks for a receive buffer of `bytes`: past `net.core.rmem_max` with
/// CAP_NET_ADMIN (`SO_RCVBUFFORCE`), else as much as `rmem_max` allows.
pub(crate) fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_ok() {
        return Ok(());
    }
    socket.set_recv_buffer_size(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent across a panic (single inserts/removes).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Transparent reply sockets, one per original destination.
#[derive(Default)]
pub(crate) struct ReplySockets {
    sockets: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
}

impl ReplySockets {
    /// Sends `answer` to `client` from `from` (the query's original
    /// destination).
    pub(crate) async fn send(
        &self,
        from: SocketAddr,
        client: SocketAddr,
        answer: &[u8],
    ) -> io::Result<()> {
        let socket = self.socket(from)?;
        if let Err(e) = socket.send_to(answer, client).await {
            // Do not keep a socket that failed; the next answer makes a new one.
            let mut sockets = lock(&self.sockets);
            if sockets.get(&from).is_some_and(|s| Arc::ptr_eq(s, &socket)) {
                sockets.remove(&from);
            }
            return Err(e);
        }
        Ok(())
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

/// Which upstream socket a query uses: the source address it is bound to
/// (`None`: the node's, chosen by the kernel) and the server.
type UpstreamKey = (Option<IpAddr>, SocketAddr);

/// Upstream UDP sockets shared by the queries in flight.
#[derive(Default)]
pub(crate) struct UdpUpstreams {
    sockets: Arc<Mutex<HashMap<UpstreamKey, Arc<UpstreamSocket>>>>,
}

/// One connected upstream socket and the queries in flight on it.
struct UpstreamSocket {
    socket: UdpSocket,
    in_flight: Mutex<InFlight>,
    /// Set when a query takes the socket, cleared by its reader at each
    /// idle check (both under the pool's lock).
    used: AtomicBool,
}

struct InFlight {
    /// Keyed draws of the proxy's query ids (SipHash of a counter).
    ids: RandomState,
    counter: u64,
    waiting: HashMap<u16, Waiter>,
}

/// A query waiting for its answer.
struct Waiter {
    /// QDCOUNT and the first question, as forwarded.
    question: Box<[u8]>,
    answer: oneshot::Sender<io::Result<Vec<u8>>>,
}

impl UdpUpstreams {
    /// Sends `query` to `addrs.upstream` (marked, from the client's
    /// address when [`bind_client_address`] says so) under a proxy id and
    /// returns the server's answer with the client's id. The caller
    /// bounds the wait; dropping the future forgets the query.
    pub(crate) async fn exchange(
        &self,
        cfg: &UpstreamConfig,
        addrs: QueryAddrs,
        query: &[u8],
    ) -> io::Result<Vec<u8>> {
        let server = addrs.upstream;
        if query.len() < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a query shorter than a DNS header",
            ));
        }
        let source = if bind_client_address(cfg, server.ip()) {
            let ip = addrs.client.ip().to_canonical();
            if ip.is_ipv4() != server.is_ipv4() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("client {ip} and server {server} are of different address families"),
                ));
            }
            Some(ip)
        } else {
            None
        };
        let upstream = self.socket(cfg, (source, server))?;
        let (id, answer) = upstream.register(query)?;
        let forget = Forget {
            upstream: &upstream,
            id,
        };
        let mut out = query.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        upstream.socket.send(&out).await?;
        let answered = answer.await;
        // The reader took the query out of the table: removing its id now
        // could remove a newer query that drew the same id.
        std::mem::forget(forget);
        let mut answer = answered.map_err(|_| io::Error::other("the upstream socket closed"))??;
        answer[..2].copy_from_slice(&query[..2]);
        Ok(answer)
    }

    /// The socket for `key`, made (with its reader task) if there is none.
    fn socket(&self, cfg: &UpstreamConfig, key: UpstreamKey) -> io::Result<Arc<UpstreamSocket>> {
        let mut sockets = lock(&self.sockets);
        let upstream = match sockets.entry(key) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let upstream = Arc::new(UpstreamSocket {
                    socket: upstream_socket(cfg, key)?,
                    in_flight: Mutex::new(InFlight {
                        ids: RandomState::new(),
                        counter: 0,
                        waiting: HashMap::new(),
                    }),
                    used: AtomicBool::new(false),
                });
                e.insert(upstream.clone());
                tokio::spawn(read_answers(upstream.clone(), self.sockets.clone(), key));
                upstream
            }
        };
        upstream.used.store(true, Ordering::Relaxed);
        Ok(upstream)
    }
}

/// Removes a query from its socket's table when its exchange is dropped
/// (timeout) or fails before the answer.
struct Forget<'a> {
    upstream: &'a UpstreamSocket,
    id: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.upstream.in_flight).waiting.remove(&self.id);
    }
}

impl UpstreamSocket {
    /// Takes an id for `query` and registers it (before it is sent, so
    /// its answer cannot come first).
    fn register(&self, query: &[u8]) -> io::Result<(u16, oneshot::Receiver<io::Result<Vec<u8>>>)> {
        let question = match first_question_end(query) {
            Some(end) => [&query[4..6], &query[HEADER_LEN..end]].concat(),
            None => query[4..6].to_vec(),
        };
        let (tx, rx) = oneshot::channel();
        let mut in_flight = lock(&self.in_flight);
        for _ in 0..ID_DRAWS {
            in_flight.counter += 1;
            let id = in_flight.ids.hash_one(in_flight.counter) as u16;
            if let Entry::Vacant(e) = in_flight.waiting.entry(id) {
                e.insert(Waiter {
                    question: question.into_boxed_slice(),
                    answer: tx,
                });
                return Ok((id, rx));
            }
        }
        Err(io::Error::other("no free query id on the upstream socket"))
    }

    /// Hands `answer` to the query it answers; drops it when none.
    fn dispatch(&self, answer: &[u8]) {
        if answer.len() < HEADER_LEN {
            return;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        let mut in_flight = lock(&self.in_flight);
        let matches = in_flight
            .waiting
            .get(&id)
            .is_some_and(|w| answers_question(&w.question, answer));
        if !matches {
            drop(in_flight);
            tracing::debug!(id, "dropped a DNS datagram that answers no query in flight");
            return;
        }
        let waiter = in_flight.waiting.remove(&id).expect("found above");
        drop(in_flight);
        let _ = waiter.answer.send(Ok(answer.to_vec()));
    }

    /// Fails every query in flight with `e` (the server is unreachable).
    fn fail_all(&self, e: &io::Error) {
        let waiting = std::mem::take(&mut lock(&self.in_flight).waiting);
        for (_, w) in waiting {
            let _ = w.answer.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
    }
}

/// Whether `answer` carries the question (`QDCOUNT` + first question)
/// that was forwarded; names compare case-insensitively. A header-only
/// answer (no question: some servers' FORMERR/NOTIMP) matches by id.
pub(super) fn answers_question(question: &[u8], answer: &[u8]) -> bool {
    let qdcount = &answer[4..6];
    if qdcount == [0, 0] {
        return true;
    }
    let (count, first) = question.split_at(2);
    qdcount == count
        && answer
            .get(HEADER_LEN..HEADER_LEN + first.len())
            .is_some_and(|a| a.eq_ignore_ascii_case(first))
}

/// The end of a message's first question (name as uncompressed labels,
/// type, class); `None` when it has none or it does not end there.
pub(super) fn first_question_end(message: &[u8]) -> Option<usize> {
    let mut i = HEADER_LEN;
    loop {
        let len = usize::from(*message.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += len;
    }
    let end = i + 4;
    (end <= message.len()).then_some(end)
}

/// A connected, non-blocking UDP socket to `key.1`, marked as configured
/// and bound to `key.0` (with `IP_TRANSPARENT`) if given.
fn upstream_socket(cfg: &UpstreamConfig, (source, server): UpstreamKey) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    set_receive_buffer(&socket, UPSTREAM_RCVBUF)?;
    if let Some(mark) = cfg.mark {
        socket.set_mark(mark)?;
    }
    if let Some(ip) = source {
        if server.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect(&server.into())?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// Reads the answers of one upstream socket until it has been idle for
/// [`UPSTREAM_IDLE`] with nothing in flight; then takes it out of the pool.
async fn read_answers(
    upstream: Arc<UpstreamSocket>,
    pool: Arc<Mutex<HashMap<UpstreamKey, Arc<UpstreamSocket>>>>,
    key: UpstreamKey,
) {
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        match tokio::time::timeout(UPSTREAM_IDLE, upstream.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => upstream.dispatch(&buf[..n]),
            Ok(Err(e)) => {
                // On a connected UDP socket: an ICMP error from the server
                // (port unreachable, ...). Its queries get no answer.
                tracing::debug!(server = %key.1, error = %e, "DNS upstream socket error");
                upstream.fail_all(&e);
                // An ICMP error is reported once; anything else could
                // repeat at once: do not spin on it.
                if e.kind() != io::ErrorKind::ConnectionRefused {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Err(_) => {
                let mut sockets = lock(&pool);
                let idle = !upstream.used.swap(false, Ordering::Relaxed)
                    && lock(&upstream.in_flight).waiting.is_empty();
                if idle {
                    if sockets.get(&key).is_some_and(|s| Arc::ptr_eq(s, &upstream)) {
                        sockets.remove(&key);
                    }
                    return;
                }
            }
        }
    }
}
