//! Kafka probes of the conformance cases on the wire (`kafka:` probes): a
//! tansu broker (a real Kafka-API broker, memory storage) in every
//! namespace a Kafka probe goes to, with every topic the probes name, and
//! each probe's request sent by kafka-python's protocol classes
//! (`proxy/tests/support/kafka_probe.py`: the probe's API key, version,
//! client ID and topics, exactly).
//!
//! On the wire, an allowed request is answered by tansu (which has no
//! ACLs, so no authorization error); a request the proxy denies gets the
//! API's authorization error (29 per topic, 30 for group APIs, 31 for
//! cluster APIs); a flow denied at L3/L4 does not connect.

use crate::case::{Case, Probe, yaml_scalar};
use anyhow::{Context, Result, bail};
use policy_model::{Layer, Topology, Verdict};
use portcullis_lab::servers::{Processes, start_tansu, tansu};
use portcullis_lab::{LabState, probe};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The script that sends one probe's request.
const PROBE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../proxy/tests/support/kafka_probe.py"
);

/// One Kafka probe's request.
#[derive(Clone, Debug)]
pub struct KafkaCall {
    pub api_key: i16,
    /// `None`: the script's default version for the API.
    pub api_version: Option<i16>,
    pub client_id: Option<String>,
    pub topics: Vec<String>,
}

/// The request of a `kafka:` probe; `None` for other probes or an API key
/// that does not parse (the model reports that).
pub fn call(p: &Probe) -> Option<KafkaCall> {
    let k = p.kafka.as_ref()?;
    let text = yaml_scalar(&k.api_key);
    let api_key = text
        .parse::<i16>()
        .ok()
        .or_else(|| policy_model::l7::kafka::api_key_by_name(&text))?;
    Some(KafkaCall {
        api_key,
        api_version: k.api_version,
        client_id: k.client_id.clone(),
        topics: k.topics.clone(),
    })
}

/// The authorization error the proxy answers a denied request of this API
/// with (see `proxy::kafka::deny`).
fn denial_code(call: &KafkaCall) -> i16 {
    match call.api_key {
        // FindCoordinator, JoinGroup, Heartbeat, LeaveGroup, SyncGroup:
        // group authorization; so is an OffsetFetch that lists no topic.
        10..=14 => 30,
        9 if call.topics.is_empty() => 30,
        // ApiVersions, InitProducerId, ListGroups, DescribeCluster,
        // telemetry: cluster authorization.
        16 | 18 | 22 | 60 | 71 | 72 => 31,
        25 | 26 => 53,
        _ => 29,
    }
}

/// What the wire must show for the model's verdict.
pub fn want(call: &KafkaCall, verdict: Verdict, layer: Layer) -> probe::Outcome {
    match (verdict, layer) {
        (Verdict::Allowed, _) => probe::Outcome::Kafka(0),
        (Verdict::Denied, Layer::L7) => probe::Outcome::Kafka(denial_code(call)),
        (Verdict::Denied, _) => probe::Outcome::Blocked,
    }
}

/// Whether Kafka probes can run: tansu and kafka-python are installed.
/// Prints why not, once per call.
pub fn available() -> bool {
    if tansu().is_none() {
        eprintln!(
            "SKIP: Kafka probes need the tansu broker (deploy/tansu.sh start, or cargo install --locked tansu --features dynostore)"
        );
        return false;
    }
    let kafka_python = Command::new("python3")
        .args(["-c", "import kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !kafka_python {
        eprintln!("SKIP: Kafka probes need kafka-python 3 (pip install 'kafka-python>=3')");
        return false;
    }
    true
}

/// Ports of Kafka probes: served by tansu, not haproxy.
pub fn ports(cases: &[Case]) -> BTreeSet<u16> {
    cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter(|p| p.kafka.is_some())
        .map(|p| p.port)
        .collect()
}

/// Starts tansu in every namespace a Kafka probe goes to, on each probed
/// port (all addresses, both families), and creates every topic the
/// probes name there. Nothing when no case has Kafka probes or tansu is
/// missing (the probes are then skipped, see [`available`]).
pub fn start_servers(
    procs: &mut Processes,
    state: &LabState,
    topo: &Topology,
    cases: &[Case],
) -> Result<()> {
    let mut targets: BTreeMap<(String, u16), IpAddr> = BTreeMap::new();
    let mut topics: BTreeSet<String> = BTreeSet::new();
    for p in cases.iter().flat_map(|c| c.probes.iter()) {
        let (Some(_), Some(pod)) = (&p.kafka, &p.to) else {
            continue;
        };
        topics.extend(p.kafka.iter().flat_map(|k| k.topics.iter().cloned()));
        let Some(ip) = topo
            .pod(pod)
            .and_then(|p| p.addresses().into_iter().find(|a| a.is_ipv4()))
        else {
            continue;
        };
        targets.insert((state.namespace_of(pod)?, p.port), ip);
    }
    if targets.is_empty() || !available() {
        return Ok(());
    }
    let tansu = tansu().context("tansu was found just above")?;
    for ((ns, port), ip) in &targets {
        start_tansu(procs, &tansu, ns, *port, *ip, &topics)?;
    }
    Ok(())
}

/// Sends one probe's request from `ns` (from `src` when set) to
/// `dst:port` and reports what came back.
pub fn probe(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    call: &KafkaCall,
    timeout: Duration,
) -> Result<probe::Outcome> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "timeout",
        "30",
        "python3",
        PROBE_SCRIPT,
    ]);
    cmd.args([
        "--connect-timeout",
        &format!(
            "{:.3}",
            timeout.max(Duration::from_millis(1500)).as_secs_f64()
        ),
    ]);
    if let Some(src) = src {
        cmd.args(["--bind", &src.to_string()]);
    }
    cmd.arg(dst.to_string())
        .arg(port.to_string())
        .arg(call.api_key.to_string())
        .arg(call.api_version.unwrap_or(-1).to_string())
        .arg(call.client_id.clone().unwrap_or_default())
        .args(&call.topics);
    let out = cmd.output().context("running kafka_probe.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("").trim();
    let mut words = line.split_whitespace();
    Ok(match words.next() {
        Some("ANSWERED") => probe::Outcome::Kafka(0),
        Some("DENIED") => probe::Outcome::Kafka(
            words
                .next()
                .and_then(|c| c.parse().ok())
                .context("kafka_probe.py: DENIED without a code")?,
        ),
        Some("BLOCKED") => probe::Outcome::Blocked,
        Some("CLOSED") => probe::Outcome::Kafka(-1),
        _ => bail!(
            "kafka_probe.py printed {line:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}
