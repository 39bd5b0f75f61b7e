//! UDP sockets kept across queries, so a query costs datagrams and no
//! socket setup:
//!
//! - [`ReplySockets`]: one transparent socket per original destination
//!   (the server address a client asked), bound to it with
//!   `IP_TRANSPARENT` + `SO_REUSEADDR`, that sends the answers from there.
//!   It is never connected, so the datapath never assigns a client's
//!   packet to it (only a connected UDP socket is a per-flow proxy
//!   socket there).
//! - [`UdpUpstreams`]: connected upstream sockets per (source address,
//!   server). A socket takes at most `rotate_after` queries (the agent's
//!   default: one), then a new socket, with a new port the kernel picks at
//!   random, takes the next ones; the old one closes once its queries are
//!   answered or timed out. Each query goes out under an id the proxy
//!   picks (unpredictable, unique among the socket's queries in flight)
//!   and, with `randomize_case`, its question name in a random letter
//!   case (DNS 0x20). An answer is handed to the query whose id and first
//!   question (exactly, case included, when randomized) it carries, with
//!   the client's id and question put back. Other datagrams are dropped
//!   and counted. A socket closes after an idle period without queries.
//!
//! Both queue what they send and send it with one `sendmmsg` per socket
//! at the end of each batch of datagrams read (the listener's queries, a
//! reader's answers): a batch wakes the server and the client once, not
//! once per datagram.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::metrics::DnsMetrics;
use super::parse::HEADER_LEN;
use crate::conn::ConnAddrs;
use crate::policy::ProxyPolicy;
use crate::upstream::{UpstreamConfig, bind_client_address};

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

/// How often an upstream socket's reader looks for queries past their
/// deadline (so a query's timeout is its `upstream_timeout` plus at most
/// this).
pub(crate) const SWEEP: Duration = Duration::from_millis(50);

/// Datagrams read from a socket per wake-up before other tasks get a turn.
pub(crate) const BATCH: usize = 64;

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

/// Messages per `sendmmsg` call.
const SENDMMSG_MAX: usize = 64;

/// Sends datagrams with one `sendmmsg` (each to its address, or to the
/// connected peer for `None`); how many went out, from the first. An error
/// only when the first could not go (`WouldBlock`: the buffer is full).
fn send_many(socket: &UdpSocket, messages: &[(&[u8], Option<SocketAddr>)]) -> io::Result<usize> {
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

/// What a query sent on an upstream socket gets, exactly once: the
/// server's answer (with the client's id put back), or why there is none
/// (cannot send, the server is unreachable, no answer in time). It runs on
/// the socket's reader task: it must not block.
pub(crate) type OnAnswer = Box<dyn FnOnce(io::Result<Vec<u8>>) + Send>;

/// Upstream UDP sockets shared by the queries in flight.
pub(crate) struct UdpUpstreams {
    sockets: Arc<Mutex<HashMap<UpstreamKey, Arc<UpstreamSocket>>>>,
    /// Sockets with queries queued since the last [`flush`](Self::flush).
    queued: Mutex<Vec<Arc<UpstreamSocket>>>,
    /// Where the answers go: flushed after each batch of answers read.
    replies: Arc<ReplySockets>,
    /// How the sockets protect their queries against forged answers.
    guard: AnswerGuard,
    metrics: Arc<DnsMetrics>,
}

/// What makes an off-path forged answer hard to get accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerGuard {
    /// Queries a socket takes before a new socket (a new random source
    /// port) takes the next ones.
    pub rotate_after: u32,
    /// Whether question names go out in a random letter case, which the
    /// answer must echo exactly.
    pub randomize_case: bool,
}

impl Default for UdpUpstreams {
    /// One socket per (source, server) kept for every query, names as
    /// asked (the unit tests of sharing use it; the proxy passes its
    /// configuration to [`UdpUpstreams::new`]).
    fn default() -> Self {
        UdpUpstreams::new(
            Arc::default(),
            AnswerGuard {
                rotate_after: u32::MAX,
                randomize_case: false,
            },
            Arc::default(),
        )
    }
}

/// One connected upstream socket and the queries in flight on it.
struct UpstreamSocket {
    socket: UdpSocket,
    in_flight: Mutex<InFlight>,
    /// (proxy id, query) sent by the next flush.
    outbox: Mutex<Vec<(u16, Vec<u8>)>>,
    /// Set when a query takes the socket, cleared by its reader at each
    /// idle check (both under the pool's lock).
    used: AtomicBool,
    /// Queries that took the socket (under the pool's lock).
    taken: std::sync::atomic::AtomicU32,
    /// Out of the pool: takes no more queries and closes once its queries
    /// are answered or timed out.
    retired: AtomicBool,
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
    /// The first question as the client sent it (put back in the answer
    /// when its case was randomized); `None`: sent as asked.
    asked: Option<Box<[u8]>>,
    /// The id the client sent.
    client_id: [u8; 2],
    /// When the query gets [`no_answer_within`] `timeout` instead.
    deadline: Instant,
    timeout: Duration,
    on_answer: OnAnswer,
}

impl UdpUpstreams {
    /// Upstream sockets whose readers flush `replies` after each batch.
    pub(crate) fn new(
        replies: Arc<ReplySockets>,
        guard: AnswerGuard,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        UdpUpstreams {
            sockets: Arc::default(),
            queued: Mutex::default(),
            replies,
            guard: AnswerGuard {
                rotate_after: guard.rotate_after.max(1),
                ..guard
            },
            metrics,
        }
    }

    /// Queues `query` for `addrs.upstream` (marked, from the client's
    /// address when [`bind_client_address`] says so) under a proxy id, sent
    /// by the next [`flush`](Self::flush); `on_answer` gets the server's
    /// answer, or an error when there is none within `timeout` (checked
    /// every [`SWEEP`]).
    pub(crate) fn send(
        &self,
        cfg: &UpstreamConfig,
        policy: &ProxyPolicy,
        addrs: ConnAddrs,
        query: &[u8],
        timeout: Duration,
        on_answer: OnAnswer,
    ) {
        let upstream = match self.upstream_for(cfg, policy, addrs, query) {
            Ok(upstream) => upstream,
            Err(e) => return on_answer(Err(e)),
        };
        let (id, out) =
            match upstream.register(query, timeout, self.guard.randomize_case, on_answer) {
                Ok(sent) => sent,
                Err((e, on_answer)) => return on_answer(Err(e)),
            };
        let mut outbox = lock(&upstream.outbox);
        let first = outbox.is_empty();
        outbox.push((id, out));
        drop(outbox);
        if first {
            lock(&self.queued).push(upstream);
        }
    }

    /// Sends the queued queries, a `sendmmsg` per socket.
    pub(crate) fn flush(&self) {
        let queued = std::mem::take(&mut *lock(&self.queued));
        for upstream in queued {
            upstream.flush(&self.replies);
        }
    }

    /// [`send`](Self::send), awaited (the unit tests of the sockets; the
    /// proxy's UDP path runs [`send`](Self::send) inline).
    #[cfg(test)]
    pub(crate) async fn exchange(
        &self,
        cfg: &UpstreamConfig,
        policy: &ProxyPolicy,
        addrs: ConnAddrs,
        query: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(
            cfg,
            policy,
            addrs,
            query,
            timeout,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        );
        self.flush();
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the upstream socket closed")))
    }

    /// The socket a query from `addrs.client` to `addrs.upstream` goes
    /// out on.
    fn upstream_for(
        &self,
        cfg: &UpstreamConfig,
        policy: &ProxyPolicy,
        addrs: ConnAddrs,
        query: &[u8],
    ) -> io::Result<Arc<UpstreamSocket>> {
        let server = addrs.upstream;
        if query.len() < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a query shorter than a DNS header",
            ));
        }
        let source = if bind_client_address(cfg, policy, server.ip()) {
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
        self.socket(cfg, (source, server))
    }

    /// The socket for `key`, made (with its reader task) if there is none.
    fn socket(&self, cfg: &UpstreamConfig, key: UpstreamKey) -> io::Result<Arc<UpstreamSocket>> {
        let mut sockets = lock(&self.sockets);
        let upstream = match sockets.entry(key) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let shared = self.guard.rotate_after > ROTATE_SHARED;
                let upstream = Arc::new(UpstreamSocket {
                    socket: upstream_socket(cfg, key, shared)?,
                    in_flight: Mutex::new(InFlight {
                        ids: RandomState::new(),
                        counter: 0,
                        waiting: HashMap::new(),
                    }),
                    outbox: Mutex::new(Vec::new()),
                    used: AtomicBool::new(false),
                    taken: std::sync::atomic::AtomicU32::new(0),
                    retired: AtomicBool::new(false),
                });
                e.insert(upstream.clone());
                tokio::spawn(read_answers(
                    upstream.clone(),
                    self.sockets.clone(),
                    key,
                    self.replies.clone(),
                    self.metrics.clone(),
                ));
                upstream
            }
        };
        upstream.used.store(true, Ordering::Relaxed);
        let taken = upstream.taken.fetch_add(1, Ordering::Relaxed) + 1;
        if taken >= self.guard.rotate_after {
            // The next query gets a new socket, with a new random port.
            upstream.retired.store(true, Ordering::Release);
            sockets.remove(&key);
        }
        Ok(upstream)
    }
}

impl UpstreamSocket {
    /// Sends the queued queries: at once, or from a task for what the
    /// socket's buffer cannot take. A query that cannot be sent fails (its
    /// answer, SERVFAIL, goes through `replies`).
    fn flush(self: &Arc<Self>, replies: &Arc<ReplySockets>) {
        let out = std::mem::take(&mut *lock(&self.outbox));
        let mut sent = 0;
        while sent < out.len() {
            let batch: Vec<(&[u8], Option<SocketAddr>)> = out[sent..]
                .iter()
                .map(|(_, q)| (q.as_slice(), None))
                .collect();
            match send_many(&self.socket, &batch) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let rest = out[sent..].to_vec();
                    let upstream = self.clone();
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        for (id, query) in rest {
                            if let Err(e) = upstream.socket.send(&query).await {
                                upstream.fail(id, &e);
                            }
                        }
                        replies.flush();
                    });
                    return;
                }
                Err(e) => {
                    self.fail(out[sent].0, &e);
                    sent += 1;
                }
            }
        }
    }

    /// Takes an id for `query`, randomizes its first question's letter
    /// case if asked, and registers it (before it is sent, so its answer
    /// cannot come first); returns the id and the message to send. Without
    /// a free id the callback comes back with the error.
    fn register(
        &self,
        query: &[u8],
        timeout: Duration,
        randomize_case: bool,
        on_answer: OnAnswer,
    ) -> Result<(u16, Vec<u8>), (io::Error, OnAnswer)> {
        let mut out = query.to_vec();
        let end = first_question_end(query);
        let mut in_flight = lock(&self.in_flight);
        let mut asked = None;
        if randomize_case && let Some(end) = end {
            in_flight.counter += 1;
            let seed = in_flight.ids.hash_one((in_flight.counter, "0x20"));
            randomize_name_case(&mut out[HEADER_LEN..end], seed, &in_flight.ids);
            asked = Some(query[HEADER_LEN..end].to_vec().into_boxed_slice());
        }
        let question = match end {
            Some(end) => [&out[4..6], &out[HEADER_LEN..end]].concat(),
            None => out[4..6].to_vec(),
        };
        for _ in 0..ID_DRAWS {
            in_flight.counter += 1;
            let id = in_flight.ids.hash_one(in_flight.counter) as u16;
            if let Entry::Vacant(e) = in_flight.waiting.entry(id) {
                e.insert(Waiter {
                    question: question.into_boxed_slice(),
                    asked,
                    client_id: [query[0], query[1]],
                    deadline: Instant::now() + timeout,
                    timeout,
                    on_answer,
                });
                out[..2].copy_from_slice(&id.to_be_bytes());
                return Ok((id, out));
            }
        }
        Err((
            io::Error::other("no free query id on the upstream socket"),
            on_answer,
        ))
    }

    /// Hands `answer` to the query it answers; drops it (and counts it)
    /// when none.
    fn dispatch(&self, answer: &[u8], metrics: &DnsMetrics) {
        if answer.len() < HEADER_LEN {
            metrics.mismatched_answer();
            return;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        let mut in_flight = lock(&self.in_flight);
        let matches = in_flight.waiting.get(&id).is_some_and(|w| {
            if w.asked.is_some() {
                answers_question_exactly(&w.question, answer)
            } else {
                answers_question(&w.question, answer)
            }
        });
        if !matches {
            drop(in_flight);
            metrics.mismatched_answer();
            tracing::debug!(id, "dropped a DNS datagram that answers no query in flight");
            return;
        }
        let waiter = in_flight.waiting.remove(&id).expect("found above");
        drop(in_flight);
        let mut answer = answer.to_vec();
        answer[..2].copy_from_slice(&waiter.client_id);
        if let Some(asked) = &waiter.asked
            && answer[4..6] != [0, 0]
        {
            // Same length as the question the answer carries (checked).
            answer[HEADER_LEN..HEADER_LEN + asked.len()].copy_from_slice(asked);
        }
        (waiter.on_answer)(Ok(answer));
    }

    /// Fails the query `id` with `e` (it could not be sent).
    fn fail(&self, id: u16, e: &io::Error) {
        let waiter = lock(&self.in_flight).waiting.remove(&id);
        if let Some(w) = waiter {
            (w.on_answer)(Err(io::Error::new(e.kind(), e.to_string())));
        }
    }

    /// Fails every query in flight with `e` (the server is unreachable).
    fn fail_all(&self, e: &io::Error) {
        let waiting = std::mem::take(&mut lock(&self.in_flight).waiting);
        for (_, w) in waiting {
            (w.on_answer)(Err(io::Error::new(e.kind(), e.to_string())));
        }
    }

    /// Fails the queries past their deadline.
    fn sweep(&self, now: Instant) {
        let expired: Vec<Waiter> = {
            let mut in_flight = lock(&self.in_flight);
            if !in_flight.waiting.values().any(|w| w.deadline <= now) {
                return;
            }
            in_flight
                .waiting
                .extract_if(|_, w| w.deadline <= now)
                .map(|(_, w)| w)
                .collect()
        };
        for w in expired {
            (w.on_answer)(Err(no_answer_within(w.timeout)));
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

/// Whether `answer` carries exactly (case included) the question that was
/// forwarded with a randomized case. A header-only answer matches by id
/// only when it carries no records either.
pub(super) fn answers_question_exactly(question: &[u8], answer: &[u8]) -> bool {
    let qdcount = &answer[4..6];
    if qdcount == [0, 0] {
        return answer[6..12] == [0; 6];
    }
    let (count, first) = question.split_at(2);
    qdcount == count
        && answer
            .get(HEADER_LEN..HEADER_LEN + first.len())
            .is_some_and(|a| a == first)
}

/// Flips the case of the letters of an uncompressed name (labels, as in a
/// query's question) at random: one bit of `seed` per letter, re-drawn
/// from `keys` every 64 letters.
pub(super) fn randomize_name_case(name: &mut [u8], seed: u64, keys: &RandomState) {
    let mut bits = seed;
    let mut used = 0u32;
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        let len = usize::from(len);
        if len == 0 || len & 0xc0 != 0 {
            return;
        }
        let end = (i + 1 + len).min(name.len());
        for b in &mut name[i + 1..end] {
            if b.is_ascii_alphabetic() {
                if used == 64 {
                    bits = keys.hash_one(bits);
                    used = 0;
                }
                if bits & 1 == 1 {
                    *b ^= 0x20;
                }
                bits >>= 1;
                used += 1;
            }
        }
        i = end;
    }
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

/// Sockets that take more queries than this get the large receive buffer
/// of a shared socket.
const ROTATE_SHARED: u32 = 16;

/// A connected, non-blocking UDP socket to `key.1`, marked as configured
/// and bound to `key.0` (with `IP_TRANSPARENT`) if given, on a port the
/// kernel picks at random. `shared`: it takes many queries, give it room
/// for their answers.
fn upstream_socket(
    cfg: &UpstreamConfig,
    (source, server): UpstreamKey,
    shared: bool,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    if shared {
        set_receive_buffer(&socket, UPSTREAM_RCVBUF)?;
    }
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

/// Reads the answers of one upstream socket, and every [`SWEEP`] fails the
/// queries past their deadline, until it has been idle for
/// [`UPSTREAM_IDLE`] with nothing in flight; then takes it out of the pool.
async fn read_answers(
    upstream: Arc<UpstreamSocket>,
    pool: Arc<Mutex<HashMap<UpstreamKey, Arc<UpstreamSocket>>>>,
    key: UpstreamKey,
    replies: Arc<ReplySockets>,
    metrics: Arc<DnsMetrics>,
) {
    let mut buf = vec![0u8; MAX_UDP];
    let sweep = tokio::time::sleep(SWEEP);
    tokio::pin!(sweep);
    let mut sweeps = 0u32;
    let sweeps_per_idle_check = (UPSTREAM_IDLE.as_millis() / SWEEP.as_millis()).max(1) as u32;
    loop {
        tokio::select! {
            ready = upstream.socket.readable() => {
                if let Err(e) = ready {
                    tracing::warn!(server = %key.1, error = %e, "DNS upstream socket failed");
                    upstream.fail_all(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                for _ in 0..BATCH {
                    match upstream.socket.try_recv(&mut buf) {
                        Ok(n) => upstream.dispatch(&buf[..n], &metrics),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // On a connected UDP socket: an ICMP error from
                            // the server (port unreachable, ...). Its queries
                            // get no answer.
                            tracing::debug!(server = %key.1, error = %e, "DNS upstream socket error");
                            upstream.fail_all(&e);
                            // An ICMP error is reported once; anything else
                            // could repeat at once: do not spin on it.
                            if e.kind() != io::ErrorKind::ConnectionRefused {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            break;
                        }
                    }
                }
            }
            () = &mut sweep => {}
        }
        let now = tokio::time::Instant::now();
        let swept = now >= sweep.deadline();
        if swept {
            sweep.as_mut().reset(now + SWEEP);
            upstream.sweep(now.into_std());
        }
        // The answers of this batch (and any failures) go out together.
        replies.flush();
        if upstream.retired.load(Ordering::Acquire) && lock(&upstream.in_flight).waiting.is_empty()
        {
            // Rotated out and nothing left to answer: close it now.
            return;
        }
        if !swept {
            continue;
        }
        sweeps += 1;
        if sweeps < sweeps_per_idle_check {
            continue;
        }
        sweeps = 0;
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

/// The error of a query the server did not answer in time.
pub(crate) fn no_answer_within(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {timeout:?}"),
    )
}
