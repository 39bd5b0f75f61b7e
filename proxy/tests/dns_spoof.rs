//! Issue 13, finding 8: forged DNS answers must not be learned.
//!
//! A slow authoritative server on loopback holds the answers of the
//! queries for `target.example.com.` for a second. Meanwhile a spoofer,
//! sending from the server's own address and port (what an off-path
//! attacker forges), sweeps all 65,536 ids at the source port the proxy
//! used for an earlier query (the port is known, as in the attack) with an
//! answer for the question as the attacker knows it (lowercase), carrying
//! an address the server never gives. Nothing forged may be learned, and
//! every client gets the server's real answer.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{
    DnsConfig, DnsProxy, FixedDestination, LearnedNames, NameLearner, PolicyHandle, ProxyPolicy,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: client, labels: {app: client}, ip: 10.0.1.2}
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
      rules: {dns: [{matchPattern: '*.example.com'}]}
";

const REAL: Ipv4Addr = Ipv4Addr::new(10, 201, 9, 9);
const FORGED: Ipv4Addr = Ipv4Addr::new(10, 201, 6, 6);
/// Queries for the target held in flight at once.
const IN_FLIGHT: u16 = 64;

fn policy() -> PolicyHandle {
    let set = load_str(POLICY, "p.yaml").expect("test policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    PolicyHandle::new(ProxyPolicy::new(&cluster))
}

#[derive(Default)]
struct Learned(Mutex<Vec<LearnedNames>>);

impl NameLearner for Learned {
    fn learn(&self, update: LearnedNames) -> oneshot::Receiver<()> {
        self.0.lock().expect("learned lock").push(update);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        rx
    }
}

fn answer_for(query: &Message, id: u16, ip: Ipv4Addr) -> Vec<u8> {
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.authoritative = true;
    for q in &query.queries {
        m.add_query(q.clone());
        m.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(ip))));
    }
    m.to_vec().expect("answer encodes")
}

/// The server: answers `warm.example.com.` at once (and reports the source
/// port the proxy used), holds every `target.example.com.` query for a
/// second, and once `IN_FLIGHT` of them are held, forges answers from its
/// own address to the warm-up port for every id before answering them.
async fn slow_server_and_spoofer() -> (SocketAddr, Arc<Mutex<BTreeSet<u16>>>) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind server"));
    let addr = socket.local_addr().expect("server addr");
    let ports = Arc::new(Mutex::new(BTreeSet::new()));
    let seen_ports = ports.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        let mut warm_port = None;
        let mut held = Vec::new();
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            seen_ports.lock().expect("ports lock").insert(peer.port());
            let qname = query
                .queries
                .first()
                .map(|q| q.name().to_lowercase().to_ascii())
                .unwrap_or_default();
            if qname == "warm.example.com." {
                warm_port = Some(peer.port());
                let out = answer_for(&query, query.metadata.id, REAL);
                let _ = socket.send_to(&out, peer).await;
                continue;
            }
            held.push((query, peer));
            if held.len() < usize::from(IN_FLIGHT) {
                continue;
            }
            // The spoofer: the known port, every id, the question as the
            // attacker knows it (lowercase), an address never given.
            let port = warm_port.expect("the warm-up query came first");
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let mut guess = Message::new(0, MessageType::Query, OpCode::Query);
            guess.metadata.recursion_desired = true;
            guess.add_query(Query::query(
                Name::from_ascii("target.example.com.").expect("literal"),
                RecordType::A,
            ));
            for id in 0..=u16::MAX {
                let _ = socket
                    .send_to(&answer_for(&guess, id, FORGED), target)
                    .await;
                if id % 512 == 0 {
                    // Let the proxy read what came so far (a real spoofer
                    // paces itself to the victim's buffer too).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            // The real answers, late.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (query, peer) in held.drain(..) {
                let out = answer_for(&query, query.metadata.id, REAL);
                let _ = socket.send_to(&out, peer).await;
            }
        }
    });
    (addr, ports)
}

async fn ask(proxy: SocketAddr, name: &str, id: u16) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("literal"),
        RecordType::A,
    ));
    socket
        .send_to(&m.to_vec().expect("query encodes"), proxy)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(8), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// The agent's configuration: a fresh random port per query and the
/// question's case randomized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_answers_from_the_servers_address_are_not_learned() {
    let config = DnsConfig {
        upstream_timeout: Duration::from_secs(6),
        ..DnsConfig::plain()
    };
    let ports = spoof_run(config).await;
    assert!(
        ports > usize::from(IN_FLIGHT),
        "a fresh port per query: {ports}"
    );
}

/// One shared socket (the port the spoofer knows is the one in use): the
/// randomized case alone turns every forged answer away, and each is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_known_port_the_randomized_case_turns_forged_answers_away() {
    let config = DnsConfig {
        upstream_timeout: Duration::from_secs(6),
        queries_per_upstream_socket: u32::MAX,
        ..DnsConfig::plain()
    };
    assert_eq!(spoof_run(config).await, 1, "one shared socket");
}

/// Runs the attack against a proxy with `config`; asserts nothing forged
/// was learned or relayed and every client got the real answer; returns
/// how many upstream source ports the server saw.
async fn spoof_run(config: DnsConfig) -> usize {
    let (server, ports) = slow_server_and_spoofer().await;
    let learned = Arc::new(Learned::default());
    let udp = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind proxy udp");
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy tcp");
    let shared_socket = config.queries_per_upstream_socket > 1;
    let proxy = DnsProxy::serve_with_fixed_destination(
        udp,
        tcp,
        policy(),
        config,
        learned.clone(),
        FixedDestination {
            client: Some("10.0.1.2:40000".parse().expect("literal")),
            original_dst: "10.201.0.53:53".parse().expect("literal"),
            upstream: server,
        },
    )
    .expect("proxy starts");
    let at = proxy.udp_addrs()[0];
    let warm = ask(at, "warm.example.com.", 1)
        .await
        .expect("warm-up answer");
    assert_eq!(addresses(&warm), vec![IpAddr::V4(REAL)]);
    let asks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| tokio::spawn(ask(at, "target.example.com.", 1000 + i)))
        .collect();
    let mut got = Vec::new();
    for a in asks {
        got.push(a.await.expect("ask task"));
    }
    let forged_learned = learned
        .0
        .lock()
        .expect("learned lock")
        .iter()
        .filter(|u| u.ips.iter().any(|(ip, _)| *ip == IpAddr::V4(FORGED)))
        .count();
    let forged_answers = got
        .iter()
        .flatten()
        .filter(|m| addresses(m).contains(&IpAddr::V4(FORGED)))
        .count();
    let real_answers = got
        .iter()
        .flatten()
        .filter(|m| {
            m.metadata.response_code == ResponseCode::NoError
                && addresses(m) == vec![IpAddr::V4(REAL)]
        })
        .count();
    let distinct_ports = ports.lock().expect("ports lock").len();
    eprintln!(
        "forged learned: {forged_learned}, forged answers relayed: {forged_answers}, real answers: {real_answers}/{IN_FLIGHT}, distinct upstream source ports: {distinct_ports}"
    );
    assert_eq!(forged_learned, 0, "a forged address was learned");
    assert_eq!(forged_answers, 0, "a forged answer reached a client");
    assert_eq!(
        real_answers,
        usize::from(IN_FLIGHT),
        "every client gets the real answer"
    );
    if shared_socket {
        let dropped = proxy.metrics().mismatched_answers();
        eprintln!("mismatched answers dropped and counted: {dropped}");
        assert!(
            dropped > 0,
            "forged answers reached the socket and were counted"
        );
    }
    proxy.shutdown().await;
    distinct_ports
}
