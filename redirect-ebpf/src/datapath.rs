//! Loading, pinning, attaching and updating the kernel datapath.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, MapInfo, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use crate::abi::{
    CtEntry, CtKey, DatapathConfig, EndpointInfo, EndpointKey, FragEntry, FragKey, IpcacheLpmData,
    IpcacheValue, PolicyKey, PolicyLpmData, PolicyValue,
};
use crate::error::DatapathError;
use crate::events::FlowEvents;
use crate::vocabulary::{
    COUNTER_EVENTS_LOST, COUNTER_EVENTS_SUPPRESSED, COUNTER_FORGED_MARK, Hook, PolicyChange,
    Reason, addr_bytes,
};

/// The compiled kernel programs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portcullis.o"));

/// Names of the maps, as pinned under `<pin_dir>/maps/`.
pub const MAP_NAMES: [&str; 9] = [
    "ipcache",
    "endpoints",
    "policy",
    "conntrack",
    "counters",
    "events",
    "config",
    "fragments",
    "event_budget",
];

/// The loaded datapath: programs, typed handles on the pinned maps.
///
/// Dropping it does not stop enforcement: maps and TC links are pinned
/// under the pin directory and stay until [`Datapath::detach`] or the pins
/// are removed.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    ipcache: LpmTrie<MapData, IpcacheLpmData, IpcacheValue>,
    endpoints: HashMap<MapData, EndpointKey, EndpointInfo>,
    policy: LpmTrie<MapData, PolicyLpmData, PolicyValue>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    counters: PerCpuArray<MapData, u64>,
    config: Array<MapData, DatapathConfig>,
    events: Option<RingBuf<MapData>>,
    /// The policy epoch last written (see [`DatapathConfig::policy_epoch`]).
    epoch: u32,
}

/// A snapshot of the per-reason packet counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Indexed by [`Reason`] code.
    pub by_code: Vec<u64>,
    /// Flow events lost because the ring buffer was full.
    pub events_lost: u64,
    /// Flow events not emitted: their endpoint was over its budget.
    pub events_suppressed: u64,
    /// Packets with a from-proxy or policy-done mark they could not prove
    /// (then judged like any other packet).
    pub forged_marks: u64,
}

impl Counters {
    /// Packets counted under `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.by_code.get(reason as usize).copied().unwrap_or(0)
    }

    /// Packets dropped, all reasons.
    pub fn drops(&self) -> u64 {
        Reason::ALL
            .iter()
            .filter(|r| r.is_drop())
            .map(|r| self.get(*r))
            .sum()
    }
}

impl Datapath {
    /// Loads the programs and opens (or creates) the pinned maps under
    /// `pin_dir/maps/`.
    ///
    /// `pin_dir` must be on a bpffs; when it is not, it is created if needed
    /// and a bpffs is mounted on it. Maps already pinned there by an earlier
    /// run are reused as they are, so policy stays enforced across agent
    /// restarts, and TC links pinned under `pin_dir/links/` are atomically
    /// switched to the newly loaded programs. A pinned map whose shape does
    /// not match this build is an error (nothing is replaced).
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        Self::load_sized(pin_dir, &[])
    }

    /// [`Datapath::load`], creating the maps named in `sizes` with that
    /// many entries instead of the program's `max_entries`. A map already
    /// pinned keeps the size it was created with: see
    /// [`Datapath::map_capacity`].
    pub fn load_sized(pin_dir: &Path, sizes: &[(&str, u32)]) -> Result<Self, DatapathError> {
        ensure_bpffs(pin_dir)?;
        let maps_dir = pin_dir.join("maps");
        let links_dir = pin_dir.join("links");
        for dir in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(dir).map_err(|source| DatapathError::Bpffs {
                path: dir.clone(),
                source,
            })?;
        }
        check_pinned_maps(&maps_dir)?;
        let config_existed = maps_dir.join("config").exists();

        let mut loader = EbpfLoader::new();
        let pin_paths: Vec<(&str, PathBuf)> = MAP_NAMES
            .iter()
            .map(|name| (*name, maps_dir.join(name)))
            .collect();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        for (name, size) in sizes {
            loader.map_max_entries(name, *size);
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        for hook in Hook::ALL {
            // The verifier gives up with EAGAIN when a signal arrives
            // during a long verification (a busy machine; seen once in CI):
            // try again, as libbpf does, a few times.
            let mut tries = 0;
            loop {
                match program_mut(&mut ebpf, hook)?.load() {
                    Ok(()) => break,
                    Err(aya::programs::ProgramError::LoadError { io_error, .. })
                        if io_error.kind() == std::io::ErrorKind::WouldBlock && tries < 5 =>
                    {
                        tries += 1;
                    }
                    Err(e) => return Err(DatapathError::program(hook.program_name(), e)),
                }
            }
        }

        let mut datapath = Self {
            ipcache: take_map(&mut ebpf, "ipcache")?,
            endpoints: take_map(&mut ebpf, "endpoints")?,
            policy: take_map(&mut ebpf, "policy")?,
            conntrack: take_map(&mut ebpf, "conntrack")?,
            counters: take_map(&mut ebpf, "counters")?,
            config: take_map(&mut ebpf, "config")?,
            events: Some(take_map(&mut ebpf, "events")?),
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            epoch: 0,
        };
        if config_existed {
            datapath.epoch = datapath.config()?.policy_epoch;
        } else {
            datapath.set_config(DatapathConfig::default())?;
        }
        datapath.update_pinned_links(&links_dir);
        Ok(datapath)
    }

    /// The number of entries the pinned map `name` holds at most (its
    /// `max_entries`, as the kernel has it).
    pub fn map_capacity(&self, name: &'static str) -> Result<u32, DatapathError> {
        let path = self.pin_dir.join("maps").join(name);
        MapInfo::from_pin(&path)
            .map(|info| info.max_entries())
            .map_err(|e| DatapathError::map(name, e))
    }

    /// The pin directory this datapath was loaded from.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attaches `from_pod` (TC ingress) and `to_pod` (TC egress) to the node
    /// side of a pod veth named `ifname` in the calling thread's network
    /// namespace. The TCX links are pinned and keep enforcing after this
    /// process exits. Re-attaching replaces the programs atomically.
    pub fn attach_pod(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach(ifname, Hook::FromPod, TcAttachType::Ingress)?;
        self.attach(ifname, Hook::ToPod, TcAttachType::Egress)
    }

    /// Attaches `from_uplink` (TC ingress) and `to_uplink` (TC egress) to
    /// the node's uplink `ifname`.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach(ifname, Hook::FromUplink, TcAttachType::Ingress)?;
        self.attach(ifname, Hook::ToUplink, TcAttachType::Egress)
    }

    /// Removes every portcullis program from `ifname` (removing the link
    /// pins detaches them). Not attached is not an error.
    pub fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        for hook in Hook::ALL {
            let pin = self.link_pin(hook, ifname);
            match std::fs::remove_file(&pin) {
                Ok(()) => tracing::info!(ifname, hook = hook.program_name(), "detached"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(DatapathError::LinkPin { path: pin, source }),
            }
        }
        Ok(())
    }

    fn link_pin(&self, hook: Hook, ifname: &str) -> PathBuf {
        self.pin_dir.join("links").join(link_pin_name(hook, ifname))
    }

    fn attach(
        &mut self,
        ifname: &str,
        hook: Hook,
        attach_type: TcAttachType,
    ) -> Result<(), DatapathError> {
        let name = hook.program_name();
        let pin = self.link_pin(hook, ifname);
        let prog = program_mut(&mut self.ebpf, hook)?;
        if pin.exists() && replace_link_program(prog, &pin, name).is_ok() {
            return Ok(());
        }
        // Attach the new link before dropping a stale pin: if the old link
        // is still live both run for a moment (TCX: first verdict wins), so
        // the interface is never without a program.
        let id = prog
            .attach_with_options(
                ifname,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| DatapathError::program(name, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| DatapathError::program(name, e))?;
        let link: FdLink = link.try_into().map_err(|e| DatapathError::LinkPin {
            path: pin.clone(),
            source: io::Error::other(e),
        })?;
        let staged = pin.with_file_name(format!("new-{}", link_pin_name(hook, ifname)));
        let _ = std::fs::remove_file(&staged);
        link.pin(&staged).map_err(|e| DatapathError::LinkPin {
            path: staged.clone(),
            source: io::Error::other(e),
        })?;
        std::fs::rename(&staged, &pin).map_err(|source| DatapathError::LinkPin {
            path: pin.clone(),
            source,
        })?;
        tracing::info!(ifname, hook = name, "attached");
        Ok(())
    }

    /// Points every pinned link at the programs of this load. A link that
    /// cannot be updated keeps running the previous programs (same maps), so
    /// it keeps enforcing; it is logged and left alone.
    fn update_pinned_links(&mut self, links_dir: &Path) {
        settle_staged_links(links_dir);
        let Ok(entries) = std::fs::read_dir(links_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some(hook) = Hook::ALL
                .into_iter()
                .find(|h| file.starts_with(&format!("{}-", h.program_name())))
            else {
                continue;
            };
            let Ok(prog) = program_mut(&mut self.ebpf, hook) else {
                continue;
            };
            if let Err(error) = replace_link_program(prog, &entry.path(), hook.program_name()) {
                tracing::warn!(pin = %entry.path().display(), %error, "pinned tc link not updated; it keeps the previous programs");
            }
        }
    }

    /// Inserts or replaces the identity of `prefix` in the ipcache.
    pub fn set_ipcache(&mut self, prefix: IpNet, identity: u32) -> Result<(), DatapathError> {
        self.insert_ipcache(
            prefix,
            IpcacheValue {
                identity,
                new_flow_identity: 0,
            },
        )
    }

    /// Marks `prefix` (a learned address past its TTL that open flows still
    /// use) so that the flows already open keep `identity` and a new flow
    /// is judged as `new_flow_identity` (what the address is without the
    /// name). [`Self::set_ipcache`] clears the mark.
    pub fn set_ipcache_lingering(
        &mut self,
        prefix: IpNet,
        identity: u32,
        new_flow_identity: u32,
    ) -> Result<(), DatapathError> {
        self.insert_ipcache(
            prefix,
            IpcacheValue {
                identity,
                new_flow_identity,
            },
        )
    }

    fn insert_ipcache(&mut self, prefix: IpNet, value: IpcacheValue) -> Result<(), DatapathError> {
        let result = self
            .ipcache
            .insert(&ipcache_key(prefix), value, 0)
            .map_err(|e| DatapathError::map("ipcache", e));
        self.changed(result)
    }

    /// Removes `prefix` from the ipcache (missing is not an error).
    pub fn remove_ipcache(&mut self, prefix: IpNet) -> Result<(), DatapathError> {
        let key = ipcache_key(prefix);
        let result =
            ignore_missing(self.ipcache.remove(&key)).map_err(|e| DatapathError::map("ipcache", e));
        self.changed(result)
    }

    /// Declares `ip` a managed local endpoint.
    pub fn set_endpoint(&mut self, ip: IpAddr, info: EndpointInfo) -> Result<(), DatapathError> {
        let result = self
            .endpoints
            .insert(endpoint_key(ip), info, 0)
            .map_err(|e| DatapathError::map("endpoints", e));
        self.changed(result)
    }

    /// Forgets the endpoint at `ip` (its traffic is then not policed).
    pub fn remove_endpoint(&mut self, ip: IpAddr) -> Result<(), DatapathError> {
        let result = ignore_missing(self.endpoints.remove(&endpoint_key(ip)))
            .map_err(|e| DatapathError::map("endpoints", e));
        self.changed(result)
    }

    /// Applies policy deltas in order. Stops at the first failure; the
    /// changes before it stay applied (and established flows are checked
    /// against them).
    pub fn apply_policy(&mut self, changes: &[PolicyChange]) -> Result<(), DatapathError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        for change in changes {
            result = match change {
                PolicyChange::Upsert(key, value) => {
                    self.policy.insert(&policy_lpm_key(key), *value, 0)
                }
                PolicyChange::Delete(key) => {
                    ignore_missing(self.policy.remove(&policy_lpm_key(key)))
                }
            }
            .map_err(|e| DatapathError::map("policy", e));
            if result.is_err() {
                break;
            }
        }
        self.changed(result)
    }

    /// After a map write (successful or not: a failed batch may have
    /// written part of its changes): bumps the policy epoch, so that every
    /// tracked flow is checked against the maps as they now are at its next
    /// packet. This is what makes a revocation reach established flows; it
    /// costs one array write per change and, per tracked flow, one policy
    /// decision at its first packet after the change.
    fn changed(&mut self, result: Result<(), DatapathError>) -> Result<(), DatapathError> {
        let bumped = self.bump_epoch();
        result.and(bumped)
    }

    /// Starts a new policy epoch (see [`Self::changed`]).
    pub fn bump_epoch(&mut self) -> Result<(), DatapathError> {
        let mut config = self.config()?;
        config.policy_epoch = self.epoch.max(config.policy_epoch).wrapping_add(1);
        self.config
            .set(0, config, 0)
            .map_err(|e| DatapathError::map("config", e))?;
        self.epoch = config.policy_epoch;
        Ok(())
    }

    /// Replaces the datapath configuration (its `policy_epoch` is ignored:
    /// a new configuration starts a new epoch).
    pub fn set_config(&mut self, mut config: DatapathConfig) -> Result<(), DatapathError> {
        config.policy_epoch = self.epoch.wrapping_add(1);
        self.config
            .set(0, config, 0)
            .map_err(|e| DatapathError::map("config", e))?;
        self.epoch = config.policy_epoch;
        Ok(())
    }

    /// Trusts the sockets of the cgroup (v2) `cgroup_id` to carry the
    /// from-proxy verdict (0: trust none). See [`crate::cgroup`].
    pub fn set_proxy_cgroup(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        let mut config = self.config()?;
        config.proxy_cgroup_id = cgroup_id;
        self.set_config(config)
    }

    /// The current datapath configuration.
    pub fn config(&self) -> Result<DatapathConfig, DatapathError> {
        self.config
            .get(&0, 0)
            .map_err(|e| DatapathError::map("config", e))
    }

    /// Reads the per-reason packet counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        let mut by_code = Vec::with_capacity(COUNTER_FORGED_MARK as usize);
        for index in 0..COUNTER_FORGED_MARK {
            by_code.push(self.counter(index)?);
        }
        Ok(Counters {
            by_code,
            events_lost: self.counter(COUNTER_EVENTS_LOST)?,
            events_suppressed: self.counter(COUNTER_EVENTS_SUPPRESSED)?,
            forged_marks: self.counter(COUNTER_FORGED_MARK)?,
        })
    }

    fn counter(&self, index: u32) -> Result<u64, DatapathError> {
        let values = self
            .counters
            .get(&index, 0)
            .map_err(|e| DatapathError::map("counters", e))?;
        Ok(values.iter().sum())
    }

    /// Destination addresses of conntrack entries whose last packet is
    /// younger than `max_idle`: addresses that open flows still use.
    pub fn conntrack_destinations(
        &self,
        max_idle: std::time::Duration,
    ) -> Result<std::collections::BTreeSet<IpAddr>, DatapathError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(u64::MAX);
        let idle = max_idle.as_nanos().min(u128::from(u64::MAX)) as u64;
        let mut out = std::collections::BTreeSet::new();
        for item in self.conntrack.iter() {
            let (key, entry) = item.map_err(|e| DatapathError::map("conntrack", e))?;
            if now.saturating_sub(entry.last_seen_ns) > idle {
                continue;
            }
            let addr = if key.family == 4 {
                IpAddr::from([key.daddr[0], key.daddr[1], key.daddr[2], key.daddr[3]])
            } else {
                IpAddr::from(key.daddr)
            };
            out.insert(addr);
        }
        Ok(out)
    }

    /// Every conntrack entry (for diagnostics and tests).
    pub fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
        self.conntrack
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| DatapathError::map("conntrack", e))
    }

    /// Writes one conntrack entry as it is (for tests that age an entry).
    pub fn put_conntrack_entry(&mut self, key: CtKey, entry: CtEntry) -> Result<(), DatapathError> {
        self.conntrack
            .insert(key, entry, 0)
            .map_err(|e| DatapathError::map("conntrack", e))
    }

    /// Removes every conntrack entry, so that established flows are checked
    /// against the current policy again (e.g. after a policy revocation).
    pub fn flush_conntrack(&mut self) -> Result<usize, DatapathError> {
        let keys: Vec<CtKey> = self
            .conntrack
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| DatapathError::map("conntrack", e))?;
        for key in &keys {
            ignore_missing(self.conntrack.remove(key))
                .map_err(|e| DatapathError::map("conntrack", e))?;
        }
        Ok(keys.len())
    }

    /// Hands out the reader of the `events` ring buffer (once).
    pub fn take_flow_events(&mut self) -> Result<FlowEvents, DatapathError> {
        self.events
            .take()
            .map(FlowEvents::new)
            .ok_or(DatapathError::EventsTaken)
    }

    /// The loaded program for `hook`, e.g. to run it on a synthetic packet
    /// with [`aya::TestRun`].
    pub fn program(&self, hook: Hook) -> Result<&SchedClassifier, DatapathError> {
        let name = hook.program_name();
        self.ebpf
            .program(name)
            .ok_or(DatapathError::Missing {
                kind: "program",
                name,
            })?
            .try_into()
            .map_err(|e| DatapathError::program(name, e))
    }
}

/// Name of the pin of `hook`'s link on `ifname`: `<program>-<ifname>`.
/// bpffs refuses names containing '.', which interface names may contain
/// (VLANs: `eth0.100`), so '%' and '.' are percent-encoded.
pub(crate) fn link_pin_name(hook: Hook, ifname: &str) -> String {
    let ifname = ifname.replace('%', "%25").replace('.', "%2e");
    format!("{}-{ifname}", hook.program_name())
}

fn program_mut(ebpf: &mut Ebpf, hook: Hook) -> Result<&mut SchedClassifier, DatapathError> {
    let name = hook.program_name();
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|e| DatapathError::program(name, e))
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

/// Finishes attaches interrupted between pinning the new link (`new-<name>`)
/// and renaming it over `<name>`: if `<name>` still exists it keeps
/// enforcing and the staged link is dropped; otherwise the staged link is
/// the only one on its interface and takes the name. Never leaves an
/// interface without a program.
fn settle_staged_links(links_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(links_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_prefix("new-")) else {
            continue;
        };
        let target = links_dir.join(name);
        let result = if target.exists() {
            std::fs::remove_file(entry.path())
        } else {
            std::fs::rename(entry.path(), &target)
        };
        if let Err(error) = result {
            tracing::warn!(pin = %entry.path().display(), %error, "cannot settle staged tc link");
        }
    }
}

/// Atomically switches the pinned TCX link at `pin` to `prog`.
fn replace_link_program(
    prog: &mut SchedClassifier,
    pin: &Path,
    name: &'static str,
) -> Result<(), DatapathError> {
    let link_err = |e: String| DatapathError::LinkPin {
        path: pin.to_path_buf(),
        source: io::Error::other(e),
    };
    let pinned = PinnedLink::from_pin(pin).map_err(|e| link_err(e.to_string()))?;
    let link =
        SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| link_err(e.to_string()))?;
    let id = prog
        .attach_to_link(link)
        .map_err(|e| DatapathError::program(name, e))?;
    // The pin keeps the link; dropping our handle only closes our fd.
    drop(prog.take_link(id));
    Ok(())
}

/// Makes sure `pin_dir` is on a bpffs, mounting one on it if not.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), DatapathError> {
    let err = |source: io::Error| DatapathError::Bpffs {
        path: pin_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(pin_dir).map_err(err)?;
    let fs = statfs(pin_dir).map_err(|e| err(e.into()))?;
    if fs.filesystem_type() == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        pin_dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| err(e.into()))?;
    tracing::info!(path = %pin_dir.display(), "mounted bpffs");
    Ok(())
}

/// (map, key size, value size) as this build defines them.
fn expected_map_shapes() -> [(&'static str, usize, usize); 9] {
    use std::mem::size_of;
    [
        (
            "ipcache",
            size_of::<crate::abi::IpcacheKey>(),
            size_of::<IpcacheValue>(),
        ),
        (
            "endpoints",
            size_of::<EndpointKey>(),
            size_of::<EndpointInfo>(),
        ),
        ("policy", size_of::<PolicyKey>(), size_of::<PolicyValue>()),
        ("conntrack", size_of::<CtKey>(), size_of::<CtEntry>()),
        ("counters", size_of::<u32>(), size_of::<u64>()),
        ("events", 0, 0),
        ("config", size_of::<u32>(), size_of::<DatapathConfig>()),
        ("fragments", size_of::<FragKey>(), size_of::<FragEntry>()),
        (
            "event_budget",
            size_of::<u32>(),
            size_of::<crate::abi::EventBudget>(),
        ),
    ]
}

/// Compares maps pinned by an earlier run with this build's definitions,
/// before anything is loaded: a mismatch leaves everything untouched.
fn check_pinned_maps(maps_dir: &Path) -> Result<(), DatapathError> {
    for (name, key_size, value_size) in expected_map_shapes() {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let pinned = MapInfo::from_pin(&path).map_err(|e| DatapathError::map(name, e))?;
        let checks = [
            ("key size", pinned.key_size(), key_size),
            ("value size", pinned.value_size(), value_size),
        ];
        for (what, pinned, built) in checks {
            if pinned as usize != built {
                return Err(DatapathError::PinnedMapMismatch {
                    path,
                    what,
                    pinned: pinned.into(),
                    built: built as u64,
                });
            }
        }
    }
    Ok(())
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn endpoint_key(ip: IpAddr) -> EndpointKey {
    let (family, addr) = addr_bytes(ip);
    EndpointKey {
        family,
        pad: [0; 3],
        addr,
    }
}

/// The ipcache trie key of `prefix` (host bits cleared).
pub(crate) fn ipcache_key(prefix: IpNet) -> Key<IpcacheLpmData> {
    let prefix = prefix.trunc();
    let (family, addr) = addr_bytes(prefix.addr());
    Key::new(
        32 + u32::from(prefix.prefix_len()),
        IpcacheLpmData {
            family,
            pad: [0; 3],
            addr,
        },
    )
}

/// Splits the contract key into aya's `(prefix_len, data)` form; a plain
/// copy, the byte order was settled by `PolicyKey::new`.
fn policy_lpm_key(key: &PolicyKey) -> Key<PolicyLpmData> {
    Key::new(
        key.prefixlen,
        PolicyLpmData {
            identity: key.identity,
            endpoint_id: key.endpoint_id,
            direction: key.direction,
            protocol: key.protocol,
            dport: key.dport,
            pad: key.pad,
        },
    )
}
