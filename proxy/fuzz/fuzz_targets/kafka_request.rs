//! Arbitrary bytes through the Kafka proxy's no-I/O path: parse as a
//! request frame (with a known topic ID), judge, build the denial, and
//! read as a Metadata response of every version.
//! `cargo +nightly fuzz run kafka_request` from `proxy/`. The same
//! function runs over 100,000 seeded inputs in `proxy/tests/kafka_fuzz.rs`
//! on stable.
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::ProxyPolicy;

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
";

static POLICY_SNAPSHOT: LazyLock<ProxyPolicy> = LazyLock::new(|| {
    let set = load_str(POLICY, "p.yaml").expect("fuzz policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("fuzz topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
});

fuzz_target!(|data: &[u8]| {
    let client: SocketAddr = "10.0.1.2:40000".parse().expect("literal");
    let server: SocketAddr = "10.201.0.9:9092".parse().expect("literal");
    let _ = proxy::kafka::fuzz::exercise(&POLICY_SNAPSHOT, client, server, data);
});
