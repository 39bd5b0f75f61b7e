//! One query, whatever the transport, in steps the transports drive:
//! [`judge`] (parse, judge, deny), then for a forwarded query (allowed, or
//! passing as AUDIT) the server's answer goes to [`Forwarding::answered`]
//! (learn) and, if the learner has not acknowledged yet, [`Held::release`]
//! waits (bounded). Each step that ends the query writes its access-log
//! line. UDP runs the steps inline (no task per query, see `udp.rs`); TCP
//! awaits them one query at a time (`tcp.rs`).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use policy_model::NumericIdentity;
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::DnsConfig;
use super::deny::{self, ProxyRcode};
use super::judge::{Transport, decide};
use super::learn::{LearnLimits, LearnedNames, NameLearner, addresses};
use super::metrics::{DnsMetrics, DnsVerdict, TransportLabel};
use super::parse::{DnsAnswer, DnsQuery, ParseError};
use super::reply::ReplySockets;
use super::upstreams::UdpUpstreams;
use crate::access_log::AccessRecord;
use crate::conn::ConnAddrs;
use crate::policy::PolicyHandle;

/// What every query shares.
pub(crate) struct DnsShared {
    pub policy: PolicyHandle,
    pub config: DnsConfig,
    pub learner: Arc<dyn NameLearner>,
    pub metrics: Arc<DnsMetrics>,
    /// Upstream UDP sockets shared by the queries in flight.
    pub udp_upstreams: UdpUpstreams,
    /// Transparent sockets the UDP answers are sent from.
    pub reply_sockets: Arc<ReplySockets>,
    /// UDP queries a second per source.
    pub udp_rate: crate::budget::SourceRate,
    /// TCP connections held, per source and in total.
    pub tcp_connections: Arc<crate::budget::SourceBudget>,
}

/// Who asked, as the access log says it.
struct Asker {
    start: Instant,
    transport: Transport,
    addrs: ConnAddrs,
    src_identity: NumericIdentity,
    dst_identity: NumericIdentity,
}

/// Everything the access log says about a query's end.
struct Outcome {
    verdict: DnsVerdict,
    rcode: Cow<'static, str>,
    answers: String,
    reason: String,
    hold: Option<Duration>,
}

/// A query after [`judge`].
pub(crate) enum Judged {
    /// Send nothing back (a response sent as a query, or a message too
    /// short to answer).
    Nothing,
    /// The proxy's own answer (denied, malformed); already logged.
    Answer(Vec<u8>),
    /// Allowed, or passing as AUDIT: send the query to the server.
    Forward(Forwarding),
}

/// A forwarded query on its way to the server.
pub(crate) struct Forwarding {
    asker: Asker,
    query: DnsQuery,
    /// `Allowed` or `Audit`: the verdict logged once the server answers.
    verdict: DnsVerdict,
    reason: String,
}

/// A query after the server's answer.
pub(crate) enum Answered {
    /// Release this now; logged.
    Ready(Vec<u8>),
    /// The learner has not acknowledged yet: [`Held::release`].
    Held(Box<Held>),
}

/// A forwarded answer held until the learner acknowledges (bounded).
pub(crate) struct Held {
    fwd: Forwarding,
    answer: Vec<u8>,
    rcode: Cow<'static, str>,
    answers: String,
    acks: Vec<oneshot::Receiver<()>>,
    /// Whether the answer taught anything (else no hold is recorded).
    learning: bool,
    since: Instant,
}

/// Judges one query message. Overloaded queries are counted by the
/// caller, before this.
pub(crate) fn judge(
    shared: &DnsShared,
    transport: Transport,
    addrs: ConnAddrs,
    bytes: &[u8],
) -> Judged {
    let start = Instant::now();
    let decision = {
        let policy = shared.policy.snapshot();
        decide(&policy, addrs.client, addrs.original_dst, transport, bytes)
    };
    let asker = Asker {
        start,
        transport,
        addrs,
        src_identity: decision.rules.src_identity,
        dst_identity: decision.rules.dst_identity,
    };
    match decision.query {
        Err(ParseError::NotAQuery) => {
            // Never answer a response: that could loop between two proxies.
            tracing::debug!(client = %addrs.client, "dropped a DNS response sent as a query");
            shared.metrics.query(label(transport), DnsVerdict::Invalid);
            Judged::Nothing
        }
        Err(_) => {
            // The judgement is the malformed query's denial.
            let (verdict, reason) = decision.judgement.logged();
            let outcome = Outcome {
                verdict,
                rcode: ProxyRcode::FormErr.as_str().into(),
                answers: String::new(),
                reason,
                hold: None,
            };
            finish(shared, &asker, None, &outcome);
            match deny::format_error(bytes) {
                Some(response) => Judged::Answer(response),
                None => Judged::Nothing,
            }
        }
        Ok(query) if !decision.judgement.forwards() => {
            let rcode = ProxyRcode::from(shared.config.deny_response);
            let (verdict, reason) = decision.judgement.logged();
            let outcome = Outcome {
                verdict,
                rcode: rcode.as_str().into(),
                answers: String::new(),
                reason,
                hold: None,
            };
            finish(shared, &asker, Some(&query), &outcome);
            Judged::Answer(deny::respond(&query, rcode))
        }
        Ok(query) => {
            // Allowed or AUDIT: forwarded, and its answer learned, alike.
            let (verdict, reason) = decision.judgement.logged();
            Judged::Forward(Forwarding {
                asker,
                query,
                verdict,
                reason,
            })
        }
    }
}

impl Forwarding {
    /// The id of the query as the client sent it.
    pub(crate) fn query_id(&self) -> u16 {
        self.query.id
    }

    /// The server could not be asked or did not answer: SERVFAIL.
    pub(crate) fn failed(self, shared: &DnsShared, e: &io::Error) -> Vec<u8> {
        let outcome = Outcome {
            verdict: DnsVerdict::UpstreamError,
            rcode: ProxyRcode::ServFail.as_str().into(),
            answers: String::new(),
            reason: format!("upstream {}: {e}", self.asker.addrs.upstream),
            hold: None,
        };
        finish(shared, &self.asker, Some(&self.query), &outcome);
        deny::respond(&self.query, ProxyRcode::ServFail)
    }

    /// The server's answer: hands what it teaches to the learner. Ready at
    /// once when there is nothing to learn or the learner already has it.
    pub(crate) fn answered(self, shared: &DnsShared, answer: Vec<u8>) -> Answered {
        let Some(parsed) = DnsAnswer::parse(&answer) else {
            // Relayed as is: nothing is learned from it, so it opens nothing.
            let outcome = Outcome {
                verdict: self.verdict,
                rcode: "unparsed".into(),
                answers: String::new(),
                reason: self.reason,
                hold: None,
            };
            finish(shared, &self.asker, Some(&self.query), &outcome);
            return Answered::Ready(answer);
        };
        let since = Instant::now();
        let acks = learn(shared, self.asker.addrs, &self.query, &parsed);
        let held = Box::new(Held {
            rcode: parsed.rcode(),
            answers: parsed.summary(),
            fwd: self,
            answer,
            learning: !acks.is_empty(),
            acks,
            since,
        });
        match held.try_release(shared) {
            Ok(answer) => Answered::Ready(answer),
            Err(held) => Answered::Held(held),
        }
    }
}

impl Held {
    /// Releases the answer if every acknowledgement is in (or its sender
    /// gone); otherwise hands itself back.
    fn try_release(mut self: Box<Self>, shared: &DnsShared) -> Result<Vec<u8>, Box<Held>> {
        self.acks
            .retain_mut(|ack| matches!(ack.try_recv(), Err(TryRecvError::Empty)));
        if self.acks.is_empty() {
            Ok(self.release_now(shared, false))
        } else {
            Err(self)
        }
    }

    /// Waits for the acknowledgements, at most `learn_timeout` from when
    /// the names were handed over, and releases the answer.
    pub(crate) async fn release(mut self: Box<Self>, shared: &DnsShared) -> Vec<u8> {
        let acks = std::mem::take(&mut self.acks);
        let all_acked = async {
            for ack in acks {
                // A dropped sender releases the answer too.
                let _ = ack.await;
            }
        };
        let deadline = tokio::time::Instant::from_std(self.since + shared.config.learn_timeout);
        let timed_out = tokio::time::timeout_at(deadline, all_acked).await.is_err();
        self.release_now(shared, timed_out)
    }

    fn release_now(self: Box<Self>, shared: &DnsShared, timed_out: bool) -> Vec<u8> {
        if timed_out {
            shared.metrics.learn_timeout();
            tracing::warn!(
                client = %self.fwd.asker.addrs.client,
                query = %self.fwd.query.names(),
                timeout = ?shared.config.learn_timeout,
                "the learner did not acknowledge in time; answer released"
            );
        }
        let hold = self.learning.then(|| self.since.elapsed());
        if let Some(held) = hold {
            shared.metrics.hold(held.as_secs_f64());
        }
        let outcome = Outcome {
            verdict: self.fwd.verdict,
            rcode: self.rcode,
            answers: self.answers,
            reason: self.fwd.reason,
            hold,
        };
        finish(shared, &self.fwd.asker, Some(&self.fwd.query), &outcome);
        self.answer
    }
}

/// Hands what a NOERROR answer teaches to the learner; its
/// acknowledgements (none when there is nothing to learn).
///
/// The answer to a query that passed as AUDIT teaches what it would have
/// taught allowed, held the same way: learning records a name's
/// addresses, not a verdict. A learned address is allowed only where an
/// enforced `toFQDNs` selector matches the name, exactly as when a client
/// whose rules allow the name asks it; the agent's learn guard charges
/// and bounds it the same way. So audit mode lets an audited client see
/// what its policy would deny, and never makes a `toFQDNs` rule select a
/// name it does not name.
fn learn(
    shared: &DnsShared,
    addrs: ConnAddrs,
    query: &DnsQuery,
    answer: &DnsAnswer,
) -> Vec<oneshot::Receiver<()>> {
    if answer.message.metadata.response_code != ResponseCode::NoError {
        return Vec::new();
    }
    let limits = LearnLimits {
        min_ttl: shared.config.min_ttl,
        max_ips_per_name: shared.config.max_ips_per_name,
    };
    query
        .questions
        .iter()
        .map(|q| LearnedNames {
            source: addrs.client.ip().to_canonical(),
            name: q.normalized.clone(),
            ips: addresses(&answer.message, q.query.name(), limits),
        })
        .filter(|u| !u.ips.is_empty())
        .map(|u| shared.learner.learn(u))
        .collect()
}

/// Counts a query that ends and writes its access-log line.
fn finish(shared: &DnsShared, asker: &Asker, query: Option<&DnsQuery>, outcome: &Outcome) {
    shared
        .metrics
        .query(label(asker.transport), outcome.verdict);
    let (names, qtypes) = query.map(|q| (q.names(), q.qtypes())).unwrap_or_default();
    AccessRecord::Dns {
        transport: asker.transport.as_str(),
        addrs: asker.addrs,
        src_identity: asker.src_identity,
        dst_identity: asker.dst_identity,
        query: &names,
        qtype: &qtypes,
        rcode: &outcome.rcode,
        answers: &outcome.answers,
        verdict: outcome.verdict,
        latency: asker.start.elapsed(),
        hold: outcome.hold,
        reason: &outcome.reason,
    }
    .emit();
}

pub(crate) fn label(transport: Transport) -> TransportLabel {
    match transport {
        Transport::Udp => TransportLabel::Udp,
        Transport::Tcp => TransportLabel::Tcp,
    }
}
