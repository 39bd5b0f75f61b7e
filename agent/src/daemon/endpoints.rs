//! The endpoints map and the programs on each local pod's interface.

use super::enforcer::Enforcer;
use anyhow::{Context, Result};
use redirect_ebpf::EndpointInfo;
use std::collections::{BTreeMap, BTreeSet};
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
        let audited = self.audited_namespaces();
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
            let flags = self.endpoint_flags_of(&audited, &ep.namespace);
            for ip in &ep.ips {
                self.dp.set_endpoint(
                    *ip,
                    EndpointInfo {
                        identity: ep.identity.0,
                        ifindex,
                        endpoint_id: ep.id,
                        flags,
                    },
                )?;
            }
            self.endpoint_flags.insert(ep.full_name(), flags);
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
        self.endpoint_flags.retain(|pod, _| now.contains_key(pod));
        self.attached = now;
        Ok(())
    }

    /// The namespaces annotated `policy.cilium.io/audit-mode: "true"`.
    pub(super) fn audited_namespaces(&self) -> BTreeSet<String> {
        self.engine
            .namespaces()
            .filter(|n| n.audit_mode())
            .map(|n| n.name.clone())
            .collect()
    }

    /// The endpoint flags of a pod of `namespace`: audited when the node
    /// is (`--policy-audit-mode`) or its namespace is (`audited`).
    pub(super) fn endpoint_flags_of(&self, audited: &BTreeSet<String>, namespace: &str) -> u16 {
        if self.audit_all || audited.contains(namespace) {
            redirect_ebpf::ENDPOINT_FLAG_AUDIT
        } else {
            0
        }
    }

    /// Writes again the endpoints whose flags changed (a namespace's audit
    /// annotation), keeping everything else as it is. Whether any changed.
    pub(super) fn refresh_endpoint_flags(&mut self) -> bool {
        let mut changed = false;
        let endpoints: Vec<policy_model::resolve::Endpoint> = self
            .engine
            .endpoints()
            .filter(|ep| self.attached.contains_key(&ep.full_name()))
            .cloned()
            .collect();
        let audited = self.audited_namespaces();
        for ep in &endpoints {
            let flags = self.endpoint_flags_of(&audited, &ep.namespace);
            if self.endpoint_flags.get(&ep.full_name()) == Some(&flags) {
                continue;
            }
            let Some((ifname, _)) = self.attached.get(&ep.full_name()) else {
                continue;
            };
            let Ok(ifindex) = nix::net::if_::if_nametoindex(ifname.as_str()) else {
                continue;
            };
            let mut ok = true;
            for ip in &ep.ips {
                let info = EndpointInfo {
                    identity: ep.identity.0,
                    ifindex,
                    endpoint_id: ep.id,
                    flags,
                };
                if let Err(e) = self.dp.set_endpoint(*ip, info) {
                    tracing::warn!(pod = %ep.full_name(), error = %e, "writing the endpoint's audit flag failed");
                    ok = false;
                }
            }
            if ok {
                tracing::info!(pod = %ep.full_name(), audit = flags != 0, "endpoint audit mode changed");
                self.endpoint_flags.insert(ep.full_name(), flags);
                changed = true;
            }
        }
        changed
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
