//! The whole no-I/O path of one message, for the fuzz target and the
//! randomized test: parse and judge it as a query over both transports,
//! build the response the proxy would send, and read it as an upstream
//! answer and extract what it would teach. Must never panic.

use std::net::SocketAddr;
use std::time::Duration;

use super::deny::{self, ProxyRcode};
use super::judge::{Transport, decide};
use super::learn::{LearnLimits, addresses};
use super::parse::DnsAnswer;
use crate::policy::ProxyPolicy;

/// Runs `bytes` through parse, judge, deny and learn; returns how many
/// bytes of responses and addresses it produced (so nothing is optimized
/// away).
pub fn exercise(
    policy: &ProxyPolicy,
    client: SocketAddr,
    original_dst: SocketAddr,
    bytes: &[u8],
) -> usize {
    let mut produced = 0;
    for transport in [Transport::Udp, Transport::Tcp] {
        let decision = decide(policy, client, original_dst, transport, bytes);
        produced += decision.judgement.reason().len();
        match &decision.query {
            Ok(query) => {
                for rcode in [
                    ProxyRcode::Refused,
                    ProxyRcode::NxDomain,
                    ProxyRcode::ServFail,
                ] {
                    produced += deny::respond(query, rcode).len();
                }
                produced += query.names().len() + query.qtypes().len();
            }
            Err(_) => produced += deny::format_error(bytes).map_or(0, |r| r.len()),
        }
    }
    if let Some(answer) = DnsAnswer::parse(bytes) {
        produced += answer.summary().len() + answer.rcode().len();
        let limits = LearnLimits {
            min_ttl: Duration::from_secs(1),
            max_ips_per_name: 50,
        };
        for q in &answer.message.queries {
            produced += addresses(&answer.message, q.name(), limits).len();
        }
    }
    produced
}
