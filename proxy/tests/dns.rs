//! The DNS proxy in process: a fixed original destination, a tiny
//! authoritative server written with hickory-proto on loopback (UDP and
//! TCP on one port), real sockets for clients, and a recording learner.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::dns::{DenyResponse, DnsMetrics, DnsVerdict, TransportLabel};
use proxy::{
    DnsConfig, DnsProxy, FixedDestination, LearnedNames, NameLearner, PolicyHandle, ProxyPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: client, labels: {app: client}, ip: 10.0.1.2}
- {namespace: ns1, name: flooder, labels: {app: client}, ip: 127.0.0.2}
- {namespace: ns1, name: bystander, labels: {app: client}, ip: 127.0.0.3}
";

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-dns, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: '53', protocol: ANY}]
      rules: {dns: [{matchPattern: '*.example.com'}, {matchName: exact.test}]}
";

fn policy() -> PolicyHandle {
    PolicyHandle::new(proxy_policy())
}

fn proxy_policy() -> ProxyPolicy {
    let set = load_str(POLICY, "p.yaml").expect("test policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

/// The same policy with the client in audit mode (its namespace's
/// `policy.cilium.io/audit-mode`, or the node's `--policy-audit-mode`).
fn audited_client_policy() -> PolicyHandle {
    let mut p = proxy_policy();
    p.set_audited(|name| name == "ns1/client");
    PolicyHandle::new(p)
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("literal DNS name")
}

// ---- the authoritative server ----

/// What the test server received, by question name as sent.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    /// The names the server was asked, lowercased: the proxy sends them
    /// in a random letter case (DNS 0x20, `randomize_case`).
    fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("seen lock")
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect()
    }
}

fn record(owner: &Name, ttl: u32, data: RData) -> Record {
    Record::from_rdata(owner.clone(), ttl, data)
}

/// The zone. `None`: do not answer at all.
fn answer(query: &Message) -> Option<Message> {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    for q in &query.queries {
        m.add_query(q.clone());
        let owner = q.name();
        match owner.to_lowercase().to_ascii().as_str() {
            "slow.example.com." => return None,
            "nothing.example.com." => {
                m.metadata.response_code = ResponseCode::NXDomain;
            }
            "www.example.com." => {
                let edge = name("edge.cdn.test.");
                m.add_answer(record(owner, 300, RData::CNAME(CNAME(edge.clone()))));
                m.add_answer(record(&edge, 30, RData::A(A(Ipv4Addr::new(10, 201, 0, 7)))));
                m.add_answer(record(
                    &edge,
                    60,
                    RData::AAAA(AAAA("fd00:201::7".parse().expect("literal"))),
                ));
            }
            "many.example.com." => {
                for i in 0..60 {
                    m.add_answer(record(owner, 5, RData::A(A(Ipv4Addr::new(10, 201, 1, i)))));
                }
            }
            _ => {
                m.add_answer(record(owner, 60, RData::A(A(Ipv4Addr::new(10, 201, 9, 9)))));
            }
        }
    }
    Some(m)
}

fn serve_bytes(seen: &Seen, bytes: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    seen.0
        .lock()
        .expect("seen lock")
        .extend(query.queries.iter().map(|q| q.name().to_ascii()));
    answer(&query).map(|m| m.to_vec().expect("answer encodes"))
}

/// UDP and TCP on the same loopback port.
async fn spawn_server() -> (SocketAddr, Seen) {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("udp addr");
    // Room for the bursts of the concurrency tests on a loaded machine.
    let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(4 << 20);
    let seen = Seen::default();
    let udp_seen = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                return;
            };
            if let Some(out) = serve_bytes(&udp_seen, &buf[..n]) {
                let _ = udp.send_to(&out, peer).await;
            }
        }
    });
    let tcp_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = tcp.accept().await else {
                return;
            };
            let seen = tcp_seen.clone();
            tokio::spawn(async move {
                while let Ok(q) = read_frame(&mut stream).await {
                    if let Some(out) = serve_bytes(&seen, &q) {
                        let _ = stream.write_all(&frame(&out)).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

// ---- the learner ----

#[derive(Default)]
struct RecordingLearner {
    /// Ack after this long; `None`: never ack (the sender is kept).
    delay: Option<Duration>,
    updates: Mutex<Vec<LearnedNames>>,
    acked_at: Arc<Mutex<Vec<Instant>>>,
    never: Mutex<Vec<oneshot::Sender<()>>>,
}

impl RecordingLearner {
    fn acking_after(delay: Duration) -> Arc<Self> {
        Arc::new(RecordingLearner {
            delay: Some(delay),
            ..Default::default()
        })
    }

    fn never_acking() -> Arc<Self> {
        Arc::new(RecordingLearner::default())
    }

    fn updates(&self) -> Vec<LearnedNames> {
        self.updates.lock().expect("updates lock").clone()
    }
}

impl NameLearner for RecordingLearner {
    fn learn(&self, update: LearnedNames) -> oneshot::Receiver<()> {
        self.updates.lock().expect("updates lock").push(update);
        let (tx, rx) = oneshot::channel();
        match self.delay {
            Some(delay) => {
                let acked_at = self.acked_at.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    acked_at.lock().expect("acked lock").push(Instant::now());
                    let _ = tx.send(());
                });
            }
            None => self.never.lock().expect("never lock").push(tx),
        }
        rx
    }
}

// ---- the proxy ----

const CLIENT: &str = "10.0.1.2:40000";
const ORIGINAL_DST: &str = "10.201.0.53:53";

struct Harness {
    proxy: DnsProxy,
    udp: SocketAddr,
    tcp: SocketAddr,
    seen: Seen,
    learner: Arc<RecordingLearner>,
    metrics: Arc<DnsMetrics>,
}

/// Upstream answers in the tests come from a local fake server; the
/// timeout leaves room for a loaded CI machine.
fn test_config() -> DnsConfig {
    DnsConfig {
        upstream_timeout: Duration::from_millis(1500),
        ..DnsConfig::plain()
    }
}

async fn harness_with(config: DnsConfig, learner: Arc<RecordingLearner>) -> Harness {
    let (server, seen) = spawn_server().await;
    harness_to(config, learner, server, seen).await
}

async fn harness_to(
    config: DnsConfig,
    learner: Arc<RecordingLearner>,
    upstream: SocketAddr,
    seen: Seen,
) -> Harness {
    harness_under(policy(), config, learner, upstream, seen).await
}

/// The harness with the client in audit mode.
async fn audited_harness(learner: Arc<RecordingLearner>) -> Harness {
    let (server, seen) = spawn_server().await;
    harness_under(
        audited_client_policy(),
        test_config(),
        learner,
        server,
        seen,
    )
    .await
}

async fn harness_under(
    policy: PolicyHandle,
    config: DnsConfig,
    learner: Arc<RecordingLearner>,
    upstream: SocketAddr,
    seen: Seen,
) -> Harness {
    let udp = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind proxy udp");
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy tcp");
    let dest = FixedDestination {
        client: Some(CLIENT.parse().expect("literal")),
        original_dst: ORIGINAL_DST.parse().expect("literal"),
        upstream,
    };
    let proxy =
        DnsProxy::serve_with_fixed_destination(udp, tcp, policy, config, learner.clone(), dest)
            .expect("proxy starts");
    Harness {
        udp: proxy.udp_addrs()[0],
        tcp: proxy.tcp_addrs()[0],
        metrics: proxy.metrics(),
        proxy,
        seen,
        learner,
    }
}

async fn harness() -> Harness {
    harness_with(
        test_config(),
        RecordingLearner::acking_after(Duration::ZERO),
    )
    .await
}

fn query(id: u16, names: &[&str]) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    for n in names {
        m.add_query(Query::query(name(n), RecordType::A));
    }
    m.to_vec().expect("query encodes")
}

async fn udp_ask(proxy: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
    let start = Instant::now();
    socket.send_to(bytes, proxy).await.expect("send query");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    buf.truncate(n);
    (buf, start.elapsed())
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut out).await?;
    Ok(out)
}

fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("the proxy's answer parses")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn udp_count(h: &Harness, verdict: DnsVerdict) -> u64 {
    h.metrics.queries(TransportLabel::Udp, verdict)
}

// ---- tests ----

#[tokio::test]
async fn allowed_query_is_forwarded_and_learned() {
    let h = harness().await;
    let (bytes, _) = udp_ask(h.udp, &query(1, &["www.example.com."])).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.id, 1);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 3);
    assert_eq!(h.seen.names(), vec!["www.example.com."]);
    let updates = h.learner.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].source, ip("10.0.1.2"));
    assert_eq!(updates[0].name, "www.example.com.");
    assert_eq!(
        updates[0].ips,
        vec![
            (ip("10.201.0.7"), Duration::from_secs(30)),
            (ip("fd00:201::7"), Duration::from_secs(60)),
        ],
        "TTL is the minimum along the CNAME chain"
    );
    assert_eq!(udp_count(&h, DnsVerdict::Allowed), 1);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn denied_query_is_refused_and_not_forwarded() {
    let h = harness().await;
    let q = query(2, &["Evil.Test."]);
    let (bytes, _) = udp_ask(h.udp, &q).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.id, 2);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    assert_eq!(
        &bytes[12..],
        &q[12..],
        "the question is echoed byte for byte"
    );
    assert!(h.seen.names().is_empty(), "a denied query is not forwarded");
    assert!(h.learner.updates().is_empty());
    assert_eq!(udp_count(&h, DnsVerdict::Denied), 1);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn nxdomain_can_be_the_denial() {
    let config = DnsConfig {
        deny_response: DenyResponse::NxDomain,
        ..test_config()
    };
    let h = harness_with(config, RecordingLearner::acking_after(Duration::ZERO)).await;
    let (bytes, _) = udp_ask(h.udp, &query(3, &["evil.test."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NXDomain);
    assert!(h.seen.names().is_empty());
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_timeout_is_servfail() {
    let h = harness().await;
    let (bytes, elapsed) = udp_ask(h.udp, &query(4, &["slow.example.com."])).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries[0].name().to_ascii(), "slow.example.com.");
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert_eq!(udp_count(&h, DnsVerdict::UpstreamError), 1);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_servfail_over_both_transports() {
    // A port nobody listens on (bound, then released).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let h = harness_to(
        test_config(),
        RecordingLearner::acking_after(Duration::ZERO),
        dead,
        Seen::default(),
    )
    .await;
    let (bytes, _) = udp_ask(h.udp, &query(5, &["a.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::ServFail);
    let mut tcp = TcpStream::connect(h.tcp).await.expect("connect");
    tcp.write_all(&frame(&query(6, &["a.example.com."])))
        .await
        .expect("write");
    let answer = read_frame(&mut tcp).await.expect("framed answer");
    assert_eq!(
        parse(&answer).metadata.response_code,
        ResponseCode::ServFail
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn mixed_case_is_matched_and_echoed() {
    let h = harness().await;
    let q = query(7, &["WwW.ExAmPlE.CoM."]);
    let (bytes, _) = udp_ask(h.udp, &q).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.ExAmPlE.CoM.");
    // Forwarded in a random case (0x20); the client gets its own back.
    assert_eq!(h.seen.names(), vec!["www.example.com."]);
    assert_eq!(h.learner.updates()[0].name, "www.example.com.");
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn min_ttl_and_the_address_cap_apply() {
    let config = DnsConfig {
        min_ttl: Duration::from_secs(120),
        max_ips_per_name: 10,
        ..test_config()
    };
    let h = harness_with(config, RecordingLearner::acking_after(Duration::ZERO)).await;
    let (bytes, _) = udp_ask(h.udp, &query(8, &["many.example.com."])).await;
    assert_eq!(
        parse(&bytes).answers.len(),
        60,
        "the answer itself is unchanged"
    );
    let updates = h.learner.updates();
    assert_eq!(updates[0].ips.len(), 10);
    assert!(
        updates[0]
            .ips
            .iter()
            .all(|(_, ttl)| *ttl == Duration::from_secs(120))
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn the_answer_waits_for_the_learner() {
    let learner = RecordingLearner::acking_after(Duration::from_millis(50));
    let h = harness_with(test_config(), learner.clone()).await;
    let (bytes, elapsed) = udp_ask(h.udp, &query(9, &["www.example.com."])).await;
    let received = Instant::now();
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NoError);
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    let acked = learner.acked_at.lock().expect("acked lock").clone();
    assert_eq!(acked.len(), 1);
    assert!(
        acked[0] <= received,
        "acknowledged before the answer arrived"
    );
    assert_eq!(h.metrics.learn_timeouts(), 0);
    assert!(
        h.proxy
            .render_metrics()
            .contains("portcullis_proxy_dns_learn_hold_seconds_count 1")
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn a_learner_timeout_releases_the_answer_and_counts() {
    let config = DnsConfig {
        learn_timeout: Duration::from_millis(100),
        ..test_config()
    };
    let h = harness_with(config, RecordingLearner::never_acking()).await;
    let (bytes, elapsed) = udp_ask(h.udp, &query(10, &["www.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NoError);
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(h.metrics.learn_timeouts(), 1);
    assert!(
        h.proxy
            .render_metrics()
            .contains("portcullis_proxy_dns_learn_timeouts_total 1")
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn nothing_is_learned_from_nxdomain() {
    let h = harness().await;
    let (bytes, _) = udp_ask(h.udp, &query(11, &["nothing.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NXDomain);
    assert!(h.learner.updates().is_empty());
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn an_audited_clients_denied_name_is_forwarded_and_learned_as_audit() {
    let learner = RecordingLearner::acking_after(Duration::from_millis(20));
    let h = audited_harness(learner.clone()).await;
    let (bytes, elapsed) = udp_ask(h.udp, &query(12, &["evil.test."])).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(h.seen.names(), vec!["evil.test."]);
    // Learned as an allowed answer is, and held until the learner acks.
    assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
    let updates = learner.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].source, ip("10.0.1.2"));
    assert_eq!(updates[0].name, "evil.test.");
    assert_eq!(
        updates[0].ips,
        vec![(ip("10.201.9.9"), Duration::from_secs(60))]
    );
    assert_eq!(udp_count(&h, DnsVerdict::Audit), 1);
    assert_eq!(udp_count(&h, DnsVerdict::Denied), 0);
    // What the rules allow is still plainly allowed; TCP alike.
    let (bytes, _) = udp_ask(h.udp, &query(13, &["a.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NoError);
    assert_eq!(udp_count(&h, DnsVerdict::Allowed), 1);
    let mut tcp = TcpStream::connect(h.tcp).await.expect("connect");
    tcp.write_all(&frame(&query(14, &["other.test."])))
        .await
        .expect("write");
    let answer = parse(&read_frame(&mut tcp).await.expect("framed answer"));
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(h.metrics.queries(TransportLabel::Tcp, DnsVerdict::Audit), 1);
    assert_eq!(learner.updates().len(), 3);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn tcp_framing_pipelined_and_split() {
    let h = harness().await;
    let mut tcp = TcpStream::connect(h.tcp).await.expect("connect");
    // Two queries in one write.
    let mut both = frame(&query(20, &["a.example.com."]));
    both.extend(frame(&query(21, &["evil.test."])));
    tcp.write_all(&both).await.expect("write");
    let first = parse(&read_frame(&mut tcp).await.expect("first answer"));
    let second = parse(&read_frame(&mut tcp).await.expect("second answer"));
    assert_eq!(
        (first.metadata.id, first.metadata.response_code),
        (20, ResponseCode::NoError)
    );
    assert_eq!(
        (second.metadata.id, second.metadata.response_code),
        (21, ResponseCode::Refused)
    );
    // One query split across writes, the length bytes apart.
    let framed = frame(&query(22, &["exact.test."]));
    for part in [&framed[..1], &framed[1..5], &framed[5..]] {
        tcp.write_all(part).await.expect("write part");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = parse(&read_frame(&mut tcp).await.expect("third answer"));
    assert_eq!(
        (third.metadata.id, third.metadata.response_code),
        (22, ResponseCode::NoError)
    );
    assert_eq!(h.seen.names(), vec!["a.example.com.", "exact.test."]);
    assert_eq!(
        h.metrics.queries(TransportLabel::Tcp, DnsVerdict::Allowed),
        2
    );
    assert_eq!(
        h.metrics.queries(TransportLabel::Tcp, DnsVerdict::Denied),
        1
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn every_question_must_be_allowed() {
    let h = harness().await;
    let (bytes, _) = udp_ask(h.udp, &query(30, &["a.example.com.", "exact.test."])).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let mut learned: Vec<String> = h.learner.updates().into_iter().map(|u| u.name).collect();
    learned.sort();
    assert_eq!(learned, vec!["a.example.com.", "exact.test."]);

    let q = query(31, &["b.example.com.", "evil.test."]);
    let (bytes, _) = udp_ask(h.udp, &q).await;
    let m = parse(&bytes);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(m.queries.len(), 2);
    assert_eq!(&bytes[12..], &q[12..]);
    assert_eq!(h.seen.names(), vec!["a.example.com.", "exact.test."]);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_responses_are_dropped() {
    let h = harness().await;
    let mut truncated = query(40, &["a.example.com."]);
    truncated.truncate(20);
    let (bytes, _) = udp_ask(h.udp, &truncated).await;
    let m = parse(&bytes);
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (40, ResponseCode::FormErr)
    );
    assert_eq!(udp_count(&h, DnsVerdict::Invalid), 1);

    // A response sent to the proxy is not answered.
    let mut response = query(41, &["a.example.com."]);
    response[2] |= 0x80;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
    socket.send_to(&response, h.udp).await.expect("send");
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await;
    assert!(got.is_err(), "no answer to a response");
    assert!(h.seen.names().is_empty());
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_query() {
    let (server, seen) = spawn_server().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let handle = policy();
    let proxy = DnsProxy::serve_with_fixed_destination(
        udp,
        tcp,
        handle.clone(),
        test_config(),
        Arc::new(proxy::dns::NoLearner),
        FixedDestination {
            client: Some(CLIENT.parse().expect("literal")),
            original_dst: ORIGINAL_DST.parse().expect("literal"),
            upstream: server,
        },
    )
    .expect("proxy starts");
    let addr = proxy.udp_addrs()[0];
    let (bytes, _) = udp_ask(addr, &query(50, &["a.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::NoError);
    handle.update(ProxyPolicy::empty());
    let (bytes, _) = udp_ask(addr, &query(51, &["a.example.com."])).await;
    assert_eq!(parse(&bytes).metadata.response_code, ResponseCode::Refused);
    assert_eq!(seen.names(), vec!["a.example.com."]);
    proxy.shutdown().await;
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The process-wide subscriber (the only one in this test binary): a
// subscriber set for this thread alone lost the events whenever another
// test emitted them first from its own thread (tracing caches each
// callsite's interest process-wide). Other tests' lines land in the buffer
// too; this test keeps the lines of its own two names.
#[tokio::test]
async fn every_query_is_logged_as_a_flow() {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only global subscriber of this test binary");

    let learner = RecordingLearner::acking_after(Duration::from_millis(20));
    let h = harness_with(test_config(), learner).await;
    udp_ask(h.udp, &query(60, &["WWW.example.com."])).await;
    udp_ask(h.udp, &query(61, &["logged-and-denied.test."])).await;
    h.proxy.shutdown().await;
    let audited = audited_harness(RecordingLearner::acking_after(Duration::from_millis(20))).await;
    udp_ask(audited.udp, &query(62, &["logged-as-audit.test."])).await;
    audited.proxy.shutdown().await;

    let text = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("utf-8 log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "portcullis::proxy::access")
        .filter(|v| {
            let q = &v["fields"]["query"];
            q == "WWW.example.com."
                || q == "logged-and-denied.test."
                || q == "logged-as-audit.test."
        })
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let allowed = &lines[0]["fields"];
    assert_eq!(allowed["protocol"], "dns");
    assert_eq!(allowed["transport"], "udp");
    assert_eq!(allowed["src"], CLIENT);
    assert_eq!(allowed["dst"], ORIGINAL_DST);
    assert_eq!(allowed["query"], "WWW.example.com.");
    assert_eq!(allowed["qtype"], "A");
    assert_eq!(allowed["rcode"], "NOERROR");
    assert_eq!(allowed["answers"], "edge.cdn.test.,10.201.0.7,fd00:201::7");
    assert_eq!(allowed["verdict"], "Allowed");
    assert!(allowed["latency_us"].as_u64().is_some_and(|l| l >= 20_000));
    assert!(allowed["hold_us"].as_u64().is_some_and(|h| h >= 20_000));
    assert!(
        allowed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("client-dns") && r.contains("rules.dns[0]")),
        "{allowed}"
    );
    let denied = &lines[1]["fields"];
    assert_eq!(denied["verdict"], "Denied");
    assert_eq!(denied["rcode"], "REFUSED");
    assert_eq!(denied["answers"], "");
    assert_eq!(denied["hold_us"], 0);
    assert!(
        denied["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no DNS rule matches logged-and-denied.test.")),
        "{denied}"
    );
    // Forwarded, answered and held for the learner as an allowed query
    // is; the reason names the side and the policy that would deny it.
    let audit = &lines[2]["fields"];
    assert_eq!(audit["verdict"], "Audit");
    assert_eq!(audit["rcode"], "NOERROR");
    assert_eq!(audit["answers"], "10.201.9.9");
    assert!(audit["hold_us"].as_u64().is_some_and(|h| h >= 20_000));
    assert_eq!(
        audit["reason"],
        "ns1/client egress: audit: no DNS rule matches logged-as-audit.test.; \
         CiliumNetworkPolicy ns1/client-dns spec.egress[0].rules.dns[0]; \
         CiliumNetworkPolicy ns1/client-dns spec.egress[0].rules.dns[1]"
    );
}

/// Many clients at once on one thread (the agent's default): every query
/// gets its own answer (id and question), allowed, denied and held ones
/// mixed in the same batches.
#[tokio::test]
async fn concurrent_queries_from_many_clients_each_get_their_answer() {
    many_clients_at_once().await;
}

/// The same on a two-worker runtime (the agent's `--dns-threads 2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_on_two_threads_each_get_their_answer() {
    many_clients_at_once().await;
}

async fn many_clients_at_once() {
    let h = harness_with(
        test_config(),
        RecordingLearner::acking_after(Duration::from_millis(2)),
    )
    .await;
    let mut tasks = Vec::new();
    for c in 0..32u16 {
        let proxy = h.udp;
        tasks.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
            // Every client sends its queries back to back, then reads.
            let mut want = std::collections::BTreeMap::new();
            for i in 0..16u16 {
                let id = c * 100 + i;
                let (name, allowed) = match i % 4 {
                    0 => (format!("host{c}-{i}.example.com."), true),
                    1 => (format!("Host{c}-{i}.Example.COM."), true),
                    2 => (format!("host{c}-{i}.denied.test."), false),
                    _ => ("exact.test.".to_string(), true),
                };
                socket
                    .send_to(&query(id, &[&name]), proxy)
                    .await
                    .expect("send");
                want.insert(id, (name, allowed));
            }
            let mut buf = vec![0u8; 65535];
            while !want.is_empty() {
                let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("not answered within 5 s: {want:?}"))
                    .expect("recv");
                let m = parse(&buf[..n]);
                let (name, allowed) = want
                    .remove(&m.metadata.id)
                    .unwrap_or_else(|| panic!("an answer to no query of this client: {m:?}"));
                assert_eq!(m.queries[0].name().to_ascii(), name, "the question as sent");
                if allowed {
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
                    assert_eq!(m.answers.len(), 1, "{name}");
                } else {
                    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(udp_count(&h, DnsVerdict::Allowed), 32 * 12);
    assert_eq!(udp_count(&h, DnsVerdict::Denied), 32 * 4);
    assert_eq!(h.learner.updates().len(), 32 * 12);
    h.proxy.shutdown().await;
}

// ---- limits: one client cannot take what every other client needs ----

/// A proxy whose clients are the peers themselves (loopback addresses
/// that are pods of the topology: the flooder 127.0.0.2 and the
/// bystander 127.0.0.3).
async fn harness_by_peer() -> Harness {
    let (upstream, seen) = spawn_server().await;
    let udp = UdpSocket::bind("0.0.0.0:0").await.expect("bind proxy udp");
    let tcp = TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind proxy tcp");
    let dest = FixedDestination {
        client: None,
        original_dst: ORIGINAL_DST.parse().expect("literal"),
        upstream,
    };
    let learner = RecordingLearner::acking_after(Duration::ZERO);
    let proxy = DnsProxy::serve_with_fixed_destination(
        udp,
        tcp,
        policy(),
        test_config(),
        learner.clone(),
        dest,
    )
    .expect("proxy starts");
    let port = |a: SocketAddr| SocketAddr::from(([127, 0, 0, 1], a.port()));
    Harness {
        udp: port(proxy.udp_addrs()[0]),
        tcp: port(proxy.tcp_addrs()[0]),
        metrics: proxy.metrics(),
        proxy,
        seen,
        learner,
    }
}

/// The value of `portcullis_proxy_dns_limit_refusals_total{limit=...}`.
fn dns_limit_refusals(h: &Harness, limit: &str) -> u64 {
    let text = h.proxy.render_metrics();
    let prefix = format!("portcullis_proxy_dns_limit_refusals_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("a counter value"))
        .unwrap_or(0)
}

/// Whether a UDP query from `src` is answered NOERROR within 3 s.
async fn udp_answered_from(src: &str, proxy: SocketAddr, id: u16) -> bool {
    let socket = UdpSocket::bind(format!("{src}:0"))
        .await
        .expect("client socket");
    socket
        .send_to(&query(id, &["a.example.com."]), proxy)
        .await
        .expect("send query");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            let m = parse(&buf[..n]);
            m.metadata.id == id && m.metadata.response_code == ResponseCode::NoError
        }
        _ => false,
    }
}

/// A TCP connection to the proxy from `src`.
async fn tcp_from(src: &str, proxy: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{src}:0").parse().expect("literal"))?;
    socket.connect(proxy).await
}

/// Whether a TCP query from `src` is answered NOERROR within 3 s.
async fn tcp_answered_from(src: &str, proxy: SocketAddr, id: u16) -> bool {
    let Ok(mut c) = tcp_from(src, proxy).await else {
        return false;
    };
    if c.write_all(&frame(&query(id, &["a.example.com."])))
        .await
        .is_err()
    {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(3), read_frame(&mut c)).await {
        Ok(Ok(bytes)) => {
            let m = parse(&bytes);
            m.metadata.id == id && m.metadata.response_code == ResponseCode::NoError
        }
        _ => false,
    }
}

/// Finding 10: one pod's 4,200 idle TCP connections (more than the 4,096
/// queries and connections the proxy used to share between UDP and TCP)
/// leave another pod's DNS answered, over UDP and TCP; the flood's
/// connections past the per-source cap (64) are refused and counted.
#[tokio::test]
async fn one_pods_idle_tcp_flood_leaves_other_pods_dns_answered() {
    let h = harness_by_peer().await;
    let mut flood = Vec::new();
    for _ in 0..4200 {
        match tcp_from("127.0.0.2", h.tcp).await {
            Ok(c) => flood.push(c),
            Err(e) => panic!("flood connection {}: {e}", flood.len()),
        }
    }
    // Let the proxy accept (and judge) the whole backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut udp_ok = 0;
    let mut tcp_ok = 0;
    for i in 0..10u16 {
        udp_ok += u32::from(udp_answered_from("127.0.0.3", h.udp, 100 + i).await);
        tcp_ok += u32::from(tcp_answered_from("127.0.0.3", h.tcp, 200 + i).await);
    }
    assert_eq!(
        (udp_ok, tcp_ok),
        (10, 10),
        "another pod's queries (UDP, TCP) answered during the flood"
    );
    assert_eq!(dns_limit_refusals(&h, "TcpConnectionsPerSource"), 4200 - 64);
    drop(flood);
    h.proxy.shutdown().await;
}

/// Finding 10: a TCP connection that sends nothing is closed by the first
/// query timeout (2 s), not kept for the idle timeout (10 s).
#[tokio::test]
async fn a_silent_tcp_connection_is_closed_by_the_first_query_timeout() {
    let h = harness().await;
    let mut c = TcpStream::connect(h.tcp).await.expect("connect");
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(6), c.read(&mut b)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection is still open after 6 s"
    );
    assert_eq!(dns_limit_refusals(&h, "TcpFirstQueryTimeout"), 1);
    h.proxy.shutdown().await;
}
