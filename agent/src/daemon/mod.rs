//! `portcullis agent`: owns the kernel maps. Keeps the node's policy in
//! policy-model's incremental engine, feeds it every change of the inputs
//! (a file whose new version is invalid keeps its previous one in force;
//! the others update), writes each change's delta to the proxies and the
//! datapath, and streams flow events to `portcullis observe`.
//!
//! This file only wires; each responsibility has a file of its own:
//! [`args`], [`datapath`] (opening the kernel side), [`proxies`],
//! [`inputs`] (with [`policy_files`], by object, and [`changes`], the
//! delta), [`watch`] (inotify) and [`events`] (the loop's one channel),
//! [`enforcer`] (with [`endpoints`], [`fqdn_sync`] and [`lingering`]),
//! [`known_names`], [`kernel`] (the pure plan of map writes, and its
//! writer), [`learner`], [`persist`], [`signal`], [`status`], [`flows`] and
//! the [`main_loop`].

mod args;
mod capacity;
mod changes;
mod datapath;
mod endpoints;
mod enforcer;
mod engine_input;
mod events;
mod fdlimit;
mod flows;
mod fqdn;
mod fqdn_sync;
mod inputs;
mod kernel;
mod known_names;
mod kube_inputs;
mod learn_guard;
mod learner;
mod lingering;
mod main_loop;
mod netns;
mod node_addrs;
mod persist;
mod policy_files;
mod proxies;
mod signal;
pub mod status;
mod watch;

pub use args::AgentArgs;

use anyhow::{Context, Result};
use enforcer::{Enforcer, lock_enforcer};
use known_names::KnownNames;
use learner::AgentLearner;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Runs the agent until killed.
pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(ns) = &args.netns {
        netns::enter(ns)?;
    }
    let opened = datapath::open(&args)?;
    // One registry for the whole agent, encoded once by the admin endpoint.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(crate::metrics::AgentMetrics::register(&mut registry));
    metrics.open_files_limit.set(opened.open_files as i64);
    tracing::info!(open_files = opened.open_files, "open-file limit");

    // The loop's one channel: file and Kubernetes changes, and learned
    // names the DNS thread cannot learn in place; the enforcer, once
    // built, is shared with that thread.
    let (events_tx, events_rx) = std::sync::mpsc::channel::<events::DaemonEvent>();
    let known = Arc::new(RwLock::new(KnownNames::default()));
    let shared_enforcer: enforcer::SharedEnforcer = Arc::new(Mutex::new(None));
    let proxies = proxies::Proxies::start(
        &args,
        AgentLearner {
            tx: Mutex::new(events_tx.clone()),
            known: known.clone(),
            enforcer: shared_enforcer.clone(),
            min_ttl: Duration::from_secs(args.dns_min_ttl),
        },
    )?;
    proxies.register_metrics(&mut registry);
    let watch_metrics = args
        .kubernetes
        .then(|| k8s_watch::WatchMetrics::register(&mut registry));
    crate::metrics::serve_admin(args.admin_addr, metrics.clone(), Arc::new(registry))
        .with_context(|| format!("binding the admin endpoint {}", args.admin_addr))?;

    let mut inputs = inputs::Inputs::open(&proxies.runtime, &args, watch_metrics)?;
    let first = inputs
        .initial()
        .map_err(|e| anyhow::anyhow!("initial inputs are invalid:\n{e}"))?;
    let mut enforcer = Enforcer::new(
        opened.dp,
        first,
        proxies.policy.clone(),
        metrics.clone(),
        opened.limits,
        opened.maps_pinned,
        &args,
    )?;
    if let Ok(mut k) = known.write() {
        k.0 = enforcer.fqdn.expiries();
    }
    if let Some(up) = args.uplink.as_deref() {
        enforcer
            .dp
            .attach_uplink(up)
            .with_context(|| format!("attaching to uplink {up}"))?;
    }
    enforcer.write_all()?;
    enforcer.persist_applied(inputs.applied_hash(), true);
    metrics.endpoints.set(enforcer.attached.len() as i64);
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::access_log::set_pod_names(flows::pod_names(&enforcer.engine));
    let flow_context = flows::new_context(&enforcer.engine);
    enforcer.flow_dirty = enforcer::FlowDirty::default();
    tracing::info!(
        endpoints = enforcer.attached.len(),
        policies = enforcer.set.len(),
        learned_addresses = enforcer.fqdn.len(),
        "policy applied"
    );

    let policies = inputs.policy_states(&enforcer.set);
    let status = status::StatusFile::new(
        &args.state_dir,
        inputs.mode(),
        policies,
        &enforcer.status_view(),
    );
    let ring = crate::hubble::ring::Ring::new(args.hubble_max_flows);
    let tcp = match args.hubble_listen_address.trim() {
        "" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--hubble-listen-address {a:?}: not an address:port"))?,
        ),
    };
    crate::hubble::server::spawn(
        "hubble",
        crate::hubble::server::Service {
            ring: ring.clone(),
            node: args.node_name.clone(),
            address: args.hubble_listen_address.clone(),
            lost: metrics.hubble_flows_lost.clone(),
            slots: crate::hubble::server::stream_slots(),
        },
        crate::hubble::server::Listen {
            unix: Some(args.state_dir.join("hubble.sock")),
            tcp,
        },
    )?;
    // Where `status` and `observe` find this directory without flags.
    let pointer = std::path::Path::new(crate::state_dir::POINTER);
    if let Err(e) = crate::state_dir::record(pointer, &args.state_dir) {
        tracing::warn!(error = %e, pointer = %pointer.display(), "recording the state directory failed");
    }
    std::fs::write(args.state_dir.join("agent.ready"), b"ready\n")?;
    // Events lost before this agent started are not news to its observers.
    let kernel_lost: flows::KernelLost = Arc::new(std::sync::atomic::AtomicU64::new(
        enforcer.dp.counters().map(|c| c.events_lost).unwrap_or(0),
    ));
    flows::start_pump(
        enforcer.dp.take_flow_events()?,
        ring,
        flow_context.clone(),
        kernel_lost.clone(),
    )?;
    // Watching starts after the first read: a change from then on is seen.
    let (_watcher, fallback_poll) = watch_inputs(&inputs, &args, &proxies.runtime, events_tx);
    *lock_enforcer(&shared_enforcer) = Some(enforcer);
    signal::write_state_on_signal(&proxies.runtime, shared_enforcer.clone());
    main_loop::MainLoop {
        enforcer: shared_enforcer,
        inputs,
        status,
        flow_context,
        kernel_lost,
        rx: events_rx,
        known,
        metrics,
        reserved_fds: args.reserved_fds,
        fallback_poll,
        min_ttl: Duration::from_secs(args.dns_min_ttl),
    }
    .run();
    // `proxies` lives as long as the loop, which runs until the process
    // is killed.
    drop(proxies);
    Ok(())
}

/// Starts the watch of the inputs: inotify on the files, or the
/// Kubernetes watcher's changes, into the loop's channel. Without a file
/// watcher, the files are re-checked every `--poll-ms` (at least 1 s).
fn watch_inputs(
    inputs: &inputs::Inputs,
    args: &AgentArgs,
    rt: &tokio::runtime::Runtime,
    tx: events::EventSender,
) -> (Option<watch::FileWatcher>, Option<Duration>) {
    if let Some(rx) = inputs.snapshots() {
        events::forward_kubernetes(rt, rx, tx);
        return (None, None);
    }
    let Some(files) = inputs.watched() else {
        return (None, None);
    };
    let debounce = Duration::from_millis(args.watch_debounce_ms);
    match watch::start(files, debounce, tx) {
        Ok(w) => (Some(w), None),
        Err(e) => {
            let every = Duration::from_millis(args.poll_ms).max(Duration::from_secs(1));
            tracing::warn!(
                error = format!("{e:#}"),
                every_ms = every.as_millis() as u64,
                "the input files cannot be watched; re-checking them on a timer"
            );
            (None, Some(every))
        }
    }
}
