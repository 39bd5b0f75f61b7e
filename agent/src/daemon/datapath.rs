//! The kernel side, opened: the process's cgroup and descriptor limit, the
//! pinned maps and programs, and the proxy routing.

use super::args::AgentArgs;
use super::capacity::MapLimits;
use super::fdlimit;
use anyhow::{Context, Result};
use redirect_ebpf::Datapath;

/// The datapath and what the daemon learned opening it.
pub(super) struct Opened {
    pub(super) dp: Datapath,
    /// The map sizes the kernel has and the per-endpoint budget.
    pub(super) limits: MapLimits,
    /// The maps survived a previous agent (its `applied.json` describes
    /// them); fresh maps start from nothing.
    pub(super) maps_pinned: bool,
    /// The open-file limit after raising it (0: raising failed).
    pub(super) open_files: u64,
}

/// Opens the datapath. Call it before any socket exists: the kernel trusts
/// the from-proxy mark only on sockets of the proxy's own cgroup (issue 13,
/// finding 7), and the proxies share this process's descriptors.
pub(super) fn open(args: &AgentArgs) -> Result<Opened> {
    let proxy_cgroup =
        redirect_ebpf::cgroup::enter_dedicated(redirect_ebpf::cgroup::DEDICATED_CGROUP);
    let open_files = match fdlimit::raise_open_files(args.max_open_files) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "raising the open-file limit failed");
            0
        }
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let maps_pinned = args.pin_dir.join("maps").join("policy").exists();
    let mut dp = Datapath::load_sized(
        &args.pin_dir,
        &[
            ("ipcache", args.ipcache_max_entries),
            ("policy", args.policy_map_max_entries),
        ],
    )
    .context("loading the datapath")?;
    let limits = map_limits(&dp, args);
    match proxy_cgroup {
        Ok(id) => dp
            .set_proxy_cgroup(id)
            .context("trusting the proxy's cgroup")?,
        Err(error) => {
            // Fail closed: no socket is trusted as the proxy's, so the
            // proxy's connections to local pods are judged as the node's.
            dp.set_proxy_cgroup(0)
                .context("clearing the proxy's cgroup")?;
            tracing::error!(%error, "cannot run in a cgroup of its own; L7 traffic to local pods will be judged as the node's");
        }
    }
    redirect_ebpf::install_proxy_routing().context("installing proxy routing")?;
    Ok(Opened {
        dp,
        limits,
        maps_pinned,
        open_files,
    })
}

/// The map sizes the kernel has (a pinned map keeps the size it was
/// created with) and the per-endpoint budget.
fn map_limits(dp: &Datapath, args: &AgentArgs) -> MapLimits {
    let size = |name: &'static str, asked: u32| match dp.map_capacity(name) {
        Ok(n) => {
            if n != asked {
                tracing::warn!(
                    map = name,
                    asked,
                    size = n,
                    "map pinned with another size; using the kernel's (remove the pin to resize)"
                );
            }
            n as usize
        }
        Err(e) => {
            tracing::warn!(map = name, error = %e, "map size unknown; assuming the asked size");
            asked as usize
        }
    };
    let limits = MapLimits {
        ipcache: size("ipcache", args.ipcache_max_entries),
        policy: size("policy", args.policy_map_max_entries),
        policy_per_endpoint: args.policy_max_entries_per_endpoint,
    };
    tracing::info!(
        ipcache = limits.ipcache,
        policy = limits.policy,
        policy_per_endpoint = limits.policy_per_endpoint,
        "map limits"
    );
    limits
}
