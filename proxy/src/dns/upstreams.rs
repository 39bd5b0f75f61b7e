//! [`UdpUpstreams`]: connected upstream sockets per (source address,
//! server). A socket takes at most `rotate_after` queries (the agent's
//! default: one), then a new socket, with a new port the kernel picks at
//! random, takes the next ones; the old one closes once its queries are
//! answered or timed out. A socket closes after an idle period without
//! queries. Each socket, its queries in flight and its reader:
//! [`super::upstream_socket`].

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::RandomState;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::DnsMetrics;
use super::parse::HEADER_LEN;
use super::reply::ReplySockets;
use super::sockets::lock;
use super::upstream_socket::{
    InFlight, OnAnswer, UpstreamKey, UpstreamSocket, read_answers, upstream_socket,
};
use crate::conn::ConnAddrs;
use crate::policy::ProxyPolicy;
use crate::upstream::{UpstreamConfig, bind_client_address};

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
    /// every [`SWEEP`](super::upstream_socket::SWEEP)).
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

/// Sockets that take more queries than this get the large receive buffer
/// of a shared socket.
const ROTATE_SHARED: u32 = 16;
