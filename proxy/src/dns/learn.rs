//! What an allowed answer teaches (pure): for a question name, the
//! addresses it resolves to, following the CNAME chain in the answer
//! section, each with the lowest TTL along the chain.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RData};
use tokio::sync::oneshot;

/// Longest CNAME chain followed; longer chains (or loops) are cut.
const MAX_CHAIN: usize = 16;

/// Names learned from one answer, for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedNames {
    /// The client that asked (the endpoint whose `toFQDNs` may now allow
    /// these addresses).
    pub source: IpAddr,
    /// The question name, normalized (lowercase, trailing dot).
    pub name: String,
    /// Addresses with their TTL (at least `min_ttl`), deduplicated, at
    /// most `max_ips_per_name`.
    pub ips: Vec<(IpAddr, Duration)>,
}

/// The agent's side of learning: records the names (e.g. into the
/// `FqdnCache`, then recomputes policy and updates the kernel's maps) and
/// completes the returned receiver once the addresses are allowed. The
/// proxy holds the answer until then, or until `learn_timeout`: so the
/// client cannot connect before the datapath allows the address.
/// Dropping the sender without sending also releases the answer.
pub trait NameLearner: Send + Sync {
    fn learn(&self, update: LearnedNames) -> oneshot::Receiver<()>;
}

/// A learner that records nothing and acknowledges at once (tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLearner;

impl NameLearner for NoLearner {
    fn learn(&self, _update: LearnedNames) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        rx
    }
}

impl<T: NameLearner + ?Sized> NameLearner for Arc<T> {
    fn learn(&self, update: LearnedNames) -> oneshot::Receiver<()> {
        (**self).learn(update)
    }
}

/// Bounds on what one answer teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnLimits {
    /// TTLs below this are raised to it.
    pub min_ttl: Duration,
    /// Addresses kept per name (the first ones in answer order).
    pub max_ips_per_name: usize,
}

/// The addresses `question` resolves to in `answer`: A and AAAA records
/// (class IN) owned by the question name or by a name its CNAME chain
/// reaches, each with the minimum TTL of the CNAMEs that lead to it and
/// its own.
pub fn addresses(
    answer: &Message,
    question: &Name,
    limits: LearnLimits,
) -> Vec<(IpAddr, Duration)> {
    let mut out: Vec<(IpAddr, Duration)> = Vec::new();
    let mut owner = question.clone();
    let mut chain_ttl = u32::MAX;
    let mut visited: Vec<Name> = Vec::new();
    for _ in 0..MAX_CHAIN {
        let mut next = None;
        for record in &answer.answers {
            if record.dns_class != DNSClass::IN || record.name != owner {
                continue;
            }
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                RData::CNAME(target) => {
                    if next.is_none() {
                        next = Some((target.0.clone(), record.ttl));
                    }
                    continue;
                }
                _ => continue,
            };
            let ttl = Duration::from_secs(u64::from(chain_ttl.min(record.ttl))).max(limits.min_ttl);
            if out.iter().any(|(seen, _)| *seen == ip) {
                continue;
            }
            if out.len() < limits.max_ips_per_name {
                out.push((ip, ttl));
            }
        }
        let Some((target, ttl)) = next else { break };
        visited.push(owner);
        if visited.contains(&target) {
            break;
        }
        chain_ttl = chain_ttl.min(ttl);
        owner = target;
    }
    out
}
