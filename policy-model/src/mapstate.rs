//! The policy map state of one endpoint: what the kernel's policy map must
//! hold, in host byte order.
//!
//! Keys are (direction, remote identity, protocol, port prefix). Identity
//! 0 is the wildcard table. The kernel looks a packet up in the table of
//! its remote identity first (longest prefix over protocol and port) and
//! falls back to the wildcard table. The model materialises covering
//! entries so that this two-step lookup is exact: an identity table holds
//! a copy of every wildcard entry nested inside one of its own keys, and
//! every value already combines all entries that cover its key (deny wins).
//! "No match" means drop.

use crate::identity::NumericIdentity;
use crate::l7::L7Parser;
use crate::rules::{Direction, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A protocol and a port prefix. `protocol == 0` means any protocol and
/// then `prefix_len` is 0. `prefix_len` counts the significant leading
/// bits of `port` (16 = exact port, 0 = any port of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortKey {
    pub protocol: u8,
    pub port: u16,
    pub prefix_len: u8,
}

impl PortKey {
    /// Any protocol, any port.
    pub const ANY: PortKey = PortKey {
        protocol: 0,
        port: 0,
        prefix_len: 0,
    };

    /// One protocol, all ports.
    pub fn protocol(protocol: u8) -> Self {
        PortKey {
            protocol,
            port: 0,
            prefix_len: 0,
        }
    }

    /// One exact port.
    pub fn exact(protocol: u8, port: u16) -> Self {
        PortKey {
            protocol,
            port,
            prefix_len: 16,
        }
    }

    fn mask(prefix_len: u8) -> u16 {
        if prefix_len == 0 {
            0
        } else {
            u16::MAX << (16 - u32::from(prefix_len))
        }
    }

    /// Whether `self` covers `other` (equal or wider).
    pub fn contains(&self, other: &PortKey) -> bool {
        if self.protocol == 0 {
            return true;
        }
        if self.protocol != other.protocol || self.prefix_len > other.prefix_len {
            return false;
        }
        let m = Self::mask(self.prefix_len);
        (self.port & m) == (other.port & m)
    }

    /// Whether a packet with this protocol and port falls under the key.
    pub fn matches(&self, protocol: u8, port: u16) -> bool {
        self.contains(&PortKey::exact(protocol, port))
    }

    /// Specificity for longest-prefix selection: protocol bits then port bits.
    pub fn specificity(&self) -> u8 {
        if self.protocol == 0 {
            0
        } else {
            8 + self.prefix_len
        }
    }

    /// The smallest set of aligned prefixes covering `lo..=hi`.
    pub fn range(protocol: u8, lo: u16, hi: u16) -> Vec<PortKey> {
        if lo == 0 && hi == u16::MAX {
            return vec![PortKey::protocol(protocol)];
        }
        let mut out = Vec::new();
        let mut start = u32::from(lo);
        let end = u32::from(hi);
        while start <= end {
            // Largest aligned block starting at `start` that fits.
            let mut size_bits = if start == 0 {
                16
            } else {
                start.trailing_zeros().min(16)
            };
            while size_bits > 0 && start + (1u32 << size_bits) - 1 > end {
                size_bits -= 1;
            }
            out.push(PortKey {
                protocol,
                port: start as u16,
                prefix_len: (16 - size_bits) as u8,
            });
            start += 1u32 << size_bits;
        }
        out
    }

    /// Lowest and highest port covered.
    pub fn port_bounds(&self) -> (u16, u16) {
        if self.protocol == 0 || self.prefix_len == 0 {
            return (0, u16::MAX);
        }
        let m = Self::mask(self.prefix_len);
        (self.port & m, (self.port & m) | !m)
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match Protocol::from_number(self.protocol) {
            Some(Protocol::Any) => return f.write_str("any protocol"),
            // No ports: the datapath looks them up with port 0.
            Some(p) if p.is_extended() => return write!(f, "{p}"),
            Some(p) => p.to_string(),
            None => format!("proto {}", self.protocol),
        };
        let (lo, hi) = self.port_bounds();
        if self.prefix_len == 0 {
            write!(f, "{proto}/any")
        } else if lo == hi {
            write!(f, "{proto}/{lo}")
        } else {
            write!(f, "{proto}/{lo}-{hi}")
        }
    }
}

/// A policy map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MapKey {
    pub direction: Direction,
    /// Remote identity; [`NumericIdentity::ANY`] for the wildcard table.
    pub identity: NumericIdentity,
    pub port: PortKey,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapVerdict {
    Allow,
    Deny,
}

/// A policy map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapValue {
    pub verdict: MapVerdict,
    /// Redirect to the proxy for this parser (allow only).
    pub redirect: Option<L7Parser>,
    /// Opaque id of the deciding rule, carried into flow events. With
    /// `audit`, the audited rule that would drop the flow (0: the audited
    /// policies' default deny).
    pub cookie: u32,
    /// Allowed, but an audited policy would drop it: the kernel passes
    /// it and reports AUDIT.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
}

/// One change to apply to a kernel map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapChange {
    Upsert(MapKey, MapValue),
    Delete(MapKey),
}

/// The map state of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapState {
    pub entries: BTreeMap<MapKey, MapValue>,
}

impl MapState {
    /// The kernel's lookup: the remote identity's table, then the wildcard
    /// table; longest protocol/port prefix within a table.
    pub fn lookup(
        &self,
        direction: Direction,
        identity: NumericIdentity,
        protocol: u8,
        port: u16,
    ) -> Option<(&MapKey, &MapValue)> {
        self.lookup_table(direction, identity, protocol, port)
            .or_else(|| self.lookup_table(direction, NumericIdentity::ANY, protocol, port))
    }

    fn lookup_table(
        &self,
        direction: Direction,
        identity: NumericIdentity,
        protocol: u8,
        port: u16,
    ) -> Option<(&MapKey, &MapValue)> {
        let lo = MapKey {
            direction,
            identity,
            port: PortKey::ANY,
        };
        let hi = MapKey {
            direction,
            identity,
            port: PortKey {
                protocol: u8::MAX,
                port: u16::MAX,
                prefix_len: u8::MAX,
            },
        };
        self.entries
            .range(lo..=hi)
            .filter(|(k, _)| k.port.matches(protocol, port))
            .max_by_key(|(k, _)| k.port.specificity())
    }

    /// The changes that turn `self` into `new`. Upserts come first so a
    /// new (possibly narrower deny) entry is in place before an entry it
    /// replaces disappears, as Cilium orders its map deltas.
    pub fn diff(&self, new: &MapState) -> Vec<MapChange> {
        let mut out = Vec::new();
        for (k, v) in &new.entries {
            if self.entries.get(k) != Some(v) {
                out.push(MapChange::Upsert(*k, *v));
            }
        }
        for k in self.entries.keys() {
            if !new.entries.contains_key(k) {
                out.push(MapChange::Delete(*k));
            }
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
