//! Learned DNS addresses into and out of the kernel maps, without a
//! resolve when ipcache writes alone will do.

use super::enforcer::{Enforcer, FLOW_IDLE};
use super::known_names::{KnownNames, LearnRequest};
use super::persist::PERSIST_DELAY;
use policy_model::resolve::LearnedAddress;
use std::collections::{BTreeMap, BTreeSet};
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

    /// The ipcache entries that learning the addresses `fresh` needs (with
    /// `also` counted among each one's names, when it is not learned yet),
    /// when entries alone will do; `None`: a resolve is needed.
    pub(super) fn plan_incremental(
        &self,
        fresh: &BTreeSet<IpAddr>,
        also: Option<&str>,
    ) -> Option<Vec<(IpAddr, ipnet::IpNet, policy_model::NumericIdentity)>> {
        let cluster = self.last.as_ref()?;
        let mut entries = Vec::new();
        for ip in fresh {
            let mut names = self.fqdn.names_of(ip);
            if let Some(name) = also
                && !names.contains(&name)
            {
                names.push(name);
                names.sort_unstable();
            }
            match cluster.learned_address(*ip, &names) {
                LearnedAddress::Unchanged => {}
                LearnedAddress::Ipcache(prefix, id) => entries.push((*ip, prefix, id)),
                LearnedAddress::Resolve => return None,
            }
        }
        Some(entries)
    }

    /// Writes what [`Self::plan_incremental`] planned; `false`: a write
    /// failed (a resolve is needed).
    pub(super) fn apply_incremental(
        &mut self,
        entries: Vec<(IpAddr, ipnet::IpNet, policy_model::NumericIdentity)>,
    ) -> bool {
        let Some(cluster) = self.last.as_mut() else {
            return false;
        };
        for (ip, prefix, id) in entries {
            if let Err(e) = self.dp.set_ipcache(prefix, id.0) {
                tracing::error!(error = %e, %prefix, "writing a learned address failed; resolving");
                return false;
            }
            self.applied.ipcache.retain(|(p, _)| *p != prefix);
            self.applied.ipcache.push((prefix, id.0));
            cluster.add_learned_address(prefix, id);
            self.proxy.add_learned_address(ip, id);
        }
        true
    }

    /// Adds learned addresses (already in the store) with ipcache writes
    /// alone when that is all a resolve would change; `false`: a resolve is
    /// needed.
    pub(super) fn learn_incrementally(&mut self, fresh: &BTreeSet<IpAddr>) -> bool {
        match self.plan_incremental(fresh, None) {
            Some(entries) => self.apply_incremental(entries),
            None => false,
        }
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

    /// Learns one answer's addresses on the DNS thread: only when it needs
    /// no resolve (else `false`, nothing changed, and the agent loop gets it).
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
        let fresh: BTreeSet<IpAddr> = self.unknown_addresses(update).collect();
        let start = Instant::now();
        let Some(entries) = self.plan_incremental(&fresh, Some(&update.name)) else {
            return false;
        };
        self.fqdn.learn(&update.name, &update.ips, min_ttl);
        self.relearned(update);
        if !self.apply_incremental(entries) {
            // The store has the name: the loop resolves.
            self.resolve_pending = true;
            return false;
        }
        if let Ok(mut k) = known.write()
            && let Some(expiries) = self.fqdn.expiries_of(&update.name)
        {
            k.0.insert(update.name.clone(), expiries);
        }
        self.persist_due
            .get_or_insert_with(|| Instant::now() + PERSIST_DELAY);
        if !fresh.is_empty() {
            tracing::debug!(
                apply_us = start.elapsed().as_micros() as u64,
                "learned addresses enforced in place"
            );
        }
        true
    }

    /// Takes expired addresses out with ipcache deletes alone when each
    /// one's identity keeps other addresses and those still learned keep
    /// their identity; `false`: a resolve is needed (nothing was written).
    pub(super) fn forget_incrementally(&mut self, dropped: &BTreeSet<IpAddr>) -> bool {
        let Some(mut cluster) = self.last.clone() else {
            return false;
        };
        let mut gone = Vec::new();
        for ip in dropped {
            let names = self.fqdn.names_of(ip);
            if !names.is_empty() {
                // Still learned under another name: fine if its label set
                // (so its identity) is the same without this one.
                if cluster.learned_address(*ip, &names) != LearnedAddress::Unchanged {
                    return false;
                }
                continue;
            }
            match cluster.forget_learned_address(*ip) {
                Some(fallback) => gone.push((*ip, fallback)),
                // Never selected (or a cluster address) changes nothing;
                // the last address of an identity needs a resolve.
                None => {
                    if cluster.learned_address(*ip, &[]) != LearnedAddress::Unchanged {
                        return false;
                    }
                }
            }
        }
        for (ip, fallback) in gone {
            let prefix = ipnet::IpNet::from(ip);
            if let Err(e) = self.dp.remove_ipcache(prefix) {
                tracing::error!(error = %e, %prefix, "removing an expired address failed; resolving");
                return false;
            }
            self.applied.ipcache.retain(|(p, _)| *p != prefix);
            self.proxy.add_learned_address(ip, fallback);
        }
        self.last = Some(cluster);
        true
    }

    /// Records the names of several DNS answers; if that adds addresses,
    /// re-resolves and enforces once; then releases the held answers, and
    /// only then persists (the files are for a restart, not for them).
    pub(super) fn learn_batch(
        &mut self,
        batch: Vec<LearnRequest>,
        min_ttl: Duration,
        known: &RwLock<KnownNames>,
    ) {
        let mut fresh = BTreeSet::new();
        for (update, _) in &batch {
            let update = self.admit_update(update);
            if update.ips.is_empty() {
                continue;
            }
            fresh.extend(self.unknown_addresses(&update));
            self.fqdn.learn(&update.name, &update.ips, min_ttl);
        }
        for (update, _) in &batch {
            self.relearned(update);
        }
        let resolve = std::mem::take(&mut self.resolve_pending);
        let changed = !fresh.is_empty() || resolve;
        let start = Instant::now();
        let mut timings = None;
        if changed && (resolve || !self.learn_incrementally(&fresh)) {
            let cluster = self.cluster();
            let resolved = start.elapsed();
            if let Err(e) = self.enforce_in_memory(&cluster) {
                tracing::error!(error = %e, "applying learned addresses failed");
            }
            timings = Some((resolved, start.elapsed() - resolved));
        } else if changed {
            timings = Some((Duration::ZERO, start.elapsed()));
        }
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
        if let Some((resolved, applied)) = timings {
            // Written a little later, with whatever else is learned by then
            // (the answers are already released either way).
            self.persist_due
                .get_or_insert_with(|| Instant::now() + PERSIST_DELAY);
            tracing::debug!(
                answers,
                resolve_us = resolved.as_micros() as u64,
                apply_us = applied.as_micros() as u64,
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
        if self.forget_incrementally(&dropped) {
            self.persist.applied(&self.applied, &self.state_dir);
            self.mark_lingering();
        } else {
            let cluster = self.cluster();
            if let Err(e) = self.enforce(&cluster) {
                tracing::error!(error = %e, "applying expired names failed");
            }
        }
        self.persist.fqdn(&self.fqdn);
    }
}
