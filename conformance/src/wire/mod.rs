//! `portcullis lab conformance`: every probe of the conformance cases, run
//! end to end in the lab — real TCP connects, UDP exchanges, pings, HTTP,
//! DNS, TLS and Kafka requests from inside pod, node or world namespaces
//! through the attached programs and the proxies — next to the model's
//! verdict for the same probe.
//!
//! Cases are grouped by topology: the lab is built once per topology and
//! each case's policy is written to the file the agents watch; the runner
//! waits until every agent reports that exact content applied. A topology
//! with two nodes or more makes a cluster lab. Besides, the `k8s-e2e`
//! cases run again on two-node clusters: their pods are placed over the
//! nodes in several ways (every two pods apart in at least one, see
//! [`cluster::placements`]) and the cases dealt over the placements
//! ([`cluster::assign`]); the run checks that every pair of pods it probed crossed
//! nodes at least once. The model judges each probe on the topology the
//! cluster was built from.
//!
//! - [`plan`]: a case's probes as wire probes with the outcome the model
//!   wants (pure);
//! - [`cluster`]: the placements and the per-node-pair tallies (pure);
//! - [`servers`]: the peers a topology group needs, in the lab;
//! - [`send`]: sending wire probes, in parallel;
//! - [`tls`], [`kafka`]: the TLS and Kafka probes' own parts;
//! - [`demo`]: `portcullis lab demo`.

pub mod cluster;
pub mod demo;
pub mod kafka;
pub mod plan;
pub mod send;
pub mod servers;
pub mod tls;

use crate::case::{Case, Expect};
use anyhow::{Result, bail};
use cluster::{Column, Count, NodeTally};
use plan::{WireProbe, runnable};
use policy_model::{Topology, Verdict};
use portcullis_lab::{self as lab, Inputs, LabState, UpOptions, paths};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The case group run again on two-node clusters (`cases/<group>/`).
pub const PLACED_GROUP: &str = "k8s-e2e";

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
    /// Leave the (last) lab up afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Only the cluster runs: the cases of cluster topologies and the
    /// k8s-e2e cases on two-node clusters.
    #[arg(long, conflicts_with = "no_cluster")]
    pub cluster_only: bool,
    /// No cluster runs: one-node labs only.
    #[arg(long)]
    pub no_cluster: bool,
}

/// A lab to build and the cases to run in it.
struct Group {
    topology: Topology,
    cases: Vec<Case>,
    /// What the lab is, for the heading of a cluster run's rows.
    title: String,
    /// The runner placed the pods (its pod pairs count for the coverage).
    placed: bool,
}

impl Group {
    fn cluster(&self) -> bool {
        lab::cluster::is_cluster(&self.topology)
    }
}

/// The whole run's counts.
#[derive(Default)]
struct Totals {
    passed: usize,
    failed: usize,
    skipped: usize,
    /// [IPv4, IPv6] probes.
    families: [usize; 2],
    /// The cluster runs, by node pair.
    clusters: NodeTally,
    /// The placed runs (their pod pairs).
    placed: NodeTally,
    placements: usize,
}

/// The labs of the run and their cases: one per topology (a cluster for a
/// topology with two nodes or more), then the [`PLACED_GROUP`] cases again
/// on two-node clusters, one per placement of their topology's pods.
fn groups(cases: Vec<Case>, args: &WireArgs) -> Vec<Group> {
    let placed_dir = args.root.join("cases").join(PLACED_GROUP);
    let mut by_topology: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut to_place: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for c in cases {
        let key = serde_json::to_string(&c.topology).unwrap_or_default();
        if c.file.starts_with(&placed_dir) && !lab::cluster::is_cluster(&c.topology) {
            to_place.entry(key.clone()).or_default().push(c.clone());
        }
        by_topology.entry(key).or_default().push(c);
    }
    let mut out: Vec<Group> = by_topology
        .into_values()
        .map(|cases| {
            let mut case_groups: Vec<&str> = cases
                .iter()
                .map(|c| c.name.split('/').next().unwrap_or_default())
                .collect();
            case_groups.dedup();
            Group {
                topology: cases[0].topology.clone(),
                title: format!(
                    "{}-node lab for {}",
                    cases[0].topology.nodes.len().max(1),
                    case_groups.join(", ")
                ),
                cases,
                placed: false,
            }
        })
        .filter(|g| {
            if g.cluster() {
                !args.no_cluster
            } else {
                !args.cluster_only
            }
        })
        .collect();
    // One-node labs first.
    out.sort_by_key(Group::cluster);
    if args.no_cluster {
        return out;
    }
    for cases in to_place.into_values() {
        let topology = cases[0].topology.clone();
        let placements = cluster::placements(topology.pods.len());
        let count = placements.len();
        for (i, (placement, cases)) in placements
            .iter()
            .zip(cluster::assign(cases, &topology, &placements))
            .enumerate()
        {
            if cases.is_empty() {
                continue;
            }
            let on_second: Vec<String> = topology
                .pods
                .iter()
                .zip(placement)
                .filter(|(_, n)| **n == 1)
                .map(|(p, _)| p.full_name())
                .collect();
            out.push(Group {
                topology: cluster::place(&topology, placement),
                cases,
                title: format!(
                    "two-node lab, placement {} of {count} ({} on {}, the others on {})",
                    i + 1,
                    on_second.join(" "),
                    cluster::NODES[1],
                    cluster::NODES[0]
                ),
                placed: true,
            });
        }
    }
    out
}

/// Runs the suite with the agent binary `me`; returns (passed, failed,
/// skipped). An error after the summary when a full run's placements left
/// a probed pair of pods that never crossed nodes.
pub fn run(me: &Path, args: &WireArgs) -> Result<(usize, usize, usize)> {
    let cases = crate::load_cases(&args.root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| {
            args.filter
                .as_ref()
                .is_none_or(|f| c.name.contains(f.as_str()))
        })
        .filter(|c| c.probes.iter().any(runnable))
        .collect();
    let dir = paths::work_dir("conformance");
    let mut totals = Totals::default();
    println!(
        "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}   (allowed/denied; --verbose: every probe)",
        "case", "probes", "model", "wire", "failed", "skipped"
    );
    for group in groups(cases, args) {
        run_group(me, args, &dir, &group, &mut totals)?;
    }
    let coverage_ok = print_cluster_summary(&totals, args);
    println!(
        "probes by family: IPv4 {}, IPv6 {}",
        totals.families[0], totals.families[1]
    );
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    if !coverage_ok {
        bail!("some pairs of pods never crossed nodes in the cluster runs (see the coverage line)");
    }
    Ok((totals.passed, totals.failed, totals.skipped))
}

/// The cluster runs' columns, cross-node and same-node totals, and the
/// coverage; whether the coverage is complete (or not required: a
/// filtered run).
fn print_cluster_summary(totals: &Totals, args: &WireArgs) -> bool {
    let t = &totals.clusters;
    if t.columns.is_empty() {
        return true;
    }
    let nodes = t
        .columns
        .keys()
        .filter_map(|c| match c {
            Column::Nodes(a, b) => Some(*a.max(b)),
            Column::World => None,
        })
        .max()
        .unwrap_or(1);
    let columns: Vec<String> = Column::all(nodes)
        .into_iter()
        .map(|c| format!("{c} {}", t.count(c)))
        .collect();
    println!(
        "cluster runs by node pair (probes/failed; nodes by position, 1 = {}): {}",
        cluster::NODES[0],
        columns.join(", ")
    );
    let cross = t.sum(Column::crosses);
    let same = t.sum(|c| matches!(c, Column::Nodes(a, b) if a == b));
    println!(
        "cross-node probes: {} ({} failed); same-node probes: {} ({} failed)",
        cross.probes, cross.failed, same.probes, same.failed
    );
    if totals.placements == 0 {
        return true;
    }
    let p = &totals.placed;
    let uncrossed = p.uncrossed();
    println!(
        "cross-node coverage: {} of {} probed pod pairs crossed nodes ({} placed runs)",
        p.crossed.len(),
        p.probed.len(),
        totals.placements
    );
    if uncrossed.is_empty() {
        return true;
    }
    println!(
        "    never across nodes: {}",
        uncrossed
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.filter.is_some() {
        println!("    (not required: --filter runs only some cases)");
        return true;
    }
    false
}

/// Builds the group's lab, starts its peers and runs its cases.
fn run_group(
    me: &Path,
    args: &WireArgs,
    dir: &Path,
    group: &Group,
    totals: &mut Totals,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let topo_path = dir.join("topology.yaml");
    let pol_path = dir.join("policy.yaml");
    std::fs::write(&topo_path, serde_yaml_ng::to_string(&group.topology)?)?;
    // Start from an empty policy: everything allowed.
    write_atomic(&pol_path, "")?;
    let policies = std::slice::from_ref(&pol_path);
    let mut state = if group.cluster() {
        // The cluster lab's default: every agent list+watches the lab's
        // API server, which takes the policy file in (`wait_applied`).
        let options = UpOptions {
            inputs: Inputs::Kubernetes,
            ..UpOptions::default()
        };
        lab::up_with(&topo_path, policies, me, &options)?
    } else {
        lab::up(&topo_path, policies, me, false, &[])?
    };
    // A cluster's model is the topology as built: every pod placed and
    // addressed, every node with its underlay addresses.
    let topo = if state.cluster {
        Topology::from_file(&paths::built_topology()).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        group.topology.clone()
    };
    let cases: Vec<Case> = group
        .cases
        .iter()
        .map(|c| Case {
            topology: topo.clone(),
            ..c.clone()
        })
        .collect();
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    if state.cluster {
        println!("-- {}: {}", group.title, nodes.join(", "));
        let mut header = format!(
            "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6} ",
            "case", "probes", "model", "wire", "failed", "skipped"
        );
        for c in Column::all(nodes.len()) {
            header.push_str(&format!(" {:>9}", c.to_string()));
        }
        println!("{header}   (per node pair: probes/failed)");
    }
    let servers = servers::start(me, &state, &topo, &cases)?;
    std::thread::sleep(Duration::from_millis(400));
    let mut learned = false;
    let mut tally = NodeTally::default();
    for case in &cases {
        // Names learned for an earlier case must not leak into this one:
        // restart the agents without their learned-name stores.
        if learned {
            restart_without_learned_names(&mut state, me)?;
        }
        learned = case
            .probes
            .iter()
            .any(|p| p.dns.is_some() || p.to_fqdn.is_some());
        let kafka_ok = case.probes.iter().any(|p| p.kafka.is_some()) && kafka::available();
        let planned = plan::plan_case(case, &topo, &state, kafka_ok)?;
        let row = run_case(&state, &pol_path, case, &planned, args)?;
        totals.families[0] += row.families[0];
        totals.families[1] += row.families[1];
        totals.passed += row.passed;
        totals.failed += row.failed;
        totals.skipped += planned.skipped;
        tally.merge(&row.tally);
    }
    drop(servers);
    if state.cluster {
        totals.clusters.merge(&tally);
    }
    if group.placed {
        totals.placed.merge(&tally);
        totals.placements += 1;
    }
    if !args.keep {
        lab::down()?;
    }
    Ok(())
}

/// Restarts every agent of the lab without its learned-name store.
fn restart_without_learned_names(state: &mut LabState, me: &Path) -> Result<()> {
    let store = paths::learned_names();
    let name = store.file_name().unwrap_or_default();
    lab::stop_agents(state);
    for node in &state.nodes {
        let _ = std::fs::remove_file(node.state_dir.join(name));
    }
    lab::start_agents(state, me)?;
    state.write()
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes a policy and waits until every agent of the lab reports it in
/// force.
pub fn apply_policy(state: &LabState, pol_path: &Path, text: &str) -> Result<Duration> {
    write_atomic(pol_path, text)?;
    let want = format!(
        "{:016x}",
        policy_model::load::content_hash(&[pol_path.to_path_buf()])
    );
    wait_applied(state, &want)
}

/// Waits until every node's agent has applied the policy files whose
/// content hash is `want` (the lab's policy files as they are now): in
/// file mode each agent's `applied.hash`; in Kubernetes mode the lab's API
/// server takes the files in first, then each agent records the digest of
/// the policies it stored ([`LabState::wait_applied`]).
pub fn wait_applied(state: &LabState, want: &str) -> Result<Duration> {
    let now = format!("{:016x}", policy_model::load::content_hash(&state.policies));
    if now != want {
        bail!("the policy files changed again while waiting for {want} (now {now})");
    }
    state.wait_applied(Duration::from_secs(10))
}

/// What one case's row counted.
struct CaseRow {
    passed: usize,
    failed: usize,
    /// [IPv4, IPv6] probes.
    families: [usize; 2],
    tally: NodeTally,
}

/// Applies the case's policy, sends its planned probes (mismatches once
/// more, slowly, to rule out a lost packet) and prints its row, with
/// columns per node pair in a cluster lab.
fn run_case(
    state: &LabState,
    pol_path: &Path,
    case: &Case,
    planned: &plan::CasePlan,
    args: &WireArgs,
) -> Result<CaseRow> {
    let (wire, skipped) = (&planned.probes, planned.skipped);
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    let mut tally = NodeTally::default();
    if wire.is_empty() {
        println!(
            "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}",
            case.name, 0, "-", "-", 0, skipped
        );
        return Ok(CaseRow {
            passed: 0,
            failed: 0,
            families: [0, 0],
            tally,
        });
    }
    apply_policy(state, pol_path, &case.policies)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let all: Vec<&WireProbe> = wire.iter().collect();
    let mut results = send::send_all(&all, timeout, args.parallel)?;
    let retry: Vec<usize> = (0..wire.len())
        .filter(|i| results[*i] != wire[*i].want)
        .collect();
    let again: Vec<&WireProbe> = retry.iter().map(|i| &wire[*i]).collect();
    let second = send::send_all(&again, Duration::from_millis(2000), args.parallel)?;
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
        tally.add(w, &nodes, !pass);
        if !pass || args.verbose {
            let column = if state.cluster {
                format!(" [{}]", Column::of(w, &nodes))
            } else {
                String::new()
            };
            println!(
                "    {} {:<58} {:<5} model {:<7} | wire {:<9} (want {}, expected {:?}){column}",
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
    let mut row = format!(
        "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}",
        case.name,
        wire.len(),
        format!("{model_allowed}/{}", wire.len() - model_allowed),
        format!("{wire_allowed}/{}", wire.len() - wire_allowed),
        failed,
        skipped
    );
    if state.cluster {
        row.push(' ');
        for c in Column::all(nodes.len()) {
            let count: Count = tally.count(c);
            row.push_str(&format!(" {:>9}", count.to_string()));
        }
    }
    println!("{row}");
    Ok(CaseRow {
        passed: wire.len() - failed,
        failed,
        families: [wire.len() - v6, v6],
        tally,
    })
}
