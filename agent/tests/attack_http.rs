//! Attacks on the HTTP proxy through the real redirect (issue 13, findings
//! 2 and 12), in the lab: root only, one lab at a time.
//!
//! - h2c smuggling: x/a may `GET /public/.*` on x/b:80. x/b runs a small
//!   Python server that honours `Upgrade: h2c` on any `Upgrade` header (101,
//!   then HTTP/2 frames: it answers each HEADERS with the path it asked
//!   for). x/a sends `Upgrade: websocket` plus a second `Upgrade: h2c`,
//!   and after a 101 asks for `/admin` over HTTP/2.
//! - Connection flood: the world (10.201.7.7, allowed the same rules)
//!   opens 3 x 8,000 connections to x/b:80 and holds them (idle, HTTP/2
//!   preface + SETTINGS, slow HTTP/1 head). Meanwhile x/a's requests must
//!   keep succeeding (>= 99 %), the agent's resident memory stays under
//!   256 MiB, and a policy change still applies.
#[path = "support/lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use lab::*;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: b, labels: {pod: b}, ips: [10.200.1.11, "fd00:200::1:11"]}
world: {ips: [10.201.7.7]}
"#;

fn policy(path: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b-l7, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{pod: b}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{pod: a}}}}]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
      rules:
        http:
        - {{method: GET, path: "{path}"}}
  - fromEntities: [world]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
      rules:
        http:
        - {{method: GET, path: "{path}"}}
"#
    )
}

/// x/b's server: HTTP/1.1 `ok`, and h2c on any `Upgrade` header listing it
/// (minimal HTTP/2: SETTINGS, then HEADERS :status 200 + DATA `secret
/// <path>` for each HEADERS it gets). Every request head is appended to
/// the log file.
const BACKEND: &str = r#"
import socket, socketserver, struct, sys
LOG = sys.argv[1]
def frame(t, f, sid, p):
    return struct.pack(">I", len(p))[1:] + bytes([t, f]) + struct.pack(">I", sid) + p
def path_of(p):
    i, path = 0, b""
    while i < len(p):
        b = p[i]
        if b & 0x80:
            i += 1
            continue
        idx = b & 0x3f
        i += 1
        if idx == 0:
            n = p[i]; i += 1 + n
        n = p[i]; v = p[i + 1:i + 1 + n]; i += 1 + n
        if idx == 4:
            path = v
    return path
class H(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(10)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            with open(LOG, "ab") as f:
                f.write(head + b"\n---\n")
            ups = []
            for l in head.decode("latin1").split("\r\n")[1:]:
                n, _, v = l.partition(":")
                if n.strip().lower() == "upgrade":
                    ups += [t.strip().lower() for t in v.split(",")]
            if "h2c" in ups:
                s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                self.h2(s, buf)
                return
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    def h2(self, s, buf):
        s.sendall(frame(4, 0, 0, b""))
        while len(buf) < 24:
            d = s.recv(4096)
            if not d:
                return
            buf += d
        buf = buf[24:]
        while True:
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                d = s.recv(4096)
                if not d:
                    return
                buf += d
            n = int.from_bytes(buf[:3], "big")
            t, sid = buf[3], int.from_bytes(buf[5:9], "big") & 0x7fffffff
            p, buf = buf[9:9 + n], buf[9 + n:]
            if t == 1:
                path = path_of(p)
                with open(LOG, "ab") as f:
                    f.write(b"H2 " + path + b"\n---\n")
                s.sendall(frame(1, 4, sid, b"\x88") + frame(0, 1, sid, b"secret " + path))
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("0.0.0.0", 80), H).serve_forever()
"#;

/// x/a's attack: the smuggling head, then after a 101 `/admin` over
/// HTTP/2. Prints the status of the first answer, then `ADMIN <body>` if
/// `/admin` was served.
const SMUGGLE: &str = r#"
import socket, struct, sys, time
def frame(t, f, sid, p):
    return struct.pack(">I", len(p))[1:] + bytes([t, f]) + struct.pack(">I", sid) + p
s = socket.create_connection(("10.200.1.11", 80), timeout=3)
s.sendall(b"GET /public/x HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n")
buf = b""
try:
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
except OSError:
    pass
status = buf.split(b" ")[1].decode() if buf.count(b" ") else "none"
print(status, flush=True)
if status == "101":
    hb = b"\x82\x86\x44\x06/admin\x41\x01b"
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 5, 1, hb))
    got, end = b"", time.time() + 3
    while time.time() < end and b"secret" not in got:
        try:
            d = s.recv(4096)
        except OSError:
            break
        if not d:
            break
        got += d
    if b"secret /admin" in got:
        print("ADMIN secret /admin", flush=True)
"#;

#[test]
fn h2c_smuggling_through_the_redirect_is_refused() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("attack-h2c", TOPOLOGY, &policy("/public/.*"), &[]);
    let log = lab.dir.join("backend.log");
    std::fs::write(&log, "").expect("log");
    let script = lab.dir.join("backend.py");
    std::fs::write(&script, BACKEND).expect("backend script");
    lab.spawn(
        "x/b",
        &[
            "python3",
            script.to_str().expect("utf-8"),
            log.to_str().expect("utf-8"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || lab.sh(
            "x/a",
            &[
                "curl",
                "-s",
                "--max-time",
                "1",
                "http://10.200.1.11/public/ok"
            ]
        ) == "ok"),
        "the backend is not reachable through the proxy"
    );
    let out = lab.sh("x/a", &["python3", "-c", SMUGGLE]);
    let backend = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("attacker: {out:?}\nbackend saw:\n{backend}");
    assert!(!out.contains("ADMIN"), "/admin served over h2c: {out}");
    assert_eq!(out.lines().next(), Some("403"), "{out}");
    assert!(
        !backend.to_ascii_lowercase().contains("h2c") && !backend.contains("H2 "),
        "the backend saw the upgrade: {backend}"
    );
}

/// Opens `n` connections from `src` to x/b:80 and holds them for `hold`
/// seconds (stops opening after 30 s). Prints how many it opened.
const FLOOD: &str = r#"
import socket, sys, time
n, src, hold = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
pre = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
socks, slow = [], []
stop = time.time() + 30
for i in range(n):
    if time.time() > stop:
        break
    s = socket.socket()
    s.settimeout(1)
    try:
        s.bind((src, 0))
        s.connect(("10.200.1.11", 80))
        if i % 3 == 1:
            s.send(pre)
        elif i % 3 == 2:
            s.send(b"GET /public/slow HTTP/1.1\r\nHost: b\r\nX-Slow: ")
            slow.append(s)
    except OSError:
        s.close()
        continue
    socks.append(s)
print(len(socks), flush=True)
end = time.time() + hold
while time.time() < end:
    for s in slow:
        try:
            s.send(b"a")
        except OSError:
            pass
    time.sleep(1)
"#;

fn agent_rss_kib() -> u64 {
    std::fs::read_to_string("/run/portcullis/lab/agent.pid")
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn curl_status(lab: &TestLab, path: &str) -> String {
    lab.sh(
        "x/a",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &format!("http://10.200.1.11{path}"),
        ],
    )
}

#[test]
fn a_world_connection_flood_does_not_starve_pods() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("attack-flood", TOPOLOGY, &policy("/public/.*"), &[]);
    let log = lab.dir.join("backend.log");
    let script = lab.dir.join("backend.py");
    std::fs::write(&script, BACKEND).expect("backend script");
    lab.spawn(
        "x/b",
        &[
            "python3",
            script.to_str().expect("utf-8"),
            log.to_str().expect("utf-8"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || curl_status(&lab, "/public/ok")
            == "200"),
        "x/b is not reachable through the proxy"
    );
    let rss_before = agent_rss_kib();
    let flood = lab.dir.join("flood.py");
    std::fs::write(&flood, FLOOD).expect("flood script");
    for _ in 0..3 {
        lab.spawn(
            "world",
            &[
                "python3",
                flood.to_str().expect("utf-8"),
                "8000",
                "10.201.7.7",
                "25",
            ],
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    let total = 200;
    let mut ok = 0;
    let mut codes = std::collections::BTreeMap::new();
    let start = Instant::now();
    for i in 0..total {
        let code = curl_status(&lab, &format!("/public/{i}"));
        if code == "200" {
            ok += 1;
        }
        *codes.entry(code).or_insert(0) += 1;
    }
    let took = start.elapsed();
    let rss_during = agent_rss_kib();
    // A policy change applies while the flood holds.
    let changed = Instant::now();
    lab.write_policy(&policy("/other/.*"));
    let applied = wait_until(Duration::from_secs(15), || {
        curl_status(&lab, "/public/x") == "403"
    });
    let apply_time = changed.elapsed();
    let metrics = lab.metrics();
    eprintln!(
        "x/a: {ok}/{total} answered 200 in {took:?} ({codes:?}); policy change applied: {applied} after {apply_time:?}; agent RSS {rss_before} KiB -> {rss_during} KiB"
    );
    for line in metrics.lines().filter(|l| {
        l.starts_with("portcullis_proxy_connections_refused")
            || l.starts_with("portcullis_proxy_connection_timeouts")
            || l.starts_with("portcullis_proxy_limited_connections")
    }) {
        eprintln!("{line}");
    }
    assert!(
        ok * 100 >= total * 99,
        "only {ok}/{total} of x/a's requests succeeded during the flood: {codes:?}"
    );
    assert!(applied, "the policy change did not apply during the flood");
    assert!(
        rss_during < 256 * 1024,
        "the agent grew to {rss_during} KiB"
    );
}
