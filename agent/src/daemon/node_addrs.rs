//! The addresses the node owns, from the kernel (issue 13, finding 6).
//!
//! Every address on any interface of the agent's network namespace is the
//! node, so it is `host` (identity 1), not `world`, whatever the topology
//! or the Node object lists: the pod gateway on every pod veth, the uplink
//! addresses, loopback, link-local ones. The agent re-reads them on a
//! timer and re-resolves when they change.

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
mod tests {
    use super::*;

    #[test]
    fn every_address_of_every_interface_is_taken() {
        let json = br#"[
          {"ifindex":1,"ifname":"lo","addr_info":[
            {"family":"inet","local":"127.0.0.1","prefixlen":8},
            {"family":"inet","local":"10.200.0.1","prefixlen":32},
            {"family":"inet6","local":"::1","prefixlen":128}]},
          {"ifindex":2,"ifname":"pcup","addr_info":[
            {"family":"inet","local":"10.201.255.254","prefixlen":16},
            {"family":"inet6","local":"fd00:201::fffe","prefixlen":64},
            {"family":"inet6","local":"fe80::1c2d:3eff:fe4f:5a6b","prefixlen":64}]},
          {"ifindex":3,"ifname":"pc1","addr_info":[
            {"family":"inet","local":"169.254.1.1","prefixlen":32}]},
          {"ifindex":4,"ifname":"pc2","addr_info":[]},
          {"ifindex":5,"ifname":"down"}
        ]"#;
        let got = parse_ip_addr_json(json).expect("parses");
        let want: BTreeSet<IpAddr> = [
            "127.0.0.1",
            "10.200.0.1",
            "::1",
            "10.201.255.254",
            "fd00:201::fffe",
            "fe80::1c2d:3eff:fe4f:5a6b",
            "169.254.1.1",
        ]
        .iter()
        .map(|s| s.parse().expect("literal"))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_set() {
        assert!(parse_ip_addr_json(b"not json").is_err());
        assert!(parse_ip_addr_json(b"{}").is_err());
    }
}
