//! Root-only: the DNS proxy's transparent sockets (UDP with
//! `IP_RECVORIGDSTADDR` and replies from the original destination, TCP,
//! IPv4 and IPv6) in a network namespace of the test's own, removed on
//! drop. Prints SKIP and passes when not root. The redirect itself (BPF
//! TPROXY) is covered by the agent's lab end-to-end test.

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proxy::dns::NoLearner;
use proxy::{DnsConfig, DnsProxy, PolicyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

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
        let name = format!("pcdns{test}{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
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

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("literal name"),
        RecordType::A,
    ));
    m.to_vec().expect("query encodes")
}

#[test]
fn transparent_sockets_answer_from_the_original_destination_and_fail_closed() {
    if !is_root() {
        eprintln!("SKIP DNS transparent socket test: needs root (CAP_NET_ADMIN)");
        return;
    }
    let ns = Netns::new("t");
    ns.run(|| async {
        let proxy = DnsProxy::start(
            PolicyHandle::deny_all(),
            DnsConfig::datapath(),
            Arc::new(NoLearner),
        )
        .expect("transparent DNS sockets");
        assert_eq!(proxy.udp_addrs().len(), 2);
        assert_eq!(proxy.tcp_addrs().len(), 2);
        assert!(
            proxy
                .udp_addrs()
                .iter()
                .chain(proxy.tcp_addrs())
                .all(|a| a.port() == 15053)
        );
        // Sent straight to the proxy: the original destination (from
        // IP_RECVORIGDSTADDR) is the proxy itself, which nothing redirects.
        // REFUSED, from that address (the client's socket is connected to
        // it, so an answer from anywhere else would not arrive).
        for (i, target) in ["127.0.0.1:15053", "[::1]:15053"].iter().enumerate() {
            let target: std::net::SocketAddr = target.parse().expect("literal");
            let bind = if target.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let client = UdpSocket::bind(bind).await.expect("client socket");
            client.connect(target).await.expect("connect");
            let q = query(100 + i as u16, "www.Example.com.");
            client.send(&q).await.expect("send");
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(3), client.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{target}: no UDP answer"))
                .expect("recv");
            let m = Message::from_vec(&buf[..n]).expect("answer parses");
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{target}");
            assert_eq!(&buf[12..n], &q[12..], "{target}: question echoed");

            let mut tcp = TcpStream::connect(target).await.expect("tcp connect");
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            tcp.write_all(&framed).await.expect("write");
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.expect("length");
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut answer).await.expect("answer");
            let m = Message::from_vec(&answer).expect("tcp answer parses");
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{target} tcp"
            );
        }
        let metrics = proxy.render_metrics();
        assert!(
            metrics.contains(
                "portcullis_proxy_dns_queries_total{transport=\"Udp\",verdict=\"Denied\"} 2"
            ),
            "{metrics}"
        );
        proxy.shutdown().await;
    });
}
