//! The fuzz target's path (`proxy::kafka::fuzz::exercise`: parse, judge,
//! deny, and read as a Metadata response) over 100,000 inputs from a fixed
//! seed: random bytes, and mutations of valid requests of every parsed API
//! and version (bit flips, byte changes, count and length fields set huge,
//! truncation, insertion, splicing). Must never panic or abort. The same
//! function is the cargo-fuzz target `kafka_request` in `proxy/fuzz/`.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::ProxyPolicy;
use proxy::kafka::fuzz::{Outcome, exercise};

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: client, labels: {app: client}, ip: 10.0.1.2}
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
        - {role: produce, topic: orders}
        - {role: consume, topic: orders}
        - {apiKey: createtopics, topic: orders}
";

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid frames (without length) of every parsed API at every version the
/// proxy reads, built from default requests with a topic or two.
fn seeds() -> Vec<Vec<u8>> {
    let name = || TopicName(StrBytes::from_static_str("orders"));
    let mut out = Vec::new();
    for key in ApiKey::iter() {
        let range = key.valid_versions();
        for version in range.min..=range.max {
            let req = match key {
                ApiKey::Produce => {
                    RequestKind::Produce(ProduceRequest::default().with_topic_data(vec![
                        produce_request::TopicProduceData::default()
                            .with_name(name())
                            .with_partition_data(vec![
                                produce_request::PartitionProduceData::default()
                                    .with_records(Some(Bytes::from_static(b"rec"))),
                            ]),
                    ]))
                }
                ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default().with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(name())
                        .with_partitions(vec![fetch_request::FetchPartition::default()]),
                ])),
                ApiKey::Metadata => {
                    RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(name())),
                    ])))
                }
                ApiKey::CreateTopics => {
                    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                        create_topics_request::CreatableTopic::default()
                            .with_name(name())
                            .with_configs(vec![
                                create_topics_request::CreatableTopicConfig::default(),
                            ]),
                    ]))
                }
                _ => match default_request(key) {
                    Some(r) => r,
                    None => continue,
                },
            };
            let mut buf = BytesMut::new();
            let header = RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("fuzz")));
            if header
                .encode(&mut buf, key.request_header_version(version))
                .is_err()
            {
                continue;
            }
            if req.encode(&mut buf, version).is_ok() {
                out.push(buf.to_vec());
            }
        }
    }
    out
}

fn default_request(key: ApiKey) -> Option<RequestKind> {
    Some(match key {
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(Default::default()),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(Default::default()),
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        _ => return None,
    })
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if v.is_empty() {
            v.push(rng.next() as u8);
        }
        let at = rng.below(v.len());
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 => {
                // A count or length field set huge.
                let huge: [u8; 4] = [0x7f, 0xff, 0xff, 0xff];
                for (i, b) in huge.iter().enumerate() {
                    if let Some(slot) = v.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => v.truncate(at),
            4 => v.insert(at, rng.next() as u8),
            5 => {
                let from = rng.below(other.len());
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                // A varint that never ends.
                for i in 0..6 {
                    if let Some(slot) = v.get_mut(at + i) {
                        *slot = 0xff;
                    }
                }
            }
        }
    }
    v
}

#[test]
fn hundred_thousand_random_and_mutated_frames_never_panic() {
    let set = load_str(POLICY, "p.yaml").expect("fuzz policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("fuzz topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    let policy = ProxyPolicy::new(&cluster);
    let client: SocketAddr = "10.0.1.2:40000".parse().expect("literal");
    let server: SocketAddr = "10.201.0.9:9092".parse().expect("literal");
    let seeds = seeds();
    assert!(
        seeds.len() > 100,
        "seeds of every API and version: {}",
        seeds.len()
    );
    let mut counts = [0usize; 4];
    for seed in &seeds {
        let o = exercise(&policy, client, server, seed);
        assert_ne!(o, Outcome::Unreadable, "a valid seed is readable");
    }
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    for i in 0..100_000 {
        let input = if i % 10 == 0 {
            let n = rng.below(64);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, a, b)
        };
        let o = exercise(&policy, client, server, &input);
        counts[o as usize] += 1;
    }
    eprintln!("unreadable/allowed/denied/unanswerable: {counts:?}");
    assert!(
        counts[1] > 0 && counts[2] > 0,
        "mutations reach the judge: {counts:?}"
    );
}
