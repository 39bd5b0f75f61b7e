//! Learned DNS addresses into and out of the kernel maps: the learn guard
//! admits them, the store keeps them with their TTLs, and the engine takes
//! the store's names as one change (a new address of a known selector set
//! comes out as one ipcache entry).

use super::enforcer::{Enforcer, FLOW_IDLE};
use super::known_names::{KnownNames, LearnRequest};
use super::persist::PERSIST_DELAY;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

impl Enforcer {
    /// The part of an answer the learn guard admits; refusals counted.
    pub(super) fn admit_update(&mut self, update: &proxy::LearnedNames) -> proxy::LearnedNames {
        let name = policy_model::l7::dns::normalize_name(&update.name);
        let (ips, refused) = self
            .guard
            .admit(update.source, &name, &update.ips, self.fqdn.len());
        if !refused.is_empty() {
            let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
            for (_, r) in &refused {
                *by_reason.entry(r.label()).or_default() += 1;
            }
            for (reason, n) in by_reason {
                self.metrics.learn_refused(&reason, n);
            }
            tracing::debug!(
                name = %update.name, source = %update.source, refused = ?refused,
                "addresses of a DNS answer not learned"
            );
            self.outcome_gen += 1;
        }
        proxy::LearnedNames {
            source: update.source,
            name: update.name.clone(),
            ips,
        }
    }

    /// Hands the store's learned names to the engine and writes what
    /// that changed; `false` when the engine had them already.
    pub(super) fn sync_names(&mut self) -> bool {
        let cache = self.fqdn.cache();
        if &cache == self.engine.fqdn() {
            return false;
        }
        if let Err(e) = self.realize(vec![policy_model::incremental::Change::Names(cache)]) {
            tracing::error!(error = %e, "applying learned names failed");
        }
        true
    }

    /// The addresses of an answer the store does not have under its name.
    pub(super) fn unknown_addresses<'a>(
        &'a self,
        update: &'a proxy::LearnedNames,
    ) -> impl Iterator<Item = IpAddr> + 'a {
        update
            .ips
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| !self.fqdn.knows(&update.name, ip))
    }

    /// Learns one answer's addresses on the DNS thread, and enforces
    /// them before the answer goes out (the engine's change is
    /// incremental: an address of a known label set is one ipcache write).
    pub(super) fn learn_in_place(
        &mut self,
        update: &proxy::LearnedNames,
        min_ttl: Duration,
        known: &RwLock<KnownNames>,
    ) -> bool {
        let admitted = self.admit_update(update);
        let update = &admitted;
        if update.ips.is_empty() {
            // Nothing may be learned: the answer goes as it is.
            return true;
        }
        let fresh = self.unknown_addresses(update).count();
        let start = Instant::now();
        self.fqdn.learn(&update.name, &update.ips, min_ttl);
        self.relearned(update);
        let changed = self.sync_names();
        if let Ok(mut k) = known.write()
            && let Some(expiries) = self.fqdn.expiries_of(&update.name)
        {
            k.0.insert(update.name.clone(), expiries);
        }
        self.persist_due
            .get_or_insert_with(|| Instant::now() + PERSIST_DELAY);
        if changed {
            tracing::debug!(
                fresh,
                apply_us = start.elapsed().as_micros() as u64,
                "learned addresses enforced in place"
            );
        }
        true
    }

    /// Records the names of several DNS answers and enforces them once;
    /// then releases the held answers, and only then persists (the files
    /// are for a restart, not for them).
    pub(super) fn learn_batch(
        &mut self,
        batch: Vec<LearnRequest>,
        min_ttl: Duration,
        known: &RwLock<KnownNames>,
    ) {
        for (update, _) in &batch {
            let update = self.admit_update(update);
            if update.ips.is_empty() {
                continue;
            }
            self.fqdn.learn(&update.name, &update.ips, min_ttl);
        }
        for (update, _) in &batch {
            self.relearned(update);
        }
        let start = Instant::now();
        let changed = self.sync_names();
        if let Ok(mut k) = known.write() {
            for (update, _) in &batch {
                if let Some(expiries) = self.fqdn.expiries_of(&update.name) {
                    k.0.insert(update.name.clone(), expiries);
                }
            }
        }
        let answers = batch.len();
        for (_, ack) in batch {
            let _ = ack.send(());
        }
        if changed {
            // Written a little later, with whatever else is learned by then
            // (the answers are already released either way).
            self.persist_due
                .get_or_insert_with(|| Instant::now() + PERSIST_DELAY);
            tracing::debug!(
                answers,
                apply_us = start.elapsed().as_micros() as u64,
                "learned addresses enforced"
            );
        }
    }

    /// Drops expired learned addresses no open flow uses.
    pub(super) fn expire_names(&mut self) {
        let in_use = match self.dp.conntrack_destinations(FLOW_IDLE) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading conntrack failed; keeping learned names");
                return;
            }
        };
        let dropped = self.fqdn.expire_addresses(&in_use);
        if dropped.is_empty() {
            self.mark_lingering();
            return;
        }
        let fqdn = &self.fqdn;
        self.guard.prune(|name, ip| fqdn.knows(name, ip));
        self.expired = true;
        if !self.sync_names() {
            self.mark_lingering();
        }
        self.persist.applied(&self.applied, &self.state_dir);
        self.persist.fqdn(&self.fqdn);
    }
}
