//! Connection limits for the proxies: how many connections one source and
//! the whole proxy may hold open, and how long a connection may stay silent
//! or take to send a request head: the HTTP proxy's. The counting is the
//! one [`SourceBudget`] every proxy uses ([`crate::budget`]); a source
//! over its own share is refused as `source` even when the proxy is full
//! too.
//!
//! A limit is applied **after** `accept`, when the datapath has said whose
//! connection it is: the accepted socket's peer address is the real source
//! (the redirect keeps it, and spoofed sources are dropped in the kernel),
//! and the policy snapshot maps it to a [`SourceKey`]. A refused connection
//! is closed at once, never served and never forwarded; each refusal is
//! counted in [`LimitMetrics`].
//!
//! Defaults ([`LimitConfig::for_descriptors`]): the process's open-file
//! limit minus [`DESCRIPTOR_RESERVE`] for the agent's own work (policy
//! files, maps, the API, DNS), halved because a proxied connection holds two
//! descriptors (downstream and upstream), capped at [`MAX_GLOBAL`]; one
//! source may hold an eighth of that ([`PER_SOURCE_SHARE`]), at least
//! [`MIN_PER_SOURCE`]. With the lab's limit of 20,000 descriptors that is
//! 9,488 connections in all and 1,186 per source.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::budget::{self, BudgetGrant, BudgetRefusal, SourceBudget};

/// Descriptors kept for the agent's own work, never used by proxied
/// connections.
pub const DESCRIPTOR_RESERVE: u64 = 1024;
/// The most connections one proxy holds whatever the descriptor limit.
pub const MAX_GLOBAL: usize = 32_768;
/// One source may hold this fraction (1/n) of the global cap.
pub const PER_SOURCE_SHARE: usize = 8;
/// The per-source cap is never below this.
pub const MIN_PER_SOURCE: usize = 16;
/// The descriptor limit assumed when `/proc/self/limits` cannot be read
/// (the usual soft default).
pub const FALLBACK_DESCRIPTORS: u64 = 1024;

/// Default bound on receiving one request head once a connection is open
/// (slowloris); the HTTP proxy's `ProxyConfig::header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on a connection with no byte read or written either way.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The limits of one proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Connections open at once in the proxy; the next is closed.
    pub global: usize,
    /// Connections open at once from one [`SourceKey`]; the next is closed.
    pub per_source: usize,
    /// Time a connection may pass with no byte read or written; then it is
    /// closed (a request waiting on a silent upstream counts as idle).
    pub idle_timeout: Duration,
}

impl LimitConfig {
    /// The defaults for a process that may open `descriptors` files (see
    /// the module doc).
    pub fn for_descriptors(descriptors: u64) -> LimitConfig {
        let usable = descriptors.saturating_sub(DESCRIPTOR_RESERVE) / 2;
        // Even a tiny limit leaves a few connections (the reserve is then
        // what suffers, which the agent reports by raising the limit).
        let global = (usable as usize).clamp(MIN_PER_SOURCE, MAX_GLOBAL);
        LimitConfig {
            global,
            per_source: (global / PER_SOURCE_SHARE).max(MIN_PER_SOURCE).min(global),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// The defaults for this process's current open-file limit.
    pub fn from_process() -> LimitConfig {
        LimitConfig::for_descriptors(descriptor_limit().unwrap_or(FALLBACK_DESCRIPTORS))
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig::from_process()
    }
}

/// The soft open-file limit of this process (`Max open files` in
/// `/proc/self/limits`); `None` if unreadable or unlimited.
pub fn descriptor_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_descriptor_limit(&text)
}

fn parse_descriptor_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whose connection it is, for the per-source cap: a local endpoint (all
/// its addresses share one budget), or a remote address (IPv6 by its /64,
/// which one host usually holds whole).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// A local endpoint, by `namespace/name`.
    Endpoint(Arc<str>),
    /// A remote IPv4 address.
    V4(std::net::Ipv4Addr),
    /// A remote IPv6 /64 (the first 64 bits).
    V6Prefix(u64),
}

impl SourceKey {
    /// The key of a remote address.
    pub fn remote(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue, thiserror::Error)]
pub enum LimitRefusal {
    /// The source holds [`LimitConfig::per_source`] connections.
    #[error("the source holds its limit of connections")]
    Source,
    /// The proxy holds [`LimitConfig::global`] connections.
    #[error("the proxy holds its limit of connections")]
    Global,
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum TimeoutKind {
    /// No complete request head within the header timeout.
    Header,
    /// No byte either way within the idle timeout.
    Idle,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    limit: LimitRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    timeout: TimeoutKind,
}

/// Counters of what the limits refused and closed. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct LimitMetrics {
    refused: Family<RefusalLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
    held: Gauge,
}

impl LimitMetrics {
    /// Registers `connections_refused_total{limit}`,
    /// `connection_timeouts_total{timeout}` and `limited_connections` in
    /// `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_refused",
            "Connections closed at accept by a connection limit, by limit",
            self.refused.clone(),
        );
        registry.register(
            "connection_timeouts",
            "Connections closed by a header or idle timeout",
            self.timeouts.clone(),
        );
        registry.register(
            "limited_connections",
            "Connections counted against the connection limits",
            self.held.clone(),
        );
    }

    /// Connections refused by `limit` so far.
    pub fn refused(&self, limit: LimitRefusal) -> u64 {
        self.refused.get_or_create(&RefusalLabels { limit }).get()
    }

    /// Connections closed by `timeout` so far.
    pub fn timeouts(&self, timeout: TimeoutKind) -> u64 {
        self.timeouts
            .get_or_create(&TimeoutLabels { timeout })
            .get()
    }

    /// Counts a connection closed by `timeout`.
    pub fn timed_out(&self, timeout: TimeoutKind) {
        self.timeouts
            .get_or_create(&TimeoutLabels { timeout })
            .inc();
    }
}

/// The shared state of the limits: open connections per source and in all
/// (one [`SourceBudget`] of connections), with their counters.
#[derive(Debug)]
pub struct ConnectionLimits {
    config: LimitConfig,
    budget: Arc<SourceBudget<SourceKey>>,
    metrics: LimitMetrics,
}

impl ConnectionLimits {
    /// Limits with `config`, counting into `metrics`.
    pub fn new(config: LimitConfig, metrics: LimitMetrics) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            budget: SourceBudget::new(config.global as u64, config.per_source as u64),
            config,
            metrics,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &LimitMetrics {
        &self.metrics
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        usize::try_from(self.budget.held()).unwrap_or(usize::MAX)
    }

    /// Admits one more connection from `source`, or says which limit
    /// refuses it (and counts the refusal). The connection counts until
    /// the permit drops.
    pub fn admit(self: &Arc<Self>, source: SourceKey) -> Result<ConnectionPermit, LimitRefusal> {
        let mut refusal = None;
        let grant = budget::admit(&self.budget, source, |why, _| {
            let limit = match why {
                BudgetRefusal::PerSource => LimitRefusal::Source,
                BudgetRefusal::Total => LimitRefusal::Global,
            };
            self.metrics
                .refused
                .get_or_create(&RefusalLabels { limit })
                .inc();
            refusal = Some(limit);
        });
        match grant {
            Some(grant) => {
                self.metrics.held.inc();
                Ok(ConnectionPermit {
                    grant,
                    held: self.metrics.held.clone(),
                })
            }
            None => Err(refusal.unwrap_or(LimitRefusal::Global)),
        }
    }
}

/// One admitted connection; releases its place when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    grant: BudgetGrant<SourceKey>,
    held: Gauge,
}

impl ConnectionPermit {
    /// The source it was admitted for.
    pub fn source(&self) -> &SourceKey {
        self.grant.source()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.held.dec();
    }
}

/// A byte stream closed (every read and write fails with `TimedOut`) once
/// nothing was read or written for `timeout`. Reads are polled whenever a
/// connection waits for its peer, so the deadline is noticed there.
#[derive(Debug)]
pub struct IdleTimeout<I> {
    inner: I,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
    metrics: LimitMetrics,
}

impl<I> IdleTimeout<I> {
    /// Wraps `inner`; an expiry is counted in `metrics`.
    pub fn new(inner: I, timeout: Duration, metrics: LimitMetrics) -> IdleTimeout<I> {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
            metrics,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    fn progress(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// `Err(TimedOut)` once the deadline passed (counted once).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.expired && self.deadline.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        if !self.expired {
            self.expired = true;
            self.metrics.timed_out(TimeoutKind::Idle);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection idle for longer than the idle timeout",
        ))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(this.check(cx));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(this.check(cx).map(|()| 0));
        }
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
