//! Root-only lab test of issue 16: the real kubectl against a two-node
//! cluster lab's API server (the kubeconfig `lab up` writes), and what it
//! changes enforced on both nodes' wires. Each step is seen with real TCP
//! connects between pods on different nodes:
//! - `kubectl apply -f` of a CNP that denies a cross-node pair: dropped
//!   within one second of kubectl returning;
//! - `kubectl label` of a pod so that a policy selects it: its ingress
//!   (enforced on its own node) follows;
//! - `kubectl delete` of the policy: the pair passes again;
//! - `kubectl apply -f` of a broken version of a policy: kubectl prints
//!   the API server's error (422 with a Status) and exits non-zero, and
//!   both nodes keep enforcing the previous version.
//!
//! Runs with the machine's kubectl and, when `PORTCULLIS_KUBECTL_120`
//! names one (deploy/test.sh unpacks Debian's package kubernetes-client,
//! kubectl 1.20), with that one too, each on a lab of its own. Skips (SKIP
//! line, pass) without root or without any kubectl.

#[path = "support/lab.rs"]
mod support;

use portcullis_lab::probe::{self, Observed};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{TestLab, lab_guard, must};

const TOPOLOGY: &str = "
namespaces:
  - {name: x, labels: {ns: x}}
nodes:
  - {name: node-1, labels: {zone: one}}
  - {name: node-2, labels: {zone: two}}
pods:
  - {namespace: x, name: a, labels: {app: a}, node: node-1, ips: [10.200.1.10, 'fd00:200::1:10']}
  - {namespace: x, name: b, labels: {app: b}, node: node-2, ips: [10.200.1.11, 'fd00:200::1:11']}
  - {namespace: x, name: c, labels: {app: c}, node: node-2, ips: [10.200.1.12, 'fd00:200::1:12']}
  - {namespace: x, name: d, labels: {app: d}, node: node-1, ips: [10.200.1.13, 'fd00:200::1:13']}
";

/// b admits only d (so a, on node-1, is denied on node-2's ingress).
const B_FROM_D: &str = "
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-d, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: d}}]
";

/// Pods labelled `locked: yes` admit nobody but d; a NetworkPolicy, so
/// `kubectl apply` sends a strategic merge patch when it changes.
const LOCKED: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: locked, namespace: x}
spec:
  podSelector: {matchLabels: {locked: 'yes'}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: d}}}]
";

/// A broken version of `b-from-d`: an operator selectors do not have.
const B_BROKEN: &str = "
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-d, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: app, operator: Near, values: [a]}]}]
";

/// The kubectl binaries to drive: the machine's, and Debian's 1.20.
fn kubectls() -> Vec<String> {
    let works = |bin: &str| {
        Command::new(bin)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut out = Vec::new();
    if works("kubectl") {
        out.push("kubectl".to_string());
    } else {
        eprintln!("SKIP: kubectl is not installed");
    }
    match std::env::var("PORTCULLIS_KUBECTL_120") {
        Ok(bin) if works(&bin) => out.push(bin),
        _ => eprintln!(
            "SKIP kubectl 1.20: PORTCULLIS_KUBECTL_120 unset or not runnable (bash deploy/debian-kubectl.sh)"
        ),
    }
    out
}

thread_local! {
    static KUBECTL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs kubectl against the lab; (success, stdout + stderr).
fn kubectl(lab: &TestLab, args: &[&str], stdin_file: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(KUBECTL.with(|k| k.borrow().clone()));
    cmd.env("KUBECONFIG", "/run/portcullis/lab/kubeconfig")
        .env("HOME", &lab.dir)
        .args(args);
    if let Some(text) = stdin_file {
        let path = lab.dir.join(format!("obj-{}.yaml", text.len()));
        std::fs::write(&path, text).expect("write manifest");
        cmd.args(["-f", path.to_str().expect("utf-8")]);
    }
    let out = cmd.output().expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ kubectl {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 200, 1, last])
}

/// One TCP connect from pod `from` (its namespace from the lab) to port 80.
fn connects(lab: &TestLab, from: &str, to: IpAddr) -> bool {
    let ns = lab.netns(from);
    probe::tcp(&ns, to, 80, Duration::from_millis(300)).is_ok_and(|o| o == Observed::Connected)
}

/// Polls until `from` -> `to` is `want`; how long it took, or `None`.
fn until(lab: &TestLab, from: &str, to: IpAddr, want: bool, limit: Duration) -> Option<Duration> {
    let ns = lab.netns(from);
    let start = Instant::now();
    loop {
        let got = probe::tcp(&ns, to, 80, Duration::from_millis(150))
            .is_ok_and(|o| o == Observed::Connected);
        if got == want {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
    }
}

#[test]
fn kubectl_changes_are_enforced_on_every_node_and_a_broken_policy_keeps_the_old_one() {
    let Some(_guard) = lab_guard() else { return };
    for bin in kubectls() {
        println!("== with {bin}");
        KUBECTL.with(|k| *k.borrow_mut() = bin.clone());
        drive(&bin);
    }
}

/// The whole scenario with the kubectl `bin`, on a lab of its own.
fn drive(bin: &str) {
    let mut lab = TestLab::up("kubectl", TOPOLOGY, "", &[]);
    let (ok, out) = kubectl(&lab, &["version", "--client"], None);
    assert!(ok, "{bin}: {out}");
    let status = must(&["lab", "status"]);
    assert!(status.contains("cluster lab, Kubernetes"), "{status}");
    for pod in ["x/b", "x/c", "x/a"] {
        lab.serve_tcp(pod, "80");
    }
    // Everything is allowed before any policy; a->b and a->c cross nodes.
    assert!(until(&lab, "x/a", ip(11), true, Duration::from_secs(10)).is_some());
    assert!(connects(&lab, "x/a", ip(12)));

    let (ok, out) = kubectl(&lab, &["get", "nodes"], None);
    assert!(
        ok && out.contains("node-1") && out.contains("node-2"),
        "{out}"
    );
    let (ok, out) = kubectl(&lab, &["get", "pods", "-n", "x", "-o", "wide"], None);
    assert!(ok && out.contains("10.200.1.11"), "{out}");

    // 1. A CNP through kubectl: a (node-1) -> b (node-2) is dropped by
    //    node-2's ingress within one second; d (node-1) still passes.
    let (ok, out) = kubectl(&lab, &["apply"], Some(B_FROM_D));
    assert!(ok, "{out}");
    let took = until(&lab, "x/a", ip(11), false, Duration::from_secs(1));
    println!("a -> b dropped {took:?} after kubectl apply returned");
    assert!(
        took.is_some(),
        "a -> b still passes 1 s after kubectl apply"
    );
    assert!(connects(&lab, "x/d", ip(11)), "d -> b must pass");
    let (ok, out) = kubectl(&lab, &["get", "cnp", "-n", "x"], None);
    assert!(ok && out.contains("b-from-d"), "{out}");

    // 2. A NetworkPolicy selecting `locked: yes`, then kubectl label puts
    //    c (node-2) under it: a -> c is dropped, d -> c passes; removing
    //    the label lifts it.
    let (ok, out) = kubectl(&lab, &["apply"], Some(LOCKED));
    assert!(ok, "{out}");
    assert!(connects(&lab, "x/a", ip(12)), "c is not selected yet");
    let (ok, out) = kubectl(&lab, &["label", "pod", "-n", "x", "c", "locked=yes"], None);
    assert!(ok, "{out}");
    assert!(
        until(&lab, "x/a", ip(12), false, Duration::from_secs(5)).is_some(),
        "a -> c still passes after c was labelled locked=yes"
    );
    assert!(connects(&lab, "x/d", ip(12)), "d -> c must pass");
    let (ok, out) = kubectl(&lab, &["get", "pod", "-n", "x", "c", "--show-labels"], None);
    assert!(ok && out.contains("locked=yes"), "{out}");
    let (ok, out) = kubectl(&lab, &["label", "pod", "-n", "x", "c", "locked-"], None);
    assert!(ok, "{out}");
    assert!(
        until(&lab, "x/a", ip(12), true, Duration::from_secs(5)).is_some(),
        "a -> c still dropped after the label was removed"
    );

    // 3. A broken version of b-from-d: kubectl shows the API server's
    //    error, and both nodes keep the version in force.
    let (ok, out) = kubectl(&lab, &["apply"], Some(B_BROKEN));
    assert!(!ok, "kubectl accepted a broken policy:\n{out}");
    assert!(out.contains("b-from-d") && out.contains("invalid"), "{out}");
    assert!(
        out.contains("Near"),
        "the error names the bad operator:\n{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!connects(&lab, "x/a", ip(11)), "a -> b must stay dropped");
    assert!(connects(&lab, "x/d", ip(11)), "d -> b must still pass");

    // 4. kubectl delete: a -> b passes again.
    let (ok, out) = kubectl(&lab, &["delete", "cnp", "-n", "x", "b-from-d"], None);
    assert!(ok, "{out}");
    assert!(
        until(&lab, "x/a", ip(11), true, Duration::from_secs(5)).is_some(),
        "a -> b still dropped after kubectl delete"
    );
    let (ok, out) = kubectl(
        &lab,
        &["delete", "networkpolicy", "-n", "x", "locked"],
        None,
    );
    assert!(ok, "{out}");

    // Both agents saw the objects through their own watches.
    for node in ["node-1", "node-2"] {
        let log = std::fs::read_to_string(format!("/run/portcullis/lab/nodes/{node}/agent.log"))
            .unwrap_or_default();
        assert!(
            log.contains("first snapshot from the API server"),
            "{node}'s agent log:\n{log}"
        );
    }
}
