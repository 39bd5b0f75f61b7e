//! Root-only lab tests of audit mode (issue 17): per policy (the
//! `policy.cilium.io/audit-mode` annotation), per namespace (the same
//! annotation on the Namespace) and node-wide (`--policy-audit-mode`), in
//! the kernel, IPv4 and IPv6; every AUDIT flow names the policy that would
//! have dropped it, a flow an enforced policy drops is still dropped; and
//! hubble-audit2policy turns the AUDIT flows into policies that, applied,
//! allow exactly what was observed.
//!
//! Run them one at a time machine-wide:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test lab_audit`.

#[path = "support/lab.rs"]
mod lab;

use lab::{TestLab, lab_guard, must, wait_until};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {team: x}}
  - {name: y, labels: {team: y}, annotations: {policy.cilium.io/audit-mode: "true"}}
pods:
  - {namespace: x, name: client, labels: {app: client}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: web, labels: {app: web}, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: api, labels: {app: api}, ips: [10.200.1.12, "fd00:200::1:12"]}
  - {namespace: x, name: other, labels: {app: other}, ips: [10.200.1.13, "fd00:200::1:13"]}
  - {namespace: y, name: db, labels: {app: db}, ips: [10.200.2.10, "fd00:200::2:10"]}
world: {ips: [10.201.0.53]}
"#;

/// web: only an audited policy (client on 81). api: an enforced allow
/// (client on 81 and 82) and an audited deny (client on 82). db (in the
/// audited namespace y): an enforced allow (client on 5432).
const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-audit
  namespace: x
  annotations: {policy.cilium.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-allow, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}, {port: "82", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-deny-82
  namespace: x
  annotations: {policy.cilium.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "82", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-allow, namespace: y}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, k8s:io.kubernetes.pod.namespace: x}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"#;

/// The IPv4 and IPv6 address of a pod.
fn addrs(pod: &str) -> [&'static str; 2] {
    match pod {
        "x/web" => ["10.200.1.11", "fd00:200::1:11"],
        "x/api" => ["10.200.1.12", "fd00:200::1:12"],
        "y/db" => ["10.200.2.10", "fd00:200::2:10"],
        _ => panic!("no address for {pod}"),
    }
}

fn servers(lab: &mut TestLab) {
    lab.serve_tcp("x/web", "81");
    lab.serve_tcp("x/api", "81,82");
    lab.serve_tcp("y/db", "5432");
}

/// Whether a TCP connect from `pod` to `ip`:`port` is answered.
fn connects(lab: &TestLab, pod: &str, ip: &str, port: u16) -> bool {
    lab.exec(
        pod,
        &[
            "timeout",
            "2",
            "bash",
            "-c",
            &format!("echo > /dev/tcp/{ip}/{port}"),
        ],
    )
    .status
    .success()
}

fn observe(flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["observe", "-o", "json", "--all"];
    args.extend_from_slice(flags);
    must(&args)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| r["flow"].clone())
        .collect()
}

/// `Kind ns/name` of each policy in `list`.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|p| {
                    format!(
                        "{} {}/{}",
                        p["kind"].as_str().unwrap_or(""),
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The flow of `flows` from `src` (a pod name) to `dst_ip`:`port` with
/// `verdict`, if any.
fn flow_of<'a>(
    flows: &'a [Value],
    src: &str,
    dst_ip: &str,
    port: u16,
    verdict: &str,
) -> Option<&'a Value> {
    flows.iter().find(|f| {
        f["source"]["pod_name"] == src
            && f["IP"]["destination"] == dst_ip
            && f["l4"]["TCP"]["destination_port"] == port
            && f["verdict"] == verdict
    })
}

fn audited(flows: &[Value], src: &str, dst_ip: &str, port: u16) -> Vec<String> {
    let f = flow_of(flows, src, dst_ip, port, "AUDIT").unwrap_or_else(|| {
        panic!(
            "no AUDIT flow {src} -> {dst_ip}:{port}\n{}",
            flows
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(f["traffic_direction"], "INGRESS", "{f}");
    assert!(
        f.get("drop_reason_desc").is_none(),
        "an audited flow is no drop: {f}"
    );
    names(&f["ingress_denied_by"])
}

#[test]
fn audited_policies_and_namespaces_pass_what_they_would_drop_and_say_so() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("audit", TOPOLOGY, POLICIES, &[]);
    servers(&mut lab);
    for family in 0..2 {
        let web = addrs("x/web")[family];
        let api = addrs("x/api")[family];
        let db = addrs("y/db")[family];
        // An audited policy alone: what it would drop passes.
        assert!(connects(&lab, "x/other", web, 81), "other -> web {web}");
        assert!(connects(&lab, "x/client", web, 81), "client -> web {web}");
        // An audited deny under an enforced allow: passes.
        assert!(
            connects(&lab, "x/client", api, 82),
            "client -> api:82 {api}"
        );
        // An enforced policy's default deny: still dropped.
        assert!(
            !connects(&lab, "x/other", api, 81),
            "other -> api:81 {api} passed"
        );
        // The audited namespace y: db's enforced policy only audits.
        assert!(connects(&lab, "x/other", db, 5432), "other -> db {db}");
        assert!(connects(&lab, "x/client", db, 5432), "client -> db {db}");
    }
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--verdict", "AUDIT"]).len() >= 6
    }));
    let flows = observe(&[]);
    for family in 0..2 {
        let web = addrs("x/web")[family];
        let api = addrs("x/api")[family];
        let db = addrs("y/db")[family];
        assert_eq!(
            audited(&flows, "other", web, 81),
            ["CiliumNetworkPolicy x/web-audit"]
        );
        assert!(flow_of(&flows, "client", web, 81, "AUDIT").is_none());
        assert_eq!(
            audited(&flows, "client", api, 82),
            ["CiliumNetworkPolicy x/api-deny-82"]
        );
        let dropped =
            flow_of(&flows, "other", api, 81, "DROPPED").expect("other -> api:81 dropped");
        assert_eq!(
            names(&dropped["ingress_denied_by"]),
            ["CiliumNetworkPolicy x/api-allow"]
        );
        assert_eq!(
            audited(&flows, "other", db, 5432),
            ["CiliumNetworkPolicy y/db-allow"]
        );
        assert!(flow_of(&flows, "client", db, 5432, "AUDIT").is_none());
    }
    // `--verdict AUDIT` shows only those.
    let only = observe(&["--verdict", "AUDIT"]);
    assert!(only.iter().all(|f| f["verdict"] == "AUDIT"), "{only:?}");
    // explain gives both verdicts.
    let dir = &lab.dir;
    let explained = must(&[
        "policy",
        "explain",
        "--policy",
        dir.join("policy.yaml").to_str().expect("utf-8"),
        "--topology",
        dir.join("topology.yaml").to_str().expect("utf-8"),
        "--from",
        "x/client",
        "--to",
        "x/api",
        "--port",
        "82",
    ]);
    assert!(explained.starts_with("ALLOWED"), "{explained}");
    assert!(
        explained.contains("AUDIT: with the audited policies enforced this flow would be DENIED")
            && explained.contains("api-deny-82"),
        "{explained}"
    );
}

#[test]
fn node_wide_audit_passes_every_would_be_drop_and_audit2policy_writes_what_was_seen() {
    let Some(_guard) = lab_guard() else { return };
    let tool = Command::new("sh")
        .args(["-c", "command -v hubble-audit2policy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        tool,
        "needs hubble-audit2policy (bash deploy/install-deps.sh)"
    );
    // Lock x down entirely, then audit the node: everything passes.
    let lockdown = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: lockdown, namespace: x}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoints: [{matchLabels: {nobody: here}}]}]
  egress: [{toEndpoints: [{matchLabels: {nobody: here}}]}]
"#;
    let topology = TOPOLOGY.replace(", annotations: {policy.cilium.io/audit-mode: \"true\"}", "");
    let mut lab = TestLab::up(
        "audit-node",
        &topology,
        lockdown,
        &["--agent-arg=--policy-audit-mode"],
    );
    servers(&mut lab);
    for family in 0..2 {
        let web = addrs("x/web")[family];
        let api = addrs("x/api")[family];
        assert!(connects(&lab, "x/client", web, 81), "client -> web {web}");
        assert!(connects(&lab, "x/client", api, 82), "client -> api {api}");
    }
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--verdict", "AUDIT"]).len() >= 4
    }));
    let flows = observe(&["--verdict", "AUDIT"]);
    for f in &flows {
        let by = [&f["ingress_denied_by"], &f["egress_denied_by"]]
            .iter()
            .flat_map(|l| names(l))
            .collect::<Vec<_>>();
        assert_eq!(by, ["CiliumNetworkPolicy x/lockdown"], "{f}");
    }
    // hubble-audit2policy reads what observe printed.
    let out = must(&["observe", "-o", "json", "--all", "--verdict", "AUDIT"]);
    let flows_file = lab.dir.join("audit-flows.json");
    std::fs::write(&flows_file, out).expect("flows file");
    let generated = lab.dir.join("generated.yaml");
    let run = Command::new("hubble-audit2policy")
        .arg(&flows_file)
        .args(["--verdict", "AUDIT", "--no-enrich", "--single-file"])
        .arg(&generated)
        .output()
        .expect("hubble-audit2policy");
    assert!(
        run.status.success(),
        "hubble-audit2policy: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let yaml = std::fs::read_to_string(&generated).expect("generated policies");
    must(&["policy", "check", generated.to_str().expect("utf-8")]);
    drop(lab);
    // Applied (and nothing audited): what was observed passes, the rest
    // is dropped.
    let mut lab = TestLab::up("audit-applied", &topology, &yaml, &[]);
    servers(&mut lab);
    for family in 0..2 {
        let web = addrs("x/web")[family];
        let api = addrs("x/api")[family];
        assert!(
            connects(&lab, "x/client", web, 81),
            "client -> web {web}\n{yaml}"
        );
        assert!(
            connects(&lab, "x/client", api, 82),
            "client -> api:82 {api}\n{yaml}"
        );
        assert!(
            !connects(&lab, "x/client", api, 81),
            "client -> api:81 {api} passed\n{yaml}"
        );
        assert!(
            !connects(&lab, "x/other", web, 81),
            "other -> web {web} passed\n{yaml}"
        );
    }
}
