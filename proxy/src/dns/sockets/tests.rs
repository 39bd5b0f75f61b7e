//! The shared upstream sockets: the first question delimited and matched,
//! answers routed by proxy id and question, timeouts, case randomization.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::*;
use crate::dns::tests::query_bytes;

#[test]
fn the_first_question_is_delimited_and_matched_without_case() {
    use super::{answers_question, first_question_end};
    let q = query_bytes(7, &[("Www.Example.COM.", RecordType::A)]);
    let end = first_question_end(&q).expect("one uncompressed question");
    assert_eq!(end, q.len());
    let question = [&q[4..6], &q[12..end]].concat();
    let mut answer = query_bytes(7, &[("www.example.com.", RecordType::A)]);
    answer[2] |= 0x80;
    assert!(answers_question(&question, &answer));
    let other = query_bytes(7, &[("www.example.org.", RecordType::A)]);
    assert!(!answers_question(&question, &other));
    let aaaa = query_bytes(7, &[("www.example.com.", RecordType::AAAA)]);
    assert!(!answers_question(&question, &aaaa));
    // A header-only error answer matches by id alone.
    let mut header_only = answer[..12].to_vec();
    header_only[4..6].copy_from_slice(&[0, 0]);
    assert!(answers_question(&question, &header_only));
    // A compression pointer in the first name: not delimited.
    let mut pointer = q[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert_eq!(first_question_end(&pointer), None);
    assert_eq!(first_question_end(&q[..14]), None);
}

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

#[test]
fn randomized_case_changes_only_letters_and_the_answer_must_echo_it() {
    use super::{answers_question, answers_question_exactly, randomize_name_case};
    use std::hash::RandomState;

    let query = query_bytes(
        1,
        &[("abcdefghijklmnopqrstuvwxyz-0123.example.", RecordType::A)],
    );
    let end = first_question_end(&query).expect("one question");
    let keys = RandomState::new();
    let mut differing = 0;
    for seed in 0..32u64 {
        let mut out = query.clone();
        randomize_name_case(
            &mut out[12..end],
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            &keys,
        );
        assert!(out.eq_ignore_ascii_case(&query), "only the case changes");
        assert_eq!(out[end..], query[end..]);
        if out != query {
            differing += 1;
        }
        let forwarded = [&out[4..6], &out[12..end]].concat();
        let mut echo = out.clone();
        echo[2] |= 0x80;
        assert!(answers_question_exactly(&forwarded, &echo));
        // The attacker's guess: the name in lowercase.
        let mut guess = query.clone();
        guess[2] |= 0x80;
        guess[..2].copy_from_slice(&out[..2]);
        assert!(answers_question(&forwarded, &guess));
        if out != query {
            assert!(!answers_question_exactly(&forwarded, &guess));
        }
    }
    assert!(
        differing >= 30,
        "the case is drawn at random: {differing}/32"
    );
    // A header-only answer with records does not match by id alone.
    let forwarded = [&query[4..6], &query[12..end]].concat();
    let mut bare = vec![0u8; 12];
    bare[2] = 0x80;
    assert!(answers_question_exactly(&forwarded, &bare));
    bare[7] = 1;
    assert!(!answers_question_exactly(&forwarded, &bare));
}
