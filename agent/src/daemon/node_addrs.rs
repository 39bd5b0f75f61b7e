//! The addresses the node owns, from the kernel (issue 13, finding 6).
//!
//! Every address on any interface of the agent's network namespace is the
//! node, so it is `host` (identity 1), not `world`, whatever the topology
//! or the Node object lists: the pod gateway on every pod veth, the uplink
//! addresses, loopback, link-local ones. The agent re-reads them on a
//! timer and hands them to the engine when they change.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The addresses in `ip -j addr show` output.
pub fn parse_ip_addr_json(json: &[u8]) -> Result<BTreeSet<IpAddr>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("parsing `ip -j addr`")?;
    let mut out = BTreeSet::new();
    for link in v.as_array().context("`ip -j addr` is not a list")? {
        for info in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = info["local"].as_str().and_then(|s| s.parse().ok()) {
                out.insert(ip);
            }
        }
    }
    Ok(out)
}

/// Reads the addresses of every interface of the calling thread's network
/// namespace.
pub fn discover() -> Result<BTreeSet<IpAddr>> {
    let out = std::process::Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .context("running ip -j addr show")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip -j addr show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ip_addr_json(&out.stdout)
}

#[cfg(test)]
mod tests;
