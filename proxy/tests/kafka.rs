//! The Kafka proxy in process: a fixed original destination, a fake
//! broker written with kafka-protocol on loopback (decodes each request,
//! records it, answers with a simple success response), and raw clients
//! that encode requests with kafka-protocol and decode the responses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::kafka::KafkaVerdictLabel;
use proxy::{FixedDestination, KafkaConfig, KafkaProxy, PolicyHandle, ProxyPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
metadata: {name: client-kafka, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: '9092', protocol: TCP}]
      rules:
        kafka:
        - {role: produce, topic: allowed}
        - {role: consume, topic: allowed}
";

const CLIENT: &str = "10.0.1.2:40000";
const BROKER: &str = "10.201.0.9:9092";
const ALLOWED_ID: [u8; 16] = [1; 16];

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

// ---- the fake broker ----

/// One request the broker received: API key, correlation ID, topics.
type Received = (i16, i32, Vec<String>);

/// What the broker received, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

impl Seen {
    fn all(&self) -> Vec<Received> {
        self.0.lock().expect("seen lock").clone()
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A success response for `req`.
fn broker_response(req: &RequestKind) -> ResponseKind {
    match req {
        RequestKind::Produce(p) => ResponseKind::Produce(
            ProduceResponse::default().with_responses(
                p.topic_data
                    .iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|pd| {
                                        PartitionProduceResponse::default()
                                            .with_index(pd.index)
                                            .with_base_offset(42)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::Fetch(_) => ResponseKind::Fetch(FetchResponse::default()),
        RequestKind::ListOffsets(_) => ResponseKind::ListOffsets(ListOffsetsResponse::default()),
        // Like tansu, every topic whatever the request names.
        RequestKind::Metadata(_) => ResponseKind::Metadata(
            MetadataResponse::default()
                .with_brokers(vec![
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(7))
                        .with_host(s("broker-7"))
                        .with_port(9092),
                ])
                .with_cluster_id(Some(s("lab-cluster")))
                .with_controller_id(BrokerId(7))
                .with_topics(vec![
                    MetadataResponseTopic::default()
                        .with_name(Some(topic("allowed")))
                        .with_topic_id(uuid::Uuid::from_bytes(ALLOWED_ID)),
                    MetadataResponseTopic::default()
                        .with_name(Some(topic("secret")))
                        .with_topic_id(uuid::Uuid::from_bytes([2; 16])),
                ]),
        ),
        RequestKind::OffsetCommit(_) => ResponseKind::OffsetCommit(OffsetCommitResponse::default()),
        RequestKind::OffsetFetch(_) => ResponseKind::OffsetFetch(OffsetFetchResponse::default()),
        RequestKind::FindCoordinator(_) => ResponseKind::FindCoordinator(
            FindCoordinatorResponse::default()
                .with_host(s("broker"))
                .with_port(9092),
        ),
        RequestKind::JoinGroup(_) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_member_id(s("m-1"))
                .with_generation_id(1),
        ),
        RequestKind::SyncGroup(_) => ResponseKind::SyncGroup(SyncGroupResponse::default()),
        RequestKind::Heartbeat(_) => ResponseKind::Heartbeat(HeartbeatResponse::default()),
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_api_keys(
                [
                    (ApiKey::Produce, 99),
                    (ApiKey::OffsetCommit, 10),
                    (ApiKey::Fetch, 12),
                ]
                .into_iter()
                .map(|(k, max)| {
                    api_versions_response::ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(0)
                        .with_max_version(max)
                })
                .collect(),
            ),
        ),
        RequestKind::GetTelemetrySubscriptions(_) => {
            ResponseKind::GetTelemetrySubscriptions(GetTelemetrySubscriptionsResponse::default())
        }
        other => panic!("the fake broker does not answer {other:?}"),
    }
}

fn request_topics(req: &RequestKind) -> Vec<String> {
    match req {
        RequestKind::Produce(p) => p.topic_data.iter().map(|t| t.name.0.to_string()).collect(),
        RequestKind::Fetch(f) => f.topics.iter().map(|t| t.topic.0.to_string()).collect(),
        RequestKind::Metadata(m) => m
            .topics
            .iter()
            .flatten()
            .map(|t| t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

async fn fake_broker() -> (std::net::SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind broker");
    let addr = listener.local_addr().expect("broker addr");
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if conn.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                    conn.read_exact(&mut frame)
                        .await
                        .expect("broker reads frame");
                    let mut buf = Bytes::from(frame);
                    let key = ApiKey::try_from(buf.clone().get_i16()).expect("known key");
                    let version = buf.clone().slice(2..4).get_i16();
                    let header =
                        RequestHeader::decode(&mut buf, key.request_header_version(version))
                            .expect("broker decodes header");
                    let req = RequestKind::decode(key, &mut buf, version).expect("broker decodes");
                    record.0.lock().expect("seen lock").push((
                        key as i16,
                        header.correlation_id,
                        request_topics(&req),
                    ));
                    if let RequestKind::Produce(p) = &req
                        && p.acks == 0
                    {
                        continue;
                    }
                    let resp = broker_response(&req);
                    let mut out = BytesMut::new();
                    out.put_i32(0);
                    ResponseHeader::default()
                        .with_correlation_id(header.correlation_id)
                        .encode(&mut out, key.response_header_version(version))
                        .expect("encode header");
                    resp.encode(&mut out, version).expect("encode response");
                    let n = (out.len() - 4) as i32;
                    out[0..4].copy_from_slice(&n.to_be_bytes());
                    conn.write_all(&out).await.expect("broker writes");
                }
            });
        }
    });
    (addr, seen)
}

// ---- the proxy and a raw client ----

struct Harness {
    proxy: KafkaProxy,
    seen: Seen,
}

async fn harness(config: KafkaConfig) -> Harness {
    harness_under(policy(), config).await
}

async fn harness_under(policy: PolicyHandle, config: KafkaConfig) -> Harness {
    let (broker, seen) = fake_broker().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy = KafkaProxy::serve_with_fixed_destination(
        listener,
        policy,
        config,
        FixedDestination {
            client: Some(CLIENT.parse().expect("literal")),
            original_dst: BROKER.parse().expect("literal"),
            upstream: broker,
        },
    )
    .expect("proxy starts");
    Harness { proxy, seen }
}

impl Harness {
    async fn client(&self) -> TcpStream {
        TcpStream::connect(self.proxy.local_addrs()[0])
            .await
            .expect("connect to proxy")
    }
}

fn encode_request(req: &RequestKind, key: ApiKey, version: i16, corr: i32) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(s("test-client")))
        .encode(&mut out, key.request_header_version(version))
        .expect("encode request header");
    req.encode(&mut out, version).expect("encode request");
    let n = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&n.to_be_bytes());
    out.freeze()
}

async fn send(conn: &mut TcpStream, req: &RequestKind, key: ApiKey, version: i16, corr: i32) {
    conn.write_all(&encode_request(req, key, version, corr))
        .await
        .expect("client writes");
}

/// Reads one response; returns its correlation ID and decoded body.
async fn recv(conn: &mut TcpStream, key: ApiKey, version: i16) -> (i32, ResponseKind) {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut len))
        .await
        .expect("a response in time")
        .expect("client reads length");
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut frame)
        .await
        .expect("client reads frame");
    let mut buf = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .expect("decode response header");
    let body = ResponseKind::decode(key, &mut buf, version).expect("decode response body");
    assert!(!buf.has_remaining(), "{key:?} v{version}: trailing bytes");
    (header.correlation_id, body)
}

/// Whether the connection was closed by the proxy (EOF within 5 s).
async fn closed(conn: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn produce(topics: &[&str], acks: i16) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_topic_data(
                topics
                    .iter()
                    .map(|t| {
                        TopicProduceData::default()
                            .with_name(topic(t))
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(Bytes::from_static(b"not-a-batch"))),
                            ])
                    })
                    .collect(),
            ),
    )
}

fn produce_errors(resp: &ResponseKind) -> Vec<(String, i16)> {
    let ResponseKind::Produce(p) = resp else {
        panic!("not a produce response: {resp:?}");
    };
    p.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|pr| (t.name.0.to_string(), pr.error_code))
        })
        .collect()
}

#[tokio::test]
async fn produce_allowed_denied_and_pipelined_in_order() {
    for version in [3i16, 8, 9, 12] {
        let h = harness(KafkaConfig::plain()).await;
        let mut c = h.client().await;
        // Three pipelined requests: allowed, denied, allowed.
        send(
            &mut c,
            &produce(&["allowed"], 1),
            ApiKey::Produce,
            version,
            1,
        )
        .await;
        send(
            &mut c,
            &produce(&["secret"], 1),
            ApiKey::Produce,
            version,
            2,
        )
        .await;
        send(
            &mut c,
            &produce(&["allowed"], 1),
            ApiKey::Produce,
            version,
            3,
        )
        .await;
        let (c1, r1) = recv(&mut c, ApiKey::Produce, version).await;
        let (c2, r2) = recv(&mut c, ApiKey::Produce, version).await;
        let (c3, r3) = recv(&mut c, ApiKey::Produce, version).await;
        assert_eq!((c1, c2, c3), (1, 2, 3), "v{version}: responses in order");
        assert_eq!(produce_errors(&r1), vec![("allowed".to_string(), 0)]);
        assert_eq!(produce_errors(&r2), vec![("secret".to_string(), 29)]);
        assert_eq!(produce_errors(&r3), vec![("allowed".to_string(), 0)]);
        let seen: Vec<i32> = h.seen.all().iter().map(|(_, c, _)| *c).collect();
        assert_eq!(
            seen,
            vec![1, 3],
            "v{version}: the denied request never reached the broker"
        );
        let m = h.proxy.metrics();
        assert_eq!(m.requests("Produce", KafkaVerdictLabel::Allowed), 2);
        assert_eq!(m.requests("Produce", KafkaVerdictLabel::Denied), 1);
    }
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

// The process-wide subscriber, the only one in this test binary (as in
// tests/dns.rs): other tests' lines land in the buffer too; this test
// keeps the lines of its own correlation IDs (7001..=7004).
#[tokio::test]
async fn an_audited_clients_denied_requests_are_forwarded_and_logged_as_audit() {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only global subscriber of this test binary");

    let h = harness_under(audited_client_policy(), KafkaConfig::plain()).await;
    let mut c = h.client().await;
    send(&mut c, &produce(&["secret"], 1), ApiKey::Produce, 9, 7001).await;
    let (corr, resp) = recv(&mut c, ApiKey::Produce, 9).await;
    assert_eq!(corr, 7001);
    assert_eq!(produce_errors(&resp), vec![("secret".to_string(), 0)]);
    // acks=0: forwarded with no response; the next request still works.
    send(&mut c, &produce(&["secret"], 0), ApiKey::Produce, 9, 7002).await;
    send(&mut c, &produce(&["allowed"], 1), ApiKey::Produce, 9, 7003).await;
    let (corr, resp) = recv(&mut c, ApiKey::Produce, 9).await;
    assert_eq!(corr, 7003);
    assert_eq!(produce_errors(&resp), vec![("allowed".to_string(), 0)]);
    // An all-topics Metadata request lists what audit mode passes.
    let all = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
    send(&mut c, &all, ApiKey::Metadata, 12, 7004).await;
    let (_, resp) = recv(&mut c, ApiKey::Metadata, 12).await;
    assert_eq!(
        metadata_names(&resp),
        vec!["allowed".to_string(), "secret".to_string()]
    );
    let seen: Vec<i32> = h.seen.all().iter().map(|(_, c, _)| *c).collect();
    assert_eq!(
        seen,
        vec![7001, 7002, 7003, 7004],
        "every request reached the broker"
    );
    let m = h.proxy.metrics();
    assert_eq!(m.requests("Produce", KafkaVerdictLabel::Audit), 2);
    assert_eq!(m.requests("Produce", KafkaVerdictLabel::Allowed), 1);
    assert_eq!(m.requests("Produce", KafkaVerdictLabel::Denied), 0);
    drop(c);
    h.proxy.shutdown().await;

    let text = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("utf-8 log");
    let mut produces: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "portcullis::proxy::access")
        .map(|v| v["fields"].clone())
        .filter(|f| {
            f["api_key"] == "Produce"
                && f["correlation_id"]
                    .as_i64()
                    .is_some_and(|c| (7001..=7004).contains(&c))
        })
        .collect();
    // The acks=0 request is logged when sent, the others when answered.
    produces.sort_by_key(|f| f["correlation_id"].as_i64());
    let verdicts: Vec<(i64, &str)> = produces
        .iter()
        .map(|f| {
            (
                f["correlation_id"].as_i64().unwrap_or(-1),
                f["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![(7001, "audit"), (7002, "audit"), (7003, "allowed")],
        "{text}"
    );
    assert_eq!(
        produces[0]["reason"],
        "ns1/client egress: audit: no Kafka rule allows topic secret; \
         CiliumNetworkPolicy ns1/client-kafka spec.egress[0].rules.kafka[0]; \
         CiliumNetworkPolicy ns1/client-kafka spec.egress[0].rules.kafka[1]"
    );
}

#[tokio::test]
async fn multi_topic_produce_with_one_denied_topic_is_denied() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    send(
        &mut c,
        &produce(&["allowed", "secret"], 1),
        ApiKey::Produce,
        9,
        7,
    )
    .await;
    let (corr, r) = recv(&mut c, ApiKey::Produce, 9).await;
    assert_eq!(corr, 7);
    assert_eq!(
        produce_errors(&r),
        vec![("allowed".to_string(), 29), ("secret".to_string(), 29)]
    );
    assert!(h.seen.all().is_empty());
}

#[tokio::test]
async fn denied_acks0_produce_gets_no_response_and_next_request_works() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    send(&mut c, &produce(&["secret"], 0), ApiKey::Produce, 9, 1).await;
    send(&mut c, &produce(&["allowed"], 0), ApiKey::Produce, 9, 2).await;
    send(&mut c, &produce(&["allowed"], 1), ApiKey::Produce, 9, 3).await;
    let (corr, r) = recv(&mut c, ApiKey::Produce, 9).await;
    assert_eq!(corr, 3);
    assert_eq!(produce_errors(&r), vec![("allowed".to_string(), 0)]);
    let seen: Vec<i32> = h.seen.all().iter().map(|(_, c, _)| *c).collect();
    assert_eq!(seen, vec![2, 3]);
}

fn consume_requests(topic_name: &str) -> Vec<(ApiKey, i16, RequestKind)> {
    let t = || topic(topic_name);
    vec![
        (
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(s("test"))
                    .with_client_software_version(s("1")),
            ),
        ),
        (
            ApiKey::Metadata,
            9,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(t())),
            ]))),
        ),
        (
            ApiKey::FindCoordinator,
            3,
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g1"))),
        ),
        (
            ApiKey::JoinGroup,
            5,
            RequestKind::JoinGroup(
                JoinGroupRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_session_timeout_ms(10000)
                    .with_protocol_type(s("consumer")),
            ),
        ),
        (
            ApiKey::SyncGroup,
            3,
            RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(GroupId(s("g1")))),
        ),
        (
            ApiKey::Heartbeat,
            4,
            RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(s("g1")))),
        ),
        (
            ApiKey::ListOffsets,
            5,
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default().with_name(t()).with_partitions(vec![
                    ListOffsetsPartition::default().with_timestamp(-1),
                ]),
            ])),
        ),
        (
            ApiKey::Fetch,
            11,
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default().with_topic(t()).with_partitions(
                        vec![FetchPartition::default().with_partition_max_bytes(1 << 20)],
                    )]),
            ),
        ),
        (
            ApiKey::Fetch,
            12,
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default().with_topic(t()).with_partitions(
                        vec![FetchPartition::default().with_partition_max_bytes(1 << 20)],
                    )]),
            ),
        ),
        (
            ApiKey::OffsetCommit,
            8,
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_topics(vec![
                        OffsetCommitRequestTopic::default()
                            .with_name(t())
                            .with_partitions(vec![
                                OffsetCommitRequestPartition::default().with_committed_offset(5),
                            ]),
                    ]),
            ),
        ),
        (
            ApiKey::OffsetFetch,
            7,
            RequestKind::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(t())
                            .with_partition_indexes(vec![0]),
                    ])),
            ),
        ),
    ]
}

#[tokio::test]
async fn consume_role_requests_are_allowed() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let reqs = consume_requests("allowed");
    for (i, (key, version, req)) in reqs.iter().enumerate() {
        send(&mut c, req, *key, *version, i as i32).await;
    }
    for (i, (key, version, _)) in reqs.iter().enumerate() {
        let (corr, _) = recv(&mut c, *key, *version).await;
        assert_eq!(corr, i as i32, "{key:?}");
    }
    assert_eq!(
        h.seen.all().len(),
        reqs.len(),
        "every request reached the broker"
    );
}

#[tokio::test]
async fn consume_requests_for_a_denied_topic_get_authorization_errors() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let reqs: Vec<_> = consume_requests("secret")
        .into_iter()
        .filter(|(k, _, _)| {
            matches!(
                k,
                ApiKey::Metadata
                    | ApiKey::ListOffsets
                    | ApiKey::Fetch
                    | ApiKey::OffsetCommit
                    | ApiKey::OffsetFetch
            )
        })
        .collect();
    for (i, (key, version, req)) in reqs.iter().enumerate() {
        send(&mut c, req, *key, *version, 100 + i as i32).await;
    }
    for (i, (key, version, _)) in reqs.iter().enumerate() {
        let (corr, resp) = recv(&mut c, *key, *version).await;
        assert_eq!(corr, 100 + i as i32);
        let codes: Vec<i16> = match &resp {
            ResponseKind::Metadata(m) => m.topics.iter().map(|t| t.error_code).collect(),
            ResponseKind::ListOffsets(l) => l
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            ResponseKind::Fetch(f) => f
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            ResponseKind::OffsetCommit(o) => o
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            ResponseKind::OffsetFetch(o) => o
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(codes, vec![29], "{key:?} v{version}");
    }
    // Only the Metadata request reached the broker, as a request for no
    // topic (its answer gives the denial the cluster's brokers).
    let seen = h.seen.all();
    assert_eq!(
        seen.iter().map(|r| (r.0, r.2.clone())).collect::<Vec<_>>(),
        vec![(ApiKey::Metadata as i16, Vec::<String>::new())],
        "only a Metadata request naming no topic reached the broker"
    );
}

#[tokio::test]
async fn fetch_by_topic_id_needs_a_learned_name() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let fetch = RequestKind::Fetch(FetchRequest::default().with_max_bytes(1 << 20).with_topics(
        vec![
            FetchTopic::default()
                .with_topic_id(uuid::Uuid::from_bytes(ALLOWED_ID))
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1)]),
        ],
    ));
    // Unknown ID: denied.
    send(&mut c, &fetch, ApiKey::Fetch, 13, 1).await;
    let (corr, resp) = recv(&mut c, ApiKey::Fetch, 13).await;
    assert_eq!(corr, 1);
    let ResponseKind::Fetch(f) = resp else {
        panic!("fetch")
    };
    assert_eq!(f.responses[0].partitions[0].error_code, 29);
    assert_eq!(f.responses[0].topic_id, uuid::Uuid::from_bytes(ALLOWED_ID));
    // Metadata (v12) teaches allowed = ALLOWED_ID; then the same fetch passes.
    let md = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic("allowed"))),
    ])));
    send(&mut c, &md, ApiKey::Metadata, 12, 2).await;
    recv(&mut c, ApiKey::Metadata, 12).await;
    send(&mut c, &fetch, ApiKey::Fetch, 13, 3).await;
    let (corr, resp) = recv(&mut c, ApiKey::Fetch, 13).await;
    assert_eq!(corr, 3);
    let ResponseKind::Fetch(f) = resp else {
        panic!("fetch")
    };
    assert!(f.responses.is_empty(), "the broker's own answer");
    // Another connection to the same broker knows the ID too (clients
    // fetch on a connection other than their bootstrap one).
    let mut other = h.client().await;
    send(&mut other, &fetch, ApiKey::Fetch, 13, 4).await;
    let (corr, resp) = recv(&mut other, ApiKey::Fetch, 13).await;
    assert_eq!(corr, 4);
    let ResponseKind::Fetch(f) = resp else {
        panic!("fetch")
    };
    assert!(f.responses.is_empty(), "the broker's own answer");
    let keys: Vec<i16> = h.seen.all().iter().map(|(k, _, _)| *k).collect();
    assert_eq!(keys, vec![3, 1, 1]);
}

#[tokio::test]
async fn topicless_requests_follow_the_roles() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let join = RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_protocol_type(s("consumer")),
    );
    send(&mut c, &join, ApiKey::JoinGroup, 9, 1).await;
    let (corr, resp) = recv(&mut c, ApiKey::JoinGroup, 9).await;
    assert_eq!(corr, 1);
    let ResponseKind::JoinGroup(j) = resp else {
        panic!("join")
    };
    assert_eq!(j.error_code, 0, "allowed by the consume role");
    let init = RequestKind::InitProducerId(InitProducerIdRequest::default());
    send(&mut c, &init, ApiKey::InitProducerId, 4, 2).await;
    let (corr, resp) = recv(&mut c, ApiKey::InitProducerId, 4).await;
    assert_eq!(corr, 2);
    let ResponseKind::InitProducerId(i) = resp else {
        panic!("init")
    };
    assert_eq!(
        i.error_code, 31,
        "outside both roles: cluster authorization"
    );
}

#[tokio::test]
async fn garbage_frame_closes_the_connection() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let mut frame = BytesMut::new();
    frame.put_i32(12);
    frame.put_i16(0); // Produce
    frame.put_i16(9);
    frame.put_i32(1);
    frame.put_i32(0x7fff_ffff); // garbage where the client ID starts
    c.write_all(&frame).await.expect("write");
    assert!(closed(&mut c).await);
    // An unknown API key too.
    let mut c = h.client().await;
    let mut frame = BytesMut::new();
    frame.put_i32(10);
    frame.put_i16(999);
    frame.put_i16(0);
    frame.put_i32(1);
    frame.put_i16(-1);
    c.write_all(&frame).await.expect("write");
    assert!(closed(&mut c).await);
    // A Produce claiming 2^31 topics: refused, no allocation, no abort.
    let mut c = h.client().await;
    let mut body = BytesMut::new();
    body.put_i16(0);
    body.put_i16(3);
    body.put_i32(1);
    body.put_i16(-1); // client id
    body.put_i16(-1); // transactional id
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(0x7fff_ffff);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    c.write_all(&frame).await.expect("write");
    assert!(closed(&mut c).await);
    assert!(h.seen.all().is_empty());
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    let config = KafkaConfig {
        max_request_frame: 1024,
        ..KafkaConfig::plain()
    };
    let h = harness(config).await;
    let mut c = h.client().await;
    c.write_all(&2048i32.to_be_bytes()).await.expect("write");
    assert!(closed(&mut c).await);
    // Over the default limit (16 MiB) too, and a negative length.
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    c.write_all(&(100 * 1024 * 1024 + 1i32).to_be_bytes())
        .await
        .expect("write");
    assert!(closed(&mut c).await);
    let mut c = h.client().await;
    c.write_all(&(-5i32).to_be_bytes()).await.expect("write");
    assert!(closed(&mut c).await);
}

fn metadata_names(resp: &ResponseKind) -> Vec<String> {
    let ResponseKind::Metadata(m) = resp else {
        panic!("not a metadata response: {resp:?}");
    };
    m.topics
        .iter()
        .map(|t| t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn all_topics_metadata_is_allowed_and_lists_only_allowed_topics() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    for (corr, version) in [(1, 1i16), (2, 9), (3, 12)] {
        // Null topic list: every topic (v1+).
        let all = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        send(&mut c, &all, ApiKey::Metadata, version, corr).await;
        let (got, resp) = recv(&mut c, ApiKey::Metadata, version).await;
        assert_eq!(got, corr);
        assert_eq!(
            metadata_names(&resp),
            vec!["allowed".to_string()],
            "v{version}: the broker listed allowed and secret; secret is filtered out"
        );
    }
    // Naming the denied topic is still denied, per topic.
    let named = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic("secret"))),
    ])));
    send(&mut c, &named, ApiKey::Metadata, 12, 4).await;
    let (got, resp) = recv(&mut c, ApiKey::Metadata, 12).await;
    assert_eq!(got, 4);
    let ResponseKind::Metadata(m) = resp else {
        panic!("metadata")
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].error_code, 29);
    let forwarded: Vec<Vec<String>> = h.seen.all().into_iter().map(|r| r.2).collect();
    assert_eq!(forwarded.len(), 4);
    assert!(
        forwarded[3].is_empty(),
        "the named denied topic is not forwarded: {forwarded:?}"
    );
}

/// A denied Metadata request is answered with the cluster (brokers,
/// controller, cluster ID, from the broker's answer to a request for no
/// topic) and every named topic denied: a denial without brokers made
/// librdkafka drop its brokers and group coordinator and retry until its
/// timeout. A request naming topics gets only those back, whatever the
/// broker lists.
#[tokio::test]
async fn metadata_denials_carry_the_cluster_and_named_requests_get_only_their_topics() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let named = |names: &[&str]| {
        RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(
                    names
                        .iter()
                        .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
                        .collect(),
                ))
                .with_allow_auto_topic_creation(true),
        )
    };
    for (corr, version) in [(1, 1i16), (2, 4), (3, 9), (4, 12)] {
        send(&mut c, &named(&["secret"]), ApiKey::Metadata, version, corr).await;
        let (got, resp) = recv(&mut c, ApiKey::Metadata, version).await;
        assert_eq!(got, corr);
        let ResponseKind::Metadata(m) = &resp else {
            panic!("metadata")
        };
        assert_eq!(
            m.brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect::<Vec<_>>(),
            vec![(7, "broker-7".to_string(), 9092)],
            "v{version}: the denial lists the broker"
        );
        assert_eq!(m.controller_id.0, 7, "v{version}: controller");
        if version >= 2 {
            assert_eq!(
                m.cluster_id.as_deref(),
                Some("lab-cluster"),
                "v{version}: cluster id"
            );
        }
        assert_eq!(metadata_names(&resp), vec!["secret".to_string()]);
        assert_eq!(m.topics[0].error_code, 29, "v{version}");
        assert!(m.topics[0].partitions.is_empty(), "v{version}");

        send(
            &mut c,
            &named(&["allowed"]),
            ApiKey::Metadata,
            version,
            corr + 10,
        )
        .await;
        let (got, resp) = recv(&mut c, ApiKey::Metadata, version).await;
        assert_eq!(got, corr + 10);
        assert_eq!(
            metadata_names(&resp),
            vec!["allowed".to_string()],
            "v{version}: the broker listed secret too; only the named topic is relayed"
        );
    }
    // A mixed request is denied whole (as in Cilium), both topics named.
    send(
        &mut c,
        &named(&["allowed", "secret"]),
        ApiKey::Metadata,
        12,
        50,
    )
    .await;
    let (_, resp) = recv(&mut c, ApiKey::Metadata, 12).await;
    let ResponseKind::Metadata(m) = resp else {
        panic!("metadata")
    };
    assert_eq!(
        m.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(),
        vec![29, 29]
    );
    assert_eq!(m.brokers.len(), 1);
    // What reached the broker for the denials named no topic.
    let seen = h.seen.all();
    let denied_forwarded: Vec<&Vec<String>> = seen
        .iter()
        .filter(|r| !r.2.contains(&"allowed".to_string()))
        .map(|r| &r.2)
        .collect();
    assert_eq!(denied_forwarded.len(), 5);
    assert!(
        denied_forwarded.iter().all(|t| t.is_empty()),
        "a denied topic reached the broker: {seen:?}"
    );
}

#[tokio::test]
async fn api_versions_are_capped_to_what_the_proxy_reads() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    for (corr, version) in [(1, 0i16), (2, 3), (3, 4)] {
        let req = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
        );
        send(&mut c, &req, ApiKey::ApiVersions, version, corr).await;
        let (got, resp) = recv(&mut c, ApiKey::ApiVersions, version).await;
        assert_eq!(got, corr);
        let ResponseKind::ApiVersions(v) = resp else {
            panic!("api versions")
        };
        let ranges: Vec<(i16, i16)> = v
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.max_version))
            .collect();
        assert_eq!(
            ranges,
            vec![(0, 13), (8, 9), (1, 12)],
            "v{version}: Produce 99 -> 13, OffsetCommit 10 -> 9, Fetch 12 kept"
        );
    }
}

#[tokio::test]
async fn denied_telemetry_gets_a_cluster_error_and_the_connection_stays_open() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    let tele = RequestKind::GetTelemetrySubscriptions(GetTelemetrySubscriptionsRequest::default());
    send(&mut c, &tele, ApiKey::GetTelemetrySubscriptions, 0, 7).await;
    send(&mut c, &produce(&["allowed"], 1), ApiKey::Produce, 9, 8).await;
    let (corr, resp) = recv(&mut c, ApiKey::GetTelemetrySubscriptions, 0).await;
    assert_eq!(corr, 7);
    let ResponseKind::GetTelemetrySubscriptions(t) = resp else {
        panic!("telemetry")
    };
    assert_eq!(t.error_code, 31, "not in the produce or consume role");
    let (corr, resp) = recv(&mut c, ApiKey::Produce, 9).await;
    assert_eq!(corr, 8);
    assert_eq!(produce_errors(&resp), vec![("allowed".to_string(), 0)]);
    let forwarded: Vec<i16> = h.seen.all().iter().map(|r| r.0).collect();
    assert_eq!(forwarded, vec![0], "telemetry is not forwarded");
}

// ---- limits: one client cannot take what every other client needs ----

/// A proxy whose clients are the peers themselves (loopback addresses
/// that are pods of the topology: the flooder 127.0.0.2 and the
/// bystander 127.0.0.3).
async fn harness_by_peer() -> Harness {
    let (broker, seen) = fake_broker().await;
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind proxy");
    let proxy = KafkaProxy::serve_with_fixed_destination(
        listener,
        policy(),
        KafkaConfig::plain(),
        FixedDestination {
            client: None,
            original_dst: BROKER.parse().expect("literal"),
            upstream: broker,
        },
    )
    .expect("proxy starts");
    Harness { proxy, seen }
}

impl Harness {
    /// A connection to the proxy from `src` (a loopback address).
    async fn client_from(&self, src: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{src}:0").parse().expect("literal"))
            .expect("bind client");
        let port = self.proxy.local_addrs()[0].port();
        socket
            .connect(format!("127.0.0.1:{port}").parse().expect("literal"))
            .await
            .expect("connect to proxy")
    }

    /// The value of `portcullis_proxy_kafka_limit_refusals_total{limit=...}`.
    fn limit_refusals(&self, limit: &str) -> u64 {
        let text = self.proxy.render_metrics();
        let prefix = format!("portcullis_proxy_kafka_limit_refusals_total{{limit=\"{limit}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().expect("a counter value"))
            .unwrap_or(0)
    }
}

/// Whether a bystander's all-topics Metadata request is answered.
async fn bystander_is_served(h: &Harness) -> bool {
    let mut c = h.client_from("127.0.0.3").await;
    let req = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
    send(&mut c, &req, ApiKey::Metadata, 9, 77).await;
    let mut len = [0u8; 4];
    let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut len)).await
    else {
        return false;
    };
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    c.read_exact(&mut frame).await.is_ok() && frame[..4] == 77i32.to_be_bytes()
}

/// Finding 11: a frame length over the limit (64 MiB; the old limit was
/// 100 MiB) closes the connection at once, before any of its bytes are
/// buffered.
#[tokio::test]
async fn a_frame_length_over_the_limit_closes_before_its_bytes_arrive() {
    let h = harness(KafkaConfig::plain()).await;
    let mut c = h.client().await;
    c.write_all(&(64 * 1024 * 1024i32).to_be_bytes())
        .await
        .expect("write");
    c.write_all(&[0u8; 1024]).await.expect("write");
    assert!(
        closed(&mut c).await,
        "a 64 MiB frame is waited for instead of refused"
    );
    assert_eq!(h.limit_refusals("FrameTooLarge"), 1);
    assert!(h.seen.all().is_empty());
}

/// Finding 11: eight connections of one pod, each announcing a frame of
/// 15 MiB and stalling, hold at most the per-source buffer budget
/// (64 MiB: four frames); the others are closed, and another pod is
/// served meanwhile.
#[tokio::test]
async fn one_pods_stalled_frames_are_held_only_up_to_its_buffer_budget() {
    let h = harness_by_peer().await;
    let mut flood = Vec::new();
    for _ in 0..8 {
        let mut c = h.client_from("127.0.0.2").await;
        c.write_all(&(15 * 1024 * 1024i32).to_be_bytes())
            .await
            .expect("write");
        c.write_all(&[0u8; 4096]).await.expect("write");
        flood.push(c);
    }
    let mut closed_count = 0;
    for c in flood.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1500), c.read(&mut b)).await
        {
            closed_count += 1;
        }
    }
    assert_eq!(
        closed_count, 4,
        "of 8 stalled 15 MiB frames, those past 64 MiB are refused"
    );
    assert_eq!(h.limit_refusals("BufferPerSource"), 4);
    assert!(bystander_is_served(&h).await, "another pod is not served");
}

/// Finding 11: one pod's 300 idle connections: those past the per-source
/// cap (256) are closed at accept; another pod is served.
#[tokio::test]
async fn one_pods_connection_flood_is_capped_per_source() {
    let h = harness_by_peer().await;
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(h.client_from("127.0.0.2").await);
    }
    let mut closed_count = 0;
    for c in flood.iter_mut().rev().take(60) {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await
        {
            closed_count += 1;
        }
    }
    assert_eq!(
        closed_count, 44,
        "connections past 256 from one pod are refused"
    );
    assert_eq!(h.limit_refusals("ConnectionsPerSource"), 44);
    assert!(bystander_is_served(&h).await, "another pod is not served");
}

/// Finding 11: a connection that sends nothing, and one that trickles the
/// first frame, are closed by the first-request timeout (10 s).
#[tokio::test]
async fn silent_and_trickling_first_requests_are_closed() {
    let h = harness(KafkaConfig::plain()).await;
    let mut silent = h.client().await;
    let mut trickle = h.client().await;
    trickle
        .write_all(&100i32.to_be_bytes())
        .await
        .expect("write");
    trickle.write_all(&[0u8; 10]).await.expect("write");
    let mut b = [0u8; 1];
    for c in [&mut silent, &mut trickle] {
        let read = tokio::time::timeout(Duration::from_secs(20), c.read(&mut b)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection without a whole first request stays open"
        );
    }
    assert_eq!(h.limit_refusals("FirstRequestTimeout"), 2);
}
