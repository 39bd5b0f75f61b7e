//! Names learned from DNS answers, and the label keys of the toFQDNs
//! selectors that select them (as Cilium's `fqdn:` labels).

use crate::l7::dns::FqdnPattern;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Names learned from DNS answers: normalised name -> addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FqdnCache {
    pub names: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl FqdnCache {
    /// Records that `name` resolved to `ip`.
    pub fn learn(&mut self, name: &str, ip: IpAddr) {
        self.names
            .entry(crate::l7::dns::normalize_name(name))
            .or_default()
            .insert(ip);
    }
}

/// The label keys of the toFQDNs selectors that select `name`.
pub(super) fn fqdn_keys_of(patterns: &[(String, FqdnPattern)], name: &str) -> BTreeSet<String> {
    patterns
        .iter()
        .filter(|(_, pat)| pat.matches(name))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The label key of a toFQDNs selector (as Cilium's `fqdn:` labels).
pub fn fqdn_key(sel: &crate::api::FqdnSelector) -> String {
    match (&sel.match_name, &sel.match_pattern) {
        (Some(n), _) => crate::l7::dns::normalize_name(n),
        (_, Some(p)) => p.to_ascii_lowercase(),
        _ => String::new(),
    }
}
