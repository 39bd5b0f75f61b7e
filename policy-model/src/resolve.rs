//! Resolution: identities for the topology and the policies' CIDRs and
//! learned names, the selector cache, and each endpoint's resolved policy.

use crate::identity::{
    Identity, IdentityAllocator, IdentityKind, NumericIdentity, RESERVED, cidr_labels, fqdn_labels,
    reserved_labels,
};
use crate::l7::dns::FqdnPattern;
use crate::l7::tls::{PortTls, TlsRule};
use crate::labels::LabelSet;
use crate::mapstate::{MapKey, MapState, MapValue, MapVerdict, PortKey};
use crate::l7::{L7Parser, L7Rules};
use crate::origin::PolicyRef;
use crate::rules::{Direction, Entity, Peer, PolicyRule, PortSpec, Protocol, Subject};
use crate::topology::Topology;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

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

/// A named container port: (name, protocol, port).
pub type NamedPort = (String, Protocol, u16);

/// A local endpoint (pod) of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint id (1-based, in topology order), as the kernel maps use it.
    pub id: u16,
    pub namespace: String,
    pub name: String,
    pub identity: NumericIdentity,
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
}

impl Endpoint {
    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why an entry is in the map: one rule entry (or the default allow of a
/// direction no policy enforces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// `None` for the default allow of a non-enforced direction.
    pub origin: Option<Arc<PolicyRef>>,
    /// Field path of the rule entry (`spec.ingress[0]`).
    pub rule: String,
    /// The peer selector that selected the remote identity.
    pub peer: String,
    pub deny: bool,
    pub l7: Option<Arc<L7Rules>>,
    /// TLS settings (`serverNames`, TLS contexts) of the port entry.
    pub tls: Option<Arc<PortTls>>,
    /// The key this contribution was written for.
    pub key: MapKey,
}

/// A port key of a rule entry with the entry's L7 rules and TLS settings.
type PortKeyRules = (PortKey, Option<Arc<L7Rules>>, Option<Arc<PortTls>>);

/// The L7 rules a proxy applies to one redirected (identity, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Policy {
    pub parser: L7Parser,
    /// An L3/L4 allow of the same traffic without L7 rules cancels the L7
    /// restrictions: every request is allowed (still redirected).
    pub allow_all: bool,
    /// Rules OR-ed together, with where they came from (entries without
    /// TLS settings).
    pub rules: Vec<(Arc<L7Rules>, Arc<PolicyRef>, String)>,
    /// Entries with TLS settings, each with its own rules (see
    /// [`crate::l7::tls::plan_side`]).
    pub tls: Vec<TlsRule>,
}

/// The resolved policy of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub endpoint_id: u16,
    pub identity: NumericIdentity,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// What the kernel's policy map holds for this endpoint.
    pub map: MapState,
    /// L7 rules of redirected keys.
    pub l7: BTreeMap<MapKey, L7Policy>,
    /// Why each key is there.
    pub provenance: BTreeMap<MapKey, Vec<Contribution>>,
    /// Policies whose rules put a direction into default deny.
    pub enforcing: BTreeMap<Direction, Vec<Arc<PolicyRef>>>,
    /// Non-fatal resolution problems (e.g. an ambiguous named port).
    pub warnings: Vec<String>,
}

impl EndpointPolicy {
    /// Whether a direction is enforced (default deny).
    pub fn enforced(&self, d: Direction) -> bool {
        match d {
            Direction::Ingress => self.ingress_enforced,
            Direction::Egress => self.egress_enforced,
        }
    }
}

/// A topology, its policies and learned names, with identities allocated
/// and selectors evaluated.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub topology: Topology,
    pub rules: Vec<PolicyRule>,
    identities: BTreeMap<NumericIdentity, Identity>,
    endpoints: Vec<Endpoint>,
    /// Prefix -> identity, longest prefixes first.
    ipcache: Vec<(IpNet, NumericIdentity)>,
    /// Selector cache: peer or subject selector -> identities it selects.
    selections: HashMap<Peer, Arc<Vec<NumericIdentity>>>,
    /// Endpoint identity -> indices of rules that select it.
    subjects: HashMap<NumericIdentity, Vec<usize>>,
    /// Every toFQDNs selector of the rules: label key and matcher.
    fqdn_patterns: Vec<(String, FqdnPattern)>,
    /// Every prefix the rules name (CIDRs and their exceptions).
    cidr_prefixes: Vec<IpNet>,
}

impl Cluster {
    /// Builds identities and the selector cache.
    pub fn new(topology: Topology, rules: Vec<PolicyRule>, fqdn: &FqdnCache) -> Self {
        let mut alloc = IdentityAllocator::new();
        let mut identities = BTreeMap::new();
        for (id, name) in RESERVED {
            identities.insert(
                *id,
                Identity {
                    id: *id,
                    labels: reserved_labels(name),
                    kind: IdentityKind::Reserved,
                },
            );
        }
        let mut ipcache: Vec<(IpNet, NumericIdentity)> = vec![
            (
                "0.0.0.0/0".parse().expect("valid literal"),
                NumericIdentity::WORLD_IPV4,
            ),
            (
                "::/0".parse().expect("valid literal"),
                NumericIdentity::WORLD_IPV6,
            ),
        ];
        let mut endpoints = Vec::new();
        for (i, pod) in topology.pods.iter().enumerate() {
            let labels = topology.pod_labels(pod);
            let id = alloc.endpoint(&labels);
            identities.entry(id).or_insert_with(|| Identity {
                id,
                labels: labels.clone(),
                kind: IdentityKind::Endpoint,
            });
            for ip in pod.addresses() {
                ipcache.push((IpNet::from(ip), id));
            }
            let named_ports = pod
                .ports
                .iter()
                .filter_map(|p| {
                    let proto = p
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or(Protocol::Tcp);
                    p.name.clone().map(|n| (n, proto, p.container_port))
                })
                .collect();
            endpoints.push(Endpoint {
                id: u16::try_from(i + 1).unwrap_or(u16::MAX),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                identity: id,
                ips: pod.addresses(),
                named_ports,
            });
        }
        for (spec, id) in [
            (&topology.remote_nodes, NumericIdentity::REMOTE_NODE),
            (&topology.kube_apiserver, NumericIdentity::KUBE_APISERVER),
            (&topology.node, NumericIdentity::HOST),
        ] {
            for ip in spec.iter().flat_map(|s| s.ips.iter()) {
                // Later entries win: the host identity beats kube-apiserver
                // for an address that is both, as in Cilium.
                ipcache.retain(|(p, _)| *p != IpNet::from(*ip));
                ipcache.push((IpNet::from(*ip), id));
            }
        }

        // CIDR identities for every prefix policies name.
        let mut prefixes = BTreeSet::new();
        for r in &rules {
            for d in [&r.ingress, &r.egress] {
                for e in &d.entries {
                    for p in &e.peers {
                        if let Peer::Cidr { cidr, except } = p {
                            prefixes.insert(*cidr);
                            prefixes.extend(except.iter().copied());
                        }
                    }
                }
            }
        }
        let cidr_prefixes: Vec<IpNet> = prefixes.iter().copied().collect();
        for p in prefixes {
            if p.prefix_len() == 0 || ipcache.iter().any(|(q, _)| *q == p) {
                continue;
            }
            let labels = cidr_labels(&p);
            let id = alloc.local(&labels);
            identities.insert(
                id,
                Identity {
                    id,
                    labels,
                    kind: IdentityKind::Cidr(p),
                },
            );
            ipcache.push((p, id));
        }

        // FQDN identities for learned addresses that some toFQDNs selects.
        let patterns: Vec<(String, FqdnPattern)> = rules
            .iter()
            .flat_map(|r| r.egress.entries.iter())
            .flat_map(|e| e.peers.iter())
            .filter_map(|p| match p {
                Peer::Fqdn(sel) => FqdnPattern::from_selector(sel)
                    .ok()
                    .map(|pat| (fqdn_key(sel), pat)),
                _ => None,
            })
            .collect();
        let mut by_ip: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (name, ips) in &fqdn.names {
            let keys = fqdn_keys_of(&patterns, name);
            if keys.is_empty() {
                continue;
            }
            for ip in ips {
                by_ip.entry(*ip).or_default().extend(keys.iter().cloned());
            }
        }
        // One identity per label set, as Cilium since 1.16 (CFP-28427):
        // an address is labelled with the toFQDNs selectors whose names
        // it answered for and with the policy CIDRs that contain it, so
        // every address a selector set returns shares one identity and a
        // new address of a known set needs only an ipcache entry.
        let mut groups: BTreeMap<LabelSet, (IpNet, BTreeSet<String>, Vec<IpNet>)> = BTreeMap::new();
        for (ip, keys) in by_ip {
            let prefix = IpNet::from(ip);
            if let Some(i) = ipcache.iter().position(|(p, _)| *p == prefix) {
                if !identities
                    .get(&ipcache[i].1)
                    .is_some_and(|id| matches!(id.kind, IdentityKind::Cidr(_)))
                {
                    // A cluster address (pod, node) keeps its own identity.
                    continue;
                }
                // A /32 a policy names: the learned labels join its own.
                ipcache.remove(i);
            }
            let labels = fqdn_labels(ip, &keys, &cidr_prefixes);
            groups
                .entry(labels)
                .or_insert_with(|| (prefix, keys, Vec::new()))
                .2
                .push(prefix);
        }
        for (labels, (representative, names, members)) in groups {
            let id = alloc.local(&labels);
            identities.insert(
                id,
                Identity {
                    id,
                    labels,
                    kind: IdentityKind::Fqdn {
                        prefix: representative,
                        names,
                    },
                },
            );
            ipcache.extend(members.into_iter().map(|p| (p, id)));
        }
        ipcache.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));

        let mut cluster = Cluster {
            topology,
            rules,
            identities,
            endpoints,
            ipcache,
            selections: HashMap::new(),
            subjects: HashMap::new(),
            fqdn_patterns: patterns,
            cidr_prefixes,
        };
        cluster.build_selector_cache();
        cluster
    }

    fn build_selector_cache(&mut self) {
        let mut peers: BTreeSet<Peer> = BTreeSet::new();
        for r in &self.rules {
            for d in [&r.ingress, &r.egress] {
                for e in &d.entries {
                    peers.extend(e.peers.iter().cloned());
                }
                for req in &d.requires {
                    peers.insert(Peer::Endpoints(req.clone()));
                }
            }
        }
        let ids: Vec<&Identity> = self.identities.values().collect();
        let node_labels = self.node_labels();
        for p in peers {
            let sel: Vec<NumericIdentity> = ids
                .iter()
                .filter(|i| peer_selects(&p, i, &node_labels))
                .map(|i| i.id)
                .collect();
            self.selections.insert(p, Arc::new(sel));
        }
        let endpoint_ids: BTreeSet<NumericIdentity> =
            self.endpoints.iter().map(|e| e.identity).collect();
        for (idx, r) in self.rules.iter().enumerate() {
            if let Subject::Endpoints(sel) = &r.subject {
                for id in &endpoint_ids {
                    if sel.matches(&self.identities[id].labels) {
                        self.subjects.entry(*id).or_default().push(idx);
                    }
                }
            }
        }
    }

    fn node_labels(&self) -> LabelSet {
        let mut l = LabelSet::new();
        if let Some(n) = &self.topology.node {
            for (k, v) in &n.labels {
                l.insert(crate::labels::SOURCE_K8S, k, v);
            }
        }
        l
    }

    /// All identities, by number.
    pub fn identities(&self) -> &BTreeMap<NumericIdentity, Identity> {
        &self.identities
    }

    /// One identity.
    pub fn identity(&self, id: NumericIdentity) -> Option<&Identity> {
        self.identities.get(&id)
    }

    /// Local endpoints in topology order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint `namespace/name`.
    pub fn endpoint(&self, full_name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.full_name() == full_name)
    }

    /// The endpoint owning `ip`.
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.ips.contains(&ip))
    }

    /// What learning `ip` (answered for `names`, every name it is known
    /// under) changes: nothing, one ipcache entry to an identity this
    /// cluster already has (so no policy map changes), or more (a new
    /// label set: resolve again).
    pub fn learned_address(&self, ip: IpAddr, names: &[&str]) -> LearnedAddress {
        let keys: BTreeSet<String> = names
            .iter()
            .flat_map(|n| fqdn_keys_of(&self.fqdn_patterns, n))
            .collect();
        let prefix = IpNet::from(ip);
        let current = self
            .ipcache
            .iter()
            .find(|(p, _)| *p == prefix)
            .and_then(|(_, id)| self.identities.get(id));
        if keys.is_empty() {
            return match current.map(|c| &c.kind) {
                // It was selected under names it no longer has.
                Some(IdentityKind::Fqdn { .. }) => LearnedAddress::Resolve,
                _ => LearnedAddress::Unchanged,
            };
        }
        let labels = fqdn_labels(ip, &keys, &self.cidr_prefixes);
        match current {
            Some(c) if matches!(c.kind, IdentityKind::Endpoint | IdentityKind::Reserved) => {
                LearnedAddress::Unchanged
            }
            Some(c) if c.labels == labels => LearnedAddress::Unchanged,
            Some(_) => LearnedAddress::Resolve,
            None => self
                .identities
                .values()
                .find(|id| matches!(id.kind, IdentityKind::Fqdn { .. }) && id.labels == labels)
                .map_or(LearnedAddress::Resolve, |id| {
                    LearnedAddress::Ipcache(prefix, id.id)
                }),
        }
    }

    /// Adds the ipcache entry [`Self::learned_address`] asked for, as a
    /// resolve with the address learned would have it.
    pub fn add_learned_address(&mut self, prefix: IpNet, id: NumericIdentity) {
        if self.ipcache.iter().any(|(p, _)| *p == prefix) {
            return;
        }
        let at = self
            .ipcache
            .iter()
            .position(|(p, _)| {
                p.prefix_len() < prefix.prefix_len()
                    || (p.prefix_len() == prefix.prefix_len() && *p > prefix)
            })
            .unwrap_or(self.ipcache.len());
        self.ipcache.insert(at, (prefix, id));
    }

    /// Takes a learned address that no name answers for any more out of
    /// the ipcache, when that is all a resolve without it would change:
    /// its identity keeps other addresses (so the policy maps keep it).
    /// Returns the identity the address falls back to (a covering
    /// prefix's, or world), or `None` when a resolve is needed.
    pub fn forget_learned_address(&mut self, ip: IpAddr) -> Option<NumericIdentity> {
        let prefix = IpNet::from(ip);
        let i = self.ipcache.iter().position(|(p, _)| *p == prefix)?;
        let id = self.ipcache[i].1;
        if !self
            .identities
            .get(&id)
            .is_some_and(|x| matches!(x.kind, IdentityKind::Fqdn { .. }))
        {
            return None;
        }
        let others = self
            .ipcache
            .iter()
            .any(|(p, other)| *other == id && *p != prefix);
        if !others {
            return None;
        }
        self.ipcache.remove(i);
        Some(self.identity_of_ip(ip))
    }

    /// For a learned address: its identity (an FQDN one) and the identity
    /// it has without its names (a covering prefix's, or world). `None`
    /// when the address has no learned (FQDN) identity of its own.
    pub fn learned_and_fallback_identity(
        &self,
        ip: IpAddr,
    ) -> Option<(NumericIdentity, NumericIdentity)> {
        let prefix = IpNet::from(ip);
        let id = self.ipcache.iter().find(|(p, _)| *p == prefix)?.1;
        if !self
            .identities
            .get(&id)
            .is_some_and(|x| matches!(x.kind, IdentityKind::Fqdn { .. }))
        {
            return None;
        }
        let fallback = self
            .ipcache
            .iter()
            .find(|(p, _)| *p != prefix && p.contains(&ip))
            .map(|(_, id)| *id)
            .unwrap_or(NumericIdentity::WORLD);
        Some((id, fallback))
    }

    /// The ipcache: prefix -> identity, longest prefixes first.
    pub fn ipcache(&self) -> &[(IpNet, NumericIdentity)] {
        &self.ipcache
    }

    /// Longest-prefix identity of an address.
    pub fn identity_of_ip(&self, ip: IpAddr) -> NumericIdentity {
        self.ipcache
            .iter()
            .find(|(p, _)| p.contains(&ip))
            .map(|(_, id)| *id)
            .unwrap_or(NumericIdentity::WORLD)
    }

    /// Identities a peer selector selects.
    pub fn selected(&self, peer: &Peer) -> Arc<Vec<NumericIdentity>> {
        if let Some(s) = self.selections.get(peer) {
            return s.clone();
        }
        let node_labels = self.node_labels();
        Arc::new(
            self.identities
                .values()
                .filter(|i| peer_selects(peer, i, &node_labels))
                .map(|i| i.id)
                .collect(),
        )
    }

    /// Rules that select an endpoint identity.
    pub fn rules_selecting(&self, id: NumericIdentity) -> impl Iterator<Item = &PolicyRule> {
        self.subjects
            .get(&id)
            .into_iter()
            .flatten()
            .map(|i| &self.rules[*i])
    }

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
        ports: Option<&[crate::rules::PortMatch]>,
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

/// What a newly learned address changes (see [`Cluster::learned_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnedAddress {
    /// Nothing: no toFQDNs selector selects it, or it already has the
    /// identity it would get, or it is a cluster address.
    Unchanged,
    /// Only this ipcache entry, to an identity the cluster already has.
    Ipcache(IpNet, NumericIdentity),
    /// A label set the cluster has no identity for yet, or an address
    /// whose identity changes: resolve again.
    Resolve,
}

/// The label keys of the toFQDNs selectors that select `name`.
fn fqdn_keys_of(patterns: &[(String, FqdnPattern)], name: &str) -> BTreeSet<String> {
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

/// Whether a peer selector selects an identity.
pub fn peer_selects(peer: &Peer, id: &Identity, node_labels: &LabelSet) -> bool {
    use NumericIdentity as N;
    match peer {
        Peer::All => true,
        Peer::Endpoints(sel) => sel.matches(&id.labels),
        Peer::Entity(e) => match e {
            Entity::All => true,
            Entity::World => id.is_world(),
            Entity::WorldIpv4 => {
                id.is_world() && id.prefix().is_some_and(|p| p.addr().is_ipv4())
                    || id.id == N::WORLD
            }
            Entity::WorldIpv6 => {
                id.is_world() && id.prefix().is_some_and(|p| p.addr().is_ipv6())
                    || id.id == N::WORLD
            }
            Entity::Cluster => {
                id.kind == IdentityKind::Endpoint
                    || [
                        N::HOST,
                        N::REMOTE_NODE,
                        N::INIT,
                        N::HEALTH,
                        N::UNMANAGED,
                        N::INGRESS,
                        N::KUBE_APISERVER,
                    ]
                    .contains(&id.id)
            }
            Entity::Host => id.id == N::HOST,
            Entity::RemoteNode => id.id == N::REMOTE_NODE,
            Entity::KubeApiserver => id.id == N::KUBE_APISERVER,
            Entity::Init => id.id == N::INIT,
            Entity::Health => id.id == N::HEALTH,
            Entity::Unmanaged => id.id == N::UNMANAGED,
            Entity::Ingress => id.id == N::INGRESS,
            Entity::None => false,
        },
        Peer::Cidr { cidr, except } => id
            .prefix()
            .is_some_and(|p| cidr.contains(&p) && !except.iter().any(|e| e.contains(&p))),
        Peer::Fqdn(sel) => match &id.kind {
            IdentityKind::Fqdn { names, .. } => names.contains(&fqdn_key(sel)),
            _ => false,
        },
        Peer::Nodes(sel) => id.id == N::HOST && sel.matches(node_labels),
    }
}

#[cfg(test)]
mod tests;
