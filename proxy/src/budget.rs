//! Per-source budgets shared by every proxy: connections (or bytes) held
//! at once, in total and per source, so one client cannot take what every
//! other client needs; and a per-source rate.
//!
//! [`SourceBudget`] is the one counter, generic over who a source is. The
//! DNS and Kafka proxies count by [`SourceKey`] (from what the datapath
//! says about the source address, [`SourceKey::of`]): a pod (an endpoint
//! identity) by its own address, everything else (world, host, CIDR
//! identities) by its identity, so a world client with many addresses
//! still shares one budget with the rest of the world and cannot take a
//! pod's share. The HTTP proxy's connection limits
//! ([`crate::limits::ConnectionLimits`]) count by endpoint name or remote
//! address instead, since it serves ingress from many world clients.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use policy_model::NumericIdentity;

/// Who a budget is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// A pod (or a remote endpoint): its own address.
    Endpoint(IpAddr),
    /// Every source of this identity together (world, host, CIDR).
    Identity(u32),
}

impl SourceKey {
    /// The key of a source address whose identity (from the policy
    /// snapshot's ipcache) is `identity`.
    pub fn of(ip: IpAddr, identity: NumericIdentity) -> SourceKey {
        if identity.0 >= NumericIdentity::FIRST_ENDPOINT && !identity.is_local() {
            SourceKey::Endpoint(ip.to_canonical())
        } else {
            SourceKey::Identity(identity.0)
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::Endpoint(ip) => write!(f, "endpoint {ip}"),
            SourceKey::Identity(id) => write!(f, "identity {id}"),
        }
    }
}

/// Why a budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// The source already holds its share.
    PerSource,
    /// Every source together holds the whole budget.
    Total,
}

impl BudgetRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            BudgetRefusal::PerSource => "per_source",
            BudgetRefusal::Total => "total",
        }
    }
}

#[derive(Debug)]
struct Held<K> {
    total: u64,
    by_source: HashMap<K, u64>,
}

/// A budget of `total` units, of which one source (keyed by `K`) holds at
/// most `per_source`. Units are connections or bytes.
#[derive(Debug)]
pub struct SourceBudget<K = SourceKey> {
    total: u64,
    per_source: u64,
    held: Mutex<Held<K>>,
}

impl<K: Clone + Eq + Hash> SourceBudget<K> {
    /// A budget of `total` units, `per_source` at most for one source.
    pub fn new(total: u64, per_source: u64) -> Arc<SourceBudget<K>> {
        Arc::new(SourceBudget {
            total,
            per_source: per_source.min(total),
            held: Mutex::new(Held {
                total: 0,
                by_source: HashMap::new(),
            }),
        })
    }

    /// The counts. Nothing panics while holding them, so a poisoned lock
    /// still counts right and is used as it is.
    fn lock(&self) -> MutexGuard<'_, Held<K>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `amount` units for `key`, given back when the grant drops;
    /// refused (nothing taken) when the source's share or the total would
    /// be exceeded.
    pub fn try_take(
        self: &Arc<Self>,
        key: K,
        amount: u64,
    ) -> Result<BudgetGrant<K>, BudgetRefusal> {
        let mut held = self.lock();
        let mine = held.by_source.get(&key).copied().unwrap_or(0);
        if mine.saturating_add(amount) > self.per_source {
            return Err(BudgetRefusal::PerSource);
        }
        if held.total.saturating_add(amount) > self.total {
            return Err(BudgetRefusal::Total);
        }
        held.total += amount;
        *held.by_source.entry(key.clone()).or_insert(0) += amount;
        Ok(BudgetGrant {
            budget: self.clone(),
            key,
            amount,
        })
    }

    /// Units held by every source together.
    pub fn held(&self) -> u64 {
        self.lock().total
    }

    /// Units held by `key`.
    pub fn held_by(&self, key: &K) -> u64 {
        self.lock().by_source.get(key).copied().unwrap_or(0)
    }

    fn give_back(&self, key: &K, amount: u64) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(amount);
        if let Some(mine) = held.by_source.get_mut(key) {
            *mine = mine.saturating_sub(amount);
            if *mine == 0 {
                held.by_source.remove(key);
            }
        }
    }
}

/// Units taken from a [`SourceBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetGrant<K: Clone + Eq + Hash = SourceKey> {
    budget: Arc<SourceBudget<K>>,
    key: K,
    amount: u64,
}

impl<K: Clone + Eq + Hash> BudgetGrant<K> {
    /// Who holds it.
    pub fn source(&self) -> &K {
        &self.key
    }
}

impl<K: Clone + Eq + Hash> Drop for BudgetGrant<K> {
    fn drop(&mut self) {
        self.budget.give_back(&self.key, self.amount);
    }
}

/// Takes one connection of `key`'s share of `budget`, or tells `refused`
/// why not (to count and log it) and gives nothing: the accept loops'
/// one admission step, before a byte of the connection is read.
pub fn admit<K: Clone + Eq + Hash>(
    budget: &Arc<SourceBudget<K>>,
    key: K,
    refused: impl FnOnce(BudgetRefusal, &K),
) -> Option<BudgetGrant<K>> {
    match budget.try_take(key.clone(), 1) {
        Ok(grant) => Some(grant),
        Err(why) => {
            refused(why, &key);
            None
        }
    }
}

/// Sources whose rate state is kept; past this the state starts over
/// (every source gets a full bucket again) rather than growing.
const MAX_RATE_SOURCES: usize = 16_384;

/// A token bucket per source: at most `per_second` events a second on
/// average, `burst` at once. What it refuses costs a hash lookup, so a
/// flood's excess is cheap to drop and the rest of the work goes to other
/// sources.
#[derive(Debug)]
pub struct SourceRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<SourceKey, (f64, std::time::Instant)>>,
}

impl SourceRate {
    /// `per_second` events a second per source, `burst` at once (0: no
    /// limit).
    pub fn new(per_second: u32, burst: u32) -> SourceRate {
        SourceRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may have one more event at `now`.
    pub fn allow(&self, key: SourceKey, now: std::time::Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().expect("rate lock is never poisoned");
        if buckets.len() >= MAX_RATE_SOURCES && !buckets.contains_key(&key) {
            buckets.clear();
        }
        let (tokens, last) = buckets.entry(key).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
