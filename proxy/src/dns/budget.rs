//! Per-source budgets shared by the DNS and Kafka proxies: connections
//! (or bytes) held at once, in total and per source, so one client cannot
//! take what every other client needs.
//!
//! Whose a connection is comes from the policy snapshot, i.e. from what
//! the datapath says about its source address ([`SourceKey::of`]): a pod
//! (an endpoint identity) is counted by its own address, everything else
//! (world, host, CIDR identities) by its identity, so a world client with
//! many addresses still shares one budget with the rest of the world and
//! cannot take a pod's share.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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

#[derive(Debug, Default)]
struct Held {
    total: u64,
    by_source: HashMap<SourceKey, u64>,
}

/// A budget of `total` units, of which one source holds at most
/// `per_source`. Units are connections or bytes.
#[derive(Debug)]
pub struct SourceBudget {
    total: u64,
    per_source: u64,
    held: Mutex<Held>,
}

impl SourceBudget {
    /// A budget of `total` units, `per_source` at most for one source.
    pub fn new(total: u64, per_source: u64) -> Arc<SourceBudget> {
        Arc::new(SourceBudget {
            total,
            per_source: per_source.min(total),
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes `amount` units for `key`, given back when the grant drops;
    /// refused (nothing taken) when the source's share or the total would
    /// be exceeded.
    pub fn try_take(
        self: &Arc<Self>,
        key: SourceKey,
        amount: u64,
    ) -> Result<BudgetGrant, BudgetRefusal> {
        let mut held = self.held.lock().expect("budget lock is never poisoned");
        let mine = held.by_source.get(&key).copied().unwrap_or(0);
        if mine.saturating_add(amount) > self.per_source {
            return Err(BudgetRefusal::PerSource);
        }
        if held.total.saturating_add(amount) > self.total {
            return Err(BudgetRefusal::Total);
        }
        held.total += amount;
        *held.by_source.entry(key).or_insert(0) += amount;
        Ok(BudgetGrant {
            budget: self.clone(),
            key,
            amount,
        })
    }

    /// Units held by every source together.
    pub fn held(&self) -> u64 {
        self.held
            .lock()
            .expect("budget lock is never poisoned")
            .total
    }

    /// Units held by `key`.
    pub fn held_by(&self, key: SourceKey) -> u64 {
        self.held
            .lock()
            .expect("budget lock is never poisoned")
            .by_source
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    fn give_back(&self, key: SourceKey, amount: u64) {
        let mut held = self.held.lock().expect("budget lock is never poisoned");
        held.total = held.total.saturating_sub(amount);
        if let Some(mine) = held.by_source.get_mut(&key) {
            *mine = mine.saturating_sub(amount);
            if *mine == 0 {
                held.by_source.remove(&key);
            }
        }
    }
}

/// Units taken from a [`SourceBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetGrant {
    budget: Arc<SourceBudget>,
    key: SourceKey,
    amount: u64,
}

impl Drop for BudgetGrant {
    fn drop(&mut self) {
        self.budget.give_back(self.key, self.amount);
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
