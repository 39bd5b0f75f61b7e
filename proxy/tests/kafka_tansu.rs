//! The Kafka proxy in process in front of a real broker (tansu, memory
//! storage, on loopback) with real clients (confluent-kafka, kafka-python):
//! tansu advertises the proxy's address, so every connection the clients
//! open (bootstrap, broker, coordinator) goes through the proxy, as the
//! datapath's redirect does in the lab. No namespaces or root needed.
//! Skips, saying so, when tansu or the clients are not installed
//! (`deploy/tansu.sh start`, pip confluent-kafka kafka-python).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{FixedDestination, KafkaConfig, KafkaProxy, PolicyHandle, ProxyPolicy};
use tokio::net::TcpListener;

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

fn tansu() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/tansu");
    p.is_file().then_some(p)
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn client(args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/kafka_clients.py"
    );
    let out = Command::new("timeout")
        .args(["60", "python3", script])
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        eprintln!(
            "kafka client {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_through_the_proxy_to_tansu() {
    let Some(tansu) = tansu() else {
        eprintln!("SKIP: needs tansu in ~/.cargo/bin (deploy/tansu.sh start)");
        return;
    };
    let clients = Command::new("python3")
        .args(["-c", "import confluent_kafka, kafka"])
        .status()
        .is_ok_and(|s| s.success());
    if !clients {
        eprintln!("SKIP: needs confluent-kafka and kafka-python (pip)");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy_addr = listener.local_addr().expect("proxy addr");
    let broker_port = free_port();
    let broker_addr: SocketAddr = ([127, 0, 0, 1], broker_port).into();
    let _broker = Broker(
        Command::new(&tansu)
            .arg("broker")
            .args(["--listener-url", &format!("tcp://{broker_addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{proxy_addr}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for topic in ["orders", "payments"] {
        loop {
            let out = Command::new(&tansu)
                .args(["topic", "create", topic, "--partitions", "1"])
                .args(["--broker", &format!("tcp://{broker_addr}")])
                .output()
                .expect("tansu topic create");
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "tansu did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let set = load_str(POLICY, "p.yaml").expect("test policy loads");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    let proxy = KafkaProxy::serve_with_fixed_destination(
        listener,
        PolicyHandle::new(ProxyPolicy::new(&cluster)),
        KafkaConfig::plain(),
        FixedDestination {
            client: Some("10.0.1.2:40000".parse().expect("literal")),
            original_dst: "10.201.0.9:9092".parse().expect("literal"),
            upstream: broker_addr,
        },
    )
    .expect("proxy starts");
    let bootstrap = proxy_addr.to_string();
    let b = bootstrap.clone();
    let results = tokio::task::spawn_blocking(move || {
        let b = b.as_str();
        vec![
            client(&["produce", b, "orders", "first"]),
            client(&["produce", b, "orders", "second", "--kafka-python"]),
            client(&["produce", b, "payments"]),
            client(&["consume", b, "orders", "g1"]),
            client(&["consume", b, "orders", "g2", "--kafka-python"]),
            client(&["consume", b, "payments", "g3"]),
        ]
    })
    .await
    .expect("clients ran");
    // kafka-python producers are idempotent (InitProducerId, in neither
    // role): that one is denied with a cluster error.
    assert_eq!(results[0], "OK", "confluent produce to orders");
    assert_ne!(
        results[1], "OK",
        "kafka-python idempotent produce needs InitProducerId"
    );
    assert_eq!(
        results[2], "TOPIC_AUTHORIZATION_FAILED",
        "produce to payments"
    );
    assert!(
        results[3].contains("MSG first") && results[3].ends_with("COMMIT OK"),
        "confluent consumer: {}",
        results[3]
    );
    assert!(
        results[4].contains("MSG first") && results[4].ends_with("COMMIT OK"),
        "kafka-python consumer: {}",
        results[4]
    );
    // librdkafka gets TOPIC_AUTHORIZATION_FAILED for the topic's Metadata
    // (with the cluster's brokers, so it keeps its coordinator) and hands
    // it to the application; before, it polled until its timeout (EMPTY).
    assert_eq!(
        results[5], "TOPIC_AUTHORIZATION_FAILED",
        "confluent consumer subscribing to payments"
    );
    let metrics = proxy.render_metrics();
    assert!(
        metrics.contains("GetTelemetrySubscriptions") || metrics.contains("get_telemetry"),
        "librdkafka's telemetry request was judged (and denied):\n{metrics}"
    );
    proxy.shutdown().await;
}
