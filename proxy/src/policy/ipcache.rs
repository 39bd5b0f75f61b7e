//! The proxy's copy of the ipcache: prefix -> identity, looked up by
//! longest prefix as the kernel does, without the resolved cluster it came
//! from.

use ipnet::IpNet;
use policy_model::NumericIdentity;
use std::collections::HashMap;
use std::net::IpAddr;

/// Prefixes by length, longest first; a lookup tries each length once.
#[derive(Debug, Default)]
pub struct IpcacheLookup {
    v4: Vec<(u8, HashMap<IpNet, NumericIdentity>)>,
    v6: Vec<(u8, HashMap<IpNet, NumericIdentity>)>,
}

impl IpcacheLookup {
    /// The lookup of these entries (a prefix listed twice keeps its last
    /// identity).
    pub fn new(entries: impl IntoIterator<Item = (IpNet, NumericIdentity)>) -> IpcacheLookup {
        let mut v4: HashMap<u8, HashMap<IpNet, NumericIdentity>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<IpNet, NumericIdentity>> = HashMap::new();
        for (p, id) in entries {
            let p = p.trunc();
            let by_len = if p.addr().is_ipv4() { &mut v4 } else { &mut v6 };
            by_len.entry(p.prefix_len()).or_default().insert(p, id);
        }
        let ordered = |m: HashMap<u8, HashMap<IpNet, NumericIdentity>>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by_key(|e| std::cmp::Reverse(e.0));
            v
        };
        IpcacheLookup {
            v4: ordered(v4),
            v6: ordered(v6),
        }
    }

    /// The identity of the longest prefix holding `ip` (world when none
    /// does).
    pub fn identity_of(&self, ip: IpAddr) -> NumericIdentity {
        let ip = ip.to_canonical();
        let by_len = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        by_len
            .iter()
            .find_map(|(len, m)| {
                let p = IpNet::new(ip, *len).ok()?.trunc();
                m.get(&p).copied()
            })
            .unwrap_or(NumericIdentity::WORLD)
    }

    /// How many prefixes it holds.
    pub fn len(&self) -> usize {
        self.v4.iter().chain(&self.v6).map(|(_, m)| m.len()).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn the_longest_prefix_wins_in_both_families_and_nothing_is_world() {
        let l = IpcacheLookup::new([
            (p("0.0.0.0/0"), NumericIdentity(9)),
            (p("10.0.0.0/8"), NumericIdentity(100)),
            (p("10.1.0.0/16"), NumericIdentity(101)),
            (p("10.1.2.3/32"), NumericIdentity(102)),
            (p("fd00::/64"), NumericIdentity(200)),
        ]);
        let id = |s: &str| l.identity_of(s.parse().expect("valid address")).0;
        assert_eq!(id("10.1.2.3"), 102);
        assert_eq!(id("10.1.2.4"), 101);
        assert_eq!(id("10.2.0.1"), 100);
        assert_eq!(id("192.0.2.1"), 9);
        // A v4-mapped address is looked up as v4.
        assert_eq!(id("::ffff:10.1.2.3"), 102);
        assert_eq!(id("fd00::1"), 200);
        assert_eq!(id("2001:db8::1"), NumericIdentity::WORLD.0);
        assert_eq!(l.len(), 5);
    }
}
