//! The flow stream: the kernel's flow events and the proxies' access
//! records, converted to Hubble flows into the ring that the Observer API
//! (`hubble.sock`, TCP 4244) serves; and the context they are written with.

use crate::access_log::PodNames;
use crate::hubble::convert::{self, FlowContext, SharedContext};
use crate::hubble::ring::Ring;
use anyhow::{Context, Result};
use policy_model::incremental::IncrementalCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// Names for access lines: address -> `ns/pod`.
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

/// Logs each endpoint that started or stopped failing closed since the
/// last call (its flows show as drops, attributed to no rule).
pub(super) fn announce_failures(
    announced: &mut BTreeMap<String, String>,
    failed: &BTreeMap<String, String>,
) {
    if announced == failed {
        return;
    }
    for (endpoint, reason) in failed {
        if announced.get(endpoint) != Some(reason) {
            tracing::warn!(endpoint, reason, "endpoint-failed-closed");
        }
    }
    for endpoint in announced.keys() {
        if !failed.contains_key(endpoint) {
            tracing::info!(endpoint, "endpoint-policy-applied");
        }
    }
    *announced = failed.clone();
}

/// A new context for the flows: the pods again when `pods_changed`, the
/// identities' labels when `identities_changed`, the deciding rules of
/// the `touched` endpoints (all of them when `None`).
pub(super) fn refresh_context(
    shared: &SharedContext,
    engine: &IncrementalCluster,
    touched: Option<&BTreeSet<u16>>,
    pods_changed: bool,
    identities_changed: bool,
) {
    let old = shared.read().map(|c| c.clone()).unwrap_or_default();
    let mut ctx = FlowContext::clone(&old);
    ctx.node = engine.node().to_string();
    if pods_changed || ctx.pods.is_empty() {
        ctx.pods = convert::pods_of(engine);
    }
    if identities_changed || ctx.identities.is_empty() {
        ctx.identities = convert::identity_labels(engine);
    }
    let rules_of = |id: u16| {
        engine
            .endpoint_policy(id)
            .map(|p| Arc::new(convert::endpoint_rules(p)))
    };
    match touched {
        None => {
            ctx.endpoints = engine
                .endpoints()
                .filter_map(|e| rules_of(e.id).map(|r| (e.id, r)))
                .collect();
        }
        Some(ids) => {
            for id in ids {
                match rules_of(*id) {
                    Some(r) => {
                        ctx.endpoints.insert(*id, r);
                    }
                    None => {
                        ctx.endpoints.remove(id);
                    }
                }
            }
        }
    }
    if let Ok(mut c) = shared.write() {
        *c = Arc::new(ctx);
    }
}

/// The first context (every endpoint).
pub(super) fn new_context(engine: &IncrementalCluster) -> SharedContext {
    let shared: SharedContext = Arc::new(RwLock::new(Arc::new(FlowContext::default())));
    refresh_context(&shared, engine, None, true, true);
    shared
}

/// Converts the kernel's flow events and the proxies' access lines into
/// the ring, on a thread of its own that waits on the ring buffer's
/// descriptor and on the access log's queue: nothing is polled, and no
/// observer client ever holds it up (readers follow the ring).
/// The datapath's count of flow events lost to a full ring buffer, as the
/// loop last read it (the pump reports increases to the observers).
pub(super) type KernelLost = Arc<std::sync::atomic::AtomicU64>;

pub(super) fn start_pump(
    events: redirect_ebpf::FlowEvents,
    ring: Arc<Ring>,
    ctx: SharedContext,
    kernel_lost: KernelLost,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("building the flow stream's runtime")?;
    std::thread::Builder::new()
        .name("flows".into())
        .spawn(move || rt.block_on(pump(events, ring, ctx, kernel_lost)))
        .context("starting the flow stream")?;
    Ok(())
}

async fn pump(
    events: redirect_ebpf::FlowEvents,
    ring: Arc<Ring>,
    ctx: SharedContext,
    kernel_lost: KernelLost,
) {
    use std::sync::atomic::Ordering;
    let mut lost_seen = kernel_lost.load(Ordering::Relaxed);
    let mut events = match events.into_async() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "flow events cannot be waited on; observe shows L7 flows only");
            None
        }
    };
    let current = |ctx: &SharedContext| ctx.read().map(|c| c.clone()).unwrap_or_default();
    loop {
        let next_event = async {
            match events.as_mut() {
                Some(ev) => ev.next().await,
                None => std::future::pending().await,
            }
        };
        let lost_now = kernel_lost.load(Ordering::Relaxed);
        if lost_now > lost_seen {
            ring.push_kernel_lost(lost_now - lost_seen);
        }
        lost_seen = lost_seen.max(lost_now);
        tokio::select! {
            ev = next_event => match ev {
                Ok(ev) => ring.push(convert::kernel_flow(&ev, &current(&ctx))),
                Err(e) => {
                    tracing::error!(error = %e, "reading flow events failed; observe shows L7 flows only");
                    events = None;
                }
            },
            () = crate::access_log::QUEUED.notified() => {
                let c = current(&ctx);
                for line in crate::access_log::drain() {
                    if let Some(f) = convert::access_flow(&line, &c) {
                        ring.push(f);
                    }
                }
            }
        }
    }
}
