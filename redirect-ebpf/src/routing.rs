//! Policy routing that delivers TPROXY-assigned packets locally.

use std::process::Command;

use crate::error::DatapathError;
use crate::vocabulary::{MARK_MASK, MARK_TO_PROXY};

/// Routing table holding the `local` default routes for proxy-bound packets.
pub const PROXY_ROUTE_TABLE: u32 = 100;

/// Installs, idempotently, in the calling thread's network namespace:
///
/// ```text
/// ip -4 rule add fwmark 0x200/0xf00 lookup 100
/// ip -4 route replace local 0.0.0.0/0 dev lo table 100
/// ip -6 rule add fwmark 0x200/0xf00 lookup 100
/// ip -6 route replace local ::/0 dev lo table 100
/// ```
///
/// Without them a packet assigned to the proxy socket by `bpf_sk_assign`
/// would be forwarded instead of delivered. Uses iproute2's `ip`.
pub fn install_proxy_routing() -> Result<(), DatapathError> {
    let mark = format!("{MARK_TO_PROXY:#x}/{MARK_MASK:#x}");
    let table = PROXY_ROUTE_TABLE.to_string();
    for (family, default) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        let existing = ip(&[family, "rule", "list", "fwmark", &mark, "lookup", &table])?;
        if existing.trim().is_empty() {
            ip(&[family, "rule", "add", "fwmark", &mark, "lookup", &table])?;
        }
        ip(&[
            family, "route", "replace", "local", default, "dev", "lo", "table", &table,
        ])?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<String, DatapathError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| DatapathError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(DatapathError::Command {
            command,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
