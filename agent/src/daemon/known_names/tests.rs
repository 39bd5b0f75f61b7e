use super::*;
use std::net::IpAddr;
use std::time::Duration;

fn update(name: &str, ips: &[(&str, u64)]) -> proxy::LearnedNames {
    proxy::LearnedNames {
        source: "10.200.0.1".parse().unwrap(),
        name: name.into(),
        ips: ips
            .iter()
            .map(|(ip, ttl)| (ip.parse().unwrap(), Duration::from_secs(*ttl)))
            .collect(),
    }
}

#[test]
fn an_answer_is_held_only_for_new_addresses_and_passed_on_only_to_extend_an_expiry() {
    let now = 1_000;
    let mut known = KnownNames::default();
    let a: IpAddr = "10.201.0.1".parse().unwrap();
    known
        .0
        .insert("a.example.".into(), [(a, now + 60)].into_iter().collect());
    // Unknown name, unknown address of a known name: hold.
    assert_eq!(
        known.novelty(&update("b.example.", &[("10.201.0.1", 60)]), now),
        Novelty::NewAddress
    );
    assert_eq!(
        known.novelty(
            &update("a.example.", &[("10.201.0.1", 60), ("10.201.0.2", 60)]),
            now
        ),
        Novelty::NewAddress
    );
    // Same TTL, or a longer one within the slack: nothing to do.
    assert_eq!(
        known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now),
        Novelty::Nothing
    );
    assert_eq!(
        known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 1),
        Novelty::Nothing
    );
    // Two seconds later the answer outlives the agent's expiry.
    assert_eq!(
        known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 2),
        Novelty::LongerTtl
    );
    assert_eq!(
        known.novelty(&update("a.example.", &[("10.201.0.1", 300)]), now),
        Novelty::LongerTtl
    );
    // Past its expiry the address admits no new flow until the agent
    // unmarks it: the answer is held like a new address.
    assert_eq!(
        known.novelty(&update("a.example.", &[("10.201.0.1", 60)]), now + 60),
        Novelty::NewAddress
    );
}
