//! Root-only end-to-end tests of the cluster lab: two nodes, each a
//! network namespace with its own agent and its pods, joined by the lab's
//! underlay. Real clients (curl, dig, TCP connects) and real servers
//! (haproxy, knotd, the lab's TCP responder) show which node judges what:
//! egress policy on the source pod's node, ingress policy on the
//! destination pod's node, L7 rules in the proxy of the node that enforces
//! that direction, and names learned from DNS only where they were asked.
//! `portcullis observe --node NAME --output json` tells which node judged
//! a request.
//!
//! Each test runs its key steps in both input modes: Kubernetes (the
//! cluster lab's default: the agents list+watch the lab's API server) and
//! files (`lab up --files`). Each lab is torn down on `Drop`, also when a
//! test fails. Run them one at a time machine-wide:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test lab_cluster`.
//! Without root, or without a tool a test needs, a test prints SKIP and
//! passes.

#[path = "support/lab.rs"]
mod lab;

use lab::{BIN, TestLab, lab_guard, must, wait_until};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long an allowed probe may take to succeed for the first time
/// (servers starting, a loaded machine): retried until then.
const FIRST_SUCCESS: Duration = Duration::from_secs(30);

/// How the cluster's agents get the topology and the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inputs {
    /// The cluster lab's default: the lab's API server.
    Kubernetes,
    /// `lab up --files`: the agents read the files.
    Files,
}

impl Inputs {
    const BOTH: [Inputs; 2] = [Inputs::Kubernetes, Inputs::Files];

    /// The `lab up` arguments of this mode (none for the default).
    fn up_args(self) -> &'static [&'static str] {
        match self {
            Inputs::Kubernetes => &[],
            Inputs::Files => &["--files"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Inputs::Kubernetes => "k8s",
            Inputs::Files => "files",
        }
    }

    /// What `lab status` says of this mode.
    fn status_words(self) -> &'static str {
        match self {
            Inputs::Kubernetes => "Kubernetes (API server) mode",
            Inputs::Files => "file mode",
        }
    }
}

/// `lab up` of a cluster lab in `inputs` mode, checked to be a cluster
/// with both agents running in that mode.
fn cluster_up(test: &str, inputs: Inputs, topology: &str, policy: &str) -> TestLab {
    let lab = TestLab::up(
        &format!("{test}-{}", inputs.name()),
        topology,
        policy,
        inputs.up_args(),
    );
    let status = must(&["lab", "status"]);
    assert!(
        status.contains("cluster lab") && status.contains(inputs.status_words()),
        "lab status:\n{status}"
    );
    for node in NODES {
        assert!(
            agent_pid(node).is_some_and(alive),
            "the agent of {node} is not running:\n{status}"
        );
    }
    if inputs == Inputs::Kubernetes {
        for node in NODES {
            assert!(
                agent_log(node).contains("first snapshot from the API server"),
                "{node} is not fed by the API server:\n{}",
                agent_logs()
            );
        }
    }
    lab
}

const NODES: [&str; 2] = ["node-1", "node-2"];

fn node_file(node: &str, name: &str) -> PathBuf {
    PathBuf::from("/run/portcullis/lab/nodes")
        .join(node)
        .join(name)
}

fn agent_pid(node: &str) -> Option<u32> {
    std::fs::read_to_string(node_file(node, "agent.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn agent_log(node: &str) -> String {
    std::fs::read_to_string(node_file(node, "agent.log")).unwrap_or_default()
}

/// The last lines of both agents' logs, without colours, for failure
/// messages.
fn agent_logs() -> String {
    let mut out = String::new();
    for node in NODES {
        let log = strip_ansi(&agent_log(node));
        let lines: Vec<&str> = log.lines().collect();
        out.push_str(&format!("--- {node}/agent.log (last 25 lines)\n"));
        for l in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The flows of `node`'s agent (`observe --node NODE --output json --all`:
/// Hubble's `GetFlowsResponse` lines), each seen through [`view`].
fn observed(node: &str) -> Vec<Value> {
    let out = Command::new("timeout")
        .args([
            "20", BIN, "observe", "--node", node, "--output", "json", "--all",
        ])
        .output()
        .expect("run portcullis observe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| view(&v))
        .collect()
}

/// The few fields these tests judge, from one Hubble flow: `verdict`
/// (`Allowed` for FORWARDED, `Denied` for DROPPED), `src_pod`/`dst_pod`
/// (`ns/pod`), and for L7 flows `type` `l7`, `reason` (the summary), with
/// `method`/`path`/`status` (HTTP) or `protocol` `dns`/`kafka` and
/// `query`/`rcode`/`answers`; `flow` is the whole flow.
fn view(resp: &Value) -> Option<Value> {
    let f = resp.get("flow")?;
    let pod = |e: &Value| match (e["namespace"].as_str(), e["pod_name"].as_str()) {
        (Some(ns), Some(p)) => Value::String(format!("{ns}/{p}")),
        _ => Value::Null,
    };
    let verdict = match f["verdict"].as_str() {
        Some("FORWARDED") => "Allowed",
        Some("DROPPED") => "Denied",
        Some(other) => other,
        None => "",
    };
    let mut out = serde_json::json!({
        "verdict": verdict,
        "src_pod": pod(&f["source"]),
        "dst_pod": pod(&f["destination"]),
        "source": {"pod": pod(&f["source"])},
        "destination": {"pod": pod(&f["destination"])},
        "flow": f,
    });
    if f["Type"] == "L7" {
        out["type"] = "l7".into();
        let l7 = &f["l7"];
        // The proxy's reason is in the flow's summary.
        out["reason"] = f["Summary"].clone();
        if let Some(h) = l7.get("http") {
            out["method"] = h["method"].clone();
            out["status"] = h["code"].clone();
            let url = h["url"].as_str().unwrap_or("");
            let path = match url.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
                None => url,
            };
            out["path"] = path.into();
        } else if let Some(d) = l7.get("dns") {
            out["protocol"] = "dns".into();
            out["query"] = d["query"].clone();
            out["rcode"] = match d["rcode"].as_u64().unwrap_or(0) {
                0 => "NOERROR",
                3 => "NXDOMAIN",
                5 => "REFUSED",
                _ => "other",
            }
            .into();
            let ips: Vec<&str> = d["ips"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out["answers"] = ips.join(", ").into();
        } else if l7.get("kafka").is_some() {
            out["protocol"] = "kafka".into();
        }
    }
    Some(out)
}

/// The proxies' access records (`"type":"l7"`) of `node` that `matches`
/// accepts.
fn l7_records(node: &str, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    observed(node)
        .into_iter()
        .filter(|v| v["type"] == "l7" && matches(v))
        .collect()
}

/// Waits (up to 15 s: the access log reaches the stream asynchronously)
/// for an access record of `node` that `matches` accepts.
fn wait_l7(node: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_until(Duration::from_secs(15), || {
        found = l7_records(node, &matches).into_iter().next();
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no access record on {node} for {what}; its L7 records:\n{}\n{}",
            lines(&l7_records(node, |_| true)),
            agent_logs()
        )
    })
}

/// Values as JSON lines, the last 10, for failure messages.
fn lines(values: &[Value]) -> String {
    values[values.len().saturating_sub(10)..]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An HTTP access record for `method path` to `dst_pod`.
fn http_record<'a>(
    method: &'a str,
    path: &'a str,
    dst_pod: &'a str,
) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| v["method"] == method && v["path"] == path && v["dst_pod"] == dst_pod
}

/// The network namespace of each pod, looked up once.
struct Namespaces(BTreeMap<String, String>);

impl Namespaces {
    fn of(lab: &TestLab, pods: &[&str]) -> Namespaces {
        Namespaces(pods.iter().map(|p| (p.to_string(), lab.netns(p))).collect())
    }

    fn get(&self, pod: &str) -> &str {
        self.0
            .get(pod)
            .unwrap_or_else(|| panic!("no namespace looked up for {pod}"))
    }
}

/// One TCP connect from inside `ns` to a lab responder (`lab serve`),
/// which greets with `ok\n`: true when the greeting arrives in `timeout`.
fn greeted(ns: &str, dst: SocketAddr, timeout: Duration) -> bool {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let Ok(mut s) = TcpStream::connect_timeout(&dst, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
    })
    .join()
    .expect("probe thread")
}

/// A connection that should pass: retried until it does (a first packet
/// on a loaded machine, a server still starting, a policy on its way).
fn passes(ns: &str, dst: &str) -> bool {
    let dst: SocketAddr = dst.parse().expect("socket address literal");
    wait_until(FIRST_SUCCESS, || greeted(ns, dst, Duration::from_secs(2)))
}

/// A connection that should be dropped: one attempt long enough for a
/// SYN retransmission. A connection that passes is never retried away.
fn dropped(ns: &str, dst: &str) -> bool {
    let dst: SocketAddr = dst.parse().expect("socket address literal");
    !greeted(ns, dst, Duration::from_secs(2))
}

/// One `curl` from `pod`: the HTTP status, `000` without an answer.
fn http(lab: &TestLab, pod: &str, method: &str, url: &str) -> String {
    lab.sh(
        pod,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http1.1",
            "--max-time",
            "8",
            "-X",
            method,
            url,
        ],
    )
}

/// `curl` from `pod` until it gets an answer that is not a failure to
/// reach the server (`000`, `502`, `503`: a server or route still
/// starting); that answer. A 200 or a 403 is never retried.
fn http_answer(lab: &TestLab, pod: &str, method: &str, url: &str) -> String {
    let mut code = String::new();
    wait_until(FIRST_SUCCESS, || {
        code = http(lab, pod, method, url);
        !matches!(code.as_str(), "000" | "502" | "503")
    });
    code
}

fn haproxy_config(lab: &TestLab) -> String {
    let cfg = lab.dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        "global\n  maxconn 256\ndefaults\n  mode http\n  timeout client 10s\n  timeout server 10s\n  timeout connect 5s\nfrontend pod\n  bind :::80 v4v6\n  http-request return status 200 content-type text/plain string \"ok\"\n",
    )
    .expect("haproxy config");
    cfg.to_str().expect("utf-8 path").to_string()
}

// ------------------------------------------------------------ test 1: HTTP

/// node-1: the client (egress HTTP rules) and a pod without policy;
/// node-2: a server judged by node-2's ingress rules only (`web`), one
/// judged by node-1's egress rules only (`eweb`), one with rules on both
/// sides (`both`) and a plain TCP responder (`plain`).
const HTTP_TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
nodes:
  - {name: node-1}
  - {name: node-2}
pods:
  - {namespace: x, name: client, labels: {app: client}, node: node-1, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: other, labels: {app: other}, node: node-1, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: web, labels: {app: web}, node: node-2, ips: [10.200.2.20, "fd00:200::2:20"]}
  - {namespace: x, name: eweb, labels: {app: eweb}, node: node-2, ips: [10.200.2.21, "fd00:200::2:21"]}
  - {namespace: x, name: both, labels: {app: both}, node: node-2, ips: [10.200.2.22, "fd00:200::2:22"]}
  - {namespace: x, name: plain, labels: {app: plain}, node: node-2, ips: [10.200.2.23, "fd00:200::2:23"]}
"#;

/// The client's egress: HTTP rules towards `eweb` and `both`, plain L4
/// towards `web` (its ingress rules judge) and `plain` port 80. `web` and
/// `both` admit the client only, with HTTP rules. `both`: `/both/` is
/// allowed by both sides, `/egress-only/` by the client's egress rules
/// only (node-2 refuses it), `/ingress-only/` by `both`'s ingress rules
/// only (node-1 refuses it).
const HTTP_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: eweb}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/public/.*"}
  - toEndpoints: [{matchLabels: {app: both}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/both/.*"}
        - {method: GET, path: "/egress-only/.*"}
  - toEndpoints: [{matchLabels: {app: web}}, {matchLabels: {app: plain}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/public/.*"}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: both-ingress, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: both}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/both/.*"}
        - {method: GET, path: "/ingress-only/.*"}
"#;

const WEB: &str = "10.200.2.20";
const WEB_V6: &str = "[fd00:200::2:20]";
const EWEB: &str = "10.200.2.21";
const EWEB_V6: &str = "[fd00:200::2:21]";
const BOTH: &str = "10.200.2.22";

/// The HTTP lab: haproxy (200 for every request) in `web`, `eweb` and
/// `both`, the TCP responder on 80 and 81 in `plain`; returns once
/// `eweb`'s server answers a request no policy judges, and `x/other` is
/// kept from the servers that admit the client only.
fn http_lab(inputs: Inputs) -> TestLab {
    let mut lab = cluster_up("cluster-http", inputs, HTTP_TOPOLOGY, HTTP_POLICY);
    let cfg = haproxy_config(&lab);
    for pod in ["x/web", "x/eweb", "x/both"] {
        lab.spawn(pod, &["haproxy", "-db", "-f", &cfg]);
    }
    lab.serve_tcp("x/plain", "80,81");
    // Each server serves every path: x/other has no policy, nor has
    // x/eweb, so what they answer is the server's own answer.
    assert_eq!(
        http_answer(&lab, "x/other", "GET", &format!("http://{EWEB}/private/x")),
        "200",
        "{}",
        agent_logs()
    );
    // x/web and x/both admit x/client only: from x/other not even a
    // TCP connection (node-2 drops it by x/other's identity).
    for dst in [WEB, BOTH] {
        assert_eq!(
            http(&lab, "x/other", "GET", &format!("http://{dst}/public/x")),
            "000",
            "x/other reached {dst}"
        );
    }
    lab
}

#[test]
fn http_rules_are_judged_by_node_1_egress_and_node_2_ingress_proxies() {
    let Some(_guard) = lab_guard() else { return };
    if !have("haproxy") || !have("curl") {
        eprintln!("SKIP: needs haproxy and curl (bash deploy/install-deps.sh)");
        return;
    }
    for inputs in Inputs::BOTH {
        let lab = http_lab(inputs);
        let ns = Namespaces::of(&lab, &["x/client"]);
        let client = ns.get("x/client");

        // x/eweb: the client's egress rules, judged by node-1's proxy.
        for host in [EWEB, EWEB_V6] {
            assert_eq!(
                http_answer(&lab, "x/client", "GET", &format!("http://{host}/public/x")),
                "200",
                "{inputs:?}: allowed GET to {host}\n{}",
                agent_logs()
            );
            assert_eq!(
                http_answer(&lab, "x/client", "GET", &format!("http://{host}/private/x")),
                "403",
                "{inputs:?}: GET outside the egress rules to {host}"
            );
        }
        assert_eq!(
            http_answer(&lab, "x/client", "POST", &format!("http://{EWEB}/public/x")),
            "403",
            "{inputs:?}: POST outside the egress rules"
        );
        let denied = wait_l7(
            "node-1",
            "GET /private/x to x/eweb",
            http_record("GET", "/private/x", "x/eweb"),
        );
        assert_eq!(denied["verdict"], "Denied", "{denied}");
        assert_eq!(denied["status"], 403, "{denied}");
        assert_eq!(denied["src_pod"], "x/client", "{denied}");
        wait_l7("node-1", "POST /public/x to x/eweb", |v: &Value| {
            v["method"] == "POST" && v["dst_pod"] == "x/eweb" && v["verdict"] == "Denied"
        });
        wait_l7("node-1", "GET /public/x to x/eweb", |v: &Value| {
            http_record("GET", "/public/x", "x/eweb")(v) && v["verdict"] == "Allowed"
        });
        // node-2 has no L7 rule for x/eweb: its proxy saw none of it.
        let on_node_2 = l7_records("node-2", |v| v["dst_pod"] == "x/eweb");
        assert!(
            on_node_2.is_empty(),
            "{inputs:?}: node-2's proxy judged x/eweb's requests: {on_node_2:?}"
        );

        // x/web: its ingress rules, judged by node-2's proxy; node-1 only
        // passes the connection (L4 egress rule).
        for host in [WEB, WEB_V6] {
            assert_eq!(
                http_answer(&lab, "x/client", "GET", &format!("http://{host}/public/x")),
                "200",
                "{inputs:?}: allowed GET to {host}\n{}",
                agent_logs()
            );
            assert_eq!(
                http_answer(&lab, "x/client", "GET", &format!("http://{host}/private/x")),
                "403",
                "{inputs:?}: GET outside the ingress rules to {host}"
            );
        }
        assert_eq!(
            http_answer(&lab, "x/client", "POST", &format!("http://{WEB}/public/x")),
            "403",
            "{inputs:?}: POST outside the ingress rules"
        );
        let denied = wait_l7(
            "node-2",
            "GET /private/x to x/web",
            http_record("GET", "/private/x", "x/web"),
        );
        assert_eq!(denied["verdict"], "Denied", "{denied}");
        assert_eq!(denied["status"], 403, "{denied}");
        // The client's identity crossed the nodes: node-2's ipcache names
        // the source, and the reason names x/web's ingress.
        assert_eq!(denied["src_pod"], "x/client", "{denied}");
        assert!(
            denied["reason"]
                .as_str()
                .is_some_and(|r| r.contains("x/web ingress")),
            "{denied}"
        );
        wait_l7("node-2", "POST /public/x to x/web", |v: &Value| {
            v["method"] == "POST" && v["dst_pod"] == "x/web" && v["verdict"] == "Denied"
        });
        let on_node_1 = l7_records("node-1", |v| v["dst_pod"] == "x/web");
        assert!(
            on_node_1.is_empty(),
            "{inputs:?}: node-1's proxy judged x/web's requests: {on_node_1:?}"
        );

        // x/both: what node-1's egress rules refuse never leaves node-1.
        assert_eq!(
            http_answer(
                &lab,
                "x/client",
                "GET",
                &format!("http://{BOTH}/ingress-only/x")
            ),
            "403",
            "{inputs:?}: a path only x/both's ingress rules allow"
        );
        assert_eq!(
            http_answer(&lab, "x/client", "POST", &format!("http://{BOTH}/both/x")),
            "403",
            "{inputs:?}: POST to x/both"
        );
        let refused = wait_l7(
            "node-1",
            "GET /ingress-only/x to x/both",
            http_record("GET", "/ingress-only/x", "x/both"),
        );
        assert_eq!(refused["verdict"], "Denied", "{refused}");
        assert!(
            refused["reason"]
                .as_str()
                .is_some_and(|r| r.contains("x/client egress")),
            "{refused}"
        );
        let on_node_2 = l7_records("node-2", |v| v["dst_pod"] == "x/both");
        assert!(
            on_node_2.is_empty(),
            "{inputs:?}: node-2's proxy saw requests node-1 refused: {on_node_2:?}"
        );

        // A pod on node-2 without L7 rules: plain L4, both ways of the rule.
        assert!(
            passes(client, "10.200.2.23:80"),
            "{inputs:?}: x/client -> x/plain:80 (L4 allowed)\n{}",
            agent_logs()
        );
        assert!(
            passes(client, "[fd00:200::2:23]:80"),
            "{inputs:?}: x/client -> x/plain:80 over IPv6"
        );
        assert!(
            dropped(client, "10.200.2.23:81"),
            "{inputs:?}: x/client -> x/plain:81 is not in the egress rules"
        );
    }
}

/// The same request judged twice: by node-1's egress proxy, then by
/// node-2's ingress proxy. Node-1's proxy connects upstream from the
/// client's address (`bind_client_address`: towards any pod of the
/// cluster), so node-2 sees the client's identity, not `remote-node`; the
/// reply finds node-1's proxy through the entry `to_uplink` made. (Before
/// that, node-2 dropped the connection as `DropNoPolicy` from identity 6.)
#[test]
fn http_rules_on_both_nodes_judge_one_flow() {
    let Some(_guard) = lab_guard() else { return };
    if !have("haproxy") || !have("curl") {
        eprintln!("SKIP: needs haproxy and curl (bash deploy/install-deps.sh)");
        return;
    }
    for inputs in Inputs::BOTH {
        let lab = http_lab(inputs);
        // Allowed by both sides: judged on node-1, then on node-2.
        assert_eq!(
            http_answer(&lab, "x/client", "GET", &format!("http://{BOTH}/both/x")),
            "200",
            "{inputs:?}: a path both sides allow\nnode-1's access records:\n{}\nnode-2's flows to x/both:\n{}\n{}",
            lines(&l7_records(
                "node-1",
                http_record("GET", "/both/x", "x/both")
            )),
            lines(
                &observed("node-2")
                    .into_iter()
                    .filter(|v| v["destination"]["pod"] == "x/both")
                    .collect::<Vec<_>>()
            ),
            agent_logs()
        );
        for node in NODES {
            let allowed = wait_l7(
                node,
                "GET /both/x to x/both",
                http_record("GET", "/both/x", "x/both"),
            );
            assert_eq!(allowed["verdict"], "Allowed", "{node}: {allowed}");
            assert_eq!(allowed["src_pod"], "x/client", "{node}: {allowed}");
        }
        // Allowed by node-1's egress rules, refused by node-2's ingress
        // rules.
        assert_eq!(
            http_answer(
                &lab,
                "x/client",
                "GET",
                &format!("http://{BOTH}/egress-only/x")
            ),
            "403",
            "{inputs:?}: a path only the client's egress rules allow"
        );
        let passed = wait_l7(
            "node-1",
            "GET /egress-only/x to x/both",
            http_record("GET", "/egress-only/x", "x/both"),
        );
        assert_eq!(passed["verdict"], "Allowed", "{passed}");
        let refused = wait_l7(
            "node-2",
            "GET /egress-only/x to x/both",
            http_record("GET", "/egress-only/x", "x/both"),
        );
        assert_eq!(refused["verdict"], "Denied", "{refused}");
        assert_eq!(refused["src_pod"], "x/client", "{refused}");
        // The lab's relay serves both nodes' flows: the same request's
        // verdict from each node, in one stream.
        let relayed = Command::new(BIN)
            .args([
                "observe",
                "--server",
                "127.0.0.1:4245",
                "-o",
                "json",
                "--all",
                "--http-path",
                "^/egress-only/",
            ])
            .output()
            .expect("observe through the relay");
        let relayed: Vec<Value> = String::from_utf8_lossy(&relayed.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let by_node = |node: &str, verdict: &str| {
            relayed
                .iter()
                .any(|r| r["node_name"] == node && r["flow"]["verdict"] == verdict)
        };
        assert!(
            by_node("node-1", "FORWARDED") && by_node("node-2", "DROPPED"),
            "{inputs:?}: the relay's flows:\n{}",
            lines(&relayed)
        );
    }
}

// ------------------------------------------------------------- test 2: DNS

/// The DNS server on node-1; a pod asking it from node-2 and one with the
/// same policy on node-1 (next to the DNS server) that asks nothing at
/// first. Two world addresses serve TCP.
const DNS_TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
nodes:
  - {name: node-1}
  - {name: node-2}
pods:
  - {namespace: x, name: dns, labels: {k8s-app: kube-dns}, node: node-1, ips: [10.200.1.53, "fd00:200::1:53"]}
  - {namespace: x, name: idle, labels: {app: asker}, node: node-1, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: asker, labels: {app: asker}, node: node-2, ips: [10.200.2.10, "fd00:200::2:10"]}
world: {ips: [10.201.9.9, 10.201.9.10]}
"#;

/// The askers may ask the cluster DNS for `*.allowed.lab` only, and
/// connect to port 80 of what `web.allowed.lab` resolved to.
const DNS_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: asker-dns, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: asker}}
  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.allowed.lab"}]
  - toFQDNs: [{matchName: web.allowed.lab}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
"#;

const DNS_ZONE: &str = "$TTL 60
@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 60
@ NS ns.lab.
ns.lab. A 10.201.0.1
web.allowed.lab. 60 A 10.201.9.9
other.allowed.lab. 60 A 10.201.9.10
web.denied.lab. 60 A 10.201.9.9
";

/// `dig` from `pod` to the DNS pod, one try; its output.
fn dig(lab: &TestLab, pod: &str, name: &str, tcp: bool) -> String {
    let mut cmd = vec!["dig", "+tries=1", "+time=3", "@10.200.1.53", name];
    if tcp {
        cmd.push("+tcp");
    }
    String::from_utf8_lossy(&lab.exec(pod, &cmd).stdout).into_owned()
}

/// `dig` until an answer comes (knot starting, a first packet): the
/// first answer's output. An answer is never retried.
fn dig_answer(lab: &TestLab, pod: &str, name: &str, tcp: bool) -> String {
    let mut out = String::new();
    wait_until(FIRST_SUCCESS, || {
        out = dig(lab, pod, name, tcp);
        out.contains("status: ")
    });
    out
}

/// The learned-name store of `node`'s agent (empty when it has none).
fn learned(node: &str) -> String {
    std::fs::read_to_string(node_file(node, "fqdn.json")).unwrap_or_default()
}

#[test]
fn dns_rules_and_to_fqdns_are_judged_and_learned_on_the_asking_pods_node() {
    let Some(_guard) = lab_guard() else { return };
    if !have("knotd") || !have("dig") {
        eprintln!("SKIP: needs knot and dig (bash deploy/install-deps.sh)");
        return;
    }
    for inputs in Inputs::BOTH {
        let mut lab = cluster_up("cluster-dns", inputs, DNS_TOPOLOGY, DNS_POLICY);
        lab.serve_dns_zone("x/dns", DNS_ZONE);
        lab.serve_tcp("world", "80,81");
        let ns = Namespaces::of(&lab, &["x/asker", "x/idle"]);
        let (asker, idle) = (ns.get("x/asker"), ns.get("x/idle"));

        // Nobody asked yet: the address is no one's.
        assert!(
            dropped(asker, "10.201.9.9:80"),
            "{inputs:?}: toFQDNs allowed an address nobody resolved"
        );
        // The allowed name, over UDP and TCP, across the nodes: node-2's
        // proxy judges it and forwards it to the DNS pod on node-1.
        for tcp in [false, true] {
            let out = dig_answer(&lab, "x/asker", "web.allowed.lab", tcp);
            assert!(
                out.contains("status: NOERROR") && out.contains("10.201.9.9"),
                "{inputs:?} tcp={tcp}:\n{out}\n{}",
                agent_logs()
            );
        }
        // A name outside the rules: REFUSED by node-2's proxy.
        for tcp in [false, true] {
            let out = dig_answer(&lab, "x/asker", "web.denied.lab", tcp);
            assert!(
                out.contains("status: REFUSED"),
                "{inputs:?} tcp={tcp}:\n{out}"
            );
        }
        let allowed = wait_l7("node-2", "the query for web.allowed.lab", |v| {
            v["protocol"] == "dns" && v["query"] == "web.allowed.lab."
        });
        assert_eq!(allowed["verdict"], "Allowed", "{allowed}");
        assert_eq!(allowed["rcode"], "NOERROR", "{allowed}");
        assert_eq!(allowed["src_pod"], "x/asker", "{allowed}");
        assert_eq!(allowed["dst_pod"], "x/dns", "{allowed}");
        assert!(
            allowed["answers"]
                .as_str()
                .is_some_and(|a| a.contains("10.201.9.9")),
            "{allowed}"
        );
        let refused = wait_l7("node-2", "the query for web.denied.lab", |v| {
            v["protocol"] == "dns" && v["query"] == "web.denied.lab."
        });
        assert_eq!(refused["verdict"], "Denied", "{refused}");
        assert_eq!(refused["rcode"], "REFUSED", "{refused}");
        // node-1's proxy saw none of node-2's queries.
        let on_node_1 = l7_records("node-1", |v| v["protocol"] == "dns");
        assert!(
            on_node_1.is_empty(),
            "{inputs:?}: node-1's DNS proxy judged node-2's queries: {on_node_1:?}"
        );

        // What was resolved is allowed now, on the rule's port only, and
        // only the name the rule names.
        assert!(
            passes(asker, "10.201.9.9:80"),
            "{inputs:?}: the resolved address is not allowed\n{}",
            agent_logs()
        );
        assert!(
            dropped(asker, "10.201.9.9:81"),
            "{inputs:?}: toFQDNs allowed another port"
        );
        let out = dig_answer(&lab, "x/asker", "other.allowed.lab", false);
        assert!(out.contains("10.201.9.10"), "{inputs:?}:\n{out}");
        assert!(
            dropped(asker, "10.201.9.10:80"),
            "{inputs:?}: an allowed query for a name toFQDNs does not name opened its address"
        );

        // The name lives on node-2's agent only: node-1 never learned it,
        // and node-1's pod with the same policy is not let through.
        assert!(
            wait_until(Duration::from_secs(10), || learned("node-2")
                .contains("web.allowed.lab")),
            "{inputs:?}: node-2 did not store the name: {}",
            learned("node-2")
        );
        assert!(
            !learned("node-1").contains("web.allowed.lab")
                && !learned("node-1").contains("10.201.9.9"),
            "{inputs:?}: node-1 learned a name it never saw: {}",
            learned("node-1")
        );
        assert!(
            dropped(idle, "10.201.9.9:80"),
            "{inputs:?}: a pod on node-1 that never asked reached the address node-2 learned"
        );
        // When it asks (node-1's own proxy, the DNS pod next to it), node-1
        // learns it too.
        let out = dig_answer(&lab, "x/idle", "web.allowed.lab", false);
        assert!(out.contains("status: NOERROR"), "{inputs:?}:\n{out}");
        assert!(
            passes(idle, "10.201.9.9:80"),
            "{inputs:?}: node-1's pod asked and is still refused\n{}",
            agent_logs()
        );
        assert!(
            wait_until(Duration::from_secs(10), || learned("node-1")
                .contains("web.allowed.lab")),
            "{inputs:?}: node-1 did not store the name: {}",
            learned("node-1")
        );
        wait_l7("node-1", "x/idle's query", |v| {
            v["protocol"] == "dns" && v["src_pod"] == "x/idle" && v["verdict"] == "Allowed"
        });
    }
}

/// [`DNS_POLICY`], and the DNS pod admits the askers only.
fn dns_policy_with_server_ingress() -> String {
    format!(
        "{DNS_POLICY}---{}",
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns-ingress, namespace: x}
spec:
  endpointSelector: {matchLabels: {k8s-app: kube-dns}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: asker}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
"#
    )
}

/// A query node-2's DNS proxy forwards to a DNS pod on node-1 whose
/// ingress policy admits the asking pods: the proxy asks from the asking
/// pod's address, so node-1 admits it by the pod's identity (before the
/// proxy did so, node-1 dropped the query from `remote-node` and the pod
/// got SERVFAIL), as [`http_rules_on_both_nodes_judge_one_flow`] does for
/// HTTP.
#[test]
fn dns_queries_proxied_to_another_node_keep_the_asking_pods_identity() {
    let Some(_guard) = lab_guard() else { return };
    if !have("knotd") || !have("dig") {
        eprintln!("SKIP: needs knot and dig (bash deploy/install-deps.sh)");
        return;
    }
    for inputs in Inputs::BOTH {
        let mut lab = cluster_up(
            "cluster-dns-ingress",
            inputs,
            DNS_TOPOLOGY,
            &dns_policy_with_server_ingress(),
        );
        lab.serve_dns_zone("x/dns", DNS_ZONE);
        // node-1's own pod asks through node-1's proxy: the DNS pod is up
        // and admits it.
        let out = dig_answer(&lab, "x/idle", "web.allowed.lab", false);
        assert!(out.contains("status: NOERROR"), "{inputs:?}:\n{out}");
        let out = dig_answer(&lab, "x/asker", "web.allowed.lab", false);
        assert!(
            out.contains("status: NOERROR"),
            "{inputs:?}: a query from node-2\n{out}\nnode-2's access records:\n{}\nnode-1's flows to x/dns:\n{}",
            lines(&l7_records("node-2", |v| v["protocol"] == "dns")),
            lines(
                &observed("node-1")
                    .into_iter()
                    .filter(|v| v["destination"]["pod"] == "x/dns")
                    .collect::<Vec<_>>()
            )
        );
    }
}

// ------------------------------------------- test 3: an agent down or back

/// Two pods on each node, each serving TCP 80 and 81.
const PAIRS_TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
nodes:
  - {name: node-1}
  - {name: node-2}
pods:
  - {namespace: x, name: a1, labels: {app: a1}, node: node-1, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: b1, labels: {app: b1}, node: node-1, ips: [10.200.1.12, "fd00:200::1:12"]}
  - {namespace: x, name: a2, labels: {app: a2}, node: node-2, ips: [10.200.2.11, "fd00:200::2:11"]}
  - {namespace: x, name: b2, labels: {app: b2}, node: node-2, ips: [10.200.2.12, "fd00:200::2:12"]}
"#;

/// Rules each node enforces for the other's pods: a2 admits a1 (node-2's
/// ingress), a1 admits a2 (node-1's ingress), b1 may reach b2 (node-1's
/// egress), b2 may reach b1 (node-2's egress), each on the ports given.
fn pairs_policy(a2_from_a1: &str, b1_to_b2: &str, b2_to_b1: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a2-in, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{app: a2}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: a1}}}}]
    toPorts: [{{ports: [{a2_from_a1}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a1-in, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{app: a1}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: a2}}}}]
    toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b1-out, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{app: b1}}}}
  egress:
  - toEndpoints: [{{matchLabels: {{app: b2}}}}]
    toPorts: [{{ports: [{b1_to_b2}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b2-out, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{app: b2}}}}
  egress:
  - toEndpoints: [{{matchLabels: {{app: b1}}}}]
    toPorts: [{{ports: [{b2_to_b1}]}}]
"#
    )
}

const PORT_80: &str = r#"{port: "80", protocol: TCP}"#;
const PORT_81: &str = r#"{port: "81", protocol: TCP}"#;
const PORTS_80_81: &str = r#"{port: "80", protocol: TCP}, {port: "81", protocol: TCP}"#;

fn pairs_before() -> String {
    pairs_policy(PORT_80, PORT_80, PORT_81)
}

/// Each rule opens its other port: one pair flips on node-1 (b1 -> b2:81,
/// node-1's egress), two on node-2 (a1 -> a2:81, node-2's ingress;
/// b2 -> b1:80, node-2's egress).
fn pairs_after() -> String {
    pairs_policy(PORTS_80_81, PORTS_80_81, PORTS_80_81)
}

/// When the pairs are probed.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Both agents at the policy before the change.
    Before = 0,
    /// The policy changed; node-1's agent applied it, node-2's is stopped.
    Node1Changed = 1,
    /// Both agents at the changed policy.
    After = 2,
}

const PASS: bool = true;
const DROP: bool = false;

/// A cross-node connection, the rule that decides it, and whether it
/// passes in each [`Phase`].
struct Pair {
    from: &'static str,
    to: &'static str,
    judged_by: &'static str,
    passes: [bool; 3],
}

const fn pair(
    from: &'static str,
    to: &'static str,
    judged_by: &'static str,
    passes: [bool; 3],
) -> Pair {
    Pair {
        from,
        to,
        judged_by,
        passes,
    }
}

#[rustfmt::skip]
const PAIRS: [Pair; 13] = [
    // node-1 -> node-2                                  passes: [Before, Node1Changed, After]
    pair("x/a1", "10.200.2.11:80", "node-2 ingress (a2-in)",          [PASS, PASS, PASS]),
    pair("x/a1", "[fd00:200::2:11]:80", "node-2 ingress (a2-in)",     [PASS, PASS, PASS]),
    pair("x/a1", "10.200.2.11:81", "node-2 ingress (a2-in)",          [DROP, DROP, PASS]),
    pair("x/b1", "10.200.2.11:80", "node-1 egress (b1-out)",          [DROP, DROP, DROP]),
    pair("x/b1", "10.200.2.12:80", "node-1 egress (b1-out)",          [PASS, PASS, PASS]),
    pair("x/b1", "10.200.2.12:81", "node-1 egress (b1-out)",          [DROP, PASS, PASS]),
    pair("x/a1", "10.200.2.12:81", "no rule",                         [PASS, PASS, PASS]),
    // node-2 -> node-1
    pair("x/a2", "10.200.1.11:80", "node-1 ingress (a1-in)",          [PASS, PASS, PASS]),
    pair("x/a2", "[fd00:200::1:11]:81", "node-1 ingress (a1-in)",     [DROP, DROP, DROP]),
    pair("x/b2", "10.200.1.11:80", "node-2 egress (b2-out)",          [DROP, DROP, DROP]),
    pair("x/b2", "10.200.1.12:81", "node-2 egress (b2-out)",          [PASS, PASS, PASS]),
    pair("x/b2", "10.200.1.12:80", "node-2 egress (b2-out)",          [DROP, DROP, PASS]),
    pair("x/a2", "10.200.1.12:80", "no rule",                         [PASS, PASS, PASS]),
];

/// Probes every pair (at once, each on its own thread) and panics with
/// the list of those that disagree with `phase`. A pair expected to pass
/// is retried until it does ([`passes`]); one expected to be dropped gets
/// one attempt ([`dropped`]).
fn expect_verdicts(ns: &Namespaces, phase: Phase, when: &str) {
    let expected: Vec<bool> = PAIRS.iter().map(|p| p.passes[phase as usize]).collect();
    let observed: Vec<bool> = std::thread::scope(|s| {
        let probes: Vec<_> = PAIRS
            .iter()
            .zip(&expected)
            .map(|(p, &allowed)| {
                let from = ns.get(p.from).to_string();
                s.spawn(move || {
                    if allowed {
                        passes(&from, p.to)
                    } else {
                        !dropped(&from, p.to)
                    }
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let word = |passed: bool| if passed { "pass" } else { "drop" };
    let wrong: Vec<String> = PAIRS
        .iter()
        .zip(expected.iter().zip(&observed))
        .filter(|(_, (e, o))| e != o)
        .map(|(p, (e, o))| {
            format!(
                "  {} -> {} ({}): expected {}, observed {}",
                p.from,
                p.to,
                p.judged_by,
                word(*e),
                word(*o)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{when} ({phase:?}): verdicts differ:\n{}\n{}",
        wrong.join("\n"),
        agent_logs()
    );
}

/// Kills `node`'s agent with SIGKILL (no cleanup of any kind) and waits
/// until it is gone.
fn kill_agent(node: &str) {
    let pid = agent_pid(node).unwrap_or_else(|| panic!("no agent pid for {node}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the agent");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "the agent of {node} (pid {pid}) survived SIGKILL"
    );
}

#[test]
fn a_killed_or_stopped_agent_never_changes_what_another_node_enforces() {
    let Some(_guard) = lab_guard() else { return };
    for inputs in Inputs::BOTH {
        let mut lab = cluster_up("cluster-agents", inputs, PAIRS_TOPOLOGY, &pairs_before());
        for pod in ["x/a1", "x/b1", "x/a2", "x/b2"] {
            lab.serve_tcp(pod, "80,81");
        }
        let ns = Namespaces::of(&lab, &["x/a1", "x/b1", "x/a2", "x/b2"]);
        expect_verdicts(
            &ns,
            Phase::Before,
            &format!("{inputs:?}, both agents running"),
        );
        let node_2_pid = agent_pid("node-2");

        // node-1's agent dies without a word: its pinned programs and maps
        // keep deciding node-1's side, node-2 is untouched.
        kill_agent("node-1");
        for round in 1..=2 {
            expect_verdicts(
                &ns,
                Phase::Before,
                &format!("{inputs:?}, node-1's agent killed (round {round})"),
            );
        }
        must(&["lab", "restart-agent", "--node", "node-1"]);
        expect_verdicts(
            &ns,
            Phase::Before,
            &format!("{inputs:?}, node-1's agent restarted"),
        );
        assert_eq!(
            agent_pid("node-2"),
            node_2_pid,
            "{inputs:?}: node-2's agent was restarted too"
        );
        assert!(
            node_2_pid.is_some_and(alive),
            "{inputs:?}: node-2's agent died"
        );

        // node-2's agent stopped, the policy changed: node-1 applies its
        // part (b1 -> b2:81 opens on node-1's egress) while node-2 keeps
        // enforcing the old one until its agent is back.
        must(&["lab", "stop-agent", "--node", "node-2"]);
        lab.write_policy(&pairs_after());
        let b1 = ns.get("x/b1");
        assert!(
            passes(b1, "10.200.2.12:81"),
            "{inputs:?}: node-1 did not apply the changed policy\n{}",
            agent_logs()
        );
        for round in 1..=2 {
            expect_verdicts(
                &ns,
                Phase::Node1Changed,
                &format!("{inputs:?}, node-2's agent stopped, policy changed (round {round})"),
            );
        }
        must(&["lab", "restart-agent", "--node", "node-2"]);
        expect_verdicts(
            &ns,
            Phase::After,
            &format!("{inputs:?}, node-2's agent restarted"),
        );
    }
}
