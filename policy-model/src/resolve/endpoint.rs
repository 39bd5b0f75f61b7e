//! Resolving one endpoint's policy (cilium's per-endpoint resolve into
//! map state): per direction, every rule entry's peers and ports become
//! map keys; deny wins, L7 rules redirect, and every key keeps why.

use super::cluster::Cluster;
use super::identities::{Endpoint, NamedPort};
use super::policy::{Contribution, EndpointPolicy, L7Policy};
use crate::identity::NumericIdentity;
use crate::l7::tls::{PortTls, TlsRule};
use crate::l7::{L7Parser, L7Rules};
use crate::mapstate::{MapKey, MapState, MapValue, MapVerdict, PortKey};
use crate::origin::PolicyRef;
use crate::rules::{Direction, Entity, Peer, PolicyRule, PortMatch, PortSpec, Protocol};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A port key of a rule entry with the entry's L7 rules and TLS settings.
type PortKeyRules = (PortKey, Option<Arc<L7Rules>>, Option<Arc<PortTls>>);

impl Cluster {
    /// Resolves the policy of one endpoint.
    pub fn endpoint_policy(&self, ep: &Endpoint) -> EndpointPolicy {
        let mut out = EndpointPolicy {
            endpoint_id: ep.id,
            identity: ep.identity,
            ingress_enforced: false,
            egress_enforced: false,
            map: MapState::default(),
            l7: BTreeMap::new(),
            provenance: BTreeMap::new(),
            enforcing: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let selecting: Vec<&PolicyRule> = self.rules_selecting(ep.identity).collect();
        for dir in [Direction::Ingress, Direction::Egress] {
            self.resolve_direction(ep, &selecting, dir, &mut out);
        }
        out
    }

    /// Resolves every endpoint. Endpoints with the same identity and the
    /// same named ports have the same policy, so each is resolved once.
    pub fn all_policies(&self) -> Vec<EndpointPolicy> {
        let mut memo: HashMap<(NumericIdentity, &[NamedPort]), EndpointPolicy> = HashMap::new();
        self.endpoints
            .iter()
            .map(|e| {
                let key = (e.identity, e.named_ports.as_slice());
                let mut pol = memo
                    .entry(key)
                    .or_insert_with(|| self.endpoint_policy(e))
                    .clone();
                pol.endpoint_id = e.id;
                pol
            })
            .collect()
    }

    fn resolve_direction(
        &self,
        ep: &Endpoint,
        selecting: &[&PolicyRule],
        dir: Direction,
        out: &mut EndpointPolicy,
    ) {
        let enforcing: Vec<Arc<PolicyRef>> = selecting
            .iter()
            .filter(|r| r.direction(dir).default_deny)
            .map(|r| r.origin.clone())
            .collect();
        let enforced = !enforcing.is_empty();
        match dir {
            Direction::Ingress => out.ingress_enforced = enforced,
            Direction::Egress => out.egress_enforced = enforced,
        }
        out.enforcing.insert(dir, enforcing);

        let requires: Vec<Arc<Vec<NumericIdentity>>> = selecting
            .iter()
            .flat_map(|r| r.direction(dir).requires.iter())
            .map(|s| self.selected(&Peer::Endpoints(s.clone())))
            .collect();

        // Raw contributions, per identity (0 = wildcard).
        let mut raw: BTreeMap<NumericIdentity, Vec<Contribution>> = BTreeMap::new();
        if !enforced {
            let key = MapKey {
                direction: dir,
                identity: NumericIdentity::ANY,
                port: PortKey::ANY,
            };
            raw.entry(NumericIdentity::ANY)
                .or_default()
                .push(Contribution {
                    origin: None,
                    rule: String::new(),
                    peer: "any peer".into(),
                    deny: false,
                    l7: None,
                    tls: None,
                    key,
                });
        }
        for r in selecting {
            for entry in &r.direction(dir).entries {
                let port_keys = self.entry_port_keys(ep, entry.ports.as_deref(), dir, out);
                for peer in &entry.peers {
                    let peer_text = peer.to_string();
                    let wildcard = matches!(peer, Peer::All | Peer::Entity(Entity::All))
                        && requires.is_empty();
                    let ids: Vec<NumericIdentity> = if wildcard {
                        vec![NumericIdentity::ANY]
                    } else {
                        self.selected(peer)
                            .iter()
                            .copied()
                            .filter(|id| requires.iter().all(|req| req.contains(id)))
                            .collect()
                    };
                    for id in ids {
                        for (pk, l7, tls) in &port_keys {
                            let key = MapKey {
                                direction: dir,
                                identity: id,
                                port: *pk,
                            };
                            raw.entry(id).or_default().push(Contribution {
                                origin: Some(r.origin.clone()),
                                rule: entry.path.clone(),
                                peer: peer_text.clone(),
                                deny: entry.deny,
                                l7: l7.clone(),
                                tls: tls.clone(),
                                key,
                            });
                        }
                    }
                }
            }
        }

        let wildcard: Vec<Contribution> =
            raw.get(&NumericIdentity::ANY).cloned().unwrap_or_default();
        for (id, contribs) in &raw {
            let mut keys: BTreeSet<PortKey> = contribs.iter().map(|c| c.key.port).collect();
            if *id != NumericIdentity::ANY {
                // Wildcard entries nested inside this identity's keys must be
                // copied into its table, or the identity lookup would hide them.
                let own: Vec<PortKey> = keys.iter().copied().collect();
                for w in &wildcard {
                    if own.iter().any(|k| k.contains(&w.key.port)) {
                        keys.insert(w.key.port);
                    }
                }
            }
            for pk in keys {
                let covering: Vec<&Contribution> = contribs
                    .iter()
                    .chain(if *id == NumericIdentity::ANY {
                        [].iter()
                    } else {
                        wildcard.iter()
                    })
                    .filter(|c| c.key.port.contains(&pk))
                    .collect();
                let key = MapKey {
                    direction: dir,
                    identity: *id,
                    port: pk,
                };
                self.combine(key, &covering, out);
            }
        }
    }

    /// Deny wins; otherwise allow, redirected if any covering allow has L7
    /// rules, with the L7 restrictions cancelled by any covering allow
    /// without them.
    fn combine(&self, key: MapKey, covering: &[&Contribution], out: &mut EndpointPolicy) {
        let denies: Vec<&Contribution> = covering.iter().copied().filter(|c| c.deny).collect();
        let decisive: Vec<Contribution>;
        let value;
        if !denies.is_empty() {
            decisive = denies.iter().map(|c| (*c).clone()).collect();
            value = MapValue {
                verdict: MapVerdict::Deny,
                redirect: None,
                cookie: cookie_of(denies[0]),
            };
        } else {
            decisive = covering.iter().map(|c| (*c).clone()).collect();
            // A port with only TLS settings is served by the HTTP proxy.
            let parsers: BTreeSet<L7Parser> = covering
                .iter()
                .filter_map(|c| match (&c.l7, &c.tls) {
                    (Some(l), _) => Some(l.parser()),
                    (None, Some(_)) => Some(L7Parser::Http),
                    (None, None) => None,
                })
                .collect();
            if parsers.len() > 1 {
                out.warnings.push(format!(
                    "{} {}: conflicting L7 parsers ({}) on one port; denying it",
                    key.direction,
                    key.port,
                    parsers
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                out.map.entries.insert(
                    key,
                    MapValue {
                        verdict: MapVerdict::Deny,
                        redirect: None,
                        cookie: 0,
                    },
                );
                out.provenance.insert(key, decisive);
                return;
            }
            let parser = parsers.into_iter().next();
            if let Some(parser) = parser {
                // Only explicit rules cancel L7 restrictions; the default
                // allow of a non-enforced direction does not.
                let allow_all = covering
                    .iter()
                    .any(|c| c.l7.is_none() && c.tls.is_none() && c.origin.is_some());
                let mut rules = Vec::new();
                let mut tls_rules: Vec<TlsRule> = Vec::new();
                for c in covering {
                    if let (Some(tls), Some(o)) = (&c.tls, &c.origin) {
                        let dup = tls_rules.iter().any(|t| {
                            Arc::ptr_eq(&t.tls, tls) && t.origin == *o && t.rule == c.rule
                        });
                        if !dup {
                            tls_rules.push(TlsRule {
                                tls: tls.clone(),
                                http: c.l7.clone(),
                                origin: o.clone(),
                                rule: c.rule.clone(),
                            });
                        }
                        continue;
                    }
                    if let (Some(l7), Some(o)) = (&c.l7, &c.origin)
                        && !rules.iter().any(
                            |(r, o2, p): &(Arc<L7Rules>, Arc<PolicyRef>, String)| {
                                Arc::ptr_eq(r, l7) && o2 == o && *p == c.rule
                            },
                        )
                    {
                        rules.push((l7.clone(), o.clone(), c.rule.clone()));
                    }
                }
                out.l7.insert(
                    key,
                    L7Policy {
                        parser,
                        allow_all,
                        rules,
                        tls: tls_rules,
                    },
                );
            }
            value = MapValue {
                verdict: MapVerdict::Allow,
                redirect: parser,
                cookie: covering.first().map(|c| cookie_of(c)).unwrap_or(0),
            };
        }
        out.map.entries.insert(key, value);
        out.provenance.insert(key, decisive);
    }

    /// The port keys of a rule entry, with their L7 rules.
    fn entry_port_keys(
        &self,
        ep: &Endpoint,
        ports: Option<&[PortMatch]>,
        dir: Direction,
        out: &mut EndpointPolicy,
    ) -> Vec<PortKeyRules> {
        let Some(ports) = ports else {
            return vec![(PortKey::ANY, None, None)];
        };
        let mut keys = Vec::new();
        for pm in ports {
            // L7 parsers run over TCP (and DNS also over UDP): a port with
            // L7 rules and protocol ANY only redirects those.
            let protocols: &[Protocol] = match (&pm.l7, pm.protocol) {
                (Some(l7), Protocol::Any) if l7.parser() == L7Parser::Dns => {
                    &[Protocol::Tcp, Protocol::Udp]
                }
                (Some(_), Protocol::Any) => &[Protocol::Tcp],
                (None, Protocol::Any) if pm.tls.is_some() => &[Protocol::Tcp],
                (_, p) => p.expand(),
            };
            match &pm.port {
                PortSpec::Any => {
                    for p in protocols {
                        keys.push((PortKey::protocol(p.number()), pm.l7.clone(), pm.tls.clone()));
                    }
                }
                PortSpec::Range(lo, hi) => {
                    for p in protocols {
                        for k in PortKey::range(p.number(), *lo, *hi) {
                            keys.push((k, pm.l7.clone(), pm.tls.clone()));
                        }
                    }
                }
                PortSpec::Named(name) => {
                    for (proto, port) in self.resolve_named_port(ep, name, pm.protocol, dir, out) {
                        keys.push((
                            PortKey::exact(proto.number(), port),
                            pm.l7.clone(),
                            pm.tls.clone(),
                        ));
                    }
                }
            }
        }
        keys
    }

    /// Ingress named ports resolve against the endpoint's own ports; egress
    /// ones against every pod's ports, and a name that maps to more than one
    /// port number is skipped (as Cilium does).
    fn resolve_named_port(
        &self,
        ep: &Endpoint,
        name: &str,
        protocol: Protocol,
        dir: Direction,
        out: &mut EndpointPolicy,
    ) -> Vec<(Protocol, u16)> {
        let compatible = |p: Protocol| protocol == Protocol::Any || protocol == p;
        match dir {
            Direction::Ingress => ep
                .named_ports
                .iter()
                .filter(|(n, p, _)| n == name && compatible(*p))
                .map(|(_, p, port)| (*p, *port))
                .collect(),
            Direction::Egress => {
                let found: BTreeSet<(Protocol, u16)> = self
                    .endpoints
                    .iter()
                    .flat_map(|e| e.named_ports.iter())
                    .filter(|(n, p, _)| n == name && compatible(*p))
                    .map(|(_, p, port)| (*p, *port))
                    .collect();
                let numbers: BTreeSet<u16> = found.iter().map(|(_, p)| *p).collect();
                if numbers.len() > 1 {
                    let msg = format!(
                        "egress named port {name:?} maps to several port numbers ({}); the rule is skipped",
                        numbers
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if !out.warnings.contains(&msg) {
                        out.warnings.push(msg);
                    }
                    return vec![];
                }
                found.into_iter().collect()
            }
        }
    }
}

fn cookie_of(c: &Contribution) -> u32 {
    // FNV-1a over the rule's identity: stable across runs.
    let mut h: u32 = 0x811c_9dc5;
    let text = match &c.origin {
        Some(o) => format!("{o} {}", c.rule),
        None => "default-allow".to_string(),
    };
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests;
