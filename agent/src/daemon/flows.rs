//! The flow stream behind `portcullis observe`: the kernel's flow events and
//! the proxies' access lines, as JSON lines on a Unix socket.

use crate::access_log::PodNames;
use crate::time::monotonic_to_wall;
use anyhow::{Context, Result};
use policy_model::incremental::IncrementalCluster;
use redirect_ebpf::FlowEvent;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Names for flow and access lines: address -> `ns/pod`.
pub(super) fn pod_names(engine: &IncrementalCluster) -> PodNames {
    Arc::new(
        engine
            .pods()
            .flat_map(|p| {
                let name = p.full_name();
                p.addresses().into_iter().map(move |ip| (ip, name.clone()))
            })
            .collect(),
    )
}

/// Sends a line to `observe` for each endpoint that started or stopped
/// failing closed since the last call (`{"type":"agent", ...}`).
pub(super) fn announce_failures(
    flows: &SharedFlows,
    announced: &mut BTreeMap<String, String>,
    failed: &BTreeMap<String, String>,
) {
    if announced == failed {
        return;
    }
    let time = crate::time::now().to_string();
    for (endpoint, reason) in failed {
        if announced.get(endpoint) != Some(reason) {
            let line = serde_json::json!({
                "type": "agent", "time": time, "event": "endpoint-failed-closed",
                "endpoint": endpoint, "reason": reason,
            });
            broadcast(flows, line.to_string());
        }
    }
    for endpoint in announced.keys() {
        if !failed.contains_key(endpoint) {
            let line = serde_json::json!({
                "type": "agent", "time": time, "event": "endpoint-policy-applied",
                "endpoint": endpoint,
            });
            broadcast(flows, line.to_string());
        }
    }
    *announced = failed.clone();
}

/// The pod names flow and access lines are written with; the loop
/// replaces them when the cluster changes.
pub(super) type SharedNames = Arc<std::sync::RwLock<PodNames>>;

/// Streams the kernel's flow events and the proxies' access lines to
/// `observe`, on a thread of its own that waits on the ring buffer's
/// descriptor and on the access log's queue: nothing is polled, and a
/// slow `observe` client never holds up the daemon's loop.
pub(super) fn start_pump(
    events: redirect_ebpf::FlowEvents,
    flows: SharedFlows,
    names: SharedNames,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("building the flow stream's runtime")?;
    std::thread::Builder::new()
        .name("flows".into())
        .spawn(move || rt.block_on(pump(events, flows, names)))
        .context("starting the flow stream")?;
    Ok(())
}

async fn pump(events: redirect_ebpf::FlowEvents, flows: SharedFlows, names: SharedNames) {
    let mut events = match events.into_async() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "flow events cannot be waited on; observe shows access lines only");
            None
        }
    };
    loop {
        let next_event = async {
            match events.as_mut() {
                Some(ev) => ev.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = next_event => match ev {
                Ok(ev) => {
                    let names = names.read().map(|n| n.clone()).unwrap_or_default();
                    broadcast(&flows, flow_json(&ev, &names));
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading flow events failed; observe shows access lines only");
                    events = None;
                }
            },
            () = crate::access_log::QUEUED.notified() => {
                for line in crate::access_log::drain() {
                    broadcast(&flows, line);
                }
            }
        }
    }
}

/// Observe clients and the recent flow lines a new client starts with.
#[derive(Default)]
pub(super) struct FlowStream {
    clients: Vec<UnixStream>,
    backlog: VecDeque<String>,
}

pub(super) type SharedFlows = Arc<Mutex<FlowStream>>;

/// Lines kept for clients that connect later.
const BACKLOG: usize = 2000;

pub(super) fn start_observe_server(state_dir: &Path) -> Result<SharedFlows> {
    let path = state_dir.join("observe.sock");
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let flows: SharedFlows = Arc::new(Mutex::new(FlowStream::default()));
    let shared = flows.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let Ok(mut guard) = shared.lock() else { return };
            let ok = guard.backlog.iter().all(|l| writeln!(s, "{l}").is_ok());
            if ok {
                guard.clients.push(s);
            }
        }
    });
    Ok(flows)
}

/// Records a line and sends it to every client, dropping the ones that
/// cannot keep up.
pub(super) fn broadcast(flows: &SharedFlows, line: String) {
    let Ok(mut guard) = flows.lock() else {
        return;
    };
    guard.clients.retain_mut(|s| writeln!(s, "{line}").is_ok());
    guard.backlog.push_back(line);
    if guard.backlog.len() > BACKLOG {
        guard.backlog.pop_front();
    }
}

pub(super) fn flow_json(ev: &FlowEvent, names: &BTreeMap<IpAddr, String>) -> String {
    let addr = |b: &[u8; 16]| -> IpAddr {
        if ev.family == 4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(*b)
        }
    };
    let (s, d) = (addr(&ev.saddr), addr(&ev.daddr));
    let verdict = match ev.verdict {
        0 => "FORWARDED",
        1 => "DROPPED",
        2 => "REDIRECTED",
        _ => "UNKNOWN",
    };
    let reason = redirect_ebpf::Reason::from_code(ev.reason)
        .map(|r| format!("{r:?}"))
        .unwrap_or_else(|| format!("reason-{}", ev.reason));
    let proto = match ev.protocol {
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        132 => "SCTP".to_string(),
        1 => "ICMP".to_string(),
        58 => "ICMPv6".to_string(),
        n => format!("proto-{n}"),
    };
    serde_json::json!({
        "time": monotonic_to_wall(ev.timestamp_ns).to_string(),
        "source": {"ip": s, "port": ev.sport, "identity": ev.src_identity, "pod": names.get(&s)},
        "destination": {"ip": d, "port": ev.dport, "identity": ev.dst_identity, "pod": names.get(&d)},
        "protocol": proto,
        "verdict": verdict,
        "reason": reason,
        "direction": if ev.direction == 0 { "ingress" } else { "egress" },
        "endpoint": ev.endpoint_id,
        "redirected": ev.redirected == 1,
        "proxy_port": ev.proxy_port,
        "rule_cookie": ev.rule_cookie,
    })
    .to_string()
}
