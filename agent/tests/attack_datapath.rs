//! Issue 13: the kernel datapath attacked with crafted packets on the wire
//! (scapy and raw sockets, `tests/support/packets_attack.py`), from lab
//! pods, the node and the world. Root only; one lab at a time
//! (`flock -o /run/portcullis-lab.lock cargo test ... --test attack_datapath`).
//!
//! Each scenario has a control that shows the packets would arrive if
//! the datapath let them (so a check cannot pass because nothing was sent).

#[path = "support/lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use lab::{TestLab, lab_guard, portcullis};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/packets_attack.py"
);

const A4: &str = "10.200.1.10";
const B4: &str = "10.200.1.11";
const C4: &str = "10.200.1.12";
const A6: &str = "fd00:200::1:10";
const B6: &str = "fd00:200::1:11";
const W4: &str = "10.201.9.9";
const W6: &str = "fd00:201::9:9";
/// A world address x/a may not reach.
const W4_DENIED: &str = "10.201.0.1";
const W6_DENIED: &str = "fd00:201::1";

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: b, labels: {pod: b}, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: c, labels: {pod: c}, ips: [10.200.1.12, "fd00:200::1:12"]}
world: {ips: [10.201.9.9, "fd00:201::9:9"]}
"#;

/// x/a: one world host, UDP 5000 and TCP 80 out, TCP 8080 in from it.
/// x/b: deny-all ingress. x/c: no policy.
const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-one-host, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
  - toCIDR: [10.201.9.9/32, "fd00:201::9:9/128"]
    toPorts: [{ports: [{port: "5000", protocol: UDP}, {port: "80", protocol: TCP}]}]
  ingress:
  - fromCIDR: [10.201.9.9/32, "fd00:201::9:9/128"]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-deny-all, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: nobody}}]
"#;

/// How long a listener listens: long enough for the sender's scapy to
/// start (seconds on a loaded machine).
const LISTEN_SECONDS: &str = "6";

/// Runs the helper in `target`; its stdout, trimmed.
fn py(target: &str, args: &[&str]) -> String {
    let mut cmd = vec!["lab", "exec", target, "--", "python3", SCRIPT];
    cmd.extend_from_slice(args);
    let out = portcullis(&cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "packets_attack.py {args:?} in {target} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `listener` (a helper subcommand that prints "ready" and then one
/// result line) in `target` while `send` runs; the result line.
fn while_listening(target: &str, listener: &[&str], send: impl FnOnce()) -> String {
    std::thread::scope(|s| {
        let handle = s.spawn(|| py(target, listener));
        // The listener opens its socket within a few ms of starting.
        std::thread::sleep(Duration::from_millis(700));
        send();
        let out = handle.join().expect("listener thread");
        out.lines().last().unwrap_or_default().to_string()
    })
}

/// Packets holding `marker` that `target` receives (raw socket, `proto`)
/// while `send` runs.
fn received(target: &str, family: &str, proto: &str, marker: &str, send: impl FnOnce()) -> u32 {
    let line = while_listening(
        target,
        &["listen", family, proto, LISTEN_SECONDS, marker],
        send,
    );
    line.strip_prefix("received ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("listener said {line:?}"))
}

/// Frames holding `marker` arriving on the world's interface (before any
/// reassembly) while `send` runs.
fn received_frames(marker: &str, send: impl FnOnce()) -> u32 {
    let line = while_listening("world", &["sniff", LISTEN_SECONDS, marker], send);
    line.strip_prefix("received ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sniffer said {line:?}"))
}

fn up(name: &str) -> TestLab {
    TestLab::up(name, TOPOLOGY, POLICY, &[])
}

#[test]
fn icmp_errors_spoofed_sources_extension_headers_and_fragments() {
    let Some(_guard) = lab_guard() else { return };
    let lab = up("attack-icmp");
    for (fam, a, b, w, w_denied) in [("4", A4, B4, W4, W4_DENIED), ("6", A6, B6, W6, W6_DENIED)] {
        // x/a's one allowed flow (UDP 40000 -> w:5000), then errors about it.
        py("x/a", &["udp-send", a, w, "5000", "16", "1", "flow"]);
        let error = |from: &str, osrc: &str, odst: &str, marker: &str| {
            py(
                from,
                &["icmp-error", osrc, odst, a, w, "40000", "5000", marker],
            );
        };
        let m = format!("ctl{fam}");
        let control = received("x/a", fam, "icmp", &m, || error("world", w, a, &m));
        assert!(
            control > 0,
            "IPv{fam}: the peer's error about x/a's flow must reach x/a"
        );
        let m = format!("p2b{fam}");
        let n = received("x/b", fam, "icmp", &m, || error("x/a", a, b, &m));
        assert_eq!(
            n, 0,
            "IPv{fam}: x/a delivered an ICMP error to deny-all x/b"
        );
        let m = format!("w2b{fam}");
        let n = received("x/b", fam, "icmp", &m, || error("world", w, b, &m));
        assert_eq!(
            n, 0,
            "IPv{fam}: the world delivered an ICMP error to deny-all x/b"
        );
        let m = format!("p2w{fam}");
        let n = received("world", fam, "icmp", &m, || error("x/a", a, w_denied, &m));
        assert_eq!(
            n, 0,
            "IPv{fam}: x/a delivered an ICMP error to a denied world host"
        );

        // Spoofed sources: x/a claims x/b's address on its allowed flow.
        let m = format!("own{fam}");
        let n = received("world", fam, "udp", &m, || {
            py("x/a", &["udp-send", a, w, "5000", "16", "3", &m]);
        });
        assert!(n > 0, "IPv{fam}: control: x/a's own UDP to w:5000 arrives");
        let m = format!("spf{fam}");
        let n = received("world", fam, "udp", &m, || {
            py("x/a", &["udp-send", b, w, "5000", "16", "3", &m]);
        });
        assert_eq!(n, 0, "IPv{fam}: a spoofed source left x/a");

        // Allowed fragmented UDP: a 4000-byte datagram over MTU 1500.
        let line = while_listening("world", &["udp-recv", w, "5000", LISTEN_SECONDS], || {
            py("x/a", &["udp-big", w, "5000", "4000"]);
        });
        assert_eq!(
            line, "sizes 4000",
            "IPv{fam}: a 4000-byte datagram to an allowed port, fragmented"
        );
        let line = while_listening("world", &["udp-recv", w, "6000", LISTEN_SECONDS], || {
            py("x/a", &["udp-big", w, "6000", "4000"]);
        });
        assert_eq!(line, "sizes", "IPv{fam}: fragments to a denied port");
    }

    // IPv6 extension-header chains: judged on the real ports.
    let n = received("world", "6", "udp", "ext5000", || {
        py(
            "x/a",
            &["udp-send", A6, W6, "5000", "16", "3", "ext5000", "2"],
        );
    });
    assert!(n > 0, "hop-by-hop + destination options to an allowed port");
    let n = received("world", "6", "udp", "ext6000", || {
        py(
            "x/a",
            &["udp-send", A6, W6, "6000", "16", "3", "ext6000", "2"],
        );
    });
    assert_eq!(n, 0, "extension headers before a denied port");

    // Fragment tricks, both families.
    for (fam, a, w) in [("4", A4, W4), ("6", A6, W6)] {
        // Overlap: a second offset-0 fragment to a denied port must not
        // get the datagram delivered there.
        let line = while_listening("world", &["udp-recv", w, "6000", LISTEN_SECONDS], || {
            py("x/a", &["overlap-udp", a, w, "5000", "6000", "ovl"]);
        });
        assert_eq!(
            line, "sizes",
            "IPv{fam}: overlapping fragments switched the port"
        );
        // A later fragment whose first fragment never came does not leave
        // x/a (seen on the world's interface before any reassembly); the
        // control shows the sniffer sees x/a's allowed packets.
        let m = format!("ctlfrag{fam}");
        let n = received_frames(&m, || {
            py("x/a", &["udp-send", a, w, "5000", "16", "3", &m]);
        });
        assert!(n > 0, "IPv{fam}: control: the world sees x/a's allowed UDP");
        let m = format!("orphan{fam}");
        let n = received_frames(&m, || {
            py("x/a", &["orphan-frag", a, w, &m]);
        });
        assert_eq!(
            n, 0,
            "IPv{fam}: a later fragment without its first fragment left x/a"
        );
    }
    drop(lab);
}

#[test]
fn syn_on_old_tuples_forged_marks_and_proxy_ports() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = up("attack-syn");
    lab.serve_tcp("world", "80");
    lab.serve_tcp("x/a", "8080");
    lab.serve_tcp("x/b", "80");
    lab.serve_tcp("x/c", "80");

    // Controls: SYNs that policy allows are answered.
    assert_eq!(py("x/a", &["syn", A4, "45100", W4, "80"]), "synack");
    assert_eq!(py("world", &["syn", W4, "45101", A4, "8080"]), "synack");

    // x/a:45000 -> w:80, a real connection, closed.
    let conn = "import socket,sys\ntry:\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((sys.argv[1],int(sys.argv[2])));s.settimeout(2);s.connect((sys.argv[3],int(sys.argv[4])));print(s.recv(3));s.close()\nexcept OSError as e:\n print(repr(e))";
    let out = lab.sh("x/a", &["python3", "-c", conn, A4, "45000", W4, "80"]);
    assert!(out.contains("ok"), "x/a -> w:80 from port 45000: {out}");
    lab.serve_tcp("x/a", "45000");
    // The world opens w:80 -> x/a:45000, where x/a listens: x/a's ingress
    // allows only 8080.
    assert_eq!(
        py("world", &["syn", W4, "80", A4, "45000"]),
        "none",
        "a SYN in the reply direction of an old tuple reached x/a"
    );
    // The other way: w:50000 -> x/a:8080 (allowed), closed; then x/a opens
    // x/a:8080 -> w:50000, which its egress does not allow.
    let out = lab.sh("world", &["python3", "-c", conn, W4, "50000", A4, "8080"]);
    assert!(out.contains("ok"), "w -> x/a:8080 from port 50000: {out}");
    lab.serve_tcp("world", "50000");
    assert_eq!(
        py("x/a", &["syn", A4, "8080", W4, "50000"]),
        "none",
        "x/a opened a connection back on an old tuple its egress denies"
    );

    // Forged marks from the node: deny-all x/b must stay closed.
    assert_eq!(py("node", &["connect-mark", C4, "80", "0"]), "connected");
    for mark in ["0xa00", "0x400"] {
        assert_eq!(
            py("node", &["connect-mark", B4, "80", mark]),
            "failed",
            "a node socket with mark {mark} passed x/b's deny-all ingress"
        );
    }

    // A SYN in two fragments to an allowed port: answered when the first
    // fragment holds the whole TCP header (the second passes behind it),
    // dropped when it holds only 8 bytes (ports, not the flags).
    assert_eq!(
        py("x/a", &["frag-syn", A4, "45102", W4, "80", "24"]),
        "synack",
        "a fragmented SYN to an allowed port"
    );
    assert_eq!(
        py("x/a", &["frag-syn", A4, "45103", W4, "80", "8"]),
        "none",
        "a tiny first fragment passed"
    );
    // The same over IPv6 (fragment header). Linux's own reassembly also
    // refuses a first fragment without the whole TCP header (RFC 7112),
    // so "none" here is the datapath and the kernel together.
    assert_eq!(
        py("x/a", &["frag-syn", A6, "45104", W6, "80", "24"]),
        "synack",
        "a fragmented IPv6 SYN to an allowed port"
    );
    assert_eq!(
        py("x/a", &["frag-syn", A6, "45105", W6, "80", "8"]),
        "none",
        "a tiny IPv6 first fragment passed"
    );

    // The proxy's ports on the node's addresses: x/a's egress allows none.
    for dst in ["169.254.1.1", "10.201.255.254"] {
        for port in ["15001", "15053"] {
            assert_eq!(
                py("x/a", &["connect-mark", dst, port, "0"]),
                "failed",
                "x/a reached {dst}:{port}"
            );
        }
    }
    drop(lab);
}

/// Time from writing `policy` to the start of the first `x/b -> x/c:80`
/// connection attempt that is refused.
fn time_to_deny(lab: &TestLab, policy: &str) -> Duration {
    let written = Instant::now();
    lab.write_policy(policy);
    loop {
        let started = written.elapsed();
        let out = lab.sh("x/b", &["python3", SCRIPT, "connect-mark", C4, "80", "0"]);
        if out == "failed" {
            return started;
        }
        assert!(
            written.elapsed() < Duration::from_secs(30),
            "the change never applied"
        );
    }
}

fn agent_rss_kib() -> u64 {
    let pid = std::fs::read_to_string("/run/portcullis/lab/agent.pid").expect("agent pid");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// x/a's egress allows nothing; x/c's ingress varies.
const FLOOD_BASE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-nothing-out, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
  - toEndpoints: [{matchLabels: {pod: nobody}}]
"#;

const C_CLOSED: &str = r#"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-closed, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: nobody}}]
"#;

#[test]
fn a_denied_packet_flood_does_not_delay_policy_changes() {
    let Some(_guard) = lab_guard() else { return };
    let mut lab = TestLab::up("attack-flood", TOPOLOGY, FLOOD_BASE, &[]);
    lab.serve_tcp("x/c", "80");
    let closed = format!("{FLOOD_BASE}{C_CLOSED}");
    let reopen = |lab: &TestLab| {
        lab.write_policy(FLOOD_BASE);
        assert!(
            lab::wait_until(Duration::from_secs(10), || {
                lab.sh("x/b", &["python3", SCRIPT, "connect-mark", C4, "80", "0"]) == "connected"
            }),
            "x/c reopened"
        );
    };
    let baseline = time_to_deny(&lab, &closed);
    reopen(&lab);
    let rss_before = agent_rss_kib();
    // An observer streams the flow events, as an operator would.
    let mut observer = std::process::Command::new(lab::BIN)
        .args(["observe", "--follow", "--output", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("portcullis observe");
    // x/a floods denied packets (each a drop event) from two senders for
    // 8 s; the change for x/c is written 2 s in.
    let (under_flood, sent) = std::thread::scope(|s| {
        let floods: Vec<_> = (0..2)
            .map(|_| s.spawn(|| py("x/a", &["flood", W4, "9", "8"])))
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let t = time_to_deny(&lab, &closed);
        let sent: Vec<String> = floods
            .into_iter()
            .map(|f| f.join().expect("flood thread"))
            .collect();
        (t, sent.join(", "))
    });
    let _ = observer.kill();
    let _ = observer.wait();
    let rss_after = agent_rss_kib();
    let metrics = lab.metrics();
    for line in metrics
        .lines()
        .filter(|l| l.contains("flow_events_dropped"))
    {
        println!("{line}");
    }
    println!(
        "policy change applied in {baseline:?} (baseline) and {under_flood:?} under a flood ({sent}); agent RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        under_flood < Duration::from_secs(2).max(baseline * 10),
        "under a denied-packet flood the change took {under_flood:?} (baseline {baseline:?})"
    );
    assert!(
        rss_after < 256 * 1024,
        "agent RSS {rss_after} KiB over the 256 MiB bound"
    );
    drop(lab);
}
