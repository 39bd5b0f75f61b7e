//! The access log: one typed record per thing a proxy did with a request,
//! query or connection, written as one `tracing` event under [`TARGET`].
//! The agent reads these events by that target and by their field names
//! (its flow stream and `portcullis observe`), so each record's fields,
//! their order, how each is recorded (`%` Display, `?` Debug, plain string
//! or number) and its message are a contract: [`AccessRecord::emit`] is
//! the one place they are written.

use std::time::Duration;

use policy_model::NumericIdentity;
use policy_model::api::MismatchAction;

use crate::conn::ConnAddrs;
use crate::dns::metrics::DnsVerdict;
use crate::http::metrics::{ProtocolLabel, VerdictLabel};

#[cfg(test)]
mod tests;

/// The `tracing` target of every access-log event.
pub const TARGET: &str = "portcullis::proxy::access";

/// One access-log event, as each proxy writes it.
#[derive(Debug, Clone)]
pub enum AccessRecord<'a> {
    /// One HTTP request's end (message `request`).
    Http {
        method: &'a str,
        /// The request-target's path and query.
        path: &'a str,
        /// Empty when the request has none (or was rejected unread).
        authority: &'a str,
        status: u16,
        verdict: VerdictLabel,
        protocol: ProtocolLabel,
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        /// Empty when the request was rejected before any lookup.
        src_identity: &'a str,
        dst_identity: &'a str,
        latency: Duration,
        reason: &'a str,
    },
    /// An HTTP connection closed because a policy change revoked its flow.
    HttpRevoked {
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        reason: &'a str,
    },
    /// A `headerMatches` mismatch action applied to a forwarded request.
    HeaderMismatch {
        /// Logged as `client` and `dst` (the original destination).
        addrs: ConnAddrs,
        header: &'a str,
        /// The value the rule expects, `[redacted]` for a secret.
        expected: &'a str,
        action: MismatchAction,
    },
    /// A TLS connection on an HTTP port the proxy did not serve as HTTP.
    Tls {
        /// Empty without SNI.
        sni: &'a str,
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        outcome: TlsOutcome<'a>,
    },
    /// One DNS query's end (message `dns`).
    Dns {
        transport: &'a str,
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        src_identity: NumericIdentity,
        dst_identity: NumericIdentity,
        /// The question names, comma-separated.
        query: &'a str,
        qtype: &'a str,
        rcode: &'a str,
        answers: &'a str,
        verdict: DnsVerdict,
        latency: Duration,
        /// How long the answer was held for the learner, if it was.
        hold: Option<Duration>,
        reason: &'a str,
    },
    /// One Kafka request's end (message `kafka request`).
    Kafka {
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        api_key: &'a str,
        api_version: i16,
        correlation_id: i32,
        client_id: &'a str,
        topics: &'a str,
        /// `allowed`, `audit`, `denied` or `upstream_error`.
        verdict: &'a str,
        latency: Duration,
        reason: &'a str,
        /// Empty when nothing failed.
        error: &'a str,
    },
    /// A Kafka request that cannot be read: the connection is closed
    /// (logged as a warning, verdict `invalid`).
    KafkaUnreadable {
        /// Logged as `src` (the client) and `dst` (the original destination).
        addrs: ConnAddrs,
        api_key: &'a str,
        reason: &'a str,
    },
}

/// What became of a TLS connection the proxy passed through or closed.
#[derive(Debug, Clone, Copy)]
pub enum TlsOutcome<'a> {
    /// Closed: its TLS (or its absence) is not admitted; the reason.
    Closed(&'a str),
    /// The upstream could not be reached; the error.
    UpstreamUnreachable(&'a str),
    /// Passed through without termination (`serverNames` allowed it).
    PassedThrough,
    /// Passed through without termination although a policy would close
    /// it (audit mode); why it would.
    PassedThroughAudit(&'a str),
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl AccessRecord<'_> {
    /// Writes the record as today's event for its kind.
    pub fn emit(&self) {
        match *self {
            AccessRecord::Http {
                method,
                path,
                authority,
                status,
                verdict,
                protocol,
                addrs,
                src_identity,
                dst_identity,
                latency,
                reason,
            } => tracing::info!(
                target: TARGET,
                method = %method,
                path = %path,
                authority = authority,
                status = status,
                verdict = ?verdict,
                protocol = ?protocol,
                src = %addrs.client,
                dst = %addrs.original_dst,
                src_identity = %src_identity,
                dst_identity = %dst_identity,
                latency_us = micros(latency),
                reason = %reason,
                "request"
            ),
            AccessRecord::HttpRevoked { addrs, reason } => tracing::info!(
                target: TARGET,
                verdict = "Denied",
                src = %addrs.client,
                dst = %addrs.original_dst,
                reason = %reason,
                "connection closed: the policy no longer allows its flow"
            ),
            AccessRecord::HeaderMismatch {
                addrs,
                header,
                expected,
                action,
            } => tracing::info!(
                target: TARGET,
                client = %addrs.client,
                dst = %addrs.original_dst,
                header = %header,
                expected = expected,
                action = ?action,
                "headerMatches mismatch"
            ),
            AccessRecord::Tls {
                sni,
                addrs,
                outcome,
            } => emit_tls(sni, addrs, outcome),
            AccessRecord::Dns {
                transport,
                addrs,
                src_identity,
                dst_identity,
                query,
                qtype,
                rcode,
                answers,
                verdict,
                latency,
                hold,
                reason,
            } => tracing::info!(
                target: TARGET,
                protocol = "dns",
                transport = transport,
                src = %addrs.client,
                dst = %addrs.original_dst,
                src_identity = %src_identity,
                dst_identity = %dst_identity,
                query = %query,
                qtype = %qtype,
                rcode = %rcode,
                answers = %answers,
                verdict = ?verdict,
                latency_us = micros(latency),
                hold_us = hold.map_or(0, micros),
                reason = %reason,
                "dns"
            ),
            AccessRecord::Kafka {
                addrs,
                api_key,
                api_version,
                correlation_id,
                client_id,
                topics,
                verdict,
                latency,
                reason,
                error,
            } => tracing::info!(
                target: TARGET,
                protocol = "kafka",
                src = %addrs.client,
                dst = %addrs.original_dst,
                api_key = api_key,
                api_version = api_version,
                correlation_id = correlation_id,
                client_id = %client_id,
                topics = %topics,
                verdict = verdict,
                latency_us = micros(latency),
                reason = %reason,
                error = error,
                "kafka request"
            ),
            AccessRecord::KafkaUnreadable {
                addrs,
                api_key,
                reason,
            } => tracing::warn!(
                target: TARGET,
                protocol = "kafka",
                src = %addrs.client,
                dst = %addrs.original_dst,
                api_key = api_key,
                verdict = "invalid",
                reason = %reason,
                "Kafka request cannot be read; closing the connection"
            ),
        }
    }
}

/// The TLS events: one message per outcome, as the TLS proxy wrote them.
fn emit_tls(sni: &str, addrs: ConnAddrs, outcome: TlsOutcome<'_>) {
    match outcome {
        TlsOutcome::Closed(reason) => tracing::info!(
            target: TARGET,
            protocol = "tls",
            sni = sni,
            verdict = "Denied",
            src = %addrs.client,
            dst = %addrs.original_dst,
            reason = %reason,
            "tls connection closed"
        ),
        TlsOutcome::UpstreamUnreachable(reason) => tracing::info!(
            target: TARGET,
            protocol = "tls",
            sni = sni,
            verdict = "UpstreamError",
            src = %addrs.client,
            dst = %addrs.original_dst,
            reason = %reason,
            "tls connection: upstream unreachable"
        ),
        TlsOutcome::PassedThrough => tracing::info!(
            target: TARGET,
            protocol = "tls",
            sni = sni,
            verdict = "Allowed",
            src = %addrs.client,
            dst = %addrs.original_dst,
            reason = "serverNames: passed through without termination",
            "tls connection"
        ),
        TlsOutcome::PassedThroughAudit(reason) => tracing::info!(
            target: TARGET,
            protocol = "tls",
            sni = sni,
            verdict = "Audit",
            src = %addrs.client,
            dst = %addrs.original_dst,
            reason = %reason,
            "tls connection"
        ),
    }
}
