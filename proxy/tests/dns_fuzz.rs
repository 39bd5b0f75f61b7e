//! The fuzz target's path (`proxy::dns::fuzz::exercise`: parse, judge,
//! deny, learn) over 100,000 inputs from a fixed seed: random bytes, and
//! mutations of valid queries and answers (bit flips, byte and count
//! changes, truncation, insertion, splicing, compression pointers). Must
//! never panic. The same function is the cargo-fuzz target in
//! `proxy/fuzz/` (needs nightly to run).

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::ProxyPolicy;
use proxy::dns::fuzz::exercise;

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
      rules: {dns: [{matchPattern: '*.example.com'}, {matchPattern: '**.deep.test'}, {matchName: exact.test}]}
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

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("literal DNS name")
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let names = [
        "www.example.com.",
        "WwW.ExAmPlE.cOm.",
        "exact.test.",
        "a.b.c.deep.test.",
        "evil.test.",
        ".",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut q = Message::new(i as u16, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name(n), RecordType::A));
        if i % 2 == 0 {
            q.add_query(Query::query(name("exact.test."), RecordType::AAAA));
            q.set_edns(Edns::new());
        }
        out.push(q.to_vec().expect("seed query encodes"));
        let mut a = Message::new(i as u16, MessageType::Response, OpCode::Query);
        a.add_query(Query::query(name(n), RecordType::A));
        a.add_answer(Record::from_rdata(
            name(n),
            300,
            RData::CNAME(CNAME(name("edge.cdn.test."))),
        ));
        a.add_answer(Record::from_rdata(
            name("edge.cdn.test."),
            30,
            RData::CNAME(CNAME(name(n))),
        ));
        a.add_answer(Record::from_rdata(
            name("edge.cdn.test."),
            30,
            RData::A(A(Ipv4Addr::new(10, 201, 0, i as u8))),
        ));
        out.push(a.to_vec().expect("seed answer encodes"));
    }
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.byte();
            }
            2 => data.truncate(rng.below(data.len() + 1)),
            3 => {
                let i = rng.below(data.len() + 1);
                let n = rng.below(8);
                for _ in 0..n {
                    data.insert(i, rng.byte());
                }
            }
            4 if data.len() >= 12 => {
                // A section count: questions, answers, authorities, additionals.
                let field = 4 + 2 * rng.below(4);
                let v = [0u16, 1, 2, 255, u16::MAX][rng.below(5)];
                data[field..field + 2].copy_from_slice(&v.to_be_bytes());
            }
            5 if data.len() >= 14 => {
                // A compression pointer somewhere after the header.
                let i = 12 + rng.below(data.len() - 13);
                data[i] = 0xc0 | (rng.byte() & 0x3f);
                data[i + 1] = rng.byte();
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                data.truncate(rng.below(data.len() + 1));
                data.extend_from_slice(&other[cut..]);
            }
            _ if data.len() >= 3 => data[2] = rng.byte(), // flags: QR, opcode
            _ => {}
        }
    }
    data
}

#[test]
fn the_query_path_never_panics() {
    let set = load_str(POLICY, "p.yaml").expect("test policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    let policy = ProxyPolicy::new(&cluster);
    let client: SocketAddr = "10.0.1.2:40000".parse().expect("literal");
    let server: SocketAddr = "10.201.0.53:53".parse().expect("literal");
    let seeds = seeds();
    let mut rng = Rng(0x5eed_d15c_0ffe_e000);
    let mut produced = 0usize;
    for seed in &seeds {
        produced += exercise(&policy, client, server, seed);
    }
    for i in 0..100_000 {
        let input = if i % 2 == 0 {
            let len = rng.below(300);
            let mut random: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if len >= 12 && i % 4 == 0 {
                // A plausible header so the parser reaches the questions.
                random[2] &= 0x01;
                random[4] = 0;
                random[5] = 1 + (rng.byte() & 3);
            }
            random
        } else {
            mutate(&mut rng, &seeds)
        };
        produced += exercise(&policy, client, server, &input);
    }
    assert!(produced > 0);
}
