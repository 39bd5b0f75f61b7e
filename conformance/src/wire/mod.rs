//! `portcullis lab conformance`: every L3/L4 probe of the conformance cases,
//! run end to end in the lab — real TCP connects, UDP exchanges and pings
//! from inside pod (or world) namespaces through the attached programs —
//! next to the model's verdict for the same probe.
//!
//! Cases are grouped by topology: the lab is built once per topology and
//! each case's policy is written to the file the agent watches; the runner
//! waits until the agent reports that exact content applied.

pub mod demo;
pub mod kafka;
pub mod tls;

use crate::case::{Case, Expect, Probe};
use crate::model;
use anyhow::{Context, Result, bail};
use policy_model::{Protocol, Topology, Verdict};
use portcullis_lab::{self as lab, probe};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of the run.
#[derive(clap::Args, Debug, Clone)]
pub struct WireArgs {
    /// Conformance root (with `cases/` and `topologies/`).
    #[arg(long, default_value = env!("CARGO_MANIFEST_DIR"))]
    pub root: PathBuf,
    /// Only cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Print every probe, not only mismatches.
    #[arg(long)]
    pub verbose: bool,
    /// Timeout of one probe in milliseconds (a drop shows as a timeout).
    #[arg(long, default_value_t = 700)]
    pub timeout_ms: u64,
    /// Probes in flight at once.
    #[arg(long, default_value_t = 96)]
    pub parallel: usize,
    /// Leave the lab up afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// One probe as run on the wire.
struct WireProbe {
    describe: String,
    /// `v4`/`v6`, with `/h2` for HTTP/2 requests.
    family: &'static str,
    /// The HTTP request, for L7 probes (sent with curl).
    http: Option<HttpCall>,
    /// What the wire must show for the model's verdict.
    want: probe::Outcome,
    /// DNS query name (a `dns:` probe).
    dns: Option<String>,
    /// Resolve this name through this server first (a `to-fqdn` probe).
    resolve_first: Option<(String, IpAddr)>,
    src_ns: String,
    src_ip: Option<IpAddr>,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
    model: Verdict,
    expect: Expect,
    /// A TLS probe (HTTPS with curl), see `e2e_tls`.
    tls: Option<tls::TlsCall>,
    /// A Kafka request (kafka-python to tansu), see `e2e_kafka`.
    kafka: Option<kafka::KafkaCall>,
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP request of a probe.
#[derive(Clone)]
struct HttpCall {
    method: String,
    path: String,
    host: Option<String>,
    headers: Vec<String>,
    h2: bool,
}

/// Whether a probe can run in the lab (Kafka probes are skipped, counted,
/// when tansu or kafka-python is missing: see `run_case`).
fn runnable(p: &Probe) -> bool {
    p.e2e != Some(false)
}

/// The DNS port: served by knot (a real authoritative server) wherever a
/// probe goes to it; L4 probes to it send a DNS query.
const DNS_PORT: u16 = 53;

/// knot's root zone for a topology group: every name probes ask about,
/// with the address a `to-fqdn` probe expects it to resolve to (short TTL).
fn zone_for(cases: &[Case]) -> String {
    let mut records: BTreeSet<(String, IpAddr)> = BTreeSet::new();
    for c in cases {
        for p in &c.probes {
            if let (Some(name), Some(ip)) = (&p.to_fqdn, &p.to_ip)
                && let Ok(ip) = ip.parse::<IpAddr>()
            {
                records.insert((policy_model::l7::dns::normalize_name(name), ip));
            }
            if let Some(name) = &p.dns {
                records.insert((
                    policy_model::l7::dns::normalize_name(name),
                    IpAddr::from([10, 201, 0, 1]),
                ));
            }
        }
    }
    let mut z = String::from(
        "$TTL 30\n@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 30\n@ NS ns.lab.\nns.lab. A 10.201.0.1\n",
    );
    for (name, ip) in records {
        let rr = if ip.is_ipv4() { "A" } else { "AAAA" };
        z.push_str(&format!("{name} 30 {rr} {ip}\n"));
    }
    z
}

fn knot_config(dir: &Path, ns: &str) -> String {
    format!(
        "server:\n    rundir: \"{d}/knot-{ns}\"\n    listen: [ \"0.0.0.0@53\", \"::@53\" ]\ndatabase:\n    storage: \"{d}/knot-{ns}\"\nzone:\n  - domain: \".\"\n    file: \"{d}/root.zone\"\n",
        d = dir.display()
    )
}

/// Runs the suite; returns (passed, failed, skipped).
pub fn run(me: &Path, args: &WireArgs) -> Result<(usize, usize, usize)> {
    let cases = crate::load_cases(&args.root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut by_topology: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for c in cases {
        if args
            .filter
            .as_ref()
            .is_some_and(|f| !c.name.contains(f.as_str()))
        {
            continue;
        }
        if !c.probes.iter().any(runnable) {
            continue;
        }
        let key = serde_json::to_string(&c.topology).unwrap_or_default();
        by_topology.entry(key).or_default().push(c);
    }
    let dir = Path::new(lab::STATE_DIR).join("conformance");
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut families = [0usize; 2];
    println!(
        "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}   (allowed/denied; --verbose: every probe)",
        "case", "probes", "model", "wire", "failed", "skipped"
    );
    for cases in by_topology.values() {
        let topo = cases[0].topology.clone();
        std::fs::create_dir_all(&dir)?;
        let topo_path = dir.join("topology.yaml");
        let pol_path = dir.join("policy.yaml");
        std::fs::write(&topo_path, serde_yaml_ng::to_string(&topo)?)?;
        // Start from an empty policy: everything allowed.
        write_atomic(&pol_path, "")?;
        let state = lab::up(&topo_path, std::slice::from_ref(&pol_path), me, false, &[])?;
        let servers = start_servers(me, &state, &topo, cases)?;
        std::thread::sleep(Duration::from_millis(400));
        let mut learned = false;
        for case in cases {
            // Names learned for an earlier case must not leak into this one:
            // restart the agent without its learned-name store.
            if learned {
                lab::stop_agent();
                let _ = std::fs::remove_file(Path::new(lab::STATE_DIR).join("fqdn.json"));
                lab::start_agent(&state, me)?;
            }
            learned = case
                .probes
                .iter()
                .any(|p| p.dns.is_some() || p.to_fqdn.is_some());
            let (p, f, s, fam) = run_case(&state, &topo, &pol_path, case, args)?;
            families[0] += fam[0];
            families[1] += fam[1];
            pass += p;
            fail += f;
            skip += s;
        }
        drop(servers);
        if !args.keep {
            lab::down()?;
        }
    }
    println!(
        "probes by family: IPv4 {}, IPv6 {}",
        families[0], families[1]
    );
    println!("{pass} passed, {fail} failed, {skip} skipped");
    Ok((pass, fail, skip))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes a policy and waits until the agent reports it in force.
pub fn apply_policy(pol_path: &Path, text: &str) -> Result<Duration> {
    write_atomic(pol_path, text)?;
    let want = format!(
        "{:016x}",
        policy_model::load::content_hash(&[pol_path.to_path_buf()])
    );
    let start = Instant::now();
    let applied = Path::new(lab::STATE_DIR).join("applied.hash");
    loop {
        if std::fs::read_to_string(&applied).is_ok_and(|s| s.trim() == want) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "the agent did not apply the policy within 10 s (see {}/agent.log)",
                lab::STATE_DIR
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// haproxy as the pods' HTTP server: 200 `ok` for any request.
fn haproxy_config(ports: &BTreeSet<u16>) -> String {
    let mut c = String::from(
        "global\n  maxconn 2048\ndefaults\n  mode http\n  timeout client 10s\n  timeout server 10s\n  timeout connect 2s\nfrontend pod\n",
    );
    for p in ports {
        c.push_str(&format!("  bind :::{p} v4v6\n"));
    }
    c.push_str("  http-request return status 200 content-type text/plain string \"ok\"\n");
    c
}

fn start_servers(
    me: &Path,
    state: &lab::LabState,
    topo: &Topology,
    cases: &[Case],
) -> Result<Servers> {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for c in cases {
        for p in c.probes.iter().filter(|p| runnable(p)) {
            match p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_uppercase()
                .as_str()
            {
                "TCP" => {
                    tcp.insert(p.port);
                }
                "UDP" => {
                    udp.insert(p.port);
                }
                _ => {}
            }
        }
    }
    tcp.remove(&DNS_PORT);
    udp.remove(&DNS_PORT);
    let list = |s: &BTreeSet<u16>| {
        s.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut namespaces: Vec<(String, Vec<IpAddr>)> = state
        .pods
        .iter()
        .map(|(_, ns)| (ns.clone(), vec![]))
        .collect();
    let mut world: Vec<IpAddr> = vec![
        IpAddr::from([10, 201, 0, 1]),
        "fd00:201::1".parse().expect("literal"),
    ];
    world.extend(topo.world.iter().flat_map(|w| w.ips.iter().copied()));
    namespaces.push((lab::WORLD_NS.to_string(), world));
    let node: Vec<IpAddr> = topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter().copied())
        .collect();
    if !node.is_empty() {
        namespaces.push((lab::NODE_NS.to_string(), node));
    }
    let mut servers = Servers(Vec::new());
    // TLS-probed ports are served by nginx (HTTPS), not haproxy.
    let tls_ports = tls::ports(cases);
    tcp.retain(|p| !tls_ports.contains(p));
    // Kafka-probed ports are served by tansu.
    let kafka_ports = kafka::ports(cases);
    tcp.retain(|p| !kafka_ports.contains(p));
    servers.0.extend(kafka::start_servers(state, topo, cases)?);
    let ns_names: Vec<String> = namespaces.iter().map(|(n, _)| n.clone()).collect();
    servers.0.extend(tls::start_servers(cases, &ns_names)?);
    let cfg_dir = Path::new(lab::STATE_DIR).join("conformance");
    // knot where DNS probes (or probes to port 53) go.
    let mut dns_ns: BTreeSet<String> = BTreeSet::new();
    for c in cases {
        for p in c.probes.iter().filter(|p| runnable(p)) {
            if p.port != DNS_PORT && p.dns.is_none() && p.to_fqdn.is_none() {
                continue;
            }
            let dst = match (&p.to, p.to_fqdn.is_some()) {
                (Some(pod), false) => state.namespace_of(pod).ok(),
                (None, false) => Some(lab::WORLD_NS.to_string()),
                (_, true) => dns_server(topo)
                    .and_then(|(pod, _)| pod.and_then(|p| state.namespace_of(&p).ok()))
                    .or(Some(lab::WORLD_NS.to_string())),
            };
            dns_ns.extend(dst);
        }
    }
    if !dns_ns.is_empty() {
        std::fs::write(cfg_dir.join("root.zone"), zone_for(cases))?;
    }
    for ns in &dns_ns {
        std::fs::create_dir_all(cfg_dir.join(format!("knot-{ns}")))?;
        let cfg = cfg_dir.join(format!("knot-{ns}.conf"));
        std::fs::write(&cfg, knot_config(&cfg_dir, ns))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "knotd", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting knotd (apt-get install knot)")?;
        servers.0.push(child);
    }
    for (ns, bind) in namespaces {
        // TCP: a real HTTP server (haproxy answers HTTP/1.1 and HTTP/2
        // prior knowledge on one port) for every probed port.
        if !tcp.is_empty() {
            let cfg = cfg_dir.join(format!("haproxy-{ns}.cfg"));
            std::fs::write(&cfg, haproxy_config(&tcp))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, "haproxy", "-db", "-f"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .context("starting haproxy (apt-get install haproxy)")?;
            servers.0.push(child);
        }
        if udp.is_empty() {
            continue;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(me)
            .args(["lab", "serve"]);
        if !udp.is_empty() {
            cmd.args(["--udp", &list(&udp)]);
            if !bind.is_empty() {
                let b: Vec<String> = bind.iter().map(|a| a.to_string()).collect();
                cmd.args(["--udp-bind", &b.join(",")]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting responders")?;
        servers.0.push(child);
    }
    Ok(servers)
}

/// The address of a probe side for one family, and the namespace to send
/// from (for a source).
fn locate(
    state: &lab::LabState,
    topo: &Topology,
    pod: &Option<String>,
    ip: &Option<String>,
    v6: bool,
) -> Option<(String, IpAddr)> {
    if let Some(pod) = pod {
        let addr = topo
            .pod(pod)?
            .addresses()
            .into_iter()
            .find(|a| a.is_ipv6() == v6)?;
        return Some((state.namespace_of(pod).ok()?, addr));
    }
    let addr: IpAddr = ip.as_ref()?.parse().ok()?;
    if addr.is_ipv6() != v6 {
        return None;
    }
    if let Some(p) = topo.pods.iter().find(|p| p.addresses().contains(&addr)) {
        return Some((state.namespace_of(&p.full_name()).ok()?, addr));
    }
    if topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter())
        .any(|a| *a == addr)
    {
        return Some((lab::NODE_NS.to_string(), addr));
    }
    let world4: ipnet::IpNet = "10.201.0.0/16".parse().expect("literal");
    let world6: ipnet::IpNet = "fd00:201::/64".parse().expect("literal");
    let in_world_ns = [
        IpAddr::from([10, 201, 0, 1]),
        "fd00:201::1".parse().expect("literal"),
    ]
    .contains(&addr)
        || topo
            .world
            .iter()
            .flat_map(|w| w.ips.iter())
            .any(|a| *a == addr);
    if (world4.contains(&addr) || world6.contains(&addr)) && in_world_ns {
        return Some((lab::WORLD_NS.to_string(), addr));
    }
    None
}

fn run_case(
    state: &lab::LabState,
    topo: &Topology,
    pol_path: &Path,
    case: &Case,
    args: &WireArgs,
) -> Result<(usize, usize, usize, [usize; 2])> {
    let set = model::case_policies(case).map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
    let mut clusters = BTreeMap::new();
    let mut wire = Vec::new();
    let mut skipped = 0;
    let kafka_ok = case.probes.iter().any(|p| p.kafka.is_some()) && kafka::available();
    for p in case.probes.iter().filter(|p| runnable(p)) {
        let kafka = kafka::call(p);
        if p.kafka.is_some() && (kafka.is_none() || !kafka_ok) {
            skipped += 1;
            continue;
        }
        let proto = match model::probe_protocol(p) {
            Ok(pr) => pr,
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        let icmp_ok = match proto {
            Protocol::Icmp => p.port == 8,
            Protocol::Icmpv6 => p.port == 128,
            Protocol::Sctp => false,
            _ => true,
        };
        if !icmp_ok {
            skipped += 1;
            continue;
        }
        let explained = match model::explain_probe(case, &set, &mut clusters, p) {
            Ok(e) => e,
            Err(e) => bail!("{}: {}: {e}", case.name, p.describe()),
        };
        let verdict = explained.verdict;
        // HTTP probes are sent as HTTP/1.1 and as HTTP/2 (prior knowledge).
        let tls_calls = tls::calls(p);
        // A TLS probe whose handshake the model denies is closed on the wire.
        let handshake_ok = p.tls.is_none() || {
            let mut hello = p.clone();
            hello.http = None;
            model::explain_probe(case, &set, &mut clusters, &hello)
                .is_ok_and(|e| e.verdict == Verdict::Allowed)
        };
        let calls: Vec<Option<HttpCall>> = match &p.http {
            _ if p.tls.is_some() => vec![],
            None => vec![None],
            Some(h) => [false, true]
                .into_iter()
                .map(|h2| {
                    Some(HttpCall {
                        method: h.method.clone().unwrap_or_else(|| "GET".into()),
                        path: h.path.clone().unwrap_or_else(|| "/".into()),
                        host: h.host.clone(),
                        headers: h.headers.clone(),
                        h2,
                    })
                })
                .collect(),
        };
        let want = match (&p.http, &p.dns, verdict, explained.layer) {
            (Some(_), _, Verdict::Allowed, _) => probe::Outcome::Http(200),
            (Some(_), _, Verdict::Denied, policy_model::Layer::L7) => probe::Outcome::Http(403),
            (None, Some(_), Verdict::Allowed, _) => probe::Outcome::Dns(probe::DNS_ANSWERED),
            (None, Some(_), Verdict::Denied, policy_model::Layer::L7) => {
                probe::Outcome::Dns(probe::DNS_REFUSED)
            }
            (_, _, Verdict::Allowed, _) => probe::Outcome::Connected,
            (_, _, Verdict::Denied, _) => probe::Outcome::Blocked,
        };
        let want = kafka
            .as_ref()
            .map_or(want, |k| kafka::want(k, verdict, explained.layer));
        // A `to-fqdn` probe first resolves the name through the DNS proxy
        // (so the agent learns it), then connects.
        let resolve_first = match (&p.to_fqdn, dns_server(topo)) {
            (Some(name), Some((_, server))) => Some((name.clone(), server)),
            (Some(_), None) => {
                skipped += 1;
                continue;
            }
            _ => None,
        };
        let mut any = false;
        for v6 in [false, true] {
            match proto {
                Protocol::Icmp if v6 => continue,
                Protocol::Icmpv6 if !v6 => continue,
                _ => {}
            }
            let (Some((src_ns, src_ip)), Some((_, dst))) = (
                locate(state, topo, &p.from, &p.from_ip, v6),
                locate(state, topo, &p.to, &p.to_ip, v6),
            ) else {
                continue;
            };
            any = true;
            for call in &calls {
                let family = match (v6, call.as_ref().is_some_and(|c| c.h2)) {
                    (false, false) => "v4",
                    (true, false) => "v6",
                    (false, true) => "v4/h2",
                    (true, true) => "v6/h2",
                };
                wire.push(WireProbe {
                    describe: p.describe(),
                    family,
                    http: call.clone(),
                    want,
                    dns: p.dns.clone(),
                    resolve_first: resolve_first.clone(),
                    src_ip: if src_ns == lab::WORLD_NS || src_ns == lab::NODE_NS {
                        Some(src_ip)
                    } else {
                        None
                    },
                    src_ns: src_ns.clone(),
                    dst,
                    protocol: proto,
                    port: p.port,
                    model: verdict,
                    expect: p.expect,
                    tls: None,
                    kafka: kafka.clone(),
                });
            }
            for call in &tls_calls {
                wire.push(WireProbe {
                    describe: p.describe(),
                    family: match (v6, call.h2) {
                        (false, false) => "v4/tls",
                        (true, false) => "v6/tls",
                        (false, true) => "v4/h2s",
                        (true, true) => "v6/h2s",
                    },
                    http: None,
                    want: tls::want(call, verdict == Verdict::Allowed, handshake_ok),
                    dns: None,
                    resolve_first: resolve_first.clone(),
                    src_ip: if src_ns == lab::WORLD_NS || src_ns == lab::NODE_NS {
                        Some(src_ip)
                    } else {
                        None
                    },
                    src_ns: src_ns.clone(),
                    dst,
                    protocol: proto,
                    port: p.port,
                    model: verdict,
                    expect: p.expect,
                    tls: Some(call.clone()),
                    kafka: None,
                });
            }
        }
        if !any {
            skipped += 1;
        }
    }
    if wire.is_empty() {
        println!(
            "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}",
            case.name, 0, "-", "-", 0, skipped
        );
        return Ok((0, 0, skipped, [0, 0]));
    }
    apply_policy(pol_path, &case.policies)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut results = run_probes(&wire, timeout, args.parallel)?;
    // Mismatches are re-probed once, slowly, to rule out a lost packet.
    let retry: Vec<usize> = (0..wire.len())
        .filter(|i| results[*i] != wire[*i].want)
        .collect();
    let again: Vec<&WireProbe> = retry.iter().map(|i| &wire[*i]).collect();
    let second = run_probes_ref(&again, Duration::from_millis(2000), args.parallel)?;
    for (i, r) in retry.into_iter().zip(second) {
        results[i] = r;
    }
    let mut failed = 0;
    let model_allowed = wire.iter().filter(|w| w.model == Verdict::Allowed).count();
    let wire_allowed = results.iter().filter(|r| r.allowed()).count();
    for (w, got) in wire.iter().zip(&results) {
        let expect_v = match w.expect {
            Expect::Allowed => Verdict::Allowed,
            Expect::Denied => Verdict::Denied,
        };
        let pass = *got == w.want && w.model == expect_v;
        if !pass {
            failed += 1;
        }
        if !pass || args.verbose {
            println!(
                "    {} {:<58} {:<5} model {:<7} | wire {:<9} (want {}, expected {:?})",
                if pass { "ok  " } else { "FAIL" },
                w.describe,
                w.family,
                w.model.to_string(),
                got.to_string(),
                w.want,
                w.expect
            );
        }
    }
    let v6 = wire.iter().filter(|w| w.family.starts_with("v6")).count();
    println!(
        "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}",
        case.name,
        wire.len(),
        format!("{model_allowed}/{}", wire.len() - model_allowed),
        format!("{wire_allowed}/{}", wire.len() - wire_allowed),
        failed,
        skipped
    );
    Ok((wire.len() - failed, failed, skipped, [wire.len() - v6, v6]))
}

/// The cluster's DNS server: a pod labelled `k8s-app: kube-dns`, else the
/// world namespace's 10.201.0.1.
fn dns_server(topo: &Topology) -> Option<(Option<String>, IpAddr)> {
    if let Some(p) = topo
        .pods
        .iter()
        .find(|p| p.labels.get("k8s-app").is_some_and(|v| v == "kube-dns"))
    {
        let ip = p.addresses().into_iter().find(|a| a.is_ipv4())?;
        return Some((Some(p.full_name()), ip));
    }
    Some((None, IpAddr::from([10, 201, 0, 1])))
}

fn probe_one(w: &WireProbe, timeout: Duration) -> Result<probe::Outcome> {
    if let Some((name, server)) = &w.resolve_first {
        let _ = probe::dns(&w.src_ns, None, *server, DNS_PORT, name, false, timeout)?;
    }
    if let Some(k) = &w.kafka {
        return kafka::probe(&w.src_ns, w.src_ip, w.dst, w.port, k, timeout);
    }
    if let Some(t) = &w.tls {
        let t_out = timeout.max(Duration::from_millis(1500));
        return tls::probe(&w.src_ns, w.src_ip, w.dst, w.port, t, t_out);
    }
    let tcp_dns = w.protocol == Protocol::Tcp;
    if let Some(name) = &w.dns {
        return probe::dns(&w.src_ns, w.src_ip, w.dst, w.port, name, tcp_dns, timeout);
    }
    if w.port == DNS_PORT && matches!(w.protocol, Protocol::Tcp | Protocol::Udp) {
        // L4 probe of the DNS port: any DNS answer means connected.
        let r = probe::dns(
            &w.src_ns,
            w.src_ip,
            w.dst,
            w.port,
            "probe.lab.",
            tcp_dns,
            timeout,
        )?;
        return Ok(match r {
            probe::Outcome::Dns(_) => probe::Outcome::Connected,
            other => other,
        });
    }

    if let Some(h) = &w.http {
        return probe::http(
            &w.src_ns,
            w.src_ip,
            w.dst,
            w.port,
            &probe::HttpProbe {
                method: &h.method,
                path: &h.path,
                host: h.host.as_deref(),
                headers: &h.headers,
                h2: h.h2,
            },
            timeout.max(Duration::from_millis(1500)),
        );
    }
    let r = match w.protocol {
        Protocol::Udp => probe::udp_from(&w.src_ns, w.src_ip, w.dst, w.port, timeout)?,
        Protocol::Icmp | Protocol::Icmpv6 => probe::ping(&w.src_ns, w.src_ip, w.dst, timeout)?,
        _ => probe::tcp_from(&w.src_ns, w.src_ip, w.dst, w.port, timeout)?,
    };
    Ok(match r {
        probe::Observed::Connected => probe::Outcome::Connected,
        probe::Observed::Blocked => probe::Outcome::Blocked,
    })
}

fn run_probes(
    wire: &[WireProbe],
    timeout: Duration,
    parallel: usize,
) -> Result<Vec<probe::Outcome>> {
    let refs: Vec<&WireProbe> = wire.iter().collect();
    run_probes_ref(&refs, timeout, parallel)
}

fn run_probes_ref(
    wire: &[&WireProbe],
    timeout: Duration,
    parallel: usize,
) -> Result<Vec<probe::Outcome>> {
    let mut out = Vec::with_capacity(wire.len());
    for chunk in wire.chunks(parallel.max(1)) {
        let results: Vec<Result<probe::Outcome>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|w| s.spawn(move || probe_one(w, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("probe panicked")))
                })
                .collect()
        });
        for r in results {
            out.push(r?);
        }
    }
    Ok(out)
}
