//! The agent's Observer service: `GetFlows` over the ring (the last or
//! first N, a time window, then following), `ServerStatus`, `GetNodes`,
//! `GetNamespaces`; with gRPC health and reflection, on a unix socket and
//! a TCP address, on a thread and runtime of its own so that no client
//! ever holds up the datapath's events or the proxies.

// Hubble still fills `drop_reason` and `Summary`, which its proto marks
// deprecated; so do these flows.
#![allow(deprecated)]

use super::filter::Filters;
use super::flow::{self, Flow};
use super::observer::observer_server::{Observer, ObserverServer};
use super::observer::{self as obs, GetFlowsRequest, GetFlowsResponse};
use super::ring::{Entry, Ring};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Flows sent to one client ahead of what it has read.
const CLIENT_QUEUE: usize = 256;

/// `GetFlows` streams served at once, all clients together: a client that
/// opens streams without end gets ResourceExhausted, never an agent that
/// grows without bound.
pub const MAX_STREAMS: usize = 64;

/// The streams being served (permits of [`MAX_STREAMS`]).
pub fn stream_slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS))
}

/// A slot for one more stream, held as long as it is served; or
/// ResourceExhausted when all are taken.
pub fn take_slot(
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    slots.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "{MAX_STREAMS} flow streams are being served; try again later"
        ))
    })
}

pub type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

/// One node's observer.
#[derive(Clone)]
pub struct Service {
    pub ring: Arc<Ring>,
    pub node: String,
    /// Where this observer listens (for `GetNodes`).
    pub address: String,
    /// Counts the flows clients lost (too slow for the ring).
    pub lost: prometheus_client::metrics::counter::Counter,
    /// One permit per stream served ([`stream_slots`]).
    pub slots: Arc<tokio::sync::Semaphore>,
}

fn response(node: &str, f: Arc<Flow>) -> GetFlowsResponse {
    GetFlowsResponse {
        time: f.time,
        node_name: node.to_string(),
        response_types: Some(obs::get_flows_response::ResponseTypes::Flow(
            Arc::unwrap_or_clone(f),
        )),
    }
}

fn lost(node: &str, n: u64) -> GetFlowsResponse {
    lost_at(node, n, flow::LostEventSource::HubbleRingBuffer)
}

fn lost_at(node: &str, n: u64, source: flow::LostEventSource) -> GetFlowsResponse {
    GetFlowsResponse {
        time: None,
        node_name: node.to_string(),
        response_types: Some(obs::get_flows_response::ResponseTypes::LostEvents(
            flow::LostEvent {
                source: source as i32,
                num_events_lost: n,
                cpu: None,
            },
        )),
    }
}

fn nanos(t: &pbjson_types::Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// The request, checked.
pub struct Query {
    pub filters: Filters,
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<i128>,
    pub until: Option<i128>,
    /// Top-level fields to keep (`None`: all).
    pub mask: Option<BTreeSet<String>>,
}

/// The top-level fields of a flow a field mask may name.
const FLOW_FIELDS: [&str; 31] = [
    "time",
    "uuid",
    "verdict",
    "drop_reason",
    "auth_type",
    "ethernet",
    "IP",
    "l4",
    "source",
    "destination",
    "Type",
    "node_name",
    "node_labels",
    "source_names",
    "destination_names",
    "l7",
    "reply",
    "event_type",
    "source_service",
    "destination_service",
    "traffic_direction",
    "policy_match_type",
    "trace_observation_point",
    "drop_reason_desc",
    "is_reply",
    "interface",
    "proxy_port",
    "Summary",
    "egress_allowed_by",
    "ingress_allowed_by",
    "policy_log",
];

impl Query {
    pub fn new(r: &GetFlowsRequest) -> Result<Query, Status> {
        let filters = Filters::new(&r.whitelist, &r.blacklist).map_err(Status::invalid_argument)?;
        if r.first && r.follow {
            return Err(Status::invalid_argument(
                "first and follow cannot be asked together",
            ));
        }
        let mask = match &r.field_mask {
            Some(m) if !m.paths.is_empty() => {
                let mut keep = BTreeSet::new();
                for p in &m.paths {
                    let top = p.split('.').next().unwrap_or("");
                    let known = FLOW_FIELDS.contains(&top)
                        || ["ingress_denied_by", "egress_denied_by"].contains(&top);
                    if !known {
                        return Err(Status::invalid_argument(format!(
                            "field_mask: {p:?} names no field of flow.Flow"
                        )));
                    }
                    keep.insert(top.to_string());
                }
                Some(keep)
            }
            _ => None,
        };
        Ok(Query {
            filters,
            number: r.number,
            first: r.first,
            follow: r.follow,
            since: r.since.as_ref().map(nanos),
            until: r.until.as_ref().map(nanos),
            mask,
        })
    }

    fn in_window(&self, f: &Flow) -> bool {
        let t = f.time.as_ref().map(nanos).unwrap_or(0);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn wanted(&self, f: &Flow) -> bool {
        self.in_window(f) && self.filters.matches(f)
    }

    /// The flow with only the masked fields.
    pub fn masked(&self, f: Arc<Flow>) -> Arc<Flow> {
        let Some(keep) = &self.mask else { return f };
        let src = Arc::unwrap_or_clone(f);
        let mut out = Flow::default();
        let k = |name: &str| keep.contains(name);
        macro_rules! take {
            ($($name:literal => $field:ident),* $(,)?) => {
                $(if k($name) { out.$field = src.$field.clone(); })*
            };
        }
        take!(
            "time" => time, "uuid" => uuid, "verdict" => verdict, "drop_reason" => drop_reason,
            "auth_type" => auth_type, "ethernet" => ethernet, "IP" => ip, "l4" => l4,
            "source" => source, "destination" => destination, "Type" => r#type,
            "node_name" => node_name, "node_labels" => node_labels,
            "source_names" => source_names, "destination_names" => destination_names,
            "l7" => l7, "reply" => reply, "event_type" => event_type,
            "source_service" => source_service, "destination_service" => destination_service,
            "traffic_direction" => traffic_direction, "policy_match_type" => policy_match_type,
            "trace_observation_point" => trace_observation_point,
            "drop_reason_desc" => drop_reason_desc, "is_reply" => is_reply,
            "interface" => interface, "proxy_port" => proxy_port, "Summary" => summary,
            "egress_allowed_by" => egress_allowed_by, "ingress_allowed_by" => ingress_allowed_by,
            "egress_denied_by" => egress_denied_by, "ingress_denied_by" => ingress_denied_by,
            "policy_log" => policy_log,
        );
        Arc::new(out)
    }

    /// The stored flows this request starts with.
    pub fn initial(&self, held: &[Entry]) -> Vec<Arc<Flow>> {
        let matching = held
            .iter()
            .filter(|e| e.kernel_lost == 0 && self.wanted(&e.flow));
        let n = usize::try_from(self.number).unwrap_or(usize::MAX);
        let windowed = self.since.is_some() || self.until.is_some();
        let picked: Vec<&Entry> = if self.number == 0 {
            // No number: the window's flows, or (following) none.
            if windowed || !self.follow {
                matching.collect()
            } else {
                vec![]
            }
        } else if self.first {
            matching.take(n).collect()
        } else {
            let all: Vec<&Entry> = matching.collect();
            let skip = all.len().saturating_sub(n);
            all.into_iter().skip(skip).collect()
        };
        picked.into_iter().map(|e| e.flow.clone()).collect()
    }
}

/// Streams `query`'s flows from `ring` into `tx` until the client leaves
/// (or, without `follow`, after the stored ones).
pub async fn stream_flows(
    ring: Arc<Ring>,
    node: String,
    query: Query,
    tx: tokio::sync::mpsc::Sender<Result<GetFlowsResponse, Status>>,
    lost_counter: prometheus_client::metrics::counter::Counter,
) {
    let (held, mut next) = ring.snapshot_and_next();
    for f in query.initial(&held) {
        if tx.send(Ok(response(&node, query.masked(f)))).await.is_err() {
            return;
        }
    }
    if !query.follow {
        return;
    }
    let mut written = ring.subscribe();
    loop {
        let read = ring.read_from(next, 512);
        if read.lost > 0 {
            lost_counter.inc_by(read.lost);
            if tx.send(Ok(lost(&node, read.lost))).await.is_err() {
                return;
            }
        }
        next += read.lost;
        if read.flows.is_empty() {
            tokio::select! {
                changed = written.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            continue;
        }
        for e in read.flows {
            next = e.seq + 1;
            if e.kernel_lost > 0 {
                let ev = lost_at(
                    &node,
                    e.kernel_lost,
                    flow::LostEventSource::PerfEventRingBuffer,
                );
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
                continue;
            }
            if query
                .until
                .is_some_and(|u| e.flow.time.as_ref().map(nanos).unwrap_or(0) > u)
            {
                return;
            }
            if query.wanted(&e.flow)
                && tx
                    .send(Ok(response(&node, query.masked(e.flow))))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

/// Namespaces of the flows held, as `GetNamespaces` reports them.
pub fn namespaces(held: &[Entry]) -> Vec<obs::Namespace> {
    let mut set = BTreeSet::new();
    for e in held.iter().filter(|e| e.kernel_lost == 0) {
        for ep in [&e.flow.source, &e.flow.destination].into_iter().flatten() {
            if !ep.namespace.is_empty() {
                set.insert(ep.namespace.clone());
            }
        }
    }
    set.into_iter()
        .map(|namespace| obs::Namespace {
            cluster: String::new(),
            namespace,
        })
        .collect()
}

#[tonic::async_trait]
impl Observer for Service {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let query = Query::new(request.get_ref())?;
        let permit = take_slot(&self.slots)?;
        let (tx, rx) = tokio::sync::mpsc::channel(CLIENT_QUEUE);
        let (ring, node, lost) = (self.ring.clone(), self.node.clone(), self.lost.clone());
        tokio::spawn(async move {
            stream_flows(ring, node, query, tx, lost).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_nodes(
        &self,
        _request: Request<obs::GetNodesRequest>,
    ) -> Result<Response<obs::GetNodesResponse>, Status> {
        let (num, seen) = self.ring.counts();
        Ok(Response::new(obs::GetNodesResponse {
            nodes: vec![obs::Node {
                name: self.node.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                address: self.address.clone(),
                state: super::relay::NodeState::NodeConnected as i32,
                tls: Some(obs::Tls::default()),
                uptime_ns: self.ring.uptime_ns(),
                num_flows: num,
                max_flows: self.ring.capacity() as u64,
                seen_flows: seen,
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<obs::GetNamespacesRequest>,
    ) -> Result<Response<obs::GetNamespacesResponse>, Status> {
        Ok(Response::new(obs::GetNamespacesResponse {
            namespaces: namespaces(&self.ring.snapshot()),
        }))
    }

    async fn server_status(
        &self,
        _request: Request<obs::ServerStatusRequest>,
    ) -> Result<Response<obs::ServerStatusResponse>, Status> {
        let (num, seen) = self.ring.counts();
        Ok(Response::new(obs::ServerStatusResponse {
            num_flows: num,
            max_flows: self.ring.capacity() as u64,
            seen_flows: seen,
            uptime_ns: self.ring.uptime_ns(),
            version: format!("portcullis {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }))
    }
}

/// Where the observer listens.
pub struct Listen {
    /// `None`: TCP only.
    pub unix: Option<PathBuf>,
    /// `None`: the unix socket only.
    pub tcp: Option<SocketAddr>,
}

/// A tonic router with `service`, health and reflection.
pub fn router<S>(service: S) -> Result<tonic::transport::server::Router>
where
    S: Observer,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    // Reflection names every service served: the observer, health and
    // reflection itself (both versions clients ask).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(super::DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building gRPC reflection")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building gRPC reflection (v1alpha)")?;
    let observer = ObserverServer::new(service);
    tokio::spawn(async move {
        health.set_serving::<ObserverServer<S>>().await;
    });
    Ok(tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(observer))
}

/// Serves `service` on the connections of `incoming` until it fails
/// (logged, naming `what`).
async fn serve_on<S, I, IO, E>(service: S, incoming: I, what: &str)
where
    S: Observer,
    I: tokio_stream::Stream<Item = Result<IO, E>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match router(service) {
        Ok(r) => {
            if let Err(e) = r.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "the observer's {what} stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, "the observer cannot serve"),
    }
}

/// Serves `service` on `listen` (both addresses) on a thread of its own.
/// Binding happens before this returns, so a failure to bind is the
/// caller's error.
pub fn spawn<S>(name: &str, service: S, listen: Listen) -> Result<()>
where
    S: Observer + Clone,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the observer's runtime")?;
    let (unix, tcp) = rt.block_on(async {
        let unix = match &listen.unix {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                Some(
                    tokio::net::UnixListener::bind(path)
                        .with_context(|| format!("binding {}", path.display()))?,
                )
            }
            None => None,
        };
        let tcp = match listen.tcp {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (--hubble-listen-address)"))?,
            ),
            None => None,
        };
        anyhow::Ok((unix, tcp))
    })?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            rt.block_on(async move {
                let serve_unix = async {
                    if let Some(unix) = unix {
                        let incoming = tokio_stream::wrappers::UnixListenerStream::new(unix);
                        serve_on(service.clone(), incoming, "unix socket").await;
                    }
                };
                let serve_tcp = async {
                    if let Some(tcp) = tcp {
                        let incoming = tokio_stream::wrappers::TcpListenerStream::new(tcp);
                        serve_on(service.clone(), incoming, "TCP listener").await;
                    }
                };
                tokio::join!(serve_unix, serve_tcp);
            })
        })
        .context("starting the observer")?;
    Ok(())
}

#[cfg(test)]
mod tests;
