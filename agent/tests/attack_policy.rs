//! Root-only lab tests of issue 13's policy findings. 9 (TTL stretching):
//! an address learned from a DNS answer must admit no new connection once
//! its TTL is over, while the connections already open keep working;
//! answering the name again admits new connections at once (knot is the
//! DNS server, the lab's responder the world server). 14: an allow that
//! requires mutual authentication admits nothing on the wire. Without root
//! they skip.

#[path = "support/lab.rs"]
mod lab;

use lab::TestLab;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10]}
  - {namespace: x, name: dns, labels: {k8s-app: kube-dns}, ips: [10.200.1.53]}
world: {ips: [10.201.9.10]}
"#;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-dns, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.allowed.example"}]
  - toFQDNs: [{matchPattern: "*.allowed.example"}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
"#;

const ZONE: &str = "$TTL 60
@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 60
@ NS ns.lab.
ns.lab. A 10.201.0.1
short.allowed.example. 2 A 10.201.9.10
";

/// A TCP connection from inside `netns` that got the responder's `ok\n`.
fn connect(netns: &str, dst: &str) -> Option<TcpStream> {
    let path = format!("/run/netns/{netns}");
    let dst: SocketAddr = dst.parse().expect("addr");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(400)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(800))).ok()?;
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).ok()?;
        (&buf == b"ok\n").then_some(s)
    })
    .join()
    .expect("connect thread")
}

fn echo(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn dig(lab: &TestLab, name: &str) -> String {
    lab.sh("x/a", &["dig", "+tries=1", "+time=2", "@10.200.1.53", name])
}

#[test]
fn an_expired_learned_address_admits_no_new_connection_only_open_ones() {
    let Some(_guard) = lab::lab_guard() else {
        return;
    };
    let mut lab = TestLab::up("fqdn-ttl", TOPOLOGY, POLICY, &[]);
    lab.serve_dns_zone("x/dns", ZONE);
    lab.serve_tcp("world", "80");
    std::thread::sleep(Duration::from_millis(500));
    let a = lab.netns("x/a");
    let server = "10.201.9.10:80";

    assert!(connect(&a, server).is_none(), "allowed before any answer");
    let out = dig(&lab, "short.allowed.example");
    assert!(out.contains("10.201.9.10"), "{out}");
    let mut open = connect(&a, server).expect("resolved address refused");

    // The attacker's pattern: reconnect (and use the open connection)
    // every 500 ms, well past the 2 s TTL.
    let start = Instant::now();
    let mut refused_after_ttl = false;
    while start.elapsed() < Duration::from_secs(8) {
        assert!(echo(&mut open), "the connection opened in time was cut");
        let fresh = connect(&a, server);
        if start.elapsed() > Duration::from_secs(4) && fresh.is_none() {
            refused_after_ttl = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        refused_after_ttl,
        "new connections to an address whose 2 s TTL ran out 6 s ago still pass"
    );
    // The connection opened while the name was valid keeps working.
    for _ in 0..3 {
        assert!(echo(&mut open), "open connection cut after the TTL");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Answering the name again admits new connections at once (the answer
    // is held until the kernel has it).
    let out = dig(&lab, "short.allowed.example");
    assert!(out.contains("10.201.9.10"), "{out}");
    assert!(
        connect(&a, server).is_some(),
        "a fresh answer did not admit a new connection"
    );
    drop(open);
}

const TWO_PODS: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10]}
  - {namespace: x, name: c, labels: {pod: c}, ips: [10.200.1.12]}
"#;

const C_FROM_A: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-from-a, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: a}}]
"#;

#[test]
fn an_allow_that_requires_mutual_authentication_admits_nothing() {
    let Some(_guard) = lab::lab_guard() else {
        return;
    };
    let mut lab = TestLab::up("auth-required", TWO_PODS, C_FROM_A, &[]);
    lab.serve_tcp("x/c", "80");
    let a = lab.netns("x/a");
    assert!(
        connect(&a, "10.200.1.12:80").is_some(),
        "the plain allow must pass"
    );
    lab.write_policy(&C_FROM_A.replace(
        "  - fromEndpoints: [{matchLabels: {pod: a}}]\n",
        "  - fromEndpoints: [{matchLabels: {pod: a}}]\n    authentication: {mode: required}\n",
    ));
    assert!(
        lab::wait_until(Duration::from_secs(5), || connect(&a, "10.200.1.12:80")
            .is_none()),
        "an allow with authentication required still admits unauthenticated traffic"
    );
}
