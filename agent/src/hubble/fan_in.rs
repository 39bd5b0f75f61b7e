//! `portcullis relay`: every node's observer behind one Observer API (as
//! Hubble Relay), on 4245 by default. A request goes to every peer; the
//! stored flows come back merged in time order, followed flows as they
//! come; a peer that cannot be reached is named in a `node_status` event
//! and in `ServerStatus`, never hidden.

use super::observer::observer_client::ObserverClient;
use super::observer::observer_server::Observer;
use super::observer::{self as obs, GetFlowsRequest, GetFlowsResponse, get_flows_response};
use super::relay::{NodeState, NodeStatusEvent};
use super::server::FlowStream;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

/// One node's observer: its name and address (`unix:///path`, `host:port`).
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub address: String,
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        let (name, address) = s
            .split_once('=')
            .ok_or_else(|| format!("--peer {s:?}: NAME=ADDRESS (unix:///path or host:port)"))?;
        if name.is_empty() || address.is_empty() {
            return Err(format!(
                "--peer {s:?}: NAME=ADDRESS (unix:///path or host:port)"
            ));
        }
        Ok(Peer {
            name: name.to_string(),
            address: address.to_string(),
        })
    }
}

#[derive(Clone)]
pub struct Relay {
    pub peers: Vec<Peer>,
    /// One permit per stream served (as the agent's observer).
    pub slots: std::sync::Arc<tokio::sync::Semaphore>,
}

type Client = ObserverClient<tonic::transport::Channel>;

async fn client(p: &Peer) -> Result<Client, String> {
    let channel = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::cli::observe::connect(&p.address),
    )
    .await
    .map_err(|_| format!("{}: no answer within 2 s", p.address))?
    .map_err(|e| format!("{e:#}"))?;
    Ok(ObserverClient::new(channel).max_decoding_message_size(64 << 20))
}

fn status_event(state: NodeState, nodes: Vec<String>, message: String) -> GetFlowsResponse {
    GetFlowsResponse {
        time: None,
        node_name: String::new(),
        response_types: Some(get_flows_response::ResponseTypes::NodeStatus(
            NodeStatusEvent {
                state_change: state as i32,
                node_names: nodes,
                message,
            },
        )),
    }
}

fn time_of(r: &GetFlowsResponse) -> i128 {
    r.time
        .as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
        .unwrap_or(0)
}

impl Relay {
    /// A client per peer, or why not.
    async fn clients(&self) -> Vec<(Peer, Result<Client, String>)> {
        let mut out = Vec::new();
        for p in &self.peers {
            out.push((p.clone(), client(p).await));
        }
        out
    }
}

#[tonic::async_trait]
impl Observer for Relay {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let req = request.into_inner();
        // The filters are checked here first: a bad one is the caller's
        // error once, not one per node.
        super::server::Query::new(&req)?;
        let permit = super::server::take_slot(&self.slots)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let clients = self.clients().await;
        tokio::spawn(async move {
            let _permit = permit;
            let mut connected = Vec::new();
            let mut streams = Vec::new();
            for (peer, c) in clients {
                match c {
                    Ok(mut c) => match c.get_flows(req.clone()).await {
                        Ok(s) => {
                            connected.push(peer.name.clone());
                            streams.push((peer.name, s.into_inner()));
                        }
                        Err(e) => {
                            let ev = status_event(
                                NodeState::NodeError,
                                vec![peer.name],
                                e.message().to_string(),
                            );
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                    },
                    Err(why) => {
                        let ev = status_event(NodeState::NodeUnavailable, vec![peer.name], why);
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if !connected.is_empty() {
                let ev = status_event(NodeState::NodeConnected, connected, String::new());
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if req.follow {
                // Each node's stream on its own task, until the client
                // leaves (the slot is held until the last one ends).
                let permit = std::sync::Arc::new(_permit);
                for (name, mut s) in streams {
                    let tx = tx.clone();
                    let permit = permit.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        loop {
                            let next = tokio::select! {
                                m = s.message() => m,
                                () = tx.closed() => return,
                            };
                            match next {
                                Ok(Some(r)) => {
                                    if tx.send(Ok(r)).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => return,
                                Err(e) => {
                                    let ev = status_event(
                                        NodeState::NodeError,
                                        vec![name],
                                        e.message().to_string(),
                                    );
                                    let _ = tx.send(Ok(ev)).await;
                                    return;
                                }
                            }
                        }
                    });
                }
                return;
            }
            // Stored flows: every node's, in time order.
            let mut all = Vec::new();
            for (name, mut s) in streams {
                loop {
                    match s.message().await {
                        Ok(Some(r)) => all.push(r),
                        Ok(None) => break,
                        Err(e) => {
                            all.push(status_event(
                                NodeState::NodeError,
                                vec![name],
                                e.message().to_string(),
                            ));
                            break;
                        }
                    }
                }
            }
            all.sort_by_key(time_of);
            for r in all {
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_nodes(
        &self,
        _request: Request<obs::GetNodesRequest>,
    ) -> Result<Response<obs::GetNodesResponse>, Status> {
        let mut nodes = Vec::new();
        for (peer, c) in self.clients().await {
            let got = match c {
                Ok(mut c) => c
                    .get_nodes(obs::GetNodesRequest {})
                    .await
                    .map(|r| r.into_inner().nodes)
                    .map_err(|e| e.message().to_string()),
                Err(e) => Err(e),
            };
            match got {
                Ok(list) => nodes.extend(list.into_iter().map(|mut n| {
                    n.address = peer.address.clone();
                    n
                })),
                Err(_) => nodes.push(obs::Node {
                    name: peer.name.clone(),
                    address: peer.address.clone(),
                    state: NodeState::NodeUnavailable as i32,
                    ..obs::Node::default()
                }),
            }
        }
        Ok(Response::new(obs::GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<obs::GetNamespacesRequest>,
    ) -> Result<Response<obs::GetNamespacesResponse>, Status> {
        let mut set = BTreeSet::new();
        for (_, c) in self.clients().await {
            if let Ok(mut c) = c
                && let Ok(r) = c.get_namespaces(obs::GetNamespacesRequest {}).await
            {
                set.extend(r.into_inner().namespaces.into_iter().map(|n| n.namespace));
            }
        }
        Ok(Response::new(obs::GetNamespacesResponse {
            namespaces: set
                .into_iter()
                .map(|namespace| obs::Namespace {
                    cluster: String::new(),
                    namespace,
                })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _request: Request<obs::ServerStatusRequest>,
    ) -> Result<Response<obs::ServerStatusResponse>, Status> {
        let mut out = obs::ServerStatusResponse {
            version: format!("portcullis relay {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let (mut up, mut down) = (0u32, Vec::new());
        for (peer, c) in self.clients().await {
            let got = match c {
                Ok(mut c) => c.server_status(obs::ServerStatusRequest {}).await.ok(),
                Err(_) => None,
            };
            match got {
                Some(s) => {
                    let s = s.into_inner();
                    up += 1;
                    out.num_flows += s.num_flows;
                    out.max_flows += s.max_flows;
                    out.seen_flows += s.seen_flows;
                    out.uptime_ns = out.uptime_ns.max(s.uptime_ns);
                }
                None => down.push(peer.name),
            }
        }
        out.num_connected_nodes = Some(up.into());
        out.num_unavailable_nodes = Some((down.len() as u32).into());
        out.unavailable_nodes = down;
        Ok(Response::new(out))
    }
}
