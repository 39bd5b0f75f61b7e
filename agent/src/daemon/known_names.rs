//! What the DNS thread knows of the kernel maps without the enforcer: the
//! learned names already in them, with their expiries, so an answer that
//! teaches nothing new is released at once.

use super::fqdn::Expiries;
use std::collections::HashMap;

/// A DNS answer's addresses and the switch that releases the answer.
pub(super) type LearnRequest = (proxy::LearnedNames, tokio::sync::oneshot::Sender<()>);

/// Learned names already in the kernel maps, with the expiry the agent
/// keeps each address until: an answer that only repeats them needs no
/// wait, and none of the agent's time unless it extends an expiry.
#[derive(Default)]
pub(super) struct KnownNames(pub(super) HashMap<String, Expiries>);

/// How much earlier than an answer's TTL the agent's expiry of a known
/// address may run out before the answer is passed on to extend it: the
/// agent hears of a name answered thousands of times a second about once
/// a second, not on every answer.
const REFRESH_SLACK_SECS: u64 = 1;

/// What the agent's loop needs to hear of an answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Novelty {
    /// An address is not in the maps yet: hold the answer until it is.
    NewAddress,
    /// All addresses are in the maps, but the answer outlives an expiry.
    LongerTtl,
    /// Nothing the maps or the expiries lack.
    Nothing,
}

impl KnownNames {
    pub(super) fn novelty(&self, update: &proxy::LearnedNames, now: u64) -> Novelty {
        let Some(known) = self.0.get(&update.name) else {
            return Novelty::NewAddress;
        };
        let mut novelty = Novelty::Nothing;
        for (ip, ttl) in &update.ips {
            match known.get(ip) {
                None => return Novelty::NewAddress,
                // Past its TTL the kernel admits no new flow to it: the
                // answer waits until the address is unmarked.
                Some(until) if *until <= now => return Novelty::NewAddress,
                Some(until) if until + REFRESH_SLACK_SECS < now + ttl.as_secs() => {
                    novelty = Novelty::LongerTtl
                }
                Some(_) => {}
            }
        }
        novelty
    }
}

#[cfg(test)]
mod tests;
