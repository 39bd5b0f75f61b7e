//! `portcullis policy check|explain|matrix`.

use clap::{Args, Subcommand, ValueEnum};
use policy_model::explain::{HttpRequestSpec, KafkaRequestSpec};
use policy_model::{
    Cluster, FlowPeer, FlowQuery, FqdnCache, L7Request, PolicySet, Protocol, Topology,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files or directories; print every error with its
    /// file, document, field and reason. Exits non-zero on any error.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Answer one question about one flow: allowed or denied, at which
    /// layer, and which rule decided.
    Explain(Box<ExplainArgs>),
    /// Print the pod-to-pod reachability matrix, or an HTML service map.
    Matrix(Box<MatrixArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MatrixFormat {
    Text,
    Html,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Policy file or directory (repeatable).
    #[arg(long = "policy", required = true)]
    policies: Vec<PathBuf>,
    /// Topology file (namespaces, pods, node).
    #[arg(long)]
    topology: PathBuf,
    /// Source pod as NAMESPACE/POD.
    #[arg(long, conflicts_with = "from_ip", required_unless_present = "from_ip")]
    from: Option<String>,
    /// Source address.
    #[arg(long)]
    from_ip: Option<IpAddr>,
    /// Destination pod as NAMESPACE/POD.
    #[arg(long, conflicts_with = "to_ip", required_unless_present = "to_ip")]
    to: Option<String>,
    /// Destination address.
    #[arg(long)]
    to_ip: Option<IpAddr>,
    /// The destination address was learned from a DNS answer for NAME
    /// (repeatable: an address several names resolve to carries them all,
    /// and a `toFQDNs` deny of any of them denies it).
    #[arg(long, requires = "to_ip")]
    to_fqdn: Vec<String>,
    /// Destination port (ICMP type for ICMP); none for the extended
    /// protocols, which have no ports.
    #[arg(long)]
    port: Option<u16>,
    /// TCP, UDP, SCTP, ICMP, ICMPv6, or an extended protocol: VRRP, IGMP,
    /// GRE, IPIP, IPV6, ESP, AH.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    #[arg(long)]
    http_method: Option<String>,
    #[arg(long)]
    http_path: Option<String>,
    #[arg(long)]
    http_host: Option<String>,
    /// `Name: value` (repeatable).
    #[arg(long)]
    http_header: Vec<String>,
    /// DNS query name.
    #[arg(long)]
    dns_name: Option<String>,
    /// Kafka API key: a name (`produce`, `fetch`, …) or a number.
    #[arg(long)]
    kafka_api_key: Option<String>,
    #[arg(long)]
    kafka_api_version: Option<i16>,
    /// Topic (repeatable).
    #[arg(long)]
    kafka_topic: Vec<String>,
    #[arg(long)]
    kafka_client_id: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Args)]
pub struct MatrixArgs {
    /// Policy file or directory (repeatable).
    #[arg(long = "policy", required = true)]
    policies: Vec<PathBuf>,
    #[arg(long)]
    topology: PathBuf,
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// `text` (the e2e reachability table) or `html` (a self-contained
    /// HTML/SVG service map).
    #[arg(long, value_enum, default_value = "text")]
    format: MatrixFormat,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    let result = match cmd {
        PolicyCommand::Check { paths } => return check(&paths),
        PolicyCommand::Explain(a) => explain(&a),
        PolicyCommand::Matrix(a) => matrix(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    match PolicySet::load_paths(paths) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            let rules: usize = set.policies.iter().map(|p| p.rules.len()).sum();
            println!("ok: {} policies, {rules} rules", set.policies.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn load(policies: &[PathBuf], topology: &Path) -> Result<(PolicySet, Topology), String> {
    let set = PolicySet::load_paths(policies).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\nerror: ")
    })?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let mut topo = Topology::from_file(topology).map_err(|e| e.to_string())?;
    // CIDR groups come with the policies (or the topology file).
    topo.cidr_groups.extend(set.cidr_groups.iter().cloned());
    Ok((set, topo))
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match Protocol::parse(s) {
        Some(Protocol::Any) | None => Err(format!(
            "--protocol {s:?}: expected TCP, UDP, SCTP, ICMP, ICMPv6, VRRP, IGMP, GRE, IPIP, IPV6, ESP or AH"
        )),
        Some(p) => Ok(p),
    }
}

fn explain(a: &ExplainArgs) -> Result<(), String> {
    let (set, topo) = load(&a.policies, &a.topology)?;
    let protocol = parse_protocol(&a.protocol)?;
    let port = match (a.port, protocol.is_extended()) {
        (Some(p), _) => p,
        (None, true) => 0,
        (None, false) => return Err(format!("--port is needed for {protocol}")),
    };
    let l7 = l7_request(a)?;
    let mut fqdn = FqdnCache::default();
    if let Some(ip) = a.to_ip {
        for name in &a.to_fqdn {
            fqdn.learn(name, ip);
        }
    }
    let from = match (&a.from, a.from_ip) {
        (Some(p), _) => FlowPeer::Pod(p.clone()),
        (None, Some(ip)) => FlowPeer::Ip(ip),
        _ => return Err("give --from NS/POD or --from-ip IP".into()),
    };
    let to = match (&a.to, a.to_ip) {
        (Some(p), _) => FlowPeer::Pod(p.clone()),
        (None, Some(ip)) => FlowPeer::Ip(ip),
        _ => return Err("give --to NS/POD or --to-ip IP".into()),
    };
    for (flag, peer) in [("--from", &from), ("--to", &to)] {
        if let FlowPeer::Pod(p) = peer
            && topo.pod(p).is_none()
        {
            return Err(format!(
                "{flag} {p:?}: no such pod in {} (write NAMESPACE/POD)",
                a.topology.display()
            ));
        }
    }
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &fqdn);
    let q = FlowQuery {
        from,
        to,
        to_fqdn: (!a.to_fqdn.is_empty()).then(|| a.to_fqdn.join(", ")),
        protocol,
        port,
        l7,
    };
    let e = policy_model::explain(&cluster, &q).map_err(|e| e.to_string())?;
    match a.output {
        OutputFormat::Text => print!("{e}"),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&e).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

fn l7_request(a: &ExplainArgs) -> Result<Option<L7Request>, String> {
    let http = a.http_method.is_some()
        || a.http_path.is_some()
        || a.http_host.is_some()
        || !a.http_header.is_empty();
    let kafka = a.kafka_api_key.is_some()
        || a.kafka_api_version.is_some()
        || !a.kafka_topic.is_empty()
        || a.kafka_client_id.is_some();
    let dns = a.dns_name.is_some();
    if [http, kafka, dns].iter().filter(|x| **x).count() > 1 {
        return Err(
            "give the flags of one L7 protocol only (--http-*, --dns-name or --kafka-*)".into(),
        );
    }
    if http {
        let mut headers = Vec::new();
        for h in &a.http_header {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--http-header {h:?}: expected 'Name: value'"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        return Ok(Some(L7Request::Http(HttpRequestSpec {
            method: a.http_method.clone().unwrap_or_else(|| "GET".into()),
            path: a.http_path.clone().unwrap_or_else(|| "/".into()),
            host: a.http_host.clone().unwrap_or_default(),
            headers,
        })));
    }
    if let Some(name) = &a.dns_name {
        return Ok(Some(L7Request::Dns { name: name.clone() }));
    }
    if kafka {
        let key = a
            .kafka_api_key
            .as_deref()
            .ok_or("--kafka-api-key is required with the other --kafka-* flags")?;
        let api_key = key
            .parse::<i16>()
            .ok()
            .or_else(|| policy_model::l7::kafka::api_key_by_name(key))
            .ok_or_else(|| format!("--kafka-api-key {key:?}: unknown Kafka API key"))?;
        return Ok(Some(L7Request::Kafka(KafkaRequestSpec {
            api_key,
            api_version: a.kafka_api_version.unwrap_or(0),
            client_id: a.kafka_client_id.clone(),
            topics: a.kafka_topic.clone(),
        })));
    }
    Ok(None)
}

fn matrix(a: &MatrixArgs) -> Result<(), String> {
    let (set, topo) = load(&a.policies, &a.topology)?;
    let protocol = parse_protocol(&a.protocol)?;
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    // The extended protocols have no ports: the datapath looks them up with 0.
    let port = if protocol.is_extended() { 0 } else { a.port };
    let m = policy_model::matrix::reachability(&cluster, protocol, port);
    let text = match a.format {
        MatrixFormat::Text => m.to_table(),
        MatrixFormat::Html => crate::service_map::render(&m, &cluster),
    };
    match &a.out {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
