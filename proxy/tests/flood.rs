//! Connection floods against the HTTP proxy (issue 13, finding 12), in
//! process with real sockets: three attacker processes (Python) bound to
//! 127.0.0.2 open 8,000 connections each and hold them (a third idle, a
//! third HTTP/2 preface + SETTINGS then silent, a third a slow HTTP/1 head
//! that grows a byte a second). Meanwhile a client on 127.0.0.3 sends
//! requests, each on a new connection, and the policy is changed once.
//!
//! The proxy judges the peer address (no fixed client), so the attacker and
//! the client are different sources, both `world` to the policy. Before the
//! connection limits, the flood took every descriptor of the process (the
//! test process has the lab's limit, 20,000) and the client's connections
//! were not accepted; the test's bound on the process's resident memory
//! is 256 MiB (the proxy held ~20 KiB per flooding connection).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proxy::{FixedDestination, PolicyHandle, Proxy, ProxyConfig, UpstreamConfig};
use tokio::net::{TcpListener, TcpSocket};

/// Ingress of `server` on 80 from the world with HTTP rules.
fn world_policy(path: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: server-in, namespace: ns1}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - fromEntities: [world]
    toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules:
        http:
        - {{method: GET, path: '{path}'}}
"
    )
}

const FLOOD: &str = r#"
import socket, sys, time
n, src, port, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
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
        s.connect(("127.0.0.1", port))
        if i % 3 == 1:
            s.send(pre)
        elif i % 3 == 2:
            s.send(b"GET /public/slow HTTP/1.1\r\nHost: svc\r\nX-Slow: ")
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

struct Flood(Vec<Child>);

impl Drop for Flood {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One request from 127.0.0.3 on a new connection; its status, or 0.
async fn victim_request(proxy: SocketAddr, path: &str) -> u16 {
    let attempt = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind("127.0.0.3:0".parse().ok()?).ok()?;
        let stream = socket.connect(proxy).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "svc")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_flooding_does_not_starve_another() {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("SKIP: needs python3");
        return;
    }
    let (up, _rec) = spawn_upstream(false).await;
    let handle = PolicyHandle::new(policy(&world_policy("/public/.*")));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let mut config = ProxyConfig::datapath();
    config.http_port = 0;
    config.upstream = UpstreamConfig::plain();
    let proxy = Proxy::serve_with_fixed_destination(
        listener,
        handle.clone(),
        config,
        FixedDestination {
            client: None,
            original_dst: SERVER.parse().expect("literal"),
            upstream: up,
        },
    )
    .expect("proxy starts");
    assert_eq!(victim_request(addr, "/public/before").await, 200);
    let rss_before = resident_kib();

    let port = addr.port().to_string();
    let mut flood = Flood(Vec::new());
    for _ in 0..3 {
        flood.0.push(
            Command::new("python3")
                .args(["-c", FLOOD, "8000", "127.0.0.2", &port, "12"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the flood"),
        );
    }
    // The flood builds up for three seconds; the client then sends its
    // requests while the attackers open and hold their connections.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let mut ok = 0;
    let mut statuses = std::collections::BTreeMap::new();
    let total = 200;
    for i in 0..total {
        let status = victim_request(addr, &format!("/public/{i}")).await;
        *statuses.entry(status).or_insert(0) += 1;
        if status == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let during = start.elapsed();
    // A policy change applies while the flood holds.
    handle.update(policy(&world_policy("/other/.*")));
    let after_change = victim_request(addr, "/public/x").await;
    let rss_during = resident_kib();
    let metrics = proxy.render_metrics();
    let mut opened = Vec::new();
    for child in &mut flood.0 {
        let out = child.stdout.take().expect("piped");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            line
        })
        .await
        .expect("reader");
        opened.push(line.trim().to_string());
    }
    eprintln!("the attackers opened {opened:?} connections");
    drop(flood);
    eprintln!(
        "victim: {ok}/{total} answered 200 in {during:?} ({statuses:?}); after the change: {after_change}; RSS {rss_before} KiB -> {rss_during} KiB"
    );
    for line in metrics
        .lines()
        .filter(|l| l.contains("refused") || l.contains("limited") || l.contains("timeouts"))
    {
        eprintln!("{line}");
    }
    assert!(
        ok * 100 >= total * 99,
        "only {ok}/{total} of the other source's requests succeeded: {statuses:?}"
    );
    assert_eq!(after_change, 403, "the policy change did not apply");
    assert!(
        rss_during < 256 * 1024,
        "the proxy process grew to {rss_during} KiB"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("portcullis_proxy_connections_refused_total{limit=\"Source\"}")
            && !l.ends_with(" 0")),
        "refusals not counted"
    );
    proxy.shutdown().await;
}
