//! The admin endpoint's `/metrics` is one valid OpenMetrics document (the
//! agent's, the three proxies' and, in Kubernetes mode, the watcher's
//! metrics, from one registry encoded once), checked with the reference
//! parser, Python's `prometheus_client.openmetrics.parser`. Root only (a
//! lab); one lab at a time:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test admin`.

#[path = "support/lab.rs"]
mod lab;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use lab::{TestLab, lab_guard, wait_until};

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10]}
"#;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-web, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET}]
"#;

/// Parses `text` strictly as OpenMetrics; the metric family names, one per
/// line, or the parser's error.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
try:
    for family in text_string_to_metric_families(sys.stdin.read()):
        print(family.name)
except Exception as e:
    print("ERROR", e)
    sys.exit(1)
"#;

fn families(metrics: &str) -> Result<Vec<String>, String> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("parser output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(text.lines().map(str::to_string).collect())
    } else {
        Err(text)
    }
}

/// Brings up a lab in `mode` and checks that `/metrics` is one valid
/// OpenMetrics document with the families `want`; returns the lab.
fn check(mode: &str, extra: &[&str], want: &[&str]) -> TestLab {
    if Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .status()
        .map_or(true, |s| !s.success())
    {
        panic!("needs prometheus_client (pip; deploy/install-deps.sh installs it)");
    }
    let lab = TestLab::up(&format!("admin-{mode}"), TOPOLOGY, POLICY, extra);
    let mut metrics = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            metrics = lab.metrics();
            metrics.contains("portcullis_policy_applied")
        }),
        "{mode}: /metrics did not answer: {metrics:?}"
    );
    assert_eq!(
        metrics.matches("# EOF").count(),
        1,
        "{mode}: one `# EOF`, at the end"
    );
    let names = families(&metrics)
        .unwrap_or_else(|e| panic!("{mode}: /metrics is not valid OpenMetrics: {e}"));
    for w in want {
        assert!(
            names.iter().any(|n| n == w),
            "{mode}: no family {w} in /metrics: {names:?}"
        );
    }
    lab
}

/// The value of the sample line `name` (no labels) in `metrics`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A policy change is timed: the realization histogram counts it.
fn realization_counts_a_policy_change(lab: &TestLab) {
    let count = "portcullis_policy_realization_seconds_count";
    let before = sample(&lab.metrics(), count).expect("the histogram's count");
    lab.write_policy(&POLICY.replace("method: GET", "method: PUT"));
    let mut metrics = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            metrics = lab.metrics();
            sample(&metrics, count).is_some_and(|n| n > before)
        }),
        "the policy change was not counted in {count}: {metrics}"
    );
    let sum = sample(&metrics, "portcullis_policy_realization_seconds_sum").expect("sum");
    assert!(sum > 0.0, "a realization takes some time: {metrics}");
    let names = families(&metrics).expect("valid OpenMetrics after the change");
    assert!(
        names
            .iter()
            .any(|n| n == "portcullis_policy_realization_seconds")
    );
}

#[test]
fn metrics_are_one_openmetrics_document_in_file_and_kubernetes_mode() {
    let Some(_guard) = lab_guard() else {
        return;
    };
    let common = [
        "portcullis_policy_applied",
        "portcullis_datapath_packets",
        "portcullis_proxy_http_request_duration_seconds",
        "portcullis_proxy_dns_mismatched_answers",
        "portcullis_proxy_kafka_connections",
        "portcullis_policy_realization_seconds",
    ];
    let files = check("files", &[], &common);
    realization_counts_a_policy_change(&files);
    drop(files);
    let mut k8s = common.to_vec();
    k8s.extend([
        "portcullis_k8s_watch_snapshots",
        "portcullis_k8s_watch_invalid_policies",
    ]);
    check("kubernetes", &["--kubernetes"], &k8s);
}
