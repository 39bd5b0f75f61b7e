//! The kernel's vocabulary: what the maps hold, and the one conversion of
//! the model's entries into theirs.

use anyhow::Result;
use ipnet::IpNet;
use policy_model::{Direction, L7Parser, MapKey, MapValue, MapVerdict};
use redirect_ebpf::{PolicyKey, PolicyValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Proxy port per L7 parser: the proxy owns the numbers
/// (`proxy::ports`). The proxy listens on these; until it does, redirected
/// flows are dropped by the kernel (fail closed).
pub(in crate::daemon) fn proxy_port(parser: L7Parser) -> u16 {
    proxy::ports::port_for(parser)
}

/// The model's key and value as the kernel's: the one conversion point.
pub(in crate::daemon) fn kernel_entry(
    endpoint_id: u16,
    key: &MapKey,
    value: Option<&MapValue>,
) -> Result<(PolicyKey, Option<PolicyValue>)> {
    let dir = match key.direction {
        Direction::Ingress => redirect_ebpf::Direction::Ingress,
        Direction::Egress => redirect_ebpf::Direction::Egress,
    };
    let k = PolicyKey::new(
        key.identity.0,
        endpoint_id,
        dir,
        key.port.protocol,
        key.port.port,
        key.port.prefix_len,
    )?;
    let v = value.map(|v| {
        let mut pv = match (v.verdict, v.redirect) {
            (MapVerdict::Deny, _) => PolicyValue::deny(v.cookie),
            (MapVerdict::Allow, None) => PolicyValue::allow(v.cookie),
            (MapVerdict::Allow, Some(p)) => PolicyValue::redirect(proxy_port(p), v.cookie),
        };
        // An allow an audited policy would drop: passed, reported AUDIT.
        if v.verdict == MapVerdict::Allow && v.audit {
            pv.flags |= redirect_ebpf::POLICY_FLAG_AUDIT;
        }
        // A deny of no rule (cookie 0): "no rule allows it", as a missing
        // entry would be.
        if v.verdict == MapVerdict::Deny && v.cookie == 0 {
            pv.flags |= redirect_ebpf::POLICY_FLAG_NO_RULE;
        }
        pv
    });
    Ok((k, v))
}

/// What the agent last wrote to the kernel; persisted so a restarted
/// agent can compute deltas against the pinned maps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(in crate::daemon) struct KernelState {
    pub(in crate::daemon) policies: BTreeMap<u16, Vec<(MapKey, MapValue)>>,
    /// Prefix -> identity (saved as a list of pairs).
    #[serde(with = "pairs")]
    pub(in crate::daemon) ipcache: BTreeMap<IpNet, u32>,
}

/// A map saved as a list of `[key, value]` pairs (the file format the
/// ipcache always had).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
