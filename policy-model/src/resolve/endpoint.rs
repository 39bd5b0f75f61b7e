//! Resolving one endpoint's policy (cilium's per-endpoint resolve into
//! map state): per direction, every rule entry's peers and ports become
//! map keys; deny wins, L7 rules redirect, and every key keeps why.

use super::cluster::Cluster;
use super::identities::{Endpoint, NamedPort};
use super::policy::{Contribution, EndpointPolicy, L7Policy, Scope};
use super::selectors::peer_selects;
use crate::identity::{Identity, NumericIdentity};
use crate::l7::tls::{PortTls, TlsRule};
use crate::l7::{L7Parser, L7Rules};
use crate::labels::LabelSet;
use crate::mapstate::{MapKey, MapState, MapValue, MapVerdict, PortKey};
use crate::origin::PolicyRef;
use crate::rules::{
    Direction, Entity, Peer, PolicyRule, PortMatch, PortSpec, Protocol, RuleEntry, Visibility,
    fqdn_deny_endpoint_message,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A port key of a rule entry with the entry's L7 rules and TLS settings.
type PortKeyRules = (PortKey, Option<Arc<L7Rules>>, Option<Arc<PortTls>>);

/// What one endpoint's resolution reads besides its rules: which
/// identities a peer selector selects, and the named ports of every pod.
/// [`Cluster`] answers from its selector cache, the incremental engine
/// from its own; both then run the same resolution code.
pub(crate) trait Selections {
    /// Identities a peer selector selects, ascending.
    fn selected(&self, peer: &Peer) -> Arc<Vec<NumericIdentity>>;
    /// Every (protocol, port) some pod names `name`.
    fn named_ports(&self, name: &str) -> BTreeSet<(Protocol, u16)>;
}

/// One direction of one endpoint, resolved up to the peer identities:
/// whether it is enforced, the port keys of every rule entry, and the
/// wildcard (identity 0) contributions. The map entries of any one peer
/// identity follow from this and that identity alone
/// ([`DirectionPlan::contributions_of`], [`DirectionPlan::table`]).
#[derive(Debug, Clone)]
pub(crate) struct DirectionPlan {
    pub dir: Direction,
    pub enforcing: Vec<Arc<PolicyRef>>,
    /// Audited policies that would put the direction into default deny.
    pub audit_enforcing: Vec<Arc<PolicyRef>>,
    /// `fromRequires` / `toRequires` of the selecting rules.
    pub requires: Vec<Peer>,
    /// Contributions to the wildcard table: the default allow of a
    /// direction no rule enforces, and peers that select everything.
    pub wildcard: Vec<Contribution>,
    /// Every rule entry with its peers that select identities.
    pub entries: Vec<EntryPlan>,
    /// Named-port problems met while planning.
    pub warnings: Vec<String>,
    /// Ports redirected for visibility only, with their parser
    /// (`policy.cilium.io/proxy-visibility`).
    pub visibility: Vec<(PortKey, L7Parser)>,
}

/// A rule entry of a [`DirectionPlan`]: its identity-selecting peers
/// and its port keys.
#[derive(Debug, Clone)]
pub(crate) struct EntryPlan {
    origin: Arc<PolicyRef>,
    rule: String,
    deny: bool,
    /// The rule's policy is audited.
    audit: bool,
    /// The rule's `spec.log.value`.
    log: Option<Arc<str>>,
    /// Peers and their text, wildcard peers left out (they are in
    /// [`DirectionPlan::wildcard`]).
    pub peers: Vec<(Peer, String)>,
    port_keys: Vec<PortKeyRules>,
}

/// The map entries of one peer identity (or of the wildcard table) in one
/// direction, with their L7 rules, provenance and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    pub entries: BTreeMap<MapKey, MapValue>,
    pub l7: BTreeMap<MapKey, L7Policy>,
    pub provenance: BTreeMap<MapKey, Vec<Contribution>>,
    pub warnings: Vec<String>,
}

impl Table {
    /// Adds this table to an endpoint's policy, consuming it.
    pub fn move_into(self, out: &mut EndpointPolicy) {
        out.map.entries.extend(self.entries);
        out.l7.extend(self.l7);
        out.provenance.extend(self.provenance);
        out.warnings.extend(self.warnings);
    }

    /// Adds this table to an endpoint's policy.
    pub fn merge_into(&self, out: &mut EndpointPolicy) {
        out.map
            .entries
            .extend(self.entries.iter().map(|(k, v)| (*k, *v)));
        out.l7.extend(self.l7.iter().map(|(k, v)| (*k, v.clone())));
        out.provenance
            .extend(self.provenance.iter().map(|(k, v)| (*k, v.clone())));
        out.warnings.extend(self.warnings.iter().cloned());
    }
}

/// An empty policy of `ep`, to which directions are added.
pub(crate) fn empty_policy(ep: &Endpoint) -> EndpointPolicy {
    EndpointPolicy {
        endpoint_id: ep.id,
        identity: ep.identity,
        ingress_enforced: false,
        egress_enforced: false,
        map: MapState::default(),
        l7: BTreeMap::new(),
        provenance: BTreeMap::new(),
        enforcing: BTreeMap::new(),
        audit_enforcing: BTreeMap::new(),
        warnings: Vec::new(),
    }
}

impl DirectionPlan {
    /// Plans one direction of `ep` selected by `selecting` (in rule order).
    pub fn new(
        sel: &impl Selections,
        ep: &Endpoint,
        selecting: &[&PolicyRule],
        dir: Direction,
    ) -> Self {
        let enforcing_of = |audit: bool| -> Vec<Arc<PolicyRef>> {
            selecting
                .iter()
                .filter(|r| r.direction(dir).default_deny && r.audit == audit)
                .map(|r| r.origin.clone())
                .collect()
        };
        let enforcing = enforcing_of(false);
        let audit_enforcing = enforcing_of(true);
        let audit_enforcing_empty = audit_enforcing.is_empty();
        let requires: Vec<Peer> = selecting
            .iter()
            .flat_map(|r| r.direction(dir).requires.iter())
            .map(|s| Peer::Endpoints(s.clone()))
            .collect();
        let mut plan = DirectionPlan {
            dir,
            enforcing,
            audit_enforcing,
            requires,
            wildcard: Vec::new(),
            entries: Vec::new(),
            warnings: Vec::new(),
            visibility: ep
                .visibility
                .iter()
                .filter(|v| v.direction == dir)
                .map(|v| (PortKey::exact(v.protocol.number(), v.port), v.parser))
                .collect(),
        };
        if !plan.enforced() {
            let key = MapKey {
                direction: dir,
                identity: NumericIdentity::ANY,
                port: PortKey::ANY,
            };
            plan.wildcard.push(Contribution {
                origin: None,
                rule: String::new(),
                peer: "any peer".into(),
                deny: false,
                l7: None,
                tls: None,
                key,
                // Only audited policies would take this allow away.
                scope: if audit_enforcing_empty {
                    Scope::Both
                } else {
                    Scope::EnforcedOnly
                },
                log: None,
            });
        }
        for r in selecting {
            for entry in &r.direction(dir).entries {
                let port_keys =
                    entry_port_keys(sel, ep, entry.ports.as_deref(), dir, &mut plan.warnings);
                let mut peers = Vec::new();
                for peer in &entry.peers {
                    let peer_text = peer.to_string();
                    let wildcard = matches!(peer, Peer::All | Peer::Entity(Entity::All))
                        && plan.requires.is_empty();
                    if !wildcard {
                        peers.push((peer.clone(), peer_text));
                        continue;
                    }
                    for (pk, l7, tls) in &port_keys {
                        plan.wildcard.push(Contribution {
                            origin: Some(r.origin.clone()),
                            rule: entry.path.clone(),
                            peer: peer_text.clone(),
                            deny: entry.deny,
                            l7: l7.clone(),
                            tls: tls.clone(),
                            key: MapKey {
                                direction: dir,
                                identity: NumericIdentity::ANY,
                                port: *pk,
                            },
                            scope: scope_of(r.audit),
                            log: r.log.clone(),
                        });
                    }
                }
                plan.entries.push(EntryPlan {
                    origin: r.origin.clone(),
                    rule: entry.path.clone(),
                    deny: entry.deny,
                    audit: r.audit,
                    log: r.log.clone(),
                    peers,
                    port_keys,
                });
            }
        }
        if dir == Direction::Egress {
            plan.warn_unseen_fqdn_denies(selecting);
        }
        plan
    }

    /// A `toFQDNs` deny learns from the DNS answers the proxy sees: warns
    /// for each one selecting this endpoint when none of its egress DNS
    /// is redirected (see [`crate::rules::fqdn_deny_endpoint_message`]).
    fn warn_unseen_fqdn_denies(&mut self, selecting: &[&PolicyRule]) {
        let seen = self.visibility.iter().any(|(_, p)| *p == L7Parser::Dns)
            || selecting
                .iter()
                .flat_map(|r| &r.egress.entries)
                .any(RuleEntry::redirects_dns);
        if seen {
            return;
        }
        for r in selecting {
            for e in r.egress.entries.iter().filter(|e| e.denies_fqdns()) {
                self.warnings
                    .push(fqdn_deny_endpoint_message(&r.origin.to_string(), &e.path));
            }
        }
    }

    /// Whether some selecting rule puts the direction into default deny.
    pub fn enforced(&self) -> bool {
        !self.enforcing.is_empty()
    }

    /// The contributions of every peer identity, from the selector cache.
    pub fn contributions(
        &self,
        sel: &impl Selections,
    ) -> BTreeMap<NumericIdentity, Vec<Contribution>> {
        let requires: Vec<Arc<Vec<NumericIdentity>>> =
            self.requires.iter().map(|p| sel.selected(p)).collect();
        let mut raw: BTreeMap<NumericIdentity, Vec<Contribution>> = BTreeMap::new();
        for e in &self.entries {
            for (peer, text) in &e.peers {
                for id in sel.selected(peer).iter() {
                    if !requires.iter().all(|req| req.binary_search(id).is_ok()) {
                        continue;
                    }
                    e.contribute(*id, self.dir, text, raw.entry(*id).or_default());
                }
            }
        }
        raw
    }

    /// The contributions of one peer identity, evaluating the selectors
    /// against it directly (no selector cache): what
    /// [`Self::contributions`] holds for it.
    pub fn contributions_of(&self, id: &Identity, node_labels: &LabelSet) -> Vec<Contribution> {
        let mut out = Vec::new();
        if !self
            .requires
            .iter()
            .all(|req| peer_selects(req, id, node_labels))
        {
            return out;
        }
        for e in &self.entries {
            for (peer, text) in &e.peers {
                if peer_selects(peer, id, node_labels) {
                    e.contribute(id.id, self.dir, text, &mut out);
                }
            }
        }
        out
    }

    /// The table of one identity from its own contributions (for the
    /// wildcard table, `own` is ignored: its contributions are
    /// [`Self::wildcard`]). Every entry of an identity's table depends on
    /// its own contributions and the wildcard ones only.
    pub fn table(&self, id: NumericIdentity, own: &[Contribution]) -> Table {
        let mut out = Table::default();
        let contribs: &[Contribution] = if id == NumericIdentity::ANY {
            &self.wildcard
        } else {
            own
        };
        if contribs.is_empty() {
            return out;
        }
        let mut keys: BTreeSet<PortKey> = contribs.iter().map(|c| c.key.port).collect();
        // A visibility port under a key of this table gets its own key
        // (the lookup of the port must find the redirect here).
        for (vk, _) in &self.visibility {
            if contribs.iter().any(|c| c.key.port.contains(vk)) {
                keys.insert(*vk);
            }
        }
        if id != NumericIdentity::ANY {
            // Wildcard entries nested inside this identity's keys must be
            // copied into its table, or the identity lookup would hide them.
            let own_keys: Vec<PortKey> = keys.iter().copied().collect();
            for w in &self.wildcard {
                if own_keys.iter().any(|k| k.contains(&w.key.port)) {
                    keys.insert(w.key.port);
                }
            }
        }
        for pk in keys {
            let covering: Vec<&Contribution> = contribs
                .iter()
                .chain(if id == NumericIdentity::ANY {
                    [].iter()
                } else {
                    self.wildcard.iter()
                })
                .filter(|c| c.key.port.contains(&pk))
                .collect();
            let key = MapKey {
                direction: self.dir,
                identity: id,
                port: pk,
            };
            combine(key, &covering, &mut out);
            if let Some((_, parser)) = self.visibility.iter().find(|(vk, _)| *vk == pk) {
                add_visibility(key, *parser, &mut out);
            }
        }
        out
    }
}

impl EntryPlan {
    fn contribute(
        &self,
        id: NumericIdentity,
        dir: Direction,
        peer_text: &str,
        out: &mut Vec<Contribution>,
    ) {
        for (pk, l7, tls) in &self.port_keys {
            out.push(Contribution {
                origin: Some(self.origin.clone()),
                rule: self.rule.clone(),
                peer: peer_text.to_string(),
                deny: self.deny,
                l7: l7.clone(),
                tls: tls.clone(),
                key: MapKey {
                    direction: dir,
                    identity: id,
                    port: *pk,
                },
                scope: scope_of(self.audit),
                log: self.log.clone(),
            });
        }
    }
}

/// Resolves one endpoint against `sel`: the one code path of
/// [`Cluster::endpoint_policy`] and of the incremental engine's full
/// resolve of an endpoint.
pub(crate) fn resolve_endpoint(
    sel: &impl Selections,
    ep: &Endpoint,
    selecting: &[&PolicyRule],
) -> EndpointPolicy {
    let mut out = empty_policy(ep);
    for dir in [Direction::Ingress, Direction::Egress] {
        let plan = DirectionPlan::new(sel, ep, selecting, dir);
        add_direction(&plan, &mut out);
        plan.table(NumericIdentity::ANY, &[]).move_into(&mut out);
        for (id, own) in plan.contributions(sel) {
            plan.table(id, &own).move_into(&mut out);
        }
    }
    out
}

/// Records a direction's enforcement and planning warnings (before its
/// tables, in the order the resolution writes them).
pub(crate) fn add_direction(plan: &DirectionPlan, out: &mut EndpointPolicy) {
    match plan.dir {
        Direction::Ingress => out.ingress_enforced = plan.enforced(),
        Direction::Egress => out.egress_enforced = plan.enforced(),
    }
    out.enforcing.insert(plan.dir, plan.enforcing.clone());
    out.audit_enforcing
        .insert(plan.dir, plan.audit_enforcing.clone());
    out.warnings.extend(plan.warnings.iter().cloned());
}

impl Selections for Cluster {
    fn selected(&self, peer: &Peer) -> Arc<Vec<NumericIdentity>> {
        Cluster::selected(self, peer)
    }

    fn named_ports(&self, name: &str) -> BTreeSet<(Protocol, u16)> {
        self.named_ports.get(name).cloned().unwrap_or_default()
    }
}

impl Cluster {
    /// Resolves the policy of one endpoint.
    pub fn endpoint_policy(&self, ep: &Endpoint) -> EndpointPolicy {
        let selecting: Vec<&PolicyRule> = self.rules_selecting(ep.identity).collect();
        resolve_endpoint(self, ep, &selecting)
    }

    /// Resolves every endpoint. Endpoints with the same identity and the
    /// same named ports have the same policy, so each is resolved once.
    pub fn all_policies(&self) -> Vec<EndpointPolicy> {
        type MemoKey<'a> = (NumericIdentity, &'a [NamedPort], &'a [Visibility]);
        let mut memo: HashMap<MemoKey<'_>, EndpointPolicy> = HashMap::new();
        self.endpoints
            .iter()
            .map(|e| {
                let key = (
                    e.identity,
                    e.named_ports.as_slice(),
                    e.visibility.as_slice(),
                );
                let mut pol = memo
                    .entry(key)
                    .or_insert_with(|| self.endpoint_policy(e))
                    .clone();
                pol.endpoint_id = e.id;
                pol
            })
            .collect()
    }
}

/// Redirects an allowed visibility key to `parser`'s proxy, every request
/// passing; a denied key stays denied, and a key policy already redirects
/// keeps its rules (its requests are recorded anyway).
fn add_visibility(key: MapKey, parser: L7Parser, out: &mut Table) {
    let Some(value) = out.entries.get_mut(&key) else {
        return;
    };
    if value.verdict != MapVerdict::Allow {
        return;
    }
    match value.redirect {
        None => {
            value.redirect = Some(parser);
            out.l7.insert(key, L7Policy::pass_all(parser, None, true));
        }
        Some(p) if p == parser => {}
        Some(p) => out.warnings.push(format!(
            "{} {}: proxy-visibility asks for the {parser} proxy where policy redirects to {p}; policy's redirect kept",
            key.direction, key.port
        )),
    }
}

/// The scope of a rule's contributions.
fn scope_of(audit: bool) -> Scope {
    if audit { Scope::AuditOnly } else { Scope::Both }
}

/// The entry of `key`: the enforced verdict (rules of audited policies
/// left out), marked `audit` when it allows what the audit verdict (every
/// policy enforced) would drop.
fn combine(key: MapKey, covering: &[&Contribution], out: &mut Table) {
    if covering.iter().all(|c| c.scope == Scope::Both) {
        return combine_plain(key, covering, out);
    }
    let verdict = |keep: fn(Scope) -> bool| {
        let part: Vec<&Contribution> = covering.iter().copied().filter(|c| keep(c.scope)).collect();
        let mut t = Table::default();
        if !part.is_empty() {
            combine_plain(key, &part, &mut t);
        }
        t
    };
    let mut enforced = verdict(|s| s != Scope::AuditOnly);
    let mut audited = verdict(|s| s != Scope::EnforcedOnly);
    out.warnings.append(&mut enforced.warnings);
    let Some(mut value) = enforced.entries.remove(&key) else {
        // Only audited rules wrote this key, and nothing enforced covers
        // it: the enforced verdict is "no rule allows it", written out so
        // that the lookup does not fall through to a wider entry.
        out.entries.insert(
            key,
            MapValue {
                verdict: MapVerdict::Deny,
                redirect: None,
                cookie: 0,
                audit: false,
            },
        );
        out.provenance.insert(key, Vec::new());
        return;
    };
    let mut why = enforced.provenance.remove(&key).unwrap_or_default();
    let would_drop = audited
        .entries
        .get(&key)
        .is_none_or(|a| a.verdict == MapVerdict::Deny);
    if value.verdict == MapVerdict::Allow && would_drop {
        value.audit = true;
        value.cookie = audited.entries.get(&key).map_or(0, |a| a.cookie);
        why = audited.provenance.remove(&key).unwrap_or_default();
    }
    let mut l7 = enforced.l7.remove(&key);
    if value.verdict == MapVerdict::Allow
        && !value.audit
        && let Some(a) = audited.l7.remove(&key)
    {
        // Audited policies add L7 rules to an allowed port: the proxy
        // judges by both, and passes what only the audited rules deny.
        match &mut l7 {
            None => {
                value.redirect = Some(a.parser);
                l7 = Some(L7Policy::pass_all(a.parser, Some(Box::new(a)), false));
            }
            Some(e) if e.parser == a.parser => {
                if *e != a {
                    e.audit = Some(Box::new(a));
                }
            }
            Some(e) => out.warnings.push(format!(
                "{} {}: an audited policy's {} rules on a port the enforced policies redirect to {}; not audited",
                key.direction, key.port, a.parser, e.parser
            )),
        }
    }
    out.entries.insert(key, value);
    out.provenance.insert(key, why);
    if let Some(l7) = l7 {
        out.l7.insert(key, l7);
    }
}

/// Deny wins; otherwise allow, redirected if any covering allow has L7
/// rules, with the L7 restrictions cancelled by any covering allow
/// without them.
fn combine_plain(key: MapKey, covering: &[&Contribution], out: &mut Table) {
    let denies: Vec<&Contribution> = covering.iter().copied().filter(|c| c.deny).collect();
    let decisive: Vec<Contribution>;
    let value;
    if !denies.is_empty() {
        decisive = denies.iter().map(|c| (*c).clone()).collect();
        value = MapValue {
            verdict: MapVerdict::Deny,
            redirect: None,
            cookie: cookie_of(denies[0]),
            audit: false,
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
            out.entries.insert(
                key,
                MapValue {
                    verdict: MapVerdict::Deny,
                    redirect: None,
                    cookie: 0,
                    audit: false,
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
                    let dup = tls_rules
                        .iter()
                        .any(|t| Arc::ptr_eq(&t.tls, tls) && t.origin == *o && t.rule == c.rule);
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
                    && !rules
                        .iter()
                        .any(|(r, o2, p): &(Arc<L7Rules>, Arc<PolicyRef>, String)| {
                            Arc::ptr_eq(r, l7) && o2 == o && *p == c.rule
                        })
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
                    audit: None,
                    visibility: false,
                },
            );
        }
        value = MapValue {
            verdict: MapVerdict::Allow,
            redirect: parser,
            cookie: covering.first().map(|c| cookie_of(c)).unwrap_or(0),
            audit: false,
        };
    }
    out.entries.insert(key, value);
    out.provenance.insert(key, decisive);
}

/// The port keys of a rule entry, with their L7 rules.
fn entry_port_keys(
    sel: &impl Selections,
    ep: &Endpoint,
    ports: Option<&[PortMatch]>,
    dir: Direction,
    warnings: &mut Vec<String>,
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
                for (proto, port) in resolve_named_port(sel, ep, name, pm.protocol, dir, warnings) {
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
    sel: &impl Selections,
    ep: &Endpoint,
    name: &str,
    protocol: Protocol,
    dir: Direction,
    warnings: &mut Vec<String>,
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
            let found: BTreeSet<(Protocol, u16)> = sel
                .named_ports(name)
                .into_iter()
                .filter(|(p, _)| compatible(*p))
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
                if !warnings.contains(&msg) {
                    warnings.push(msg);
                }
                return vec![];
            }
            found.into_iter().collect()
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
