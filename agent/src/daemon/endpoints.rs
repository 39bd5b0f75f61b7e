//! The endpoints map and the programs on each local pod's interface.

use super::enforcer::Enforcer;
use anyhow::{Context, Result};
use redirect_ebpf::EndpointInfo;
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Enforcer {
    /// Attaches the programs to every local pod's host-side interface (found
    /// from the pod's address in the routing table) and fills the
    /// endpoints map; detaches pods that are gone.
    pub(super) fn attach_endpoints(&mut self) -> Result<()> {
        let mut now = BTreeMap::new();
        let endpoints: Vec<policy_model::resolve::Endpoint> = self
            .engine
            .endpoints()
            .filter(|ep| self.is_local(ep))
            .cloned()
            .collect();
        for ep in &endpoints {
            let Some(ip) = ep.ips.first() else { continue };
            // A pod attached with the same addresses keeps its interface:
            // no `ip route get` per pod on every change.
            let known = self.attached.get(&ep.full_name());
            let known = known
                .filter(|(_, ips)| *ips == ep.ips)
                .map(|(i, _)| i.clone());
            let ifname = match known.map_or_else(|| route_device(*ip), Ok) {
                Ok(i) => i,
                Err(e) => {
                    // An attached pod stays attached and policed: a failed
                    // lookup (e.g. no descriptors to run `ip`) must not
                    // take it out of the endpoints map.
                    if let Some(prev) = self.attached.get(&ep.full_name()) {
                        tracing::warn!(pod = %ep.full_name(), error = %e, "route lookup failed; keeping its interface");
                        now.insert(ep.full_name(), prev.clone());
                    } else {
                        tracing::warn!(pod = %ep.full_name(), error = %e, "no interface for the pod yet");
                    }
                    continue;
                }
            };
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .with_context(|| format!("interface {ifname} of {}", ep.full_name()))?;
            for ip in &ep.ips {
                self.dp.set_endpoint(
                    *ip,
                    EndpointInfo {
                        identity: ep.identity.0,
                        ifindex,
                        endpoint_id: ep.id,
                        flags: 0,
                    },
                )?;
            }
            if self.attached.get(&ep.full_name()).map(|(i, _)| i) != Some(&ifname) {
                self.dp
                    .attach_pod(&ifname)
                    .with_context(|| format!("attaching to {ifname}"))?;
            }
            now.insert(ep.full_name(), (ifname, ep.ips.clone()));
        }
        // Pods that are gone: forget their addresses and detach (the CNI
        // usually deleted the interface already).
        for (pod, (ifname, ips)) in &self.attached {
            if now.contains_key(pod) {
                continue;
            }
            for ip in ips {
                if !now.values().any(|(_, v)| v.contains(ip)) {
                    let _ = self.dp.remove_endpoint(*ip);
                }
            }
            if !now.values().any(|(i, _)| i == ifname) {
                let _ = self.dp.detach(ifname);
            }
            tracing::info!(pod = %pod, interface = %ifname, "endpoint removed");
        }
        self.attached = now;
        Ok(())
    }
}

/// The interface the routing table sends `ip` out of (the pod's host-side
/// veth, for a pod on this node).
fn route_device(ip: IpAddr) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get", &ip.to_string()])
        .output()
        .context("running ip route get")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("no route to {ip}"))?;
    v[0]["dev"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no device in the route to {ip}"))
}
