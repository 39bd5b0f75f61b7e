//! `portcullis observe`: a client of the agent's Hubble Observer API with
//! Hubble's common flags: the flows as `hubble observe -o json` prints
//! them (one `GetFlowsResponse` per line, proto3 JSON with proto field
//! names) or as compact lines.

// Hubble still fills `drop_reason` and `Summary`, which its proto marks
// deprecated; so do these flows.
#![allow(deprecated)]

use crate::hubble::flow::{self, Flow, FlowFilter};
use crate::hubble::observer::observer_client::ObserverClient;
use crate::hubble::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// The flags of `portcullis observe` (Hubble's names).
#[derive(Args, Debug, Default, Clone)]
pub struct ObserveArgs {
    /// `compact` (default; `text` is the same), `json` or `jsonpb` (one
    /// GetFlowsResponse per line, as `hubble observe -o json`).
    #[arg(long, short = 'o', default_value = "compact")]
    pub output: String,
    /// Keep streaming new flows after the stored ones.
    #[arg(long, short)]
    pub follow: bool,
    /// The last N stored flows (default 20 without --follow).
    #[arg(long)]
    pub last: Option<u64>,
    /// The first N stored flows.
    #[arg(long, conflicts_with_all = ["last", "follow"])]
    pub first: Option<u64>,
    /// Every stored flow.
    #[arg(long, conflicts_with_all = ["last", "first"])]
    pub all: bool,
    /// Flows since this long ago (`90s`, `5m`, `2h`).
    #[arg(long, value_parser = ago)]
    pub since: Option<std::time::Duration>,
    /// Flows until this long ago (`30s`, `1m`).
    #[arg(long, value_parser = ago)]
    pub until: Option<std::time::Duration>,
    /// Flows from or to this pod (`[namespace/]name-prefix`).
    #[arg(long)]
    pub pod: Vec<String>,
    #[arg(long)]
    pub from_pod: Vec<String>,
    #[arg(long)]
    pub to_pod: Vec<String>,
    /// Flows from or to pods of this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Vec<String>,
    #[arg(long)]
    pub from_namespace: Vec<String>,
    #[arg(long)]
    pub to_namespace: Vec<String>,
    /// Flows from or to endpoints with these labels (a selector).
    #[arg(long, short = 'l')]
    pub label: Vec<String>,
    #[arg(long)]
    pub from_label: Vec<String>,
    #[arg(long)]
    pub to_label: Vec<String>,
    /// Flows from or to this address or CIDR.
    #[arg(long)]
    pub ip: Vec<String>,
    #[arg(long)]
    pub from_ip: Vec<String>,
    #[arg(long)]
    pub to_ip: Vec<String>,
    /// Flows from or to this security identity.
    #[arg(long)]
    pub identity: Vec<u32>,
    #[arg(long)]
    pub from_identity: Vec<u32>,
    #[arg(long)]
    pub to_identity: Vec<u32>,
    /// Flows from or to this port.
    #[arg(long)]
    pub port: Vec<String>,
    #[arg(long)]
    pub from_port: Vec<String>,
    #[arg(long)]
    pub to_port: Vec<String>,
    /// FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR.
    #[arg(long)]
    pub verdict: Vec<String>,
    /// tcp, udp, sctp, icmp(v4|v6), http, dns, kafka.
    #[arg(long)]
    pub protocol: Vec<String>,
    /// HTTP path (a regular expression).
    #[arg(long)]
    pub http_path: Vec<String>,
    #[arg(long)]
    pub http_method: Vec<String>,
    /// HTTP status (`404`, `5+`).
    #[arg(long)]
    pub http_status: Vec<String>,
    /// DNS query (a regular expression).
    #[arg(long)]
    pub dns_query: Vec<String>,
    /// Event type: drop, trace, policy-verdict, l7.
    #[arg(long, short = 't')]
    pub r#type: Vec<String>,
    /// ingress or egress.
    #[arg(long)]
    pub traffic_direction: Vec<String>,
    /// Node name patterns (`node-*`).
    #[arg(long)]
    pub node_name: Vec<String>,
    /// Print the filters sent, as JSON, and stop.
    #[arg(long)]
    pub print_raw_filters: bool,
    /// The observer to ask: `unix:///path`, or `host:port` (default: the
    /// agent's `hubble.sock` in its state directory).
    #[arg(long)]
    pub server: Option<String>,
}

fn verdict(v: &str) -> Result<i32> {
    flow::Verdict::from_str_name(&v.to_ascii_uppercase())
        .map(|v| v as i32)
        .with_context(|| {
            format!("--verdict {v:?}: not one of FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR")
        })
}

fn event_type(t: &str) -> Result<flow::EventTypeFilter> {
    use crate::hubble::convert::event_type as et;
    let base = t.split(':').next().unwrap_or(t);
    let n = match base {
        "drop" => et::DROP,
        "trace" => et::TRACE,
        "policy-verdict" => et::POLICY_VERDICT,
        "l7" => et::ACCESS_LOG,
        _ => bail!("--type {t:?}: not one of drop, trace, policy-verdict, l7"),
    };
    Ok(flow::EventTypeFilter {
        r#type: n,
        match_sub_type: false,
        sub_type: 0,
    })
}

fn direction(d: &str) -> Result<i32> {
    match d.to_ascii_lowercase().as_str() {
        "ingress" => Ok(flow::TrafficDirection::Ingress as i32),
        "egress" => Ok(flow::TrafficDirection::Egress as i32),
        _ => bail!("--traffic-direction {d:?}: ingress or egress"),
    }
}

/// Hubble's way: `--from-*`/`--to-*` and the flags without a side go into
/// every filter; an "either" flag (`--pod`, `--namespace`, `--label`,
/// `--ip`, `--identity`, `--port`) makes two filters, one with it as the
/// source and one with it as the destination.
pub fn filters(a: &ObserveArgs) -> Result<Vec<FlowFilter>> {
    let scoped = |pods: &[String], namespaces: &[String]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in pods {
            if p.contains('/') || namespaces.is_empty() {
                out.push(p.clone());
            } else {
                out.extend(namespaces.iter().map(|n| format!("{n}/{p}")));
            }
        }
        if pods.is_empty() {
            out.extend(namespaces.iter().map(|n| format!("{n}/")));
        }
        out
    };
    let mut base = FlowFilter {
        source_pod: scoped(&a.from_pod, &a.from_namespace),
        destination_pod: scoped(&a.to_pod, &a.to_namespace),
        source_label: a.from_label.clone(),
        destination_label: a.to_label.clone(),
        source_ip: a.from_ip.clone(),
        destination_ip: a.to_ip.clone(),
        source_identity: a.from_identity.clone(),
        destination_identity: a.to_identity.clone(),
        source_port: a.from_port.clone(),
        destination_port: a.to_port.clone(),
        protocol: a.protocol.clone(),
        http_path: a.http_path.clone(),
        http_method: a.http_method.clone(),
        http_status_code: a.http_status.clone(),
        dns_query: a.dns_query.clone(),
        node_name: a.node_name.clone(),
        ..FlowFilter::default()
    };
    base.verdict = a
        .verdict
        .iter()
        .map(|v| verdict(v))
        .collect::<Result<_>>()?;
    base.event_type = a
        .r#type
        .iter()
        .map(|t| event_type(t))
        .collect::<Result<_>>()?;
    base.traffic_direction = a
        .traffic_direction
        .iter()
        .map(|d| direction(d))
        .collect::<Result<_>>()?;
    let either_pods = scoped(&a.pod, &a.namespace);
    let either = !either_pods.is_empty()
        || !a.label.is_empty()
        || !a.ip.is_empty()
        || !a.identity.is_empty()
        || !a.port.is_empty();
    if !either {
        return Ok(if base == FlowFilter::default() {
            vec![]
        } else {
            vec![base]
        });
    }
    let mut src = base.clone();
    src.source_pod.extend(either_pods.iter().cloned());
    src.source_label.extend(a.label.iter().cloned());
    src.source_ip.extend(a.ip.iter().cloned());
    src.source_identity.extend(a.identity.iter().copied());
    src.source_port.extend(a.port.iter().cloned());
    let mut dst = base;
    dst.destination_pod.extend(either_pods);
    dst.destination_label.extend(a.label.iter().cloned());
    dst.destination_ip.extend(a.ip.iter().cloned());
    dst.destination_identity.extend(a.identity.iter().copied());
    dst.destination_port.extend(a.port.iter().cloned());
    Ok(vec![src, dst])
}

/// `90s`, `5m`, `2h` (a number alone: seconds).
fn ago(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: a duration such as 90s, 5m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: a duration such as 90s, 5m or 2h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// The wall-clock time `d` ago.
fn before_now(d: std::time::Duration) -> pbjson_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(d);
    pbjson_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    }
}

/// The request the flags ask for.
pub fn request(a: &ObserveArgs) -> Result<GetFlowsRequest> {
    let windowed = a.since.is_some() || a.until.is_some();
    let number = if a.all {
        u64::MAX
    } else if let Some(n) = a.first {
        n
    } else if let Some(n) = a.last {
        n
    } else if a.follow || windowed {
        0
    } else {
        20
    };
    Ok(GetFlowsRequest {
        number,
        first: a.first.is_some(),
        follow: a.follow,
        whitelist: filters(a)?,
        since: a.since.map(before_now),
        until: a.until.map(before_now),
        ..GetFlowsRequest::default()
    })
}

/// A channel to an observer: `unix:///path` or `host:port`.
pub async fn connect(server: &str) -> Result<tonic::transport::Channel> {
    if let Some(path) = server.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        let shown = path.display().to_string();
        return tonic::transport::Endpoint::from_static("http://observer")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await
            .with_context(|| format!("connecting to {shown} (is the agent running?)"));
    }
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("--server {server:?}: not an address"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// `portcullis observe` against the observers in `servers` (one per node;
/// several are merged as they come).
pub fn run(servers: &[String], args: &ObserveArgs) -> Result<()> {
    let req = request(args)?;
    if args.print_raw_filters {
        println!("{}", serde_json::to_string(&req.whitelist)?);
        return Ok(());
    }
    let json = match args.output.as_str() {
        "json" | "jsonpb" => true,
        "compact" | "text" => false,
        o => bail!("--output {o:?}: compact, json or jsonpb"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<GetFlowsResponse>>(1024);
        for server in servers {
            let channel = connect(server).await?;
            let mut client = ObserverClient::new(channel).max_decoding_message_size(64 << 20);
            let mut stream = client
                .get_flows(req.clone())
                .await
                .map_err(|s| anyhow::anyhow!("{server}: {}", s.message()))?
                .into_inner();
            let tx = tx.clone();
            let server = server.clone();
            tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(r)) => {
                            if tx.send(Ok(r)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(s) => {
                            let _ = tx
                                .send(Err(anyhow::anyhow!("{server}: {}", s.message())))
                                .await;
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        let stdout = std::io::stdout();
        while let Some(r) = rx.recv().await {
            let r = r?;
            let mut out = stdout.lock();
            let line = if json { json_line(&r)? } else { compact(&r) };
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// One response as `hubble observe -o json` prints it: proto3 JSON with
/// the proto field names, timestamps in UTC with `Z`.
pub fn json_line(r: &GetFlowsResponse) -> Result<String> {
    static UTC: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"([{,]"time":"[0-9T:.\-]+)\+00:00""#).expect("a valid expression")
    });
    // Hubble's field order: the response (field 1-3), then node_name and
    // time (1000, 1001).
    let mut line = String::from("{");
    let mut member = |key: &str, value: String| {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&format!("\"{key}\":{value}"));
    };
    match &r.response_types {
        Some(get_flows_response::ResponseTypes::Flow(f)) => {
            member("flow", serde_json::to_string(f)?);
        }
        Some(get_flows_response::ResponseTypes::NodeStatus(n)) => {
            member("node_status", serde_json::to_string(n)?);
        }
        Some(get_flows_response::ResponseTypes::LostEvents(l)) => {
            member("lost_events", serde_json::to_string(l)?);
        }
        None => {}
    }
    if !r.node_name.is_empty() {
        member("node_name", serde_json::to_string(&r.node_name)?);
    }
    if let Some(t) = &r.time {
        member("time", serde_json::to_string(t)?);
    }
    line.push('}');
    Ok(UTC.replace_all(&line, "${1}Z\"").into_owned())
}

/// `Dec  7 20:39:11.123` of a timestamp.
fn short_time(t: Option<&pbjson_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    let ns = u128::try_from(t.seconds).unwrap_or(0) * 1_000_000_000
        + u128::try_from(t.nanos).unwrap_or(0);
    let full = crate::time::Rfc3339(ns).to_string(); // 2026-12-07T20:39:11.123Z
    let month = full
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| {
            [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ]
            .get(m.wrapping_sub(1))
            .copied()
        })
        .unwrap_or("???");
    let day: u32 = full.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(0);
    let clock = full.get(11..23).unwrap_or("");
    format!("{month} {day:>2} {clock}")
}

fn side(ep: Option<&flow::Endpoint>, ip: &str, port: Option<u16>) -> String {
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let Some(ep) = ep else {
        return format!("{ip}{port}");
    };
    let id = match ep.labels.iter().find_map(|l| l.strip_prefix("reserved:")) {
        Some(name) if ep.pod_name.is_empty() => name.to_string(),
        _ => format!("ID:{}", ep.identity),
    };
    if ep.pod_name.is_empty() {
        format!("{ip}{port} ({id})")
    } else {
        format!("{}/{}{port} ({id})", ep.namespace, ep.pod_name)
    }
}

fn policies(list: &[flow::Policy]) -> Vec<String> {
    list.iter()
        .map(|p| match p.namespace.as_str() {
            "" => format!("{} {}", p.kind, p.name),
            ns => format!("{} {ns}/{}", p.kind, p.name),
        })
        .collect()
}

/// One flow as a compact line, in Hubble's shape (plus the deciding
/// policies, which Hubble's compact lines leave out).
pub fn compact(r: &GetFlowsResponse) -> String {
    let f: &Flow = match &r.response_types {
        Some(get_flows_response::ResponseTypes::Flow(f)) => f,
        Some(get_flows_response::ResponseTypes::LostEvents(l)) => {
            return format!(
                "EVENTS LOST: HUBBLE_RING_BUFFER {} events",
                l.num_events_lost
            );
        }
        Some(get_flows_response::ResponseTypes::NodeStatus(n)) => {
            return format!("NODE STATUS: {} {}", n.node_names.join(","), n.message);
        }
        None => return String::new(),
    };
    let (sport, dport) = crate::hubble::filter::l4_ports(f);
    let ip = f.ip.clone().unwrap_or_default();
    let dir = flow::TrafficDirection::try_from(f.traffic_direction)
        .map(|d| match d {
            flow::TrafficDirection::Ingress => "INGRESS",
            flow::TrafficDirection::Egress => "EGRESS",
            flow::TrafficDirection::Unknown => "",
        })
        .unwrap_or("");
    let verdict = flow::Verdict::try_from(f.verdict)
        .map(|v| v.as_str_name())
        .unwrap_or("VERDICT_UNKNOWN");
    let kind = match f.event_type.as_ref().map(|e| e.r#type) {
        Some(crate::hubble::convert::event_type::DROP) => {
            let reason = flow::DropReason::try_from(f.drop_reason_desc)
                .map(|r| r.as_str_name().to_ascii_lowercase().replace('_', "-"))
                .unwrap_or_default();
            format!("{reason} {dir}")
        }
        Some(crate::hubble::convert::event_type::ACCESS_LOG) => {
            let what = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
                Some(flow::layer7::Record::Http(_)) => "http",
                Some(flow::layer7::Record::Dns(_)) => "dns",
                Some(flow::layer7::Record::Kafka(_)) => "kafka",
                None => "l7",
            };
            format!("{what}-response {dir}")
        }
        _ => format!("policy-verdict:L3-L4 {dir}"),
    };
    let by: Vec<String> = [
        &f.ingress_allowed_by,
        &f.egress_allowed_by,
        &f.ingress_denied_by,
        &f.egress_denied_by,
    ]
    .iter()
    .flat_map(|l| policies(l))
    .collect();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" by {}", by.join(", "))
    };
    let node = if r.node_name.is_empty() {
        String::new()
    } else {
        format!(" [{}]", r.node_name)
    };
    format!(
        "{}{node}: {} -> {} {kind} {verdict} ({}){by}",
        short_time(f.time.as_ref()),
        side(f.source.as_ref(), &ip.source, sport),
        side(f.destination.as_ref(), &ip.destination, dport),
        f.summary,
    )
}

#[cfg(test)]
mod tests;
