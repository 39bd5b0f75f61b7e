//! Names learned from DNS answers, with their expiry, persisted so a
//! restarted agent keeps allowing what it allowed before.
//!
//! An address stays while its TTL runs and, after that, for as long as a
//! flow to it is still open (the conntrack map says so): expiring it under
//! an open connection would cut that connection. Past its TTL such an
//! address *lingers*: the kernel keeps it for the flows already open and
//! judges any new flow as if the name had never been learned, so
//! reconnecting cannot stretch a TTL.

use policy_model::FqdnCache;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One name's addresses -> expiry (seconds since the Unix epoch).
pub type Expiries = std::collections::HashMap<IpAddr, u64>;

/// Learned names -> address -> expiry (seconds since the Unix epoch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FqdnStore {
    names: BTreeMap<String, BTreeMap<IpAddr, u64>>,
    /// The names of each address (the reverse of `names`; rebuilt on load,
    /// not written).
    #[serde(skip)]
    by_ip: std::collections::HashMap<IpAddr, BTreeSet<String>>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FqdnStore {
    /// Loads the store persisted at `path` (empty if absent or unreadable).
    pub fn load(path: &Path) -> Self {
        let mut s: FqdnStore = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        s.path = Some(path.to_path_buf());
        for (name, ips) in &s.names {
            for ip in ips.keys() {
                s.by_ip.entry(*ip).or_default().insert(name.clone());
            }
        }
        s
    }

    /// Writes the store (atomically).
    /// A copy with what [`Self::save`] writes (not the reverse index).
    pub fn for_saving(&self) -> FqdnStore {
        FqdnStore {
            names: self.names.clone(),
            by_ip: Default::default(),
            path: self.path.clone(),
        }
    }

    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(tmp, path)
    }

    /// Records `name -> ip` for `ttl` (at least `min_ttl`). Returns whether
    /// the set of addresses changed (a longer expiry alone is no change).
    pub fn learn(&mut self, name: &str, ips: &[(IpAddr, Duration)], min_ttl: Duration) -> bool {
        let now = now_secs();
        let name = policy_model::l7::dns::normalize_name(name);
        let entry = self.names.entry(name.clone()).or_default();
        let mut changed = false;
        for (ip, ttl) in ips {
            let until = now + ttl.max(&min_ttl).as_secs();
            match entry.get_mut(ip) {
                Some(t) => *t = (*t).max(until),
                None => {
                    entry.insert(*ip, until);
                    self.by_ip.entry(*ip).or_default().insert(name.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Drops expired addresses that no open flow uses. Returns the
    /// addresses that lost a name.
    pub fn expire_addresses(&mut self, in_use: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
        let now = now_secs();
        let mut dropped = BTreeSet::new();
        for (name, ips) in self.names.iter_mut() {
            ips.retain(|ip, until| {
                let keep = *until > now || in_use.contains(ip);
                if !keep {
                    dropped.insert(*ip);
                    if let Some(names) = self.by_ip.get_mut(ip) {
                        names.remove(name);
                        if names.is_empty() {
                            self.by_ip.remove(ip);
                        }
                    }
                }
                keep
            });
        }
        self.names.retain(|_, ips| !ips.is_empty());
        dropped
    }

    /// Addresses past the TTL of every name they are learned under, kept
    /// only because a flow still uses them (see [`Self::expire_addresses`]).
    pub fn lingering(&self) -> BTreeSet<IpAddr> {
        self.lingering_at(now_secs())
    }

    fn lingering_at(&self, now: u64) -> BTreeSet<IpAddr> {
        self.by_ip
            .iter()
            .filter(|(ip, names)| {
                names.iter().all(|n| {
                    self.names
                        .get(n)
                        .and_then(|ips| ips.get(ip))
                        .is_none_or(|until| *until <= now)
                })
            })
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// The model's view: name -> addresses.
    pub fn cache(&self) -> FqdnCache {
        let mut c = FqdnCache::default();
        for (name, ips) in &self.names {
            for ip in ips.keys() {
                c.learn(name, *ip);
            }
        }
        c
    }

    /// Every learned name with its addresses' expiries.
    pub fn expiries(&self) -> std::collections::HashMap<String, Expiries> {
        self.names
            .iter()
            .map(|(n, ips)| (n.clone(), Self::copy(ips)))
            .collect()
    }

    /// Every (normalized) name `ip` is learned under (the index the
    /// expiry keeps; its test reads it).
    #[cfg(test)]
    pub fn names_of(&self, ip: &IpAddr) -> Vec<&str> {
        self.by_ip
            .get(ip)
            .map(|names| names.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether `name` (normalized) is learned with `ip`.
    pub fn knows(&self, name: &str, ip: &IpAddr) -> bool {
        self.names.get(name).is_some_and(|ips| ips.contains_key(ip))
    }

    /// The addresses of one (normalized) name with their expiry.
    pub fn expiries_of(&self, name: &str) -> Option<Expiries> {
        self.names.get(name).map(Self::copy)
    }

    fn copy(ips: &BTreeMap<IpAddr, u64>) -> Expiries {
        ips.iter().map(|(ip, until)| (*ip, *until)).collect()
    }

    /// Number of learned addresses.
    pub fn len(&self) -> usize {
        self.names.values().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod tests;
