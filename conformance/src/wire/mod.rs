//! `portcullis lab conformance`: every probe of the conformance cases, run
//! end to end in the lab — real TCP connects, UDP exchanges, pings, HTTP,
//! DNS, TLS and Kafka requests from inside pod (or world) namespaces
//! through the attached programs and the proxies — next to the model's
//! verdict for the same probe.
//!
//! Cases are grouped by topology: the lab is built once per topology and
//! each case's policy is written to the file the agent watches; the runner
//! waits until the agent reports that exact content applied.
//!
//! - [`plan`]: a case's probes as wire probes with the outcome the model
//!   wants (pure);
//! - [`servers`]: the peers a topology group needs, in the lab;
//! - [`send`]: sending wire probes, in parallel;
//! - [`tls`], [`kafka`]: the TLS and Kafka probes' own parts;
//! - [`demo`]: `portcullis lab demo`.

pub mod demo;
pub mod kafka;
pub mod plan;
pub mod send;
pub mod servers;
pub mod tls;

use crate::case::{Case, Expect};
use anyhow::{Result, bail};
use plan::{WireProbe, runnable};
use policy_model::Verdict;
use portcullis_lab::{self as lab, paths};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// Runs the suite with the agent binary `me`; returns (passed, failed,
/// skipped).
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
    let dir = paths::work_dir("conformance");
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
        let servers = servers::start(me, &state, &topo, cases)?;
        std::thread::sleep(Duration::from_millis(400));
        let mut learned = false;
        for case in cases {
            // Names learned for an earlier case must not leak into this one:
            // restart the agent without its learned-name store.
            if learned {
                lab::stop_agent();
                let _ = std::fs::remove_file(paths::learned_names());
                lab::start_agent(&state, me)?;
            }
            learned = case
                .probes
                .iter()
                .any(|p| p.dns.is_some() || p.to_fqdn.is_some());
            let kafka_ok = case.probes.iter().any(|p| p.kafka.is_some()) && kafka::available();
            let planned = plan::plan_case(case, &topo, &state, kafka_ok)?;
            let (p, f, fam) = run_case(&pol_path, case, &planned, args)?;
            families[0] += fam[0];
            families[1] += fam[1];
            pass += p;
            fail += f;
            skip += planned.skipped;
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
    let applied = paths::applied_hash();
    loop {
        if std::fs::read_to_string(&applied).is_ok_and(|s| s.trim() == want) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "the agent did not apply the policy within 10 s (see {})",
                paths::agent_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Applies the case's policy, sends its planned probes (mismatches once
/// more, slowly, to rule out a lost packet) and prints its row; returns
/// (passed, failed, [IPv4, IPv6] probes).
fn run_case(
    pol_path: &Path,
    case: &Case,
    planned: &plan::CasePlan,
    args: &WireArgs,
) -> Result<(usize, usize, [usize; 2])> {
    let (wire, skipped) = (&planned.probes, planned.skipped);
    if wire.is_empty() {
        println!(
            "{:<48} {:>6} {:>15} {:>15} {:>6} {:>6}",
            case.name, 0, "-", "-", 0, skipped
        );
        return Ok((0, 0, [0, 0]));
    }
    apply_policy(pol_path, &case.policies)?;
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
    Ok((wire.len() - failed, failed, [wire.len() - v6, v6]))
}
