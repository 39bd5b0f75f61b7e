//! Which L7 rules apply to a redirected connection: a pure function of a
//! policy snapshot and the connection's addresses.
//!
//! The kernel redirects a TCP flow when the source endpoint's egress entry
//! or the local destination's ingress entry carries a redirect. The proxy
//! repeats the kernel's own lookups ([`MapState::lookup`]) on the same
//! resolved policy to find each side's rule set, then allows a request only
//! when every side that applies allows it. Anything it cannot account for
//! (a flow the kernel should not have redirected, a redirect to another
//! parser, a rule set that failed to compile) denies: the proxy fails
//! closed like the datapath.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use policy_model::api::MismatchAction;
use policy_model::l7::{HttpRequest, HttpRuleSet, HttpVerdict};
use policy_model::resolve::L7Policy;
use policy_model::rules::{L7Rules, PolicyRef};
use policy_model::{
    Cluster, Direction, EndpointPolicy, L7Parser, MapKey, MapVerdict, NumericIdentity,
};

use crate::dns::judge::{DnsRefusal, DnsRules, DnsSidePolicy, Transport as DnsTransport};
use crate::kafka::judge::{KafkaRefusal, KafkaRules, KafkaSide, KafkaSidePolicy};

#[cfg(test)]
mod tests;
mod tls;

const TCP: u8 = 6;

/// The compiled HTTP rules of one redirected policy key.
#[derive(Debug)]
pub struct HttpSidePolicy {
    /// An L3/L4 allow without L7 rules covers the same traffic: every
    /// request passes (the flow is still redirected).
    allow_all: bool,
    /// Every `rules.http` list of the key, concatenated into one set (the
    /// lists are OR-ed, so one set judges them at once). `Err` holds why it
    /// did not compile: then nothing is allowed.
    set: Result<HttpRuleSet, String>,
    /// For each rule of `set`: the policy and rule path it came from.
    origins: Vec<(Arc<PolicyRef>, String)>,
}

impl HttpSidePolicy {
    fn compile(l7: &L7Policy) -> HttpSidePolicy {
        let mut rules = Vec::new();
        let mut origins = Vec::new();
        let mut foreign = None;
        for (list, origin, path) in &l7.rules {
            match list.as_ref() {
                L7Rules::Http(http) => {
                    for (i, rule) in http.iter().enumerate() {
                        rules.push(rule.clone());
                        origins.push((origin.clone(), format!("{path}.rules.http[{i}]")));
                    }
                }
                other => {
                    foreign = Some(format!(
                        "{origin} {path} attaches {} rules to an HTTP-redirected port",
                        match other {
                            L7Rules::Dns(_) => "DNS",
                            L7Rules::Kafka(_) => "Kafka",
                            L7Rules::Http(_) => "HTTP",
                        }
                    ))
                }
            }
        }
        let set = match foreign {
            Some(why) => Err(why),
            None => HttpRuleSet::compile(&rules).map_err(|e| e.to_string()),
        };
        HttpSidePolicy {
            allow_all: l7.allow_all,
            set,
            origins,
        }
    }
}

/// One endpoint's precomputed policy.
#[derive(Debug)]
struct EndpointEntry {
    name: String,
    policy: EndpointPolicy,
    /// Compiled HTTP rules of every key redirected to the HTTP parser.
    http: BTreeMap<MapKey, Arc<HttpSidePolicy>>,
    /// Compiled DNS rules of every key redirected to the DNS parser.
    dns: BTreeMap<MapKey, Arc<DnsSidePolicy>>,
    /// Compiled Kafka rules of every key redirected to the Kafka parser.
    kafka: BTreeMap<MapKey, Arc<KafkaSidePolicy>>,
}

/// A snapshot of the node's policy as the proxy needs it: every local
/// endpoint's map state and compiled HTTP rules, and the ipcache.
#[derive(Debug)]
pub struct ProxyPolicy {
    cluster: Cluster,
    endpoints: Vec<EndpointEntry>,
    by_ip: HashMap<IpAddr, usize>,
    /// HTTP rules of TLS-scoped ports per (endpoint, key, SNI), built on
    /// first use (see `policy/tls.rs`).
    #[allow(clippy::type_complexity)]
    tls_memo: std::sync::Mutex<HashMap<(usize, MapKey, String), Arc<HttpSidePolicy>>>,
    /// Addresses learned from DNS since `cluster` was resolved, each with
    /// an identity `cluster` already has (see
    /// [`PolicyHandle::add_learned_address`]).
    learned: std::sync::RwLock<HashMap<IpAddr, NumericIdentity>>,
}

impl ProxyPolicy {
    /// Resolves every endpoint of `cluster` and compiles its HTTP rule sets
    /// once. A rule set that does not compile is kept as deny-all and
    /// logged.
    pub fn new(cluster: &Cluster) -> ProxyPolicy {
        let mut endpoints = Vec::new();
        let mut by_ip = HashMap::new();
        for ep in cluster.endpoints() {
            let policy = cluster.endpoint_policy(ep);
            let mut http = BTreeMap::new();
            let mut dns = BTreeMap::new();
            let mut kafka = BTreeMap::new();
            for (key, l7) in &policy.l7 {
                if l7.parser == L7Parser::Kafka {
                    let side = KafkaSidePolicy::compile(l7);
                    if let Some(why) = side.compile_error() {
                        tracing::error!(
                            endpoint = %ep.full_name(),
                            key = ?key,
                            error = %why,
                            "Kafka rules do not compile; every request on this key is denied"
                        );
                    }
                    kafka.insert(*key, Arc::new(side));
                    continue;
                }
                if l7.parser == L7Parser::Dns {
                    let side = DnsSidePolicy::compile(l7);
                    if let Some(why) = side.compile_error() {
                        tracing::error!(
                            endpoint = %ep.full_name(),
                            key = ?key,
                            error = %why,
                            "DNS rules do not compile; every query on this key is denied"
                        );
                    }
                    dns.insert(*key, Arc::new(side));
                    continue;
                }
                if l7.parser != L7Parser::Http {
                    continue;
                }
                let side = HttpSidePolicy::compile(l7);
                if let Err(why) = &side.set {
                    tracing::error!(
                        endpoint = %ep.full_name(),
                        key = ?key,
                        error = %why,
                        "HTTP rules do not compile; every request on this key is denied"
                    );
                }
                http.insert(*key, Arc::new(side));
            }
            let index = endpoints.len();
            for ip in &ep.ips {
                by_ip.insert(*ip, index);
            }
            endpoints.push(EndpointEntry {
                name: ep.full_name(),
                policy,
                http,
                dns,
                kafka,
            });
        }
        ProxyPolicy {
            cluster: cluster.clone(),
            endpoints,
            by_ip,
            tls_memo: Default::default(),
            learned: Default::default(),
        }
    }

    /// A snapshot with no endpoints: every connection is denied.
    pub fn empty() -> ProxyPolicy {
        ProxyPolicy {
            cluster: Cluster::new(Default::default(), Vec::new(), &Default::default()),
            endpoints: Vec::new(),
            by_ip: HashMap::new(),
            tls_memo: Default::default(),
            learned: Default::default(),
        }
    }

    fn endpoint(&self, ip: IpAddr) -> Option<&EndpointEntry> {
        self.by_ip.get(&ip).map(|i| &self.endpoints[*i])
    }

    fn identity(&self, ip: IpAddr) -> NumericIdentity {
        match self.endpoint(ip) {
            Some(e) => e.policy.identity,
            None => self
                .learned
                .read()
                .ok()
                .and_then(|l| l.get(&ip).copied())
                .unwrap_or_else(|| self.cluster.identity_of_ip(ip)),
        }
    }

    /// Whose connection it is, for the connection limits: a local
    /// endpoint (by name, so all its addresses share one budget), else the
    /// remote address (IPv6 by its /64).
    pub fn source_key(&self, ip: IpAddr) -> crate::limits::SourceKey {
        let ip = ip.to_canonical();
        match self.endpoint(ip) {
            Some(e) => crate::limits::SourceKey::Endpoint(e.name.as_str().into()),
            None => crate::limits::SourceKey::remote(ip),
        }
    }

    /// The rules that apply to a redirected TCP connection from `src` to
    /// `orig_dst`: the source endpoint's egress side (when the source is
    /// local) and the destination endpoint's ingress side (when it is
    /// local), each found with the kernel's lookup.
    pub fn http_rules(&self, src: SocketAddr, orig_dst: SocketAddr) -> ConnRules {
        let (src_identity, dst_identity, sides, refusal) =
            self.local_sides(src, orig_dst, side_rules, Refusal::NotRedirected);
        ConnRules {
            src_identity,
            dst_identity,
            sides,
            refusal,
        }
    }

    /// The identities of a redirected TCP flow's ends and `side` of each
    /// local end, found with the kernel's lookup: the source's egress,
    /// then the destination's ingress. Sides that impose no rule
    /// (`Ok(None)`) are left out; the first `Err` ends the walk and is the
    /// refusal (no sides), as is `not_redirected` when no side has rules.
    fn local_sides<S, R>(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        side: SideFn<S, R>,
        not_redirected: R,
    ) -> (NumericIdentity, NumericIdentity, Vec<S>, Option<R>) {
        let src_ip = src.ip().to_canonical();
        let dst_ip = orig_dst.ip().to_canonical();
        let src_identity = self.identity(src_ip);
        let dst_identity = self.identity(dst_ip);
        let candidates = [
            (self.endpoint(src_ip), Direction::Egress, dst_identity),
            (self.endpoint(dst_ip), Direction::Ingress, src_identity),
        ];
        let mut sides = Vec::new();
        for (entry, direction, remote) in candidates {
            let Some(entry) = entry else { continue };
            match side(entry, direction, remote, orig_dst.port()) {
                Ok(Some(s)) => sides.push(s),
                Ok(None) => {}
                Err(why) => return (src_identity, dst_identity, Vec::new(), Some(why)),
            }
        }
        let refusal = sides.is_empty().then_some(not_redirected);
        (src_identity, dst_identity, sides, refusal)
    }
}

impl ProxyPolicy {
    /// The DNS rules that apply to a redirected query from `src` to
    /// `orig_dst` over `transport`: the source endpoint's egress entry for
    /// (the DNS server's identity, port, protocol), found with the kernel's
    /// lookup. Only a DNS redirect with a rule set yields rules.
    pub fn dns_rules(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        transport: DnsTransport,
    ) -> DnsRules {
        let src_ip = src.ip().to_canonical();
        let dst_ip = orig_dst.ip().to_canonical();
        let src_identity = self.identity(src_ip);
        let dst_identity = self.identity(dst_ip);
        let side = match self.endpoint(src_ip) {
            None => Err(DnsRefusal::NotLocal),
            Some(entry) => {
                let endpoint = entry.name.clone();
                match side_lookup(
                    entry,
                    Direction::Egress,
                    dst_identity,
                    (transport.protocol(), orig_dst.port()),
                    L7Parser::Dns,
                    &entry.dns,
                ) {
                    Ok(Some(side)) => Ok((endpoint, side.clone())),
                    Ok(None) => Err(DnsRefusal::NotRedirected { endpoint }),
                    Err(SideFault::NoEntry) => Err(DnsRefusal::NoEntry { endpoint }),
                    Err(SideFault::DeniedAtL4) => Err(DnsRefusal::DeniedAtL4 { endpoint }),
                    Err(SideFault::MissingRules) => Err(DnsRefusal::MissingRules { endpoint }),
                    Err(SideFault::OtherParser(parser)) => {
                        Err(DnsRefusal::OtherParser { endpoint, parser })
                    }
                }
            }
        };
        DnsRules {
            src_identity,
            dst_identity,
            side,
        }
    }
}

impl ProxyPolicy {
    /// The Kafka rules that apply to a redirected TCP connection from `src`
    /// to `orig_dst`: the source endpoint's egress side (when the source is
    /// local) and the destination endpoint's ingress side (when it is
    /// local), each found with the kernel's lookup. Fails closed as
    /// [`http_rules`](Self::http_rules) does.
    pub fn kafka_rules(&self, src: SocketAddr, orig_dst: SocketAddr) -> KafkaRules {
        let (src_identity, dst_identity, sides, refusal) =
            self.local_sides(src, orig_dst, kafka_side_rules, KafkaRefusal::NotRedirected);
        KafkaRules {
            src_identity,
            dst_identity,
            sides,
            refusal,
        }
    }
}

/// One local side's rules for a proxy: (entry, direction, remote identity,
/// port) -> rules, none, or why the flow should not be here.
type SideFn<S, R> = fn(&EndpointEntry, Direction, NumericIdentity, u16) -> Result<Option<S>, R>;

/// Why a local side of a redirected flow has no rules for the proxy it
/// reached.
enum SideFault {
    NoEntry,
    DeniedAtL4,
    OtherParser(L7Parser),
    MissingRules,
}

/// One local side's TCP lookup for `parser`, whose compiled rules per key
/// are `rules`: `Ok(None)` when the side allows the flow without a
/// redirect (it imposes no L7 rule), `Err` when the flow should not have
/// reached this proxy.
fn side_lookup<'e, T>(
    entry: &'e EndpointEntry,
    direction: Direction,
    remote: NumericIdentity,
    (protocol, port): (u8, u16),
    parser: L7Parser,
    rules: &'e BTreeMap<MapKey, Arc<T>>,
) -> Result<Option<&'e Arc<T>>, SideFault> {
    let Some((key, value)) = entry.policy.map.lookup(direction, remote, protocol, port) else {
        return Err(SideFault::NoEntry);
    };
    if value.verdict == MapVerdict::Deny {
        return Err(SideFault::DeniedAtL4);
    }
    match value.redirect {
        None => Ok(None),
        Some(p) if p == parser => rules.get(key).map(Some).ok_or(SideFault::MissingRules),
        Some(other) => Err(SideFault::OtherParser(other)),
    }
}

/// One side's Kafka lookup, as [`side_rules`] for HTTP.
fn kafka_side_rules(
    entry: &EndpointEntry,
    direction: Direction,
    remote: NumericIdentity,
    port: u16,
) -> Result<Option<KafkaSide>, KafkaRefusal> {
    let endpoint = entry.name.clone();
    match side_lookup(
        entry,
        direction,
        remote,
        (TCP, port),
        L7Parser::Kafka,
        &entry.kafka,
    ) {
        Ok(None) => Ok(None),
        Ok(Some(rules)) => Ok(Some(KafkaSide {
            endpoint,
            direction,
            rules: rules.clone(),
        })),
        Err(SideFault::NoEntry) => Err(KafkaRefusal::NoEntry {
            endpoint,
            direction,
        }),
        Err(SideFault::DeniedAtL4) => Err(KafkaRefusal::DeniedAtL4 {
            endpoint,
            direction,
        }),
        Err(SideFault::MissingRules) => Err(KafkaRefusal::MissingRules {
            endpoint,
            direction,
        }),
        Err(SideFault::OtherParser(parser)) => Err(KafkaRefusal::OtherParser {
            endpoint,
            direction,
            parser,
        }),
    }
}

/// One side's HTTP lookup (see [`side_lookup`]).
fn side_rules(
    entry: &EndpointEntry,
    direction: Direction,
    remote: NumericIdentity,
    port: u16,
) -> Result<Option<SideRules>, Refusal> {
    let endpoint = entry.name.clone();
    match side_lookup(
        entry,
        direction,
        remote,
        (TCP, port),
        L7Parser::Http,
        &entry.http,
    ) {
        Ok(None) => Ok(None),
        Ok(Some(http)) => Ok(Some(SideRules {
            endpoint,
            direction,
            http: http.clone(),
        })),
        Err(SideFault::NoEntry) => Err(Refusal::NoEntry {
            endpoint,
            direction,
        }),
        Err(SideFault::DeniedAtL4) => Err(Refusal::DeniedAtL4 {
            endpoint,
            direction,
        }),
        Err(SideFault::MissingRules) => Err(Refusal::MissingRules {
            endpoint,
            direction,
        }),
        Err(SideFault::OtherParser(parser)) => Err(Refusal::OtherParser {
            endpoint,
            direction,
            parser,
        }),
    }
}

/// Why a connection gets no HTTP rules at all (every request is denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No side of the flow redirects it to the HTTP proxy.
    NotRedirected,
    /// A local side has no map entry for the flow (default deny).
    NoEntry {
        endpoint: String,
        direction: Direction,
    },
    /// A local side denies the flow at L3/L4.
    DeniedAtL4 {
        endpoint: String,
        direction: Direction,
    },
    /// A side redirects the flow to another parser's proxy.
    OtherParser {
        endpoint: String,
        direction: Direction,
        parser: L7Parser,
    },
    /// A side redirects to HTTP but has no rule set for the key.
    MissingRules {
        endpoint: String,
        direction: Direction,
    },
    /// The connection's TLS (or its absence) is not admitted by a side's
    /// `serverNames` / TLS settings.
    Tls(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotRedirected => {
                f.write_str("no policy redirects this flow to the HTTP proxy")
            }
            Refusal::NoEntry {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: no policy entry allows the flow"),
            Refusal::DeniedAtL4 {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: the flow is denied at L3/L4"),
            Refusal::OtherParser {
                endpoint,
                direction,
                parser,
            } => write!(
                f,
                "{endpoint} {direction}: the port is redirected to the {parser} proxy, not HTTP"
            ),
            Refusal::MissingRules {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: redirected without HTTP rules"),
            Refusal::Tls(why) => f.write_str(why),
        }
    }
}

/// One side's HTTP rules for a connection.
#[derive(Debug, Clone)]
pub struct SideRules {
    /// `namespace/name` of the endpoint whose policy this is.
    pub endpoint: String,
    pub direction: Direction,
    http: Arc<HttpSidePolicy>,
}

/// What applies to one redirected connection under one policy snapshot.
#[derive(Debug, Clone)]
pub struct ConnRules {
    pub src_identity: NumericIdentity,
    pub dst_identity: NumericIdentity,
    /// The sides with HTTP rules (egress of the source, then ingress of
    /// the destination).
    pub sides: Vec<SideRules>,
    /// Set when the connection gets no rules: every request is denied.
    pub refusal: Option<Refusal>,
}

/// A header edit to apply to an allowed request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub action: MismatchAction,
    /// Lowercase header name.
    pub name: String,
    pub value: String,
    /// The value is a secret: never log it.
    pub secret: bool,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Forward, after applying `edits` in order.
    Allowed {
        edits: Vec<HeaderEdit>,
        /// Which rule of each side allowed it (`policy rule-path`, or
        /// `allow-all`), for the access log.
        rules: Vec<String>,
    },
    /// Answer with the protocol's denial; `reason` is for the log.
    Denied { reason: String },
}

impl Judgement {
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Judgement::Allowed { .. })
    }
}

impl ConnRules {
    /// Judges one request: every side must allow it.
    pub fn judge(&self, req: &HttpRequest<'_>) -> Judgement {
        if let Some(refusal) = &self.refusal {
            return Judgement::Denied {
                reason: refusal.to_string(),
            };
        }
        if self.sides.is_empty() {
            return Judgement::Denied {
                reason: Refusal::NotRedirected.to_string(),
            };
        }
        let mut edits = Vec::new();
        let mut rules = Vec::new();
        for side in &self.sides {
            if side.http.allow_all {
                rules.push(format!("{} {}: allow-all", side.endpoint, side.direction));
                continue;
            }
            let set = match &side.http.set {
                Ok(set) => set,
                Err(why) => {
                    return Judgement::Denied {
                        reason: format!(
                            "{} {}: rules do not compile: {why}",
                            side.endpoint, side.direction
                        ),
                    };
                }
            };
            match set.judge(req) {
                HttpVerdict::Allowed { rule, actions } => {
                    let (origin, path) = &side.http.origins[rule];
                    rules.push(format!("{origin} {path}"));
                    edits.extend(actions.iter().map(|a| HeaderEdit {
                        action: a.action,
                        name: a.name.to_string(),
                        value: a.value.to_string(),
                        secret: a.secret,
                    }));
                }
                HttpVerdict::Denied => {
                    return Judgement::Denied {
                        reason: format!(
                            "{} {}: no HTTP rule matches",
                            side.endpoint, side.direction
                        ),
                    };
                }
            }
        }
        Judgement::Allowed { edits, rules }
    }
}

/// The current policy snapshot, swapped by the agent on every policy
/// change and read by the proxy once per request (so a change applies to
/// the next request of an existing connection). Cloning shares the
/// snapshot.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<ProxyPolicy>>,
    /// Bumped on every [`update`](Self::update): open connections re-check
    /// their flow (see [`PolicyHandle::changes`]).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl PolicyHandle {
    /// A handle starting at `policy`.
    pub fn new(policy: ProxyPolicy) -> PolicyHandle {
        PolicyHandle {
            current: Arc::new(ArcSwap::from_pointee(policy)),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// A handle that denies everything until the first [`update`](Self::update).
    pub fn deny_all() -> PolicyHandle {
        PolicyHandle::new(ProxyPolicy::empty())
    }

    /// Replaces the snapshot; requests judged from now on see `policy`.
    pub fn update(&self, policy: ProxyPolicy) {
        crate::http::upstream::set_local_destinations(policy.by_ip.keys().copied().collect());
        self.current.store(Arc::new(policy));
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes when the snapshot is replaced (not when a learned address
    /// is added: that changes no rule).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Resolves with `check`'s reason once a snapshot installed after this
    /// call makes `check` say the connection may not continue; never
    /// otherwise. Open connections race their serving against it.
    pub async fn revoked<F>(&self, check: F) -> String
    where
        F: Fn(&ProxyPolicy) -> Option<String>,
    {
        let mut changes = self.changes();
        loop {
            if changes.changed().await.is_err() {
                // Every handle is gone: no change can come.
                std::future::pending::<()>().await;
            }
            if let Some(why) = check(&self.snapshot()) {
                return why;
            }
        }
    }

    /// Builds a snapshot from `cluster` and swaps it in.
    pub fn update_from_cluster(&self, cluster: &Cluster) {
        self.update(ProxyPolicy::new(cluster));
    }

    /// Gives the current snapshot one more ipcache entry: an address
    /// learned from DNS whose identity the snapshot already has
    /// (`Cluster::learned_address`), so no rule changes. The next
    /// [`update`](Self::update) replaces it with a resolve that has it.
    pub fn add_learned_address(&self, ip: IpAddr, id: NumericIdentity) {
        if let Ok(mut learned) = self.current.load().learned.write() {
            learned.insert(ip.to_canonical(), id);
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ProxyPolicy> {
        self.current.load_full()
    }
}
