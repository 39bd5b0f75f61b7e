//! The three L7 proxies (HTTP on 15001, DNS on 15053, Kafka on 15092) and
//! the runtimes they run on. They deny everything until the first policy
//! is in.

use super::args::AgentArgs;
use super::learner::AgentLearner;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// The running proxies; dropping them stops them.
pub(super) struct Proxies {
    /// Runs the HTTP and Kafka proxies, the signal watch and the
    /// Kubernetes watcher.
    pub(super) runtime: tokio::runtime::Runtime,
    /// The policy every proxy judges by.
    pub(super) policy: proxy::PolicyHandle,
    http: proxy::Proxy,
    dns: proxy::DnsProxy,
    kafka: proxy::KafkaProxy,
}

impl Proxies {
    /// Starts the proxies. Learned DNS names go to `learner`, and each
    /// answer is held until the maps have its addresses (bounded).
    pub(super) fn start(args: &AgentArgs, learner: AgentLearner) -> Result<Self> {
        // The L7 proxy runs on a small tokio runtime beside the map loop.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy")
            .enable_all()
            .build()
            .context("starting the proxy runtime")?;
        let policy = proxy::PolicyHandle::deny_all();
        let http = {
            let _in_runtime = runtime.enter();
            let mut cfg = proxy::ProxyConfig::datapath();
            if let Some(dir) = &args.tls_secrets_dir {
                cfg.tls_secrets = proxy::TlsSecrets::from_dir(dir);
            } else if args.kubernetes {
                cfg.tls_secrets = crate::k8s::watch_tls_secrets(args.kubeconfig.clone());
            }
            proxy::Proxy::start(policy.clone(), cfg)
                .context("starting the HTTP proxy on port 15001")?
        };
        let dns = start_dns(args, policy.clone(), learner)?;
        let kafka = {
            let _in_runtime = runtime.enter();
            proxy::KafkaProxy::start(policy.clone(), proxy::KafkaConfig::datapath())
                .context("starting the Kafka proxy on port 15092")?
        };
        Ok(Proxies {
            runtime,
            policy,
            http,
            dns,
            kafka,
        })
    }

    /// Registers the three proxies' metrics in `root` (under
    /// `portcullis_proxy_`), for the admin endpoint's one encoding.
    pub(super) fn register_metrics(&self, root: &mut prometheus_client::registry::Registry) {
        self.http.metrics().register(root);
        self.dns.metrics().register(root);
        self.kafka.metrics().register(root);
    }
}

/// The DNS proxy, on a runtime and a thread of its own.
fn start_dns(
    args: &AgentArgs,
    policy: proxy::PolicyHandle,
    learner: AgentLearner,
) -> Result<proxy::DnsProxy> {
    let dns_runtime = if args.dns_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.dns_threads))
            .thread_name("dns")
            .enable_all()
            .build()
    }
    .context("starting the DNS proxy runtime")?;
    let dns = {
        let _in_runtime = dns_runtime.enter();
        let mut cfg = proxy::DnsConfig::datapath();
        if args.dns_nxdomain {
            cfg.deny_response = proxy::dns::DenyResponse::NxDomain;
        }
        cfg.min_ttl = Duration::from_secs(args.dns_min_ttl);
        cfg.learn_timeout = Duration::from_millis(args.dns_hold_ms);
        cfg.max_ips_per_name = args.dns_max_ips;
        cfg.udp_queries_per_second_per_source = args.dns_udp_qps_per_source;
        cfg.udp_burst_per_source = args.dns_udp_qps_per_source;
        proxy::DnsProxy::start(policy, cfg, Arc::new(learner))
            .context("starting the DNS proxy on port 15053")?
    };
    // A current-thread runtime runs only while a thread drives it.
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || dns_runtime.block_on(std::future::pending::<()>()))
        .context("starting the DNS proxy thread")?;
    Ok(dns)
}
