//! The portcullis L7 proxy as a standalone process for
//! `benches/l7_side_by_side.sh`: a CiliumNetworkPolicy with ten HTTP rules
//! on `server:80`, judged as if each loopback connection were the `client`
//! pod's flow to `server:80` redirected by the datapath, and allowed
//! requests forwarded to a fixed upstream (nginx in the bench).
//!
//! The client pod's address in the topology is 127.0.0.1, so the proxy
//! judges the real peer address of every connection it accepts; nothing is
//! faked but the original destination.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{FixedDestination, PolicyHandle, Proxy, ProxyConfig, ProxyPolicy, UpstreamConfig};

/// The client pod sits on 127.0.0.1: the address a loopback load generator
/// connects from. The server pod's address is the original destination the
/// proxy judges; nothing listens there.
const TOPOLOGY: &str = "
namespaces:
- {name: bench}
pods:
- {namespace: bench, name: client, labels: {app: client}, ip: 127.0.0.1}
- {namespace: bench, name: server, labels: {app: server}, ip: 10.0.1.1}
";

/// The server's address as the original destination of every flow.
const SERVER: &str = "10.0.1.1:80";

/// Ten HTTP rules on the server's ingress from the client. The benchmark
/// load (`GET /public/index.html`) is allowed by the last one, so every
/// request is judged against all ten. `benches/l7_side_by_side.sh` writes
/// the same rules, in the same order, as Envoy routes and haproxy ACLs.
pub const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-l7, namespace: bench}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: '80', protocol: TCP}]
      rules:
        http:
        - {method: GET, path: /api/v1/items}
        - {method: POST, path: /api/v1/items}
        - {method: GET, path: '/api/v1/users/[0-9]+'}
        - {method: PUT, path: '/api/v1/users/[0-9]+'}
        - {method: DELETE, path: '/api/v1/users/[0-9]+', headers: ['X-Admin: true']}
        - {method: GET, path: /healthz, host: api.example.com}
        - {method: GET, path: /metrics, headers: ['X-Scrape: yes']}
        - {method: POST, path: /api/v1/orders, host: orders.example.com}
        - {method: GET, path: '/static/.*', host: cdn.example.com}
        - {method: GET, path: '/public/.*'}
";

/// Serves the ten-rule policy on a loopback port, forwarding to `upstream`.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// Where allowed requests go (nginx in the bench).
    #[arg(long, default_value = "127.0.0.1:18080")]
    upstream: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Print the policy YAML and exit.
    #[arg(long)]
    print_policy: bool,
    /// The TLS path: clients speak TLS, the proxy terminates with secret
    /// `bench/term` and re-originates to the upstream verifying it with
    /// `bench/orig` (`DIR/bench/{term,orig}/...`), the same ten HTTP rules
    /// judged in between.
    #[arg(long)]
    tls_secrets_dir: Option<std::path::PathBuf>,
}

/// [`POLICY`] with `terminatingTLS`/`originatingTLS` on the port when
/// `tls` (the rules are unchanged).
fn policy_text(tls: bool) -> String {
    if !tls {
        return POLICY.to_string();
    }
    POLICY.replace(
        "    - ports: [{port: '80', protocol: TCP}]\n",
        "    - ports: [{port: '80', protocol: TCP}]\n      terminatingTLS: {secret: {name: term}}\n      \
         originatingTLS: {secret: {name: orig}}\n",
    )
}

fn proxy_policy(tls: bool) -> Result<ProxyPolicy, String> {
    let text = policy_text(tls);
    let set = load_str(&text, "l7_proxy.rs:POLICY").map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let topo = Topology::from_yaml(TOPOLOGY, "l7_proxy.rs:TOPOLOGY").map_err(|e| e.to_string())?;
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    Ok(ProxyPolicy::new(&cluster))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_policy {
        print!("{}", policy_text(args.tls_secrets_dir.is_some()));
        return std::process::ExitCode::SUCCESS;
    }
    let policy = match proxy_policy(args.tls_secrets_dir.is_some()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("l7_proxy: the bench policy does not load: {e}");
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
        let config = ProxyConfig {
            http_port: args.listen.port(),
            upstream: UpstreamConfig::plain(),
            detect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            limits: proxy::LimitConfig::from_process(),
            tls_secrets: args
                .tls_secrets_dir
                .as_ref()
                .map(proxy::TlsSecrets::from_dir)
                .unwrap_or_default(),
        };
        let proxy = Proxy::serve_with_fixed_destination(
            listener,
            PolicyHandle::new(policy),
            config,
            FixedDestination {
                client: None,
                original_dst: SERVER.parse().expect("SERVER is a socket address"),
                upstream: args.upstream,
            },
        )
        .map_err(|e| format!("serve on {}: {e}", args.listen))?;
        eprintln!(
            "l7_proxy: listening on {} -> {} ({} workers)",
            args.listen, args.upstream, args.workers
        );
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("waiting for a signal: {e}"))?;
        proxy.shutdown().await;
        Ok::<(), String>(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("l7_proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
