//! Names learned from DNS answers, with their expiry, persisted so a
//! restarted agent keeps allowing what it allowed before.
//!
//! An address stays while its TTL runs and, after that, for as long as a
//! flow to it is still open (the conntrack map says so): expiring it under
//! an open connection would cut that connection.

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
        s
    }

    /// Writes the store (atomically).
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
        let entry = self
            .names
            .entry(policy_model::l7::dns::normalize_name(name))
            .or_default();
        let mut changed = false;
        for (ip, ttl) in ips {
            let until = now + ttl.max(&min_ttl).as_secs();
            match entry.get_mut(ip) {
                Some(t) => *t = (*t).max(until),
                None => {
                    entry.insert(*ip, until);
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
        for ips in self.names.values_mut() {
            ips.retain(|ip, until| {
                let keep = *until > now || in_use.contains(ip);
                if !keep {
                    dropped.insert(*ip);
                }
                keep
            });
        }
        self.names.retain(|_, ips| !ips.is_empty());
        dropped
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

    /// Every (normalized) name `ip` is learned under.
    pub fn names_of(&self, ip: &IpAddr) -> Vec<&str> {
        self.names
            .iter()
            .filter(|(_, ips)| ips.contains_key(ip))
            .map(|(n, _)| n.as_str())
            .collect()
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
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn learning_and_expiry() {
        let mut s = FqdnStore::default();
        assert!(s.learn(
            "API.Example.com",
            &[(ip("10.201.1.1"), Duration::from_secs(0))],
            Duration::ZERO
        ));
        assert!(!s.learn(
            "api.example.com.",
            &[(ip("10.201.1.1"), Duration::from_secs(60))],
            Duration::ZERO
        ));
        assert_eq!(s.len(), 1);
        assert!(s.cache().names.contains_key("api.example.com."));
        // Not expired yet (60 s TTL).
        assert!(s.expire_addresses(&BTreeSet::new()).is_empty());
        // A zero TTL expires at once unless in use.
        s.learn(
            "old.example.com",
            &[(ip("10.201.2.2"), Duration::ZERO)],
            Duration::ZERO,
        );
        let in_use: BTreeSet<IpAddr> = [ip("10.201.2.2")].into();
        assert!(s.expire_addresses(&in_use).is_empty(), "in use: kept");
        assert_eq!(
            s.expire_addresses(&BTreeSet::new()).len(),
            1,
            "idle: dropped"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn min_ttl_extends_short_answers() {
        let mut s = FqdnStore::default();
        s.learn(
            "a.example",
            &[(ip("10.201.3.3"), Duration::ZERO)],
            Duration::from_secs(3600),
        );
        assert!(s.expire_addresses(&BTreeSet::new()).is_empty());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn persists() {
        let dir = std::env::temp_dir().join(format!("pc-fqdn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("fqdn.json");
        let mut s = FqdnStore::load(&path);
        s.learn(
            "b.example",
            &[(ip("10.201.4.4"), Duration::from_secs(600))],
            Duration::ZERO,
        );
        s.save().expect("save");
        let t = FqdnStore::load(&path);
        assert_eq!(t.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
