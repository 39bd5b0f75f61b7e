//! Property test of the incremental engine: random sequences of changes
//! over small generated clusters; after every step the engine's state
//! must equal a resolution from scratch with the same numbering, and the
//! step's delta applied to the previous state must give the new one.
//!
//! `PORTCULLIS_PROPTEST_STEPS` sets the total number of steps (default
//! 10,000; each case runs [`STEPS_PER_CASE`]).

use policy_model::identity::IdentityKind;
use policy_model::incremental::{Change, Hosts, IncrementalCluster, PolicyKey};
use policy_model::load::load_str;
use policy_model::mapstate::MapVerdict;
use policy_model::topology::cidr_group::CidrGroup;
use policy_model::topology::{ContainerPort, HostSpec, NamespaceSpec, PodSpec, Topology};
use policy_model::{Cluster, FqdnCache};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many checked states had each feature, so a generator that stops
/// producing one is noticed.
static WITH_L7: AtomicUsize = AtomicUsize::new(0);
static WITH_DENY: AtomicUsize = AtomicUsize::new(0);
static WITH_FQDN_IDENTITY: AtomicUsize = AtomicUsize::new(0);
static WITH_FQDN_DENY: AtomicUsize = AtomicUsize::new(0);
static WITH_CIDR_IDENTITY: AtomicUsize = AtomicUsize::new(0);
static WITH_REMOTE_POD: AtomicUsize = AtomicUsize::new(0);
static WITH_GROUP_IDENTITY: AtomicUsize = AtomicUsize::new(0);
static WITH_WARNING: AtomicUsize = AtomicUsize::new(0);

const STEPS_PER_CASE: usize = 40;
const LOCAL_NODE: &str = "n1";
const NAMESPACES: usize = 3;
const PODS_PER_NAMESPACE: u64 = 4;
const APPS: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 3] = ["api.example.com", "www.example.com", "db.other.org"];

/// SplitMix64: decodes one op's payload into choices.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize].clone()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn namespace(i: usize, d: &mut Dice) -> NamespaceSpec {
    let mut l = BTreeMap::new();
    if d.chance(70) {
        l.insert("team".into(), d.pick(&["red", "blue"]).to_string());
    }
    if d.chance(50) {
        l.insert("env".into(), d.pick(&["prod", "dev"]).to_string());
    }
    NamespaceSpec {
        name: format!("ns{i}"),
        labels: l,
        annotations: if d.chance(20) {
            [(
                policy_model::rules::PROXY_VISIBILITY_ANNOTATION.to_string(),
                "<Egress/80/TCP/HTTP>".to_string(),
            )]
            .into()
        } else {
            Default::default()
        },
    }
}

fn pod(ns: usize, i: u64, d: &mut Dice) -> PodSpec {
    let mut l = labels(&[("app", d.pick(&APPS))]);
    if d.chance(40) {
        l.insert("tier".into(), d.pick(&["web", "db"]).to_string());
    }
    let mut ports = Vec::new();
    if d.chance(60) {
        ports.push(ContainerPort {
            name: Some("http".into()),
            // Two numbers for one name: egress named ports can be ambiguous.
            container_port: d.pick(&[80, 80, 8080]),
            protocol: None,
        });
    }
    if d.chance(30) {
        ports.push(ContainerPort {
            name: Some("dns".into()),
            container_port: 53,
            protocol: Some("UDP".into()),
        });
    }
    // Addresses move within the namespace's range.
    let host = 1 + i + PODS_PER_NAMESPACE * d.below(2);
    let ip: IpAddr = format!("10.0.{ns}.{host}").parse().expect("valid address");
    let v6 = d
        .chance(20)
        .then(|| format!("fd00::{ns}:{host}").parse().expect("valid address"));
    PodSpec {
        namespace: format!("ns{ns}"),
        name: format!("p{i}"),
        labels: l,
        ip: Some(ip),
        ips: v6.into_iter().collect(),
        ports,
        service_account: d.chance(20).then(|| "sa".to_string()),
        node: match d.below(4) {
            0 => None,
            1 | 2 => Some(LOCAL_NODE.into()),
            _ => Some("n2".into()),
        },
        // Visibility redirects: the incremental engine's owners must
        // tell pods with and without them apart.
        annotations: match d.below(8) {
            0 => [(
                policy_model::rules::PROXY_VISIBILITY_ANNOTATION.to_string(),
                "<Ingress/80/TCP/HTTP>,<Egress/53/UDP/DNS>".to_string(),
            )]
            .into(),
            1 => [(
                policy_model::rules::PROXY_VISIBILITY_ANNOTATION.to_string(),
                "<Ingress/8080/TCP/HTTP>".to_string(),
            )]
            .into(),
            _ => Default::default(),
        },
    }
}

fn hosts(d: &mut Dice) -> Hosts {
    let spec = |ips: &[&str], l: BTreeMap<String, String>| {
        Some(HostSpec {
            ips: ips
                .iter()
                .map(|s| s.parse().expect("valid address"))
                .collect(),
            labels: l,
        })
    };
    Hosts {
        node: spec(
            if d.chance(50) {
                &["192.168.0.10"]
            } else {
                &["192.168.0.10", "192.168.0.12"]
            },
            labels(&[("role", d.pick(&["worker", "edge"]))]),
        ),
        kube_apiserver: spec(
            if d.chance(50) {
                &["192.168.0.1"]
            } else {
                &["192.168.0.1", "192.168.0.10"]
            },
            BTreeMap::new(),
        ),
        remote_nodes: d
            .chance(70)
            .then(|| spec(&["192.168.0.11"], BTreeMap::new()))
            .flatten(),
    }
}

fn initial(d: &mut Dice) -> Topology {
    let mut t = Topology::default();
    for ns in 0..NAMESPACES {
        t.namespaces.push(namespace(ns, d));
        for i in 0..PODS_PER_NAMESPACE {
            if d.chance(60) {
                t.pods.push(pod(ns, i, d).into());
            }
        }
    }
    let h = hosts(d);
    t.node = h.node;
    t.kube_apiserver = h.kube_apiserver;
    t.remote_nodes = h.remote_nodes;
    t.cidr_groups = cidr_groups(d);
    // Pods never share an address (the topology's own check).
    let mut seen = std::collections::BTreeSet::new();
    t.pods
        .retain(|p| p.addresses().iter().all(|a| seen.insert(*a)));
    t
}

const GROUP_NAMES: [&str; 3] = ["g1", "g2", "g3"];

/// Some CIDR groups (possibly none, possibly a name twice), from a pool
/// of CIDRs that overlap the policies' own and each other.
fn cidr_groups(d: &mut Dice) -> Vec<CidrGroup> {
    let pool = [
        "172.16.0.0/16",
        "172.16.1.0/24",
        "172.16.1.7/32",
        "8.8.0.0/16",
        "10.0.1.0/24",
        "fd00:201::/64",
    ];
    (0..d.below(4))
        .map(|_| {
            let mut l = BTreeMap::new();
            if d.chance(70) {
                l.insert("team".into(), d.pick(&["red", "blue"]).to_string());
            }
            CidrGroup {
                name: d.pick(&GROUP_NAMES).to_string(),
                labels: l,
                cidrs: (0..d.below(3))
                    .map(|_| d.pick(&pool).parse().expect("pool CIDR"))
                    .collect(),
            }
        })
        .collect()
}

/// A peer selector in CNP form.
fn cnp_peer(d: &mut Dice, ingress: bool) -> String {
    let (eps, ents, cidr) = if ingress {
        ("fromEndpoints", "fromEntities", "fromCIDRSet")
    } else {
        ("toEndpoints", "toEntities", "toCIDRSet")
    };
    match d.below(if ingress { 7 } else { 9 }) {
        0 => format!("{eps}: [{{matchLabels: {{app: {}}}}}]", d.pick(&APPS)),
        1 => format!(
            "{eps}: [{{matchLabels: {{app: {}, 'k8s:io.kubernetes.pod.namespace': ns{}}}}}]",
            d.pick(&APPS),
            d.below(NAMESPACES as u64)
        ),
        2 => format!(
            "{eps}: [{{matchLabels: {{'io.cilium.k8s.namespace.labels.team': {}}}}}]",
            d.pick(&["red", "blue"])
        ),
        3 => format!("{eps}: [{{}}]"),
        4 => format!(
            "{ents}: [{}]",
            d.pick(&[
                "world",
                "cluster",
                "host",
                "all",
                "remote-node",
                "kube-apiserver"
            ])
        ),
        5 | 6 => {
            let (net, except) = d.pick(&[
                ("172.16.0.0/16", ", except: [172.16.1.0/24]"),
                ("172.16.0.0/12", ", except: [172.16.1.7/32]"),
                ("10.0.0.0/8", ", except: [10.0.1.0/24]"),
                ("172.16.1.0/24", ", except: [172.16.1.7/32]"),
                ("172.16.1.7/32", ""),
                ("8.8.0.0/16", ""),
            ]);
            match d.below(4) {
                0 => format!(
                    "{cidr}: [{{cidrGroupRef: {}{except}}}]",
                    d.pick(&GROUP_NAMES)
                ),
                1 => format!(
                    "{cidr}: [{{cidrGroupSelector: {{matchLabels: {{team: {}}}}}{except}}}]",
                    d.pick(&["red", "blue"])
                ),
                _ => format!("{cidr}: [{{cidr: {net}{except}}}]"),
            }
        }
        7 => format!(
            "toFQDNs: [{{matchName: {}}}]",
            d.pick(&["api.example.com", "db.other.org"])
        ),
        _ => "toFQDNs: [{matchPattern: '*.example.com'}]".to_string(),
    }
}

fn cnp_ports(d: &mut Dice, ingress: bool) -> String {
    match d.below(if ingress { 5 } else { 6 }) {
        0 => String::new(),
        1 => ", toPorts: [{ports: [{port: '80', protocol: TCP}]}]".into(),
        2 => ", toPorts: [{ports: [{port: http, protocol: TCP}]}]".into(),
        3 => ", toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET, path: /public}]}}]"
            .into(),
        4 => ", toPorts: [{ports: [{port: '8000', endPort: 8100, protocol: TCP}]}]".into(),
        _ => ", toPorts: [{ports: [{port: '53', protocol: ANY}], rules: {dns: [{matchPattern: '*'}]}}]"
            .into(),
    }
}

fn cnp(name: &str, ns: usize, d: &mut Dice) -> String {
    let subject = match d.below(3) {
        0 => "{}".to_string(),
        _ => format!("{{matchLabels: {{app: {}}}}}", d.pick(&APPS)),
    };
    let mut spec = format!("  endpointSelector: {subject}\n");
    for (section, ingress) in [
        ("ingress", true),
        ("egress", false),
        ("ingressDeny", true),
        ("egressDeny", false),
    ] {
        let p = if section.ends_with("Deny") { 25 } else { 60 };
        if !d.chance(p) {
            continue;
        }
        let mut entries = Vec::new();
        for _ in 0..1 + d.below(2) {
            let peer = cnp_peer(d, ingress);
            // Deny rules carry no L7 rules. Their toFQDNs selectors name
            // the names the allows' do, so an address learned for both
            // an allowed and a denied name comes up.
            let ports = if section.ends_with("Deny") {
                match d.below(2) {
                    0 => String::new(),
                    _ => ", toPorts: [{ports: [{port: '80', protocol: TCP}]}]".into(),
                }
            } else {
                cnp_ports(d, ingress)
            };
            entries.push(format!("{{{peer}{ports}}}"));
        }
        spec.push_str(&format!("  {section}: [{}]\n", entries.join(", ")));
    }
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: ns{ns}}}\nspec:\n{spec}"
    )
}

fn np_peer(d: &mut Dice) -> String {
    match d.below(5) {
        0 => format!("podSelector: {{matchLabels: {{app: {}}}}}", d.pick(&APPS)),
        1 => format!(
            "namespaceSelector: {{matchLabels: {{team: {}}}}}",
            d.pick(&["red", "blue"])
        ),
        2 => format!(
            "namespaceSelector: {{matchLabels: {{env: {}}}}}, podSelector: {{matchLabels: {{app: {}}}}}",
            d.pick(&["prod", "dev"]),
            d.pick(&APPS)
        ),
        3 => "namespaceSelector: {}".to_string(),
        _ => {
            let (net, except) = d.pick(&[
                ("172.16.0.0/16", "172.16.1.0/24"),
                ("10.0.0.0/8", "10.0.2.0/24"),
            ]);
            format!("ipBlock: {{cidr: {net}, except: [{except}]}}")
        }
    }
}

fn np(name: &str, ns: usize, d: &mut Dice) -> String {
    let subject = match d.below(3) {
        0 => "{}".to_string(),
        _ => format!("{{matchLabels: {{app: {}}}}}", d.pick(&APPS)),
    };
    let mut types = Vec::new();
    let mut body = String::new();
    for (dir, peers) in [("Ingress", "from"), ("Egress", "to")] {
        if !d.chance(60) {
            continue;
        }
        types.push(dir);
        let mut rules = Vec::new();
        for _ in 0..d.below(3) {
            let peer = if d.chance(80) {
                format!("{peers}: [{{{}}}]", np_peer(d))
            } else {
                String::new()
            };
            let ports = match d.below(4) {
                0 => "",
                1 => "ports: [{port: 80, protocol: TCP}]",
                2 => "ports: [{port: http}]",
                _ => "ports: [{port: 8000, endPort: 8100, protocol: TCP}]",
            };
            let sep = if !peer.is_empty() && !ports.is_empty() {
                ", "
            } else {
                ""
            };
            rules.push(format!("{{{peer}{sep}{ports}}}"));
        }
        body.push_str(&format!(
            "  {}: [{}]\n",
            dir.to_lowercase(),
            rules.join(", ")
        ));
    }
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ns{ns}}}\nspec:\n  podSelector: {subject}\n  policyTypes: [{}]\n{body}",
        types.join(", ")
    )
}

/// A policy object: its key and rules.
fn policy(d: &mut Dice) -> (PolicyKey, Vec<policy_model::rules::PolicyRule>) {
    let ns = d.below(NAMESPACES as u64) as usize;
    let name = format!("pol{}", d.below(6));
    let yaml = if d.chance(50) {
        cnp(&name, ns, d)
    } else {
        np(&name, ns, d)
    };
    let set = load_str(&yaml, "generated.yaml")
        .unwrap_or_else(|e| panic!("generated policy does not load: {e:?}\n{yaml}"));
    let p = set.policies.into_iter().next().expect("one policy object");
    (PolicyKey::of(&p.origin), p.rules)
}

fn learned_ip(d: &mut Dice) -> IpAddr {
    let s = match d.below(6) {
        0 => "172.16.1.7".to_string(),
        1 => format!("172.16.1.{}", d.below(4)),
        2 => format!("172.16.2.{}", d.below(4)),
        3 => format!("8.8.8.{}", d.below(3)),
        4 => format!("10.0.{}.{}", d.below(NAMESPACES as u64), 1 + d.below(8)),
        _ => format!("2001:db8::{}", d.below(3)),
    };
    s.parse().expect("valid address")
}

/// One random change to the engine's inputs.
fn change(engine: &IncrementalCluster, d: &mut Dice) -> Change {
    match d.below(100) {
        0..=29 => {
            let (key, rules) = policy(d);
            Change::PolicyUpsert { key, rules }
        }
        30..=39 => {
            let keys: Vec<PolicyKey> = engine.policy_keys().cloned().collect();
            if keys.is_empty() {
                let (key, rules) = policy(d);
                return Change::PolicyUpsert { key, rules };
            }
            Change::PolicyDelete(d.pick(&keys))
        }
        40..=59 => {
            let ns = d.below(NAMESPACES as u64) as usize;
            let i = d.below(PODS_PER_NAMESPACE);
            let p = pod(ns, i, d);
            let topo = engine.topology();
            // Keep addresses unique across pods.
            let clash = topo.pods.iter().any(|o| {
                o.full_name() != p.full_name()
                    && o.addresses().iter().any(|a| p.addresses().contains(a))
            });
            if clash {
                Change::PodDelete {
                    namespace: p.namespace,
                    name: p.name,
                }
            } else {
                Change::PodUpsert(p.into())
            }
        }
        60..=67 => Change::PodDelete {
            namespace: format!("ns{}", d.below(NAMESPACES as u64)),
            name: format!("p{}", d.below(PODS_PER_NAMESPACE)),
        },
        68..=75 => {
            let ns = d.below(NAMESPACES as u64) as usize;
            if d.chance(10) {
                Change::NamespaceDelete(format!("ns{ns}"))
            } else {
                Change::NamespaceUpsert(namespace(ns, d))
            }
        }
        76..=87 => Change::Learned {
            name: d.pick(&NAMES).to_string(),
            ips: (0..1 + d.below(2)).map(|_| learned_ip(d)).collect(),
        },
        88..=91 => {
            // The whole store at once: one name learned, one address gone.
            let mut cache = engine.fqdn().clone();
            cache.learn(d.pick(&NAMES), learned_ip(d));
            let known: Vec<(String, IpAddr)> = cache
                .names
                .iter()
                .flat_map(|(n, ips)| ips.iter().map(move |ip| (n.clone(), *ip)))
                .collect();
            if !known.is_empty() && d.chance(50) {
                let (name, ip) = d.pick(&known);
                if let Some(set) = cache.names.get_mut(&name) {
                    set.remove(&ip);
                    if set.is_empty() {
                        cache.names.remove(&name);
                    }
                }
            }
            Change::Names(cache)
        }
        92..=95 => {
            let known: Vec<(String, IpAddr)> = engine
                .fqdn()
                .names
                .iter()
                .flat_map(|(n, ips)| ips.iter().map(move |ip| (n.clone(), *ip)))
                .collect();
            if known.is_empty() {
                return Change::Expired {
                    name: d.pick(&NAMES).to_string(),
                    ips: vec![learned_ip(d)],
                };
            }
            let (name, ip) = d.pick(&known);
            Change::Expired {
                name,
                ips: vec![ip],
            }
        }
        96..=97 => Change::CidrGroups(cidr_groups(d)),
        _ => Change::Hosts(hosts(d)),
    }
}

/// The engine's state equals a resolution from scratch with its numbering.
fn check_against_oracle(engine: &IncrementalCluster, step: usize, what: &str) {
    let topo = engine.topology();
    let oracle = Cluster::with_numbering(
        topo.clone(),
        engine.rules(),
        engine.fqdn(),
        engine.numbering(),
    );
    let state = engine.state();
    assert_eq!(
        &state.identities,
        oracle.identities(),
        "step {step} ({what}): identities differ"
    );
    assert_eq!(
        state.ipcache_ordered(),
        oracle.ipcache().to_vec(),
        "step {step} ({what}): ipcache differs"
    );
    let mut local = 0;
    for ep in oracle.endpoints() {
        let spec = topo.pod(&ep.full_name()).expect("oracle endpoint is a pod");
        if !spec.is_on(LOCAL_NODE) {
            continue;
        }
        local += 1;
        let (mine, pol) = state
            .endpoints
            .get(&ep.id)
            .unwrap_or_else(|| panic!("step {step} ({what}): endpoint {} missing", ep.id));
        assert_eq!(mine, ep, "step {step} ({what}): endpoint {} differs", ep.id);
        let want = oracle.endpoint_policy(ep);
        assert!(
            pol.map == want.map,
            "step {step} ({what}): map state of {} differs; from scratch -> engine: {:?}",
            ep.full_name(),
            want.map.diff(&pol.map)
        );
        assert_eq!(
            pol.l7,
            want.l7,
            "step {step} ({what}): L7 of {} differs",
            ep.full_name()
        );
        assert_eq!(
            pol,
            &want,
            "step {step} ({what}): policy of {} differs",
            ep.full_name()
        );
    }
    assert_eq!(
        state.endpoints.len(),
        local,
        "step {step} ({what}): extra endpoints"
    );
    // The lookups a daemon makes of the engine instead of a cluster.
    let learned = engine.fqdn().names.values().flatten().copied();
    let pod_ips = topo.pods.iter().flat_map(|p| p.addresses());
    let probes: Vec<IpAddr> = learned
        .chain(pod_ips)
        .chain(["8.8.8.8", "10.0.0.77", "2001:db8::9"].map(|s| s.parse().expect("valid")))
        .collect();
    for ip in probes {
        assert_eq!(
            engine.identity_of_ip(ip),
            oracle.identity_of_ip(ip),
            "step {step} ({what}): identity of {ip} differs"
        );
        assert_eq!(
            engine.learned_and_fallback_identity(ip),
            oracle.learned_and_fallback_identity(ip),
            "step {step} ({what}): learned/fallback identity of {ip} differs"
        );
    }
    for ep in oracle.endpoints() {
        let mine: Vec<_> = engine
            .rules_selecting(ep.identity)
            .into_iter()
            .map(|r| &r.origin)
            .collect();
        let mut want: Vec<_> = oracle
            .rules_selecting(ep.identity)
            .map(|r| &r.origin)
            .collect();
        let mut mine_sorted = mine.clone();
        mine_sorted.sort_by_key(|o| format!("{o:?}"));
        want.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            mine_sorted,
            want,
            "step {step} ({what}): rules selecting {} differ",
            ep.full_name()
        );
    }
    let count = |c: &AtomicUsize, yes: bool| {
        if yes {
            c.fetch_add(1, Ordering::Relaxed);
        }
    };
    let pols = || state.endpoints.values().map(|(_, p)| p);
    count(&WITH_L7, pols().any(|p| !p.l7.is_empty()));
    count(
        &WITH_DENY,
        pols().any(|p| {
            p.map
                .entries
                .values()
                .any(|v| v.verdict == MapVerdict::Deny)
        }),
    );
    count(&WITH_WARNING, pols().any(|p| !p.warnings.is_empty()));
    count(
        &WITH_FQDN_IDENTITY,
        state
            .identities
            .values()
            .any(|i| matches!(i.kind, IdentityKind::Fqdn { .. })),
    );
    count(
        &WITH_FQDN_DENY,
        pols().any(|p| {
            p.map.entries.iter().any(|(k, v)| {
                v.verdict == MapVerdict::Deny
                    && state
                        .identities
                        .get(&k.identity)
                        .is_some_and(|i| matches!(i.kind, IdentityKind::Fqdn { .. }))
            })
        }),
    );
    count(
        &WITH_CIDR_IDENTITY,
        state
            .identities
            .values()
            .any(|i| matches!(i.kind, IdentityKind::Cidr(_))),
    );
    count(&WITH_REMOTE_POD, topo.pods.len() > local);
    count(
        &WITH_GROUP_IDENTITY,
        state
            .identities
            .values()
            .any(|i| i.labels.iter().any(|(_, v)| v.source == "cidrgroup")),
    );
}

fn run_case(seed: u64, ops: &[u64]) {
    let mut d = Dice(seed);
    let topo = initial(&mut d);
    let mut policies = Vec::new();
    for _ in 0..d.below(5) {
        policies.push(policy(&mut d));
    }
    let mut fqdn = FqdnCache::default();
    if d.chance(50) {
        fqdn.learn("api.example.com", learned_ip(&mut d));
    }
    let mut engine = IncrementalCluster::new(topo, policies, fqdn, LOCAL_NODE);
    check_against_oracle(&engine, 0, "initial");
    for (step, op) in ops.iter().enumerate() {
        let mut d = Dice(*op);
        let c = change(&engine, &mut d);
        let what = format!("{c:?}");
        let before = engine.state().realized();
        let delta = engine.apply(c);
        check_against_oracle(&engine, step + 1, &what);
        let mut replay = before;
        replay.apply(&delta);
        assert_eq!(
            replay,
            engine.state().realized(),
            "step {} ({what}): the delta does not give the new state",
            step + 1
        );
    }
}

#[test]
fn incremental_equals_from_scratch_after_every_step() {
    let steps: usize = std::env::var("PORTCULLIS_PROPTEST_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let cases = steps.div_ceil(STEPS_PER_CASE) as u32;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        any::<u64>(),
        proptest::collection::vec(any::<u64>(), STEPS_PER_CASE),
    );
    runner
        .run(&strategy, |(seed, ops)| {
            run_case(seed, &ops);
            Ok(())
        })
        .expect("the engine agrees with resolution from scratch");
    // Every feature the generator aims at showed up in some state.
    let seen = [
        ("L7 rules", &WITH_L7),
        ("deny entries", &WITH_DENY),
        ("FQDN identities", &WITH_FQDN_IDENTITY),
        ("denied FQDN identities", &WITH_FQDN_DENY),
        ("CIDR identities", &WITH_CIDR_IDENTITY),
        ("remote pods", &WITH_REMOTE_POD),
        ("CIDR group labels", &WITH_GROUP_IDENTITY),
        ("warnings", &WITH_WARNING),
    ];
    for (what, c) in seen {
        let n = c.load(Ordering::Relaxed);
        eprintln!("states with {what}: {n}");
        assert!(n > 0, "no state had {what}: the generator lost it");
    }
}
