//! The whole no-I/O path of one request frame, for fuzzing: parse (with
//! some topic IDs known), judge, and build the denial. Also reads the
//! bytes as a Metadata response of every version (learning topic IDs,
//! filtering the topic list) and as an ApiVersions response (capping).
//! Used by the cargo-fuzz target `kafka_request` and by
//! `proxy/tests/kafka_fuzz.rs` on stable.

use std::net::SocketAddr;

use super::deny::denial;
use super::parse::{
    TopicNames, cap_api_versions, filter_metadata_response, learn_topic_ids, parse_request,
};
use crate::policy::ProxyPolicy;

/// What one input did, for the caller's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a readable request.
    Unreadable,
    /// Read and forwarded (allowed, or passing as AUDIT).
    Allowed,
    /// Read and denied, with a denial response built.
    Denied,
    /// Read and denied, but no denial response exists for it.
    DeniedUnanswerable,
}

/// Runs `data` (a frame without its length) through parse, judge and
/// deny, and learns from it as a Metadata response. Must never panic.
pub fn exercise(
    policy: &ProxyPolicy,
    client: SocketAddr,
    server: SocketAddr,
    data: &[u8],
) -> Outcome {
    let mut names = TopicNames::new();
    names.insert([7; 16], "orders".to_string());
    for version in 0..=13 {
        let _ = learn_topic_ids(data, version, &mut names.clone());
        let _ = filter_metadata_response(data, version, &mut |t| t.len() % 2 == 0);
    }
    for version in 0..=4 {
        let _ = cap_api_versions(&mut data.to_vec(), version);
    }
    let Ok(frame) = parse_request(data, &names) else {
        return Outcome::Unreadable;
    };
    let rules = policy.kafka_rules(client, server);
    if rules.judge(&frame).forwards() {
        return Outcome::Allowed;
    }
    match denial(&frame) {
        Ok(bytes) => {
            assert!(bytes.len() >= 8, "a denial frame has a length and a header");
            Outcome::Denied
        }
        Err(_) => Outcome::DeniedUnanswerable,
    }
}
