//! Root-only: the transparent listeners and marked, client-addressed
//! upstream connections, in a network namespace of the test's own
//! (removed on drop). Prints SKIP and passes when not root.

mod common;

use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use common::*;
use http::StatusCode;
use proxy::{FixedDestination, PolicyHandle, Proxy, ProxyConfig, UpstreamConfig};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(test: &str) -> Self {
        let name = format!("pcproxy{test}{}", std::process::id());
        // A leftover of an interrupted run, if any.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.0];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs `f` on a current-thread runtime in a thread inside the
    /// namespace.
    fn run<F: std::future::Future<Output = ()>>(&self, f: impl FnOnce() -> F + Send) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("open netns");
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f());
            })
            .join()
            .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn transparent_listeners_fail_closed_for_flows_nobody_redirected() {
    if !is_root() {
        eprintln!("SKIP transparent listener test: needs root (CAP_NET_ADMIN)");
        return;
    }
    let ns = Netns::new("l");
    ns.run(|| async {
        let handle = PolicyHandle::new(policy(&server_policy(RULES)));
        let proxy = Proxy::start(handle, ProxyConfig::datapath()).expect("transparent listeners");
        let addrs = proxy.local_addrs().to_vec();
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| a.port() == 15001));
        // A direct connection: its original destination is the proxy
        // itself, which no policy redirects to. Denied, never forwarded.
        for target in ["127.0.0.1:15001", "[::1]:15001"] {
            let (mut c, _t) = h1_client(target.parse().expect("literal")).await;
            let got = h1_send(&mut c, get("/public/x")).await;
            assert_eq!(got.status, StatusCode::FORBIDDEN, "{target}");
        }
        proxy.shutdown().await;
    });
}

#[test]
fn upstream_connections_are_marked_and_come_from_the_client_address() {
    if !is_root() {
        eprintln!("SKIP upstream source test: needs root (CAP_NET_ADMIN)");
        return;
    }
    let ns = Netns::new("u");
    // The server's address, and the client's routed locally so replies to
    // the transparently bound upstream socket come back.
    ns.ip(&["addr", "add", "10.0.1.1/32", "dev", "lo"]);
    ns.ip(&["route", "add", "local", "10.0.1.2/32", "dev", "lo"]);
    ns.run(|| async {
        let (up, rec) = spawn_upstream_on("10.0.1.1:80".parse().expect("literal"), false).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = ProxyConfig::datapath();
        config.detect_timeout = Duration::from_secs(2);
        assert_eq!(config.upstream.mark, UpstreamConfig::datapath().mark);
        let proxy = Proxy::serve_with_fixed_destination(
            listener,
            PolicyHandle::new(policy(&server_policy(RULES))),
            config,
            FixedDestination {
                client: Some(CLIENT.parse().expect("literal")),
                original_dst: SERVER.parse().expect("literal"),
                upstream: up,
            },
        )
        .expect("proxy");
        let (mut c, _t) = h1_client(addr).await;
        let got = h1_send(&mut c, get("/public/x")).await;
        assert_eq!(got.status, StatusCode::OK, "{got:?}");
        let seen = rec.all();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].peer.ip().to_string(),
            "10.0.1.2",
            "the upstream sees the client's address"
        );
        proxy.shutdown().await;
    });
}
