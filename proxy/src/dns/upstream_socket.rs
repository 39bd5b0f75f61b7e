//! One connected upstream socket (of the pool in `upstreams.rs`) and the
//! queries in flight on it. Each query goes out under an id the proxy
//! picks (unpredictable, unique among the socket's queries in flight)
//! and, with `randomize_case`, its question name in a random letter case
//! (DNS 0x20). An answer is handed to the query whose id and first
//! question (exactly, case included, when randomized) it carries, with
//! the client's id and question put back. Other datagrams are dropped
//! and counted. The socket's reader fails the queries past their
//! deadline and closes the socket once it is idle, or rotated out with
//! nothing left to answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::metrics::DnsMetrics;
use super::parse::HEADER_LEN;
use super::question::{
    answers_question, answers_question_exactly, first_question_end, randomize_name_case,
};
use super::reply::ReplySockets;
use super::sockets::{BATCH, MAX_UDP, lock, no_answer_within, send_many, set_receive_buffer};
use crate::upstream::UpstreamConfig;

/// An upstream socket with no query for this long (and none in flight)
/// is closed.
const UPSTREAM_IDLE: Duration = Duration::from_secs(10);

/// How often an upstream socket's reader looks for queries past their
/// deadline (so a query's timeout is its `upstream_timeout` plus at most
/// this).
pub(crate) const SWEEP: Duration = Duration::from_millis(50);

/// Receive buffer of a shared upstream socket: the answers of all its
/// queries in flight.
const UPSTREAM_RCVBUF: usize = 4 << 20;

/// Tries at drawing a query id not in flight on a socket. With at most
/// `max_in_flight` (4096 by default) of the 65,536 ids taken, a draw is
/// free with probability >= 15/16.
const ID_DRAWS: usize = 64;

/// Which upstream socket a query uses: the source address it is bound to
/// (`None`: the node's, chosen by the kernel) and the server.
pub(super) type UpstreamKey = (Option<IpAddr>, SocketAddr);

/// What a query sent on an upstream socket gets, exactly once: the
/// server's answer (with the client's id put back), or why there is none
/// (cannot send, the server is unreachable, no answer in time). It runs on
/// the socket's reader task: it must not block.
pub(crate) type OnAnswer = Box<dyn FnOnce(io::Result<Vec<u8>>) + Send>;

/// One connected upstream socket and the queries in flight on it.
pub(super) struct UpstreamSocket {
    pub(super) socket: UdpSocket,
    pub(super) in_flight: Mutex<InFlight>,
    /// (proxy id, query) sent by the next flush.
    pub(super) outbox: Mutex<Vec<(u16, Vec<u8>)>>,
    /// Set when a query takes the socket, cleared by its reader at each
    /// idle check (both under the pool's lock).
    pub(super) used: AtomicBool,
    /// Queries that took the socket (under the pool's lock).
    pub(super) taken: std::sync::atomic::AtomicU32,
    /// Out of the pool: takes no more queries and closes once its queries
    /// are answered or timed out.
    pub(super) retired: AtomicBool,
}

pub(super) struct InFlight {
    /// Keyed draws of the proxy's query ids (SipHash of a counter).
    pub(super) ids: RandomState,
    pub(super) counter: u64,
    pub(super) waiting: HashMap<u16, Waiter>,
}

/// A query waiting for its answer.
pub(super) struct Waiter {
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

impl UpstreamSocket {
    /// Sends the queued queries: at once, or from a task for what the
    /// socket's buffer cannot take. A query that cannot be sent fails (its
    /// answer, SERVFAIL, goes through `replies`).
    pub(super) fn flush(self: &Arc<Self>, replies: &Arc<ReplySockets>) {
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
    pub(super) fn register(
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

/// A connected, non-blocking UDP socket to `key.1`, marked as configured
/// and bound to `key.0` (with `IP_TRANSPARENT`) if given, on a port the
/// kernel picks at random. `shared`: it takes many queries, give it room
/// for their answers.
pub(super) fn upstream_socket(
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
pub(super) async fn read_answers(
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
