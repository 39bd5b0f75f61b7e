//! One query, whatever the transport: parse and judge, deny or forward,
//! hold an allowed answer until the learner has the names, log.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;

use super::deny::{self, ProxyRcode};
use super::judge::{Transport, decide};
use super::learn::{LearnLimits, LearnedNames, NameLearner, addresses};
use super::metrics::{DnsMetrics, DnsVerdict, TransportLabel};
use super::parse::{DnsAnswer, DnsQuery, ParseError};
use super::sockets::{ReplySockets, UdpUpstreams};
use super::{DnsConfig, tcp};
use crate::policy::PolicyHandle;

/// What every query task shares.
pub(crate) struct DnsShared {
    pub policy: PolicyHandle,
    pub config: DnsConfig,
    pub learner: Arc<dyn NameLearner>,
    pub metrics: Arc<DnsMetrics>,
    /// Upstream UDP sockets shared by the queries in flight.
    pub udp_upstreams: UdpUpstreams,
    /// Transparent sockets the UDP answers are sent from.
    pub reply_sockets: ReplySockets,
}

/// Where a query came from and goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryAddrs {
    pub client: SocketAddr,
    /// What the policy sees as the DNS server.
    pub original_dst: SocketAddr,
    /// Where an allowed query is sent (the original destination, except
    /// in fixed-destination mode).
    pub upstream: SocketAddr,
}

/// Everything the access log says about a query.
struct Outcome {
    verdict: DnsVerdict,
    rcode: Cow<'static, str>,
    answers: String,
    reason: String,
    hold: Option<Duration>,
}

/// Answers one query message; `None`: send nothing back.
pub(crate) async fn exchange(
    shared: &DnsShared,
    transport: Transport,
    addrs: QueryAddrs,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let start = Instant::now();
    let policy = shared.policy.snapshot();
    let decision = decide(&policy, addrs.client, addrs.original_dst, transport, bytes);
    drop(policy);
    let (response, outcome, query) = match decision.query {
        Err(ParseError::NotAQuery) => {
            // Never answer a response: that could loop between two proxies.
            tracing::debug!(client = %addrs.client, "dropped a DNS response sent as a query");
            shared.metrics.query(label(transport), DnsVerdict::Invalid);
            return None;
        }
        Err(e) => {
            let response = deny::format_error(bytes);
            let outcome = Outcome {
                verdict: DnsVerdict::Invalid,
                rcode: ProxyRcode::FormErr.as_str().into(),
                answers: String::new(),
                reason: e.to_string(),
                hold: None,
            };
            (response, outcome, None)
        }
        Ok(query) if !decision.judgement.is_allowed() => {
            let rcode = ProxyRcode::from(shared.config.deny_response);
            let outcome = Outcome {
                verdict: DnsVerdict::Denied,
                rcode: rcode.as_str().into(),
                answers: String::new(),
                reason: decision.judgement.reason(),
                hold: None,
            };
            (Some(deny::respond(&query, rcode)), outcome, Some(query))
        }
        Ok(query) => {
            let (response, outcome) = forward(
                shared,
                transport,
                addrs,
                &query,
                bytes,
                decision.judgement.reason(),
            )
            .await;
            (Some(response), outcome, Some(query))
        }
    };
    shared.metrics.query(label(transport), outcome.verdict);
    let (names, qtypes) = query
        .as_ref()
        .map(|q| (q.names(), q.qtypes()))
        .unwrap_or_default();
    tracing::info!(
        target: "portcullis::proxy::access",
        protocol = "dns",
        transport = transport.as_str(),
        src = %addrs.client,
        dst = %addrs.original_dst,
        src_identity = %decision.rules.src_identity,
        dst_identity = %decision.rules.dst_identity,
        query = %names,
        qtype = %qtypes,
        rcode = %outcome.rcode,
        answers = %outcome.answers,
        verdict = ?outcome.verdict,
        latency_us = start.elapsed().as_micros() as u64,
        hold_us = outcome.hold.map_or(0, |h| h.as_micros() as u64),
        reason = %outcome.reason,
        "dns"
    );
    response
}

/// Forwards an allowed query and holds the answer for the learner.
async fn forward(
    shared: &DnsShared,
    transport: Transport,
    addrs: QueryAddrs,
    query: &DnsQuery,
    bytes: &[u8],
    reason: String,
) -> (Vec<u8>, Outcome) {
    let config = &shared.config;
    let exchanged = tokio::time::timeout(config.upstream_timeout, async {
        match transport {
            Transport::Udp => {
                shared
                    .udp_upstreams
                    .exchange(&config.upstream, addrs, bytes)
                    .await
            }
            Transport::Tcp => tcp::forward(&config.upstream, addrs, query.id, bytes).await,
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {:?}", config.upstream_timeout),
        ))
    });
    let answer = match exchanged {
        Ok(answer) => answer,
        Err(e) => {
            let outcome = Outcome {
                verdict: DnsVerdict::UpstreamError,
                rcode: ProxyRcode::ServFail.as_str().into(),
                answers: String::new(),
                reason: format!("upstream {}: {e}", addrs.upstream),
                hold: None,
            };
            return (deny::respond(query, ProxyRcode::ServFail), outcome);
        }
    };
    let Some(parsed) = DnsAnswer::parse(&answer) else {
        // Relayed as is: nothing is learned from it, so it opens nothing.
        let outcome = Outcome {
            verdict: DnsVerdict::Allowed,
            rcode: "unparsed".into(),
            answers: String::new(),
            reason,
            hold: None,
        };
        return (answer, outcome);
    };
    let hold = learn(shared, addrs, query, &parsed).await;
    let outcome = Outcome {
        verdict: DnsVerdict::Allowed,
        rcode: parsed.rcode(),
        answers: parsed.summary(),
        reason,
        hold,
    };
    (answer, outcome)
}

/// Hands what the answer teaches to the learner and waits (bounded) for
/// its acknowledgement. `None` when there was nothing to learn.
async fn learn(
    shared: &DnsShared,
    addrs: QueryAddrs,
    query: &DnsQuery,
    answer: &DnsAnswer,
) -> Option<Duration> {
    if answer.message.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    let limits = LearnLimits {
        min_ttl: shared.config.min_ttl,
        max_ips_per_name: shared.config.max_ips_per_name,
    };
    let updates: Vec<LearnedNames> = query
        .questions
        .iter()
        .map(|q| LearnedNames {
            source: addrs.client.ip().to_canonical(),
            name: q.normalized.clone(),
            ips: addresses(&answer.message, q.query.name(), limits),
        })
        .filter(|u| !u.ips.is_empty())
        .collect();
    if updates.is_empty() {
        return None;
    }
    let start = Instant::now();
    let acks: Vec<_> = updates
        .into_iter()
        .map(|u| shared.learner.learn(u))
        .collect();
    let all_acked = async {
        for ack in acks {
            // A dropped sender releases the answer too.
            let _ = ack.await;
        }
    };
    if tokio::time::timeout(shared.config.learn_timeout, all_acked)
        .await
        .is_err()
    {
        shared.metrics.learn_timeout();
        tracing::warn!(
            client = %addrs.client,
            query = %query.names(),
            timeout = ?shared.config.learn_timeout,
            "the learner did not acknowledge in time; answer released"
        );
    }
    let held = start.elapsed();
    shared.metrics.hold(held.as_secs_f64());
    Some(held)
}

fn label(transport: Transport) -> TransportLabel {
    match transport {
        Transport::Udp => TransportLabel::Udp,
        Transport::Tcp => TransportLabel::Tcp,
    }
}
