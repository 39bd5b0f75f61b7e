//! `toFQDNs` in `egressDeny` (portcullis's; Cilium has none, cilium#35494):
//! the addresses learned for a denied name are denied at L3/L4, deny
//! winning as everywhere, also over an allowed name that resolved to the
//! same address.
//!
//! Addresses are learned only from DNS answers the DNS proxy sees, and it
//! sees an endpoint's lookups only where an egress allow with `rules.dns`
//! (or a `<Egress/53/UDP/DNS>` proxy-visibility annotation) redirects
//! them. The learned names are the node's, so a deny still covers what
//! any endpoint's seen lookups taught; but an endpoint whose own lookups
//! are not seen can reach a denied name's new addresses before anyone
//! else asks for it. A deny does not redirect DNS by itself (that would
//! put the proxy in a path the policy's author did not ask for); these
//! helpers find the rules that need it and say so.

use super::rule::{Direction, Peer, PolicyRule, RuleEntry};
use crate::l7::L7Rules;

impl RuleEntry {
    /// Whether this is an `egressDeny` entry naming `toFQDNs` selectors.
    pub fn denies_fqdns(&self) -> bool {
        self.deny && self.peers.iter().any(|p| matches!(p, Peer::Fqdn(_)))
    }

    /// Whether this allow entry redirects DNS to the proxy (`rules.dns`).
    pub fn redirects_dns(&self) -> bool {
        !self.deny
            && self
                .ports
                .iter()
                .flatten()
                .any(|pm| matches!(pm.l7.as_deref(), Some(L7Rules::Dns(_))))
    }
}

/// The loader's warning for the `egressDeny` entry at `path` when no
/// policy of the set has `rules.dns`.
pub fn fqdn_deny_unseen_message(path: &str) -> String {
    format!(
        "{path}.toFQDNs: a toFQDNs deny denies the addresses learned from DNS answers the DNS \
         proxy sees, and no policy here has an egress rule with rules.dns that redirects DNS \
         to it; unless a <Egress/53/UDP/DNS> proxy-visibility annotation does, this deny \
         learns nothing and denies nothing. Add an egress allow to the DNS server with toPorts \
         port 53 and rules.dns (e.g. matchPattern: \"*\") for the pods this rule selects"
    )
}

/// An endpoint's warning: the `egressDeny` entry at `path` of `policy`
/// selects it, and none of its DNS is redirected.
pub fn fqdn_deny_endpoint_message(policy: &str, path: &str) -> String {
    format!(
        "{policy} {path}.toFQDNs: this endpoint's DNS lookups are not redirected to the DNS \
         proxy (no egress allow with rules.dns selects it, nor a <Egress/53/UDP/DNS> \
         proxy-visibility annotation), so the deny only covers addresses other endpoints' \
         lookups taught; allow its DNS with rules.dns to make the deny learn from its own"
    )
}

/// The `egressDeny` `toFQDNs` entries of `rules` when no egress allow of
/// `rules` redirects DNS at all: each rule with its entry's path. (Whether
/// the DNS of each selected endpoint is redirected depends on the
/// endpoints; resolution warns per endpoint.)
pub fn fqdn_denies_without_dns<'a>(rules: &[&'a PolicyRule]) -> Vec<(&'a PolicyRule, &'a str)> {
    let egress = |r: &'a PolicyRule| r.direction(Direction::Egress).entries.iter();
    if rules
        .iter()
        .any(|r| egress(r).any(RuleEntry::redirects_dns))
    {
        return Vec::new();
    }
    rules
        .iter()
        .flat_map(|r| {
            egress(r)
                .filter(|e| e.denies_fqdns())
                .map(move |e| (*r, e.path.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
