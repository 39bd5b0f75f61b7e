//! The portcullis Kafka proxy as a standalone process for
//! `benches/kafka_side_by_side.sh`: a CiliumNetworkPolicy allowing the
//! `client` pod to produce to one topic on the `kafka` pod, every
//! loopback connection judged as the client pod's flow to `kafka:9092`
//! redirected by the datapath, and allowed requests forwarded to a fixed
//! upstream (tansu in the bench).
//!
//! The client pod's address in the topology is 127.0.0.1, so the proxy
//! judges the real peer address of every connection; only the original
//! destination is fixed.

use std::net::SocketAddr;

use clap::Parser;
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{FixedDestination, KafkaConfig, KafkaProxy, PolicyHandle, ProxyPolicy};

const TOPOLOGY: &str = "
namespaces:
- {name: bench}
pods:
- {namespace: bench, name: client, labels: {app: client}, ip: 127.0.0.1}
- {namespace: bench, name: kafka, labels: {app: kafka}, ip: 10.0.1.92}
";

/// The broker pod's address as the original destination of every flow.
const BROKER: &str = "10.0.1.92:9092";

/// Produce to `TOPIC` (role produce: Produce, Metadata, ApiVersions).
const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench-kafka, namespace: bench}
spec:
  endpointSelector: {matchLabels: {app: kafka}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: '9092', protocol: TCP}]
      rules:
        kafka:
        - {role: produce, topic: TOPIC}
";

/// Serves the produce policy on a loopback port, forwarding to `upstream`.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19093")]
    listen: SocketAddr,
    /// Where allowed requests go (tansu in the bench).
    #[arg(long, default_value = "127.0.0.1:19094")]
    upstream: SocketAddr,
    /// The topic the client may produce to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn proxy_policy(topic: &str) -> Result<ProxyPolicy, String> {
    let text = POLICY.replace("TOPIC", topic);
    let set = load_str(&text, "kafka_proxy.rs:POLICY").map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let topo =
        Topology::from_yaml(TOPOLOGY, "kafka_proxy.rs:TOPOLOGY").map_err(|e| e.to_string())?;
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    Ok(ProxyPolicy::new(&cluster))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let policy = match proxy_policy(&args.topic) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kafka_proxy: the bench policy does not load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("bind {}: {e}", args.listen))?;
        let proxy = KafkaProxy::serve_with_fixed_destination(
            listener,
            PolicyHandle::new(policy),
            KafkaConfig::plain(),
            FixedDestination {
                client: None,
                original_dst: BROKER.parse().expect("literal"),
                upstream: args.upstream,
            },
        )
        .map_err(|e| format!("serve: {e}"))?;
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("waiting for ctrl-c: {e}"))?;
        eprint!("{}", proxy.render_metrics());
        proxy.shutdown().await;
        Ok::<(), String>(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka_proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
