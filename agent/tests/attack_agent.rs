//! Root-only attack tests of the agent (issue 13, findings 1 and 6): one
//! tenant fills a shared kernel map or the agent's descriptors, and another
//! tenant's revocation must still be enforced, with the failure shown in
//! `status`; the node's own addresses are `host`, never `world`.
//!
//! Each test builds the lab (agent/tests/support/lab.rs) and tears it down
//! on Drop. Run them one at a time machine-wide:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test attack_agent`.

#[path = "support/lab.rs"]
mod lab;

use lab::{TestLab, lab_guard, wait_until};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// A TCP connect from inside the network namespace `ns`.
fn tcp_from(ns: &str, dst: &str, timeout: Duration) -> bool {
    let path = format!("/run/netns/{ns}");
    let dst: SocketAddr = dst.parse().expect("socket address literal");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpStream::connect_timeout(&dst, timeout).is_ok()
    })
    .join()
    .expect("probe thread")
}

fn reachable(lab: &TestLab, from: &str, dst: &str) -> bool {
    tcp_from(&lab.netns(from), dst, Duration::from_millis(500))
}

/// `status.updated`, to tell when the agent has handled a change.
fn updated(lab: &TestLab) -> String {
    lab.status_json()["updated"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Writes `policy` and waits (up to `limit`) until the agent has written
/// a new status after it.
fn change_policy(lab: &TestLab, policy: &str, limit: Duration) -> bool {
    let before = updated(lab);
    lab.write_policy(policy);
    wait_until(limit, || updated(lab) != before)
}

fn status_text() -> String {
    lab::must(&["status"])
}

const TENANTS_TOPOLOGY: &str = r#"
namespaces:
  - {name: t1, labels: {tenant: one}}
  - {name: t2, labels: {tenant: two}}
pods:
  - {namespace: t1, name: a, labels: {app: a}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: t2, name: b, labels: {app: b}, ips: [10.200.2.10, "fd00:200::2:10"]}
  - {namespace: t2, name: c, labels: {app: c}, ips: [10.200.2.11, "fd00:200::2:11"]}
world: {ips: [10.201.0.53]}
"#;

/// Tenant two: c admits b on port 80.
const T2_ALLOW: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-from-b, namespace: t2}
spec:
  endpointSelector: {matchLabels: {app: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

/// Tenant two's revocation: c admits nobody.
const T2_REVOKED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-from-b, namespace: t2}
spec:
  endpointSelector: {matchLabels: {app: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: nobody}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

/// Tenant one's valid but huge policy: 256 CIDRs x 320 ports (81,920
/// policy map entries for one endpoint).
fn huge_policy() -> String {
    cidr_policy(256, 320)
}

/// Tenant one's policy: `cidrs` /24s of the world range x `ports` ports.
fn cidr_policy(cidrs: usize, ports: usize) -> String {
    let cidrs: Vec<String> = (0..cidrs).map(|n| format!("\"10.201.{n}.0/24\"")).collect();
    let ports: Vec<String> = (0..ports)
        .map(|p| format!("{{port: \"{}\", protocol: TCP}}", 1000 + p))
        .collect();
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-huge, namespace: t1}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  egress:
  - toCIDR: [{}]
    toPorts: [{{ports: [{}]}}]
"#,
        cidrs.join(", "),
        ports.join(", ")
    )
}

fn docs(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Asserts the revocation for tenant two is enforced (new connections
/// b -> c:80 fail) within `limit`.
fn assert_revocation_enforced(lab: &TestLab, limit: Duration) {
    let start = Instant::now();
    let enforced = wait_until(limit, || !reachable(lab, "t2/b", "10.200.2.11:80"));
    assert!(
        enforced,
        "tenant two's revocation was not enforced within {:?}; status:\n{}\nagent log tail:\n{}",
        start.elapsed(),
        status_text(),
        agent_log_tail()
    );
    eprintln!(
        "revocation for tenant two enforced after {:?}",
        start.elapsed()
    );
}

fn agent_log_tail() -> String {
    let log = std::fs::read_to_string("/run/portcullis/lab/agent.log").unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Finding 1b: one valid policy of 256 CIDRs x 320 ports overflows the
/// node's 65,536-entry policy map. The oversized endpoint fails closed, the
/// other tenant's revocation is enforced, and status shows the failure.
#[test]
fn an_oversized_policy_fails_closed_and_does_not_block_another_tenants_revocation() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("attack-1b", TENANTS_TOPOLOGY, &docs(&[T2_ALLOW]), &[]);
    lab.serve_tcp("t2/c", "80");
    lab.serve_tcp("world", "1000");
    assert!(
        wait_until(Duration::from_secs(5), || reachable(
            &lab,
            "t2/b",
            "10.200.2.11:80"
        )),
        "b -> c:80 not allowed to begin with"
    );
    // Tenant one's huge policy.
    let huge = huge_policy();
    assert!(
        change_policy(&lab, &docs(&[T2_ALLOW, &huge]), Duration::from_secs(120)),
        "the agent never handled the huge policy"
    );
    eprintln!("after the huge policy:\n{}", status_text());
    // Tenant two revokes.
    assert!(
        change_policy(&lab, &docs(&[T2_REVOKED, &huge]), Duration::from_secs(120)),
        "the agent never handled the revocation"
    );
    assert_revocation_enforced(&lab, Duration::from_secs(10));
    // The failure is visible: the endpoint and the policy, not "valid".
    let st = lab.status_json();
    let failures = st["endpoint_failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        failures.iter().any(|f| f["endpoint"] == "t1/a"
            && f["reason"].as_str().is_some_and(|r| r.contains("budget"))),
        "status does not show t1/a failing closed:\n{st:#}"
    );
    let huge_state = st["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "a-huge").cloned())
        .unwrap_or_default();
    assert_eq!(huge_state["applied"], false, "{st:#}");
    assert!(status_text().contains("FAILED"), "{}", status_text());
    // Failing closed: t1/a's traffic is denied, even what its policy allows.
    assert!(
        !reachable(&lab, "t1/a", "10.201.0.1:1000"),
        "t1/a's policy was not written whole, yet its traffic passes"
    );
    // So do the flows: t1/a's attempt is dropped; the agent's log names
    // the endpoint that failed closed.
    let flows = lab::must(&[
        "observe",
        "--all",
        "--from-pod",
        "t1/a",
        "--verdict",
        "DROPPED",
    ]);
    assert!(
        flows.contains("t1/a:"),
        "no drop of t1/a in observe:\n{flows}"
    );
    let log = std::fs::read_to_string("/run/portcullis/lab/agent.log").unwrap_or_default();
    assert!(
        log.contains("endpoint-failed-closed") && log.contains("t1/a"),
        "no failure in the agent's log"
    );
    // The metrics say so too.
    let metrics = lab.metrics();
    assert!(
        metrics.contains("portcullis_endpoints_failed_closed 1"),
        "{metrics}"
    );
}

/// A DNS server for the world namespace (python, standard library only):
/// every AAAA question gets `count` addresses never given before, in
/// fd00:201::/64 (the lab's world range); A questions for names listed in
/// `fixed` get that address. Answers carry a 300 s TTL.
const FRESH_DNS: &str = r#"
import socket, struct, sys
bind, count = sys.argv[1], int(sys.argv[2])
fixed = dict(kv.split("=") for kv in sys.argv[3:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 53))
n = 0
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 17:
        continue
    qid = struct.unpack("!H", data[:2])[0]
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        labels.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace"))
        i += 1 + data[i]
    if i + 5 > len(data):
        continue
    qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
    question = data[12:i + 5]
    name = ".".join(labels).lower()
    answers = []
    if qtype == 28:
        for _ in range(count):
            n += 1
            addr = bytes([0xfd, 0, 2, 1, 0, 0, 0, 0]) + struct.pack("!Q", n)
            answers.append(b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 300, 16) + addr)
    elif qtype == 1 and name in fixed:
        addr = socket.inet_aton(fixed[name])
        answers.append(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + addr)
    head = struct.pack("!HHHHHH", qid, 0x8180, 1, len(answers), 0, 0)
    s.sendto(head + question + b"".join(answers), peer)
"#;

/// A DNS client for a pod: asks `qtype` for `q<i>.<zone>`, i < `count`,
/// one at a time (1 s timeout each, 120 s in all); prints how many
/// answers carried addresses.
const DNS_FLOOD: &str = r#"
import socket, struct, sys, time
server, zone, qtype, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
ok, start = 0, time.time()
for i in range(count):
    if time.time() - start > 120:
        break
    name = "q%d.%s" % (i, zone)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)
    q = struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 1) + qname + struct.pack("!HH", qtype, 1) + opt
    s.sendto(q, (server, 53))
    try:
        d, _ = s.recvfrom(65535)
        if struct.unpack("!H", d[6:8])[0] > 0:
            ok += 1
    except socket.timeout:
        pass
print(ok)
"#;

const DNS_TENANT_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-dns, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.53/32]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.flood.example"}, {matchPattern: "*.allowed.example"}]
  - toFQDNs: [{matchPattern: "*.flood.example"}, {matchPattern: "*.allowed.example"}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

fn write_script(lab: &TestLab, name: &str, text: &str) -> String {
    let path = lab.dir.join(name);
    std::fs::write(&path, text).expect("write script");
    path.to_str().expect("utf-8 path").to_string()
}

/// Finding 1a: a pod whose DNS and toFQDNs policy is ordinary asks a
/// resolver that answers 50 fresh addresses per name, 1,400 times (enough
/// for 70,000 addresses: more than the 65,536-entry ipcache). Its learned
/// addresses stop at its budgets, the other tenant's revocation is
/// enforced, and status shows the refusals.
#[test]
fn a_flood_of_fresh_dns_addresses_stops_at_budgets_and_does_not_block_another_tenants_revocation() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up(
        "attack-1a",
        TENANTS_TOPOLOGY,
        &docs(&[T2_ALLOW, DNS_TENANT_POLICY]),
        &[],
    );
    lab.serve_tcp("t2/c", "80");
    let server = write_script(&lab, "fresh_dns.py", FRESH_DNS);
    lab.spawn("world", &["python3", &server, "10.201.0.53", "50"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        wait_until(Duration::from_secs(5), || reachable(
            &lab,
            "t2/b",
            "10.200.2.11:80"
        )),
        "b -> c:80 not allowed to begin with"
    );
    let client = write_script(&lab, "dns_flood.py", DNS_FLOOD);
    let start = Instant::now();
    let answered = lab.sh(
        "t1/a",
        &[
            "python3",
            &client,
            "10.201.0.53",
            "flood.example",
            "28",
            "1400",
        ],
    );
    eprintln!(
        "1,400 AAAA lookups of 50 fresh addresses each: {answered} answered in {:?}",
        start.elapsed()
    );
    let answered: usize = answered.parse().unwrap_or(0);
    assert!(answered > 100, "the DNS flood was not answered: {answered}");
    eprintln!("after the flood:\n{}", status_text());
    assert!(
        change_policy(
            &lab,
            &docs(&[T2_REVOKED, DNS_TENANT_POLICY]),
            Duration::from_secs(60)
        ),
        "the agent never handled the revocation"
    );
    assert_revocation_enforced(&lab, Duration::from_secs(10));
    let st = lab.status_json();
    let refused: u64 = st["learn_refused"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert!(refused > 0, "status shows no refused addresses:\n{st:#}");
    let metrics = lab.metrics();
    assert!(
        metrics.contains("portcullis_fqdn_learn_refused_total{reason=\"per-endpoint-budget\"}"),
        "no refusal metric:\n{metrics}"
    );
    let learned = st["learned_addresses"].as_u64().unwrap_or(u64::MAX);
    assert!(
        learned <= 1_000,
        "one endpoint learned {learned} addresses (budget 1,000)"
    );
    assert!(
        st["apply_errors"].as_array().is_none_or(|e| e.is_empty()),
        "{st:#}"
    );
    eprintln!("status after the revocation:\n{}", status_text());
}

/// Opens up to `count` idle TCP connections from namespace `ns` to `dst`
/// (2 s connect timeout each, 60 s in all) and keeps them until the
/// returned handle drops.
fn idle_flood(ns: &str, dst: &str, count: usize) -> Vec<TcpStream> {
    let path = format!("/run/netns/{ns}");
    let dst: SocketAddr = dst.parse().expect("socket address literal");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let start = Instant::now();
        let mut held = Vec::new();
        for _ in 0..count {
            if start.elapsed() > Duration::from_secs(60) {
                break;
            }
            if let Ok(s) = TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
                held.push(s);
            }
        }
        held
    })
    .join()
    .expect("flood thread")
}

/// How many descriptors the lab's agent holds (`/proc/PID/fd`).
fn agent_open_descriptors() -> Option<usize> {
    let pid = std::fs::read_to_string("/run/portcullis/lab/agent.pid").ok()?;
    Some(
        std::fs::read_dir(format!("/proc/{}/fd", pid.trim()))
            .ok()?
            .count(),
    )
}

fn nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (lim.rlim_cur, lim.rlim_max)
}

fn set_nofile(soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

const HTTP_TENANT_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-http, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.1/32]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/"}]
"#;

/// Finding 1c: a flood of idle connections to the HTTP proxy exhausted the
/// agent's descriptors, and then it could not read policy files. The
/// proxy's connection budget (derived from the descriptor limit, per source
/// and in total) now refuses the excess at accept. With the agent's limit at
/// 2,048 and 2,600 idle connections from one pod, the test checks the flood
/// met that budget (refusals counted, the agent's descriptors below its
/// limit), that the other tenant's revocation (policy files) is still read
/// and enforced, and that nothing is reported invalid.
#[test]
fn an_idle_connection_flood_does_not_stop_policy_reads() {
    let Some(_guard) = lab_guard() else { return };
    // The lab's agent inherits this process's (soft) limit.
    let hard = nofile().1;
    set_nofile(2048, hard);
    // The limit is pinned with the agent's own flag; ATTACK_BASE=1 leaves
    // the flag out, for running this test against a build without it
    // (whose agent keeps the inherited limit).
    let flags: &[&str] = if std::env::var_os("ATTACK_BASE").is_some() {
        &[]
    } else {
        &["--agent-arg=--max-open-files=2048"]
    };
    let lab = TestLab::up(
        "attack-1c",
        TENANTS_TOPOLOGY,
        &docs(&[T2_ALLOW, HTTP_TENANT_POLICY]),
        flags,
    );
    set_nofile(hard, hard);
    let mut lab = lab;
    lab.serve_tcp("t2/c", "80");
    lab.serve_tcp("world", "80");
    assert!(
        wait_until(Duration::from_secs(5), || reachable(
            &lab,
            "t2/b",
            "10.200.2.11:80"
        )),
        "b -> c:80 not allowed to begin with"
    );
    let held = idle_flood(&lab.netns("t1/a"), "10.201.0.1:80", 2600);
    eprintln!(
        "idle connections held through the HTTP proxy: {}",
        held.len()
    );
    assert!(held.len() > 1500, "the flood did not get going");
    // The flood met the proxy's connection budget: the excess was refused
    // at accept (counted), and the agent kept descriptors to read with.
    let refused = lab
        .metrics()
        .lines()
        .filter(|l| l.starts_with("portcullis_proxy_connections_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    let open = agent_open_descriptors();
    eprintln!(
        "connections refused by the proxy's limits: {refused}; agent descriptors open: {open:?}"
    );
    assert!(
        refused >= 500.0,
        "the flood did not reach the proxy's connection limits ({refused} refused)"
    );
    let open = open.expect("the lab agent's descriptors are readable");
    assert!(
        open < 2048,
        "the agent holds {open} descriptors, its whole limit"
    );
    lab.write_policy(&docs(&[T2_REVOKED, HTTP_TENANT_POLICY]));
    assert_revocation_enforced(&lab, Duration::from_secs(15));
    let st = lab.status_json();
    let invalid: Vec<_> = st["policies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["valid"] == false)
        .collect();
    assert!(
        invalid.is_empty(),
        "reported invalid under the flood: {st:#}"
    );
    assert!(
        st["last_error"].is_null(),
        "a read failure is reported as a rejected policy: {st:#}"
    );
    drop(held);
}

const WORLD_ONLY_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-world, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEntities: [world]
  - toCIDR: [10.201.0.53/32]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.allowed.example"}]
  - toFQDNs: [{matchPattern: "*.allowed.example"}]
    toPorts: [{ports: [{port: "7777", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-cidr-all, namespace: t2}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
  - toCIDR: [0.0.0.0/0, "::/0"]
"#;

/// Finding 6: every address the node owns is `host`. Pods allowed only
/// `world` (or 0.0.0.0/0) do not reach node services through the pod
/// gateway or the uplink addresses, the admin port listens on loopback
/// only, and a DNS answer pointing at the node is not learned.
#[test]
fn the_node_is_host_not_world() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("attack-6", TENANTS_TOPOLOGY, WORLD_ONLY_POLICY, &[]);
    lab.serve_tcp("node", "7777");
    lab.serve_tcp("world", "7777");
    let server = write_script(&lab, "fresh_dns.py", FRESH_DNS);
    lab.spawn(
        "world",
        &[
            "python3",
            &server,
            "10.201.0.53",
            "1",
            "node.allowed.example=10.201.255.254",
            "gw.allowed.example=169.254.1.1",
            "web.allowed.example=10.201.0.1",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    // World stays reachable for both.
    assert!(reachable(&lab, "t1/a", "10.201.0.1:7777"), "world denied");
    assert!(
        reachable(&lab, "t2/b", "10.201.0.1:7777"),
        "0.0.0.0/0 denied"
    );
    let mut open = Vec::new();
    for pod in ["t1/a", "t2/b"] {
        for dst in [
            "169.254.1.1:7777",
            "10.201.255.254:7777",
            "[fd00:201::fffe]:7777",
            "169.254.1.1:9876",
            "10.201.255.254:9876",
        ] {
            if reachable(&lab, pod, dst) {
                open.push(format!("{pod} -> {dst}"));
            }
        }
    }
    // The admin port from the world (no policy there at all).
    if tcp_from(
        "pc-world",
        "10.201.255.254:9876",
        Duration::from_millis(500),
    ) {
        open.push("world -> 10.201.255.254:9876".into());
    }
    // DNS answers pointing at the node are not learned.
    let client = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2.0)
for i, name in enumerate(sys.argv[1:]):
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    s.sendto(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1), ("10.201.0.53", 53))
    try: s.recvfrom(4096)
    except socket.timeout: pass
"#;
    let client = write_script(&lab, "ask.py", client);
    lab.sh(
        "t1/a",
        &[
            "python3",
            &client,
            "node.allowed.example",
            "gw.allowed.example",
            "web.allowed.example",
        ],
    );
    // fqdn.json is written within 500 ms of learning.
    let learned = || std::fs::read_to_string("/run/portcullis/lab/fqdn.json").unwrap_or_default();
    let ordinary = wait_until(Duration::from_secs(3), || {
        learned().contains("10.201.0.1\"")
    });
    for node_addr in ["10.201.255.254", "169.254.1.1"] {
        if learned().contains(node_addr) {
            open.push(format!("learned {node_addr} from a DNS answer"));
        }
    }
    assert!(
        open.is_empty(),
        "the node is reachable as world:\n{}",
        open.join("\n")
    );
    assert!(
        ordinary,
        "an ordinary answer was not learned: {}",
        learned()
    );
    // The node's own processes still reach the admin port on loopback.
    let health = lab.sh(
        "node",
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            "http://127.0.0.1:9876/healthz",
        ],
    );
    assert_eq!(health, "ok");
}

/// Finding 1a, the map's side: with the learn budgets set past the map's
/// size (an operator's choice), a full ipcache leaves learned addresses
/// out (not allowed), keeps writing everything else, and says so.
#[test]
fn a_full_ipcache_leaves_learned_addresses_out_and_does_not_block_another_tenants_revocation() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up(
        "attack-1a-map",
        TENANTS_TOPOLOGY,
        &docs(&[T2_ALLOW, DNS_TENANT_POLICY]),
        &[
            "--agent-arg=--ipcache-max-entries=1024",
            "--agent-arg=--fqdn-max-ips=100000",
            "--agent-arg=--fqdn-max-ips-per-endpoint=100000",
        ],
    );
    lab.serve_tcp("t2/c", "80");
    let server = write_script(&lab, "fresh_dns.py", FRESH_DNS);
    lab.spawn("world", &["python3", &server, "10.201.0.53", "50"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        wait_until(Duration::from_secs(5), || reachable(
            &lab,
            "t2/b",
            "10.200.2.11:80"
        )),
        "b -> c:80 not allowed to begin with"
    );
    let client = write_script(&lab, "dns_flood.py", DNS_FLOOD);
    let answered = lab.sh(
        "t1/a",
        &[
            "python3",
            &client,
            "10.201.0.53",
            "flood.example",
            "28",
            "40",
        ],
    );
    eprintln!("40 lookups of 50 fresh addresses, 1,024-entry ipcache: {answered} answered");
    assert!(
        change_policy(
            &lab,
            &docs(&[T2_REVOKED, DNS_TENANT_POLICY]),
            Duration::from_secs(60)
        ),
        "the agent never handled the revocation"
    );
    assert_revocation_enforced(&lab, Duration::from_secs(10));
    let st = lab.status_json();
    let left_out = st["ipcache_left_out"].as_u64().unwrap_or(0);
    assert!(left_out > 0, "nothing left out of a full ipcache:\n{st:#}");
    assert!(
        st["apply_errors"].as_array().is_none_or(|e| e.is_empty()),
        "{st:#}"
    );
    assert!(status_text().contains("ipcache full"), "{}", status_text());
    eprintln!("status:\n{}", status_text());
}

/// Finding 1b, the ipcache's side: a policy whose CIDRs do not fit in the
/// ipcache (here 256 prefixes, 128 entries) fails its endpoint closed (its
/// addresses would otherwise fall back to a wider identity), and the other
/// tenant's revocation is still enforced.
#[test]
fn cidrs_that_do_not_fit_in_the_ipcache_fail_their_endpoint_closed() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up(
        "attack-1b-ipcache",
        TENANTS_TOPOLOGY,
        &docs(&[T2_ALLOW]),
        &["--agent-arg=--ipcache-max-entries=128"],
    );
    lab.serve_tcp("t2/c", "80");
    lab.serve_tcp("world", "1000");
    assert!(
        wait_until(Duration::from_secs(5), || reachable(
            &lab,
            "t2/b",
            "10.200.2.11:80"
        )),
        "b -> c:80 not allowed to begin with"
    );
    let wide = cidr_policy(256, 1);
    assert!(
        change_policy(&lab, &docs(&[T2_ALLOW, &wide]), Duration::from_secs(60)),
        "the agent never handled the CIDR policy"
    );
    assert!(
        change_policy(&lab, &docs(&[T2_REVOKED, &wide]), Duration::from_secs(60)),
        "the agent never handled the revocation"
    );
    assert_revocation_enforced(&lab, Duration::from_secs(10));
    let st = lab.status_json();
    let failures = st["endpoint_failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        failures.iter().any(|f| f["endpoint"] == "t1/a"
            && f["reason"].as_str().is_some_and(|r| r.contains("ipcache"))),
        "status does not show t1/a failing closed:\n{st:#}"
    );
    assert!(
        !reachable(&lab, "t1/a", "10.201.0.1:1000"),
        "t1/a's CIDRs were not all written, yet its traffic passes"
    );
    eprintln!("status:\n{}", status_text());
}
