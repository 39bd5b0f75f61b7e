//! The shared upstream sockets: answers routed by proxy id and question,
//! timeouts.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::*;
use crate::dns::tests::query_bytes;

/// A UDP "server" on loopback and the addresses of a query to it from
/// 127.0.0.1:5353.
async fn loopback_server() -> (tokio::net::UdpSocket, crate::conn::ConnAddrs) {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind server");
    let server_addr = server.local_addr().expect("server addr");
    let addrs = crate::conn::ConnAddrs {
        client: "127.0.0.1:5353".parse().expect("addr"),
        original_dst: server_addr,
        upstream: server_addr,
    };
    (server, addrs)
}

#[tokio::test]
async fn a_shared_upstream_socket_routes_answers_by_proxy_id_and_question() {
    use super::UdpUpstreams;
    use crate::upstream::UpstreamConfig;

    let (server, addrs) = loopback_server().await;
    // Two queries with the same client id; the server first sends a
    // datagram with the first query's proxy id but another question, then
    // answers in reverse order.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let mut got = Vec::new();
        let mut peer = None;
        while got.len() < 2 {
            let (n, from) = server.recv_from(&mut buf).await.expect("recv");
            got.push(buf[..n].to_vec());
            peer = Some(from);
        }
        let peer = peer.expect("peer");
        assert_ne!(got[0][..2], got[1][..2], "proxy ids are unique in flight");
        let mut bogus = query_bytes(0, &[("evil.example.", RecordType::A)]);
        bogus[..2].copy_from_slice(&got[0][..2]);
        bogus[2] |= 0x80;
        server.send_to(&bogus, peer).await.expect("send");
        for q in got.iter().rev() {
            let mut answer = q.clone();
            answer[2] |= 0x80;
            server.send_to(&answer, peer).await.expect("send");
        }
    });
    let upstreams = UdpUpstreams::default();
    let cfg = UpstreamConfig::plain();
    let node = ProxyPolicy::empty();
    let a = query_bytes(42, &[("a.example.", RecordType::A)]);
    let b = query_bytes(42, &[("b.example.", RecordType::A)]);
    let (ra, rb) = tokio::join!(
        upstreams.exchange(&cfg, &node, addrs, &a, Duration::from_secs(5)),
        upstreams.exchange(&cfg, &node, addrs, &b, Duration::from_secs(5))
    );
    for (query, answer) in [(a, ra), (b, rb)] {
        let mut want = query.clone();
        want[2] |= 0x80;
        assert_eq!(answer.expect("answered"), want);
    }
}

#[tokio::test]
async fn a_query_the_server_never_answers_fails_after_its_timeout() {
    use super::UdpUpstreams;
    use crate::upstream::UpstreamConfig;

    // A server that reads and never answers.
    let (server, addrs) = loopback_server().await;
    let upstreams = UdpUpstreams::default();
    let cfg = UpstreamConfig::plain();
    let q = query_bytes(7, &[("slow.example.", RecordType::A)]);
    let started = std::time::Instant::now();
    let err = upstreams
        .exchange(
            &cfg,
            &ProxyPolicy::empty(),
            addrs,
            &q,
            Duration::from_millis(200),
        )
        .await
        .expect_err("no answer");
    let waited = started.elapsed();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        waited >= Duration::from_millis(200),
        "failed early: {waited:?}"
    );
    // The server did get the query, under a proxy id.
    let mut buf = [0u8; 512];
    let (n, _) = server
        .try_recv_from(&mut buf)
        .expect("the query reached the server");
    assert_eq!(&buf[2..n], &q[2..]);
}
