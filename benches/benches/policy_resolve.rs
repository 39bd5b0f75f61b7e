//! Policy resolution at cluster scale: `Cluster::new` (identities, ipcache,
//! selector cache) and `Cluster::all_policies` (every endpoint's map state
//! and L7 rule sets).
//!
//! The topology and the policies are generated in code, deterministically
//! (a hash of the object's index stands in for randomness), so every run
//! resolves the same cluster:
//!
//! - `n` namespaces labelled `team` and `env`, 50 pods each in 5
//!   deployments (labels `app`, `tier`, `team`; named ports `http` 8080 and
//!   `metrics` 9090): 5 distinct label sets, so 5 identities, per namespace.
//! - policies spread evenly over the namespaces, one in ten of each kind:
//!   K8s NetworkPolicy (podSelector peers, namespaceSelector+podSelector
//!   peers with a named port and a port range, ipBlock with except plus an
//!   egress named port) and CiliumNetworkPolicy (fromEndpoints, cross
//!   namespace toEndpoints, toCIDRSet with except, HTTP rules, ingressDeny /
//!   egressDeny, matchExpressions with entities).
//!
//! Groups: `resolve_10k_rules_5k_pods` (10,000 policies, 100 namespaces,
//! 5,000 pods) and `resolve_1k_rules_500_pods` (1,000 policies, 10
//! namespaces, 500 pods) for quick runs.
//!
//! The incremental engine (`incremental_*` groups, same clusters): the
//! first pod of every namespace runs on the bench's node (100 local
//! endpoints at 10k), the others on other nodes. Cases: building the
//! engine (cold start), one DNS answer learned (the whole name store
//! handed over, as the daemon does), one policy edit that changes a local
//! endpoint's policy, one remote pod added with labels no pod has (a new
//! identity), and one local pod relabelled. Before criterion runs, each change case is
//! also timed 200 times one by one and its p50 / p99 / max printed (the
//! issue's targets are p99 figures).
//!
//! Reading the topology file (`topology_read_5k_pods`, the 10k cluster's
//! 5,000 pods written one flow mapping per line as the churn bench writes
//! them): the whole parse, a `TopologyReader`'s first read, and its read
//! of the file with one pod relabelled (what a remote pod change costs).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use policy_model::incremental::{Change, IncrementalCluster, PolicyKey};
use policy_model::rules::PolicyRule;
use policy_model::topology::reader::TopologyReader;
use policy_model::topology::{ContainerPort, HostSpec, NamespaceSpec, PodSpec};
use policy_model::{Cluster, FqdnCache, Topology};
use std::time::Instant;

const PODS_PER_NAMESPACE: usize = 50;
const DEPLOYMENTS_PER_NAMESPACE: usize = 5;
const APPS: usize = 40;
const TEAMS: usize = 10;
const TIERS: [&str; 4] = ["web", "api", "db", "cache"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
/// Distinct CIDRs policies name (Cilium allocates one identity per prefix).
const CIDRS: u64 = 300;

/// SplitMix64: a fixed, seedable stand-in for randomness.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn namespace_name(ns: usize) -> String {
    format!("ns-{ns:03}")
}

/// The `app` label of deployment `d` of namespace `ns`.
fn app(ns: usize, d: usize) -> String {
    format!("app-{:02}", (ns * 3 + d) % APPS)
}

fn tier(d: usize) -> &'static str {
    TIERS[d % TIERS.len()]
}

fn team(ns: usize) -> String {
    format!("team-{}", ns % TEAMS)
}

fn topology(namespaces: usize) -> Topology {
    let labels = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    };
    let mut topo = Topology {
        node: Some(HostSpec {
            ips: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 255, 1))],
            labels: BTreeMap::new(),
        }),
        kube_apiserver: Some(HostSpec {
            ips: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 255, 10))],
            labels: BTreeMap::new(),
        }),
        ..Topology::default()
    };
    for ns in 0..namespaces {
        topo.namespaces.push(NamespaceSpec {
            name: namespace_name(ns),
            labels: labels(&[("team", team(ns)), ("env", ENVS[ns % ENVS.len()].into())]),
            annotations: Default::default(),
        });
        for p in 0..PODS_PER_NAMESPACE {
            let d = p % DEPLOYMENTS_PER_NAMESPACE;
            let ns_octet = u8::try_from(ns).expect("fewer than 256 namespaces");
            let pod_octet = u8::try_from(p + 1).expect("fewer than 255 pods per namespace");
            topo.pods.push(Arc::new(PodSpec {
                namespace: namespace_name(ns),
                name: format!("{}-{p}", app(ns, d)),
                labels: labels(&[
                    ("app", app(ns, d)),
                    ("tier", tier(d).into()),
                    ("team", team(ns)),
                ]),
                ip: Some(IpAddr::V4(Ipv4Addr::new(10, ns_octet, 0, pod_octet))),
                ports: vec![
                    ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        protocol: Some("TCP".into()),
                    },
                    ContainerPort {
                        name: Some("metrics".into()),
                        container_port: 9090,
                        protocol: Some("TCP".into()),
                    },
                ],
                ..PodSpec::default()
            }));
        }
    }
    topo
}

/// A `/24` from a pool of [`CIDRS`] prefixes, and a `/28` inside it.
fn cidr(h: u64) -> (String, String) {
    let i = h % CIDRS;
    let (b, c) = (16 + i / 200, i % 200);
    (
        format!("172.{b}.{c}.0/24"),
        format!("172.{b}.{c}.{}/28", (h >> 8) % 16 * 16),
    )
}

/// Policy `i` as one YAML document.
fn policy(i: usize, namespaces: usize, out: &mut String) {
    let ns = i % namespaces;
    let h = mix(i as u64);
    let name = format!("pol-{i:05}");
    let nsn = namespace_name(ns);
    let subject = app(ns, (h % DEPLOYMENTS_PER_NAMESPACE as u64) as usize);
    let peer_app = format!("app-{:02}", (h >> 8) % APPS as u64);
    let peer_tier = TIERS[((h >> 16) % TIERS.len() as u64) as usize];
    let peer_team = format!("team-{}", (h >> 24) % TEAMS as u64);
    let peer_env = ENVS[((h >> 32) % ENVS.len() as u64) as usize];
    let peer_ns = namespace_name(((h >> 40) % namespaces as u64) as usize);
    let (net, except) = cidr(h >> 4);
    let doc = match i % 10 {
        0 | 1 => format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  podSelector: {{matchLabels: {{app: {subject}}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {{matchLabels: {{app: {peer_app}}}}}
    ports:
    - {{port: 8080, protocol: TCP}}
"
        ),
        2 => format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  podSelector: {{matchLabels: {{app: {subject}}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: {peer_team}}}}}
      podSelector: {{matchLabels: {{tier: {peer_tier}}}}}
    ports:
    - {{port: http, protocol: TCP}}
    - {{port: 9000, endPort: 9100, protocol: TCP}}
"
        ),
        3 => format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  podSelector: {{matchLabels: {{app: {subject}}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: {net}, except: [{except}]}}
    ports:
    - {{port: 443, protocol: TCP}}
  - to:
    - namespaceSelector: {{matchLabels: {{env: {peer_env}}}}}
    ports:
    - {{port: http, protocol: TCP}}
"
        ),
        4 | 5 => format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  endpointSelector: {{matchLabels: {{app: {subject}}}}}
  ingress:
  - fromEndpoints:
    - matchLabels: {{app: {peer_app}}}
    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": {peer_ns}, tier: {peer_tier}}}
    toPorts:
    - ports:
      - {{port: \"8080\", protocol: TCP}}
      - {{port: \"9090\", protocol: TCP}}
"
        ),
        6 => format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  endpointSelector: {{matchLabels: {{app: {subject}}}}}
  egress:
  - toCIDRSet:
    - {{cidr: {net}, except: [{except}]}}
    toPorts:
    - ports:
      - {{port: \"443\", protocol: TCP}}
  - toEndpoints:
    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": {peer_ns}, app: {peer_app}}}
    toPorts:
    - ports:
      - {{port: \"8080\", protocol: TCP}}
"
        ),
        7 => format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  endpointSelector: {{matchLabels: {{app: {subject}}}}}
  ingress:
  - fromEndpoints:
    - matchLabels: {{tier: {peer_tier}}}
    toPorts:
    - ports:
      - {{port: \"8080\", protocol: TCP}}
      rules:
        http:
        - {{method: GET, path: \"/api/v1/{subject}/.*\"}}
        - {{method: POST, path: /api/v1/{subject}/orders, headers: [\"X-Team {peer_team}\"]}}
        - {{method: GET, path: /healthz}}
"
        ),
        8 => format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  endpointSelector: {{matchLabels: {{app: {subject}}}}}
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {{io.cilium.k8s.namespace.labels.env: {peer_env}, app: {peer_app}}}
  egressDeny:
  - toCIDR: [{except}]
"
        ),
        _ => format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: {nsn}}}
spec:
  endpointSelector:
    matchExpressions:
    - {{key: tier, operator: In, values: [{peer_tier}, web]}}
  ingress:
  - fromEntities: [cluster, host]
    toPorts:
    - ports:
      - {{port: \"9090\", protocol: TCP}}
  egress:
  - toEndpoints:
    - matchExpressions:
      - {{key: app, operator: NotIn, values: [{peer_app}]}}
      - {{key: team, operator: Exists}}
  - toEntities: [kube-apiserver]
"
        ),
    };
    out.push_str(&doc);
    out.push_str("---\n");
}

/// The generated cluster: its topology and the translated rules of
/// `policies` policy objects.
fn generate(namespaces: usize, policies: usize) -> (Topology, Vec<PolicyRule>) {
    let (topo, objects) = generate_objects(namespaces, policies);
    (topo, objects.into_iter().flat_map(|(_, r)| r).collect())
}

/// The node the incremental cases run on.
const NODE: &str = "bench-node";

/// The generated cluster with its policies by object, the first pod of
/// each namespace on [`NODE`] and the others elsewhere.
fn generate_placed(
    namespaces: usize,
    policies: usize,
) -> (Topology, Vec<(PolicyKey, Vec<PolicyRule>)>) {
    let (mut topo, objects) = generate_objects(namespaces, policies);
    for (i, p) in topo.pods.iter_mut().enumerate() {
        Arc::make_mut(p).node = Some(if i % PODS_PER_NAMESPACE == 0 {
            NODE.to_string()
        } else {
            "other-node".to_string()
        });
    }
    (topo, objects)
}

/// Policy `i` as its own object (key and rules).
fn policy_object(i: usize, namespaces: usize) -> (PolicyKey, Vec<PolicyRule>) {
    let mut yaml = String::new();
    policy(i, namespaces, &mut yaml);
    let set = policy_model::load::load_str(&yaml, "edit.yaml").expect("generated policy loads");
    let p = set.policies.into_iter().next().expect("one object");
    (PolicyKey::of(&p.origin), p.rules)
}

fn generate_objects(
    namespaces: usize,
    policies: usize,
) -> (Topology, Vec<(PolicyKey, Vec<PolicyRule>)>) {
    let mut yaml = String::new();
    for i in 0..policies {
        policy(i, namespaces, &mut yaml);
    }
    // `PORTCULLIS_BENCH_DUMP_DIR`: also write the policies there (to time
    // `portcullis policy check` on the same set).
    if let Ok(dir) = std::env::var("PORTCULLIS_BENCH_DUMP_DIR") {
        let path = std::path::Path::new(&dir).join(format!("policies-{policies}.yaml"));
        std::fs::write(&path, &yaml).expect("the dump directory is writable");
    }
    let set = match policy_model::load::load_str(&yaml, "generated.yaml") {
        Ok(set) => set,
        Err(errors) => {
            let mut msg = String::new();
            for e in errors.iter().take(5) {
                let _ = writeln!(msg, "{e}");
            }
            panic!("the generated policies do not load:\n{msg}");
        }
    };
    assert!(
        set.warnings.is_empty(),
        "the generated policies load with warnings: {:?}",
        set.warnings
            .iter()
            .take(5)
            .map(|w| &w.message)
            .collect::<Vec<_>>()
    );
    (
        topology(namespaces),
        set.policies
            .into_iter()
            .map(|p| (PolicyKey::of(&p.origin), p.rules))
            .collect(),
    )
}

fn bench_scale(c: &mut Criterion, group: &str, namespaces: usize, policies: usize) {
    if !wanted(group) {
        return;
    }
    let (topo, rules) = generate(namespaces, policies);
    let fqdn = FqdnCache::default();
    let cluster = Cluster::new(topo.clone(), rules.clone(), &fqdn);
    let resolved = cluster.all_policies();
    eprintln!(
        "{group}: {policies} policies -> {} rules; {} pods, {} identities, {} ipcache entries; \
         {} map entries over all endpoints",
        rules.len(),
        cluster.endpoints().len(),
        cluster.identities().len(),
        cluster.ipcache().len(),
        resolved.iter().map(|p| p.map.entries.len()).sum::<usize>(),
    );
    drop(resolved);

    let mut g = c.benchmark_group(group);
    // One iteration takes from milliseconds to seconds: flat sampling with
    // criterion's minimum of 10 samples keeps the run short.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("cluster_new", |b| {
        b.iter_batched(
            || (topo.clone(), rules.clone()),
            |(t, r)| Cluster::new(t, r, &fqdn),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("all_policies", |b| {
        b.iter(|| black_box(&cluster).all_policies())
    });
    g.finish();
}

/// One change case: `next(i)` is the i-th change to time, `undo(i)` (not
/// timed) what puts the engine back.
struct Case<'a> {
    name: &'a str,
    next: &'a dyn Fn(usize) -> Change,
    undo: &'a dyn Fn(usize) -> Option<Change>,
}

fn run_case(engine: &mut IncrementalCluster, case: &Case, i: usize) -> Duration {
    let change = (case.next)(i);
    let start = Instant::now();
    let delta = engine.apply(change);
    let took = start.elapsed();
    black_box(delta);
    if let Some(u) = (case.undo)(i) {
        engine.apply(u);
    }
    took
}

fn bench_incremental(c: &mut Criterion, group: &str, namespaces: usize, policies: usize) {
    if !wanted(group) {
        return;
    }
    let (topo, objects) = generate_placed(namespaces, policies);
    let fqdn = FqdnCache::default();
    let start = Instant::now();
    let mut engine = IncrementalCluster::new(topo.clone(), objects.clone(), fqdn.clone(), NODE);
    eprintln!(
        "{group}: engine built in {:?}: {} local endpoints, {} identities, {} ipcache entries",
        start.elapsed(),
        engine.endpoints().count(),
        engine.state().identities.len(),
        engine.state().ipcache.len(),
    );
    // A policy edit: policy `k` (one that selects a local endpoint)
    // replaced by the text of policy `k + 10` moved to its name, and back.
    // The first CiliumNetworkPolicy (with fromEndpoints) whose edit
    // changes some local endpoint's map.
    let edited = (0..policies)
        .filter(|i| i % 10 == 4 || i % 10 == 5)
        .find(|i| {
            let (key, rules) = policy_object(*i, namespaces);
            let (_, other) = policy_object(i + 10, namespaces);
            let mut probe = engine.clone();
            let d = probe.apply(Change::PolicyUpsert {
                key,
                rules: other
                    .into_iter()
                    .map(|mut r| {
                        r.origin = rules[0].origin.clone();
                        r.subject = rules[0].subject.clone();
                        r
                    })
                    .collect(),
            });
            !d.policy.is_empty()
        })
        .expect("some policy selects a local endpoint");
    let (key, original) = policy_object(edited, namespaces);
    let (_, other) = policy_object(edited + 10, namespaces);
    let replaced: Vec<PolicyRule> = other
        .into_iter()
        .map(|mut r| {
            r.origin = original[0].origin.clone();
            r.subject = original[0].subject.clone();
            r
        })
        .collect();
    let edit = |i: usize| Change::PolicyUpsert {
        key: key.clone(),
        rules: if i.is_multiple_of(2) {
            replaced.clone()
        } else {
            original.clone()
        },
    };
    let no_undo = |_: usize| None;
    let remote_ns = namespace_name(namespaces / 2);
    let remote_pod = |i: usize| {
        let mut p = PodSpec::clone(&topo.pods[PODS_PER_NAMESPACE * (namespaces / 2) + 1]);
        p.name = format!("bench-{i}");
        p.labels.insert("bench".into(), format!("b{i}"));
        let n = u32::try_from(i).expect("few iterations");
        p.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 250, (n >> 8) as u8, n as u8)));
        Arc::new(p)
    };
    let add_remote = |i: usize| Change::PodUpsert(remote_pod(i));
    let remove_remote = |i: usize| {
        Some(Change::PodDelete {
            namespace: remote_ns.clone(),
            name: format!("bench-{i}"),
        })
    };
    let local = topo.pods[0].clone();
    let relabel = |i: usize| {
        let mut p = PodSpec::clone(&local);
        if i.is_multiple_of(2) {
            p.labels.insert("canary".into(), "yes".into());
        }
        Change::PodUpsert(Arc::new(p))
    };
    // A DNS answer learned (the daemon hands the whole store over): the
    // CIDR and FQDN identities are recomputed.
    let learned = |i: usize| {
        let mut cache = FqdnCache::default();
        let n = u32::try_from(i).expect("few iterations");
        cache.learn(
            &format!("bench-{i}.example"),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, n as u8)),
        );
        Change::Names(cache)
    };
    let forget = |_: usize| Some(Change::Names(FqdnCache::default()));
    let cases = [
        Case {
            name: "learned_name",
            next: &learned,
            undo: &forget,
        },
        Case {
            name: "policy_edit",
            next: &edit,
            undo: &no_undo,
        },
        Case {
            name: "remote_pod_add_new_identity",
            next: &add_remote,
            undo: &remove_remote,
        },
        Case {
            name: "local_pod_relabel",
            next: &relabel,
            undo: &no_undo,
        },
    ];
    let first = engine.apply(edit(0));
    engine.apply(edit(1));
    eprintln!(
        "{group}: the policy edit ({key:?}) changes the maps of {} local endpoints",
        first.policy.len()
    );
    let mut counter = 0usize;
    for case in &cases {
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                counter += 1;
                run_case(&mut engine, case, counter)
            })
            .collect();
        times.sort();
        eprintln!(
            "{group}/{}: 200 changes one by one: p50 {:?}, p99 {:?}, max {:?}",
            case.name, times[100], times[197], times[199]
        );
    }

    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("engine_new", |b| {
        b.iter_batched(
            || (topo.clone(), objects.clone()),
            |(t, o)| IncrementalCluster::new(t, o, fqdn.clone(), NODE),
            BatchSize::LargeInput,
        )
    });
    for case in &cases {
        g.bench_function(case.name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    counter += 1;
                    total += run_case(&mut engine, case, counter);
                }
                total
            })
        });
    }
    g.finish();
}

/// Whether `group` is to run: `PORTCULLIS_BENCH_GROUPS` (comma-separated
/// group names) picks groups before their (slow) setup; unset runs all.
fn wanted(group: &str) -> bool {
    std::env::var("PORTCULLIS_BENCH_GROUPS")
        .map(|v| v.split(',').any(|g| g == group))
        .unwrap_or(true)
}

fn incremental_small(c: &mut Criterion) {
    bench_incremental(c, "incremental_1k_rules_500_pods", 10, 1_000);
}

fn incremental_large(c: &mut Criterion) {
    bench_incremental(c, "incremental_10k_rules_5k_pods", 100, 10_000);
}

/// `topo` as YAML, one flow mapping per namespace and per pod.
fn topology_yaml(topo: &Topology, relabel: Option<usize>) -> String {
    let map = |m: &BTreeMap<String, String>| {
        let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{{}}}", v.join(", "))
    };
    let mut s = String::from("namespaces:\n");
    for ns in &topo.namespaces {
        let _ = writeln!(s, "  - {{name: {}, labels: {}}}", ns.name, map(&ns.labels));
    }
    s.push_str("pods:\n");
    for (i, p) in topo.pods.iter().enumerate() {
        let mut labels = p.labels.clone();
        if relabel == Some(i) {
            labels.insert("app".into(), "relabelled".into());
        }
        let ip = p.ip.expect("generated pods have an address");
        let _ = writeln!(
            s,
            "  - {{namespace: {}, name: {}, ip: {ip}, labels: {}, ports: [{{name: http, containerPort: 8080}}, {{name: metrics, containerPort: 9090}}]}}",
            p.namespace,
            p.name,
            map(&labels)
        );
    }
    s.push_str("node: {ips: [192.168.255.1]}\n");
    s
}

fn topology_read(c: &mut Criterion) {
    let group = "topology_read_5k_pods";
    if !wanted(group) {
        return;
    }
    let topo = topology(100);
    let text = topology_yaml(&topo, None);
    let edited = topology_yaml(&topo, Some(2_500));
    println!("{group}: {} pods, {} bytes", topo.pods.len(), text.len());
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    g.bench_function("whole_parse", |b| {
        b.iter(|| black_box(Topology::from_yaml(&text, "t.yaml").expect("valid")))
    });
    g.bench_function("reader_first_read", |b| {
        b.iter(|| {
            let mut reader = TopologyReader::default();
            black_box(reader.parse(&text, "t.yaml").expect("valid"))
        })
    });
    // Alternating the two texts: every read finds one entry it has not
    // seen (the relabelled pod, or its old version back).
    let mut reader = TopologyReader::default();
    reader.parse(&text, "t.yaml").expect("valid");
    let mut flip = false;
    g.bench_function("reader_one_pod_relabelled", |b| {
        b.iter(|| {
            flip = !flip;
            let t = if flip { &edited } else { &text };
            let read = reader.parse(t, "t.yaml").expect("valid");
            assert_eq!(reader.entries_parsed(), Some(1));
            black_box(read)
        })
    });
    g.finish();
}

fn resolve_small(c: &mut Criterion) {
    bench_scale(c, "resolve_1k_rules_500_pods", 10, 1_000);
}

fn resolve_large(c: &mut Criterion) {
    bench_scale(c, "resolve_10k_rules_5k_pods", 100, 10_000);
}

criterion_group!(
    benches,
    resolve_small,
    resolve_large,
    incremental_small,
    incremental_large,
    topology_read
);
criterion_main!(benches);
