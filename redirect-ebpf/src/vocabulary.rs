//! The datapath's vocabulary shared with the C programs and the agent:
//! reserved identities, verdicts, marks, conntrack flags, counters, the
//! hooks and reasons of flow events, and the constructors of the map keys
//! and values (`PolicyKey::new`, `PolicyValue::redirect`, ...).

use crate::abi::{DatapathConfig, FlowEvent, PolicyKey, PolicyValue};
use crate::error::DatapathError;

/// Reserved identity of the node itself.
pub const IDENTITY_HOST: u32 = 1;
/// Reserved identity of everything outside the cluster.
pub const IDENTITY_WORLD: u32 = 2;

/// `PolicyValue::verdict` for an allow.
pub const VERDICT_ALLOW: u8 = 1;
/// `PolicyValue::verdict` for a deny.
pub const VERDICT_DENY: u8 = 2;

/// `PolicyValue::flags`, with an allow: the enforced policies allow the
/// flow but a policy in audit mode would drop it. The flow passes and is
/// reported as [`EVENT_AUDIT`]; `rule_cookie` names the audited rule that
/// would drop it ([`Reason::AuditDenied`]), or is 0 for the audited
/// policy's default deny ([`Reason::AuditNoPolicy`]). Ignored with a deny.
pub const POLICY_FLAG_AUDIT: u8 = 0x1;
/// `PolicyValue::flags`, with a deny: the entry stands for "no rule allows
/// this", not for a deny rule, so the drop is [`Reason::DropNoPolicy`].
/// Ignored with an allow.
pub const POLICY_FLAG_NO_RULE: u8 = 0x2;

/// `EndpointInfo::flags`: the endpoint's policy only audits. What it would
/// drop (no entry, or a deny entry) passes without redirect and is reported
/// as [`EVENT_AUDIT`]; an entry with an unknown verdict still drops.
pub const ENDPOINT_FLAG_AUDIT: u16 = 0x1;

/// `FlowEvent::verdict`: a new flow passed the policy of `endpoint_id` in
/// `direction` (only reported with [`CONFIG_TRACE_NEW_FLOWS`]). A flow
/// between two local pods has one verdict event per side.
pub const EVENT_FORWARDED: u8 = 0;
/// `FlowEvent::verdict`: the packet was dropped.
pub const EVENT_DROPPED: u8 = 1;
/// `FlowEvent::verdict`: a new flow was handed to the proxy, for the L7
/// rules of `endpoint_id` in `direction`.
pub const EVENT_REDIRECTED: u8 = 2;
/// `FlowEvent::verdict`: a new flow passed although a policy in audit mode
/// would have dropped it; `endpoint_id`, `direction` and `rule_cookie` name
/// the audited side, `reason` is [`Reason::AuditDenied`] or
/// [`Reason::AuditNoPolicy`]. Always reported (within the event budget).
pub const EVENT_AUDIT: u8 = 3;

/// All portcullis skb marks live inside this mask.
pub const MARK_MASK: u32 = 0x0f00;
/// Mark of packets assigned to the proxy (selects [`PROXY_ROUTE_TABLE`]).
pub const MARK_TO_PROXY: u32 = 0x0200;
/// Mark of packets whose policy `from_pod`/`from_uplink` already decided.
pub const MARK_POLICY_DONE: u32 = 0x0400;
/// Default mark the proxy sets with `SO_MARK` on its upstream sockets.
pub const DEFAULT_FROM_PROXY_MARK: u32 = 0x0a00;

/// `DatapathConfig::flags`: emit a flow event for every new allowed flow
/// (drops and redirects are always reported).
pub const CONFIG_TRACE_NEW_FLOWS: u32 = 0x1;

/// `CtEntry::flags`: the flow is the proxy's upstream connection; its
/// replies are handed back to the proxy socket owning the tuple.
pub const CT_PROXY_UPSTREAM: u16 = 0x1;
/// `CtEntry::flags`: TCP FIN seen in the original direction.
pub const CT_FIN_ORIG: u16 = 0x2;
/// `CtEntry::flags`: TCP FIN seen in the reply direction.
pub const CT_FIN_REPLY: u16 = 0x4;
/// `CtEntry::flags`: TCP RST or both FINs seen; the entry dies
/// [`CT_CLOSE_SECONDS`] later whatever follows.
pub const CT_CLOSED: u16 = 0x8;
/// Life of a closed TCP entry after the close.
pub const CT_CLOSE_SECONDS: u64 = 10;
/// Later fragments pass for this long after their first fragment passed.
pub const FRAG_SECONDS: u64 = 30;
/// Default of `DatapathConfig::events_per_second`.
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 200;

/// Counter index: packets carrying a from-proxy or policy-done mark they
/// could not prove (judged like any other packet).
pub const COUNTER_FORGED_MARK: u32 = 29;
/// Counter index: flow events not emitted (endpoint over its budget).
pub const COUNTER_EVENTS_SUPPRESSED: u32 = 30;
/// Counter index: flow events lost (ring buffer full).
pub const COUNTER_EVENTS_LOST: u32 = 31;

pub(crate) const FAMILY_IPV4: u8 = 4;
pub(crate) const FAMILY_IPV6: u8 = 6;
pub(crate) const POLICY_PREFIX_L3: u32 = 56;
pub(crate) const POLICY_PREFIX_PROTO: u32 = 64;

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            from_proxy_mark: DEFAULT_FROM_PROXY_MARK,
            from_proxy_mark_mask: MARK_MASK,
            flags: CONFIG_TRACE_NEW_FLOWS,
            policy_epoch: 0,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            pad: 0,
            proxy_cgroup_id: 0,
        }
    }
}

/// Which way traffic crosses an endpoint, from the endpoint's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic to the endpoint.
    Ingress,
    /// Traffic from the endpoint.
    Egress,
}

impl Direction {
    /// The code used in policy keys and events.
    pub const fn code(self) -> u8 {
        match self {
            Self::Ingress => 0,
            Self::Egress => 1,
        }
    }
}

/// Where a program runs, as reported in [`FlowEvent::hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// TC ingress on a pod veth (packets leaving the pod).
    FromPod,
    /// TC egress on a pod veth (packets entering the pod).
    ToPod,
    /// TC ingress on the uplink (packets from the world and other nodes).
    FromUplink,
    /// TC egress on the uplink: remembers the proxy's upstream flows to
    /// pods on other nodes (decides nothing).
    ToUplink,
}

impl Hook {
    /// All hooks.
    pub const ALL: [Hook; 4] = [Hook::FromPod, Hook::ToPod, Hook::FromUplink, Hook::ToUplink];

    /// The code used in events.
    pub const fn code(self) -> u8 {
        match self {
            Self::FromPod => 0,
            Self::ToPod => 1,
            Self::FromUplink => 2,
            Self::ToUplink => 3,
        }
    }

    /// Decodes [`FlowEvent::hook`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::FromPod),
            1 => Some(Self::ToPod),
            2 => Some(Self::FromUplink),
            3 => Some(Self::ToUplink),
            _ => None,
        }
    }

    /// Name of the program (and of the link pin prefix) for this hook.
    pub const fn program_name(self) -> &'static str {
        match self {
            Self::FromPod => "from_pod",
            Self::ToPod => "to_pod",
            Self::FromUplink => "from_uplink",
            Self::ToUplink => "to_uplink",
        }
    }
}

/// Why a packet passed or was dropped: the index into the counters and the
/// `reason` of a [`FlowEvent`]. Codes from 16 up are drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Neither side is a managed endpoint.
    PassUnmanaged = 0,
    /// ARP and other non-IP frames that may pass.
    PassNotIp = 1,
    /// IPv6 neighbour discovery.
    PassNdp = 2,
    /// Decided earlier (policy-done or from-proxy mark).
    PassMarked = 3,
    /// Conntrack hit in the original direction.
    PassEstablished = 4,
    /// Conntrack hit in the reply direction.
    PassReply = 5,
    /// ICMP error about a tracked flow.
    PassRelated = 6,
    /// New flow allowed by policy.
    PassPolicy = 7,
    /// Handed to the proxy.
    Redirect = 8,
    /// Later fragment of a datagram whose first fragment passed.
    PassFragment = 9,
    /// First packet of a new flow an audited deny rule would have dropped
    /// (counted here instead of `PassPolicy` or `Redirect`).
    AuditDenied = 10,
    /// First packet of a new flow no rule would have allowed, passed
    /// because the policy only audits.
    AuditNoPolicy = 11,
    /// A deny entry matched.
    DropPolicyDenied = 16,
    /// No policy entry matched (fail closed).
    DropNoPolicy = 17,
    /// Unknown or foreign source address on a pod veth.
    DropSpoofed = 18,
    /// A redirect was wanted and no proxy socket was found.
    DropProxyUnavailable = 19,
    /// Truncated or unparseable headers.
    DropMalformed = 20,
    /// Non-first fragment of a managed endpoint's flow.
    DropFragment = 21,
    /// Non-IP, non-ARP frame from a pod.
    DropNotIp = 22,
    /// A redirect was wanted at an egress hook, where it cannot be done.
    DropRedirectAtEgress = 23,
    /// A tracked flow the current policy no longer allows (revocation).
    DropRevoked = 24,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 21] = [
        Reason::PassUnmanaged,
        Reason::PassNotIp,
        Reason::PassNdp,
        Reason::PassMarked,
        Reason::PassEstablished,
        Reason::PassReply,
        Reason::PassRelated,
        Reason::PassPolicy,
        Reason::Redirect,
        Reason::PassFragment,
        Reason::AuditDenied,
        Reason::AuditNoPolicy,
        Reason::DropPolicyDenied,
        Reason::DropNoPolicy,
        Reason::DropSpoofed,
        Reason::DropProxyUnavailable,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropNotIp,
        Reason::DropRedirectAtEgress,
        Reason::DropRevoked,
    ];

    /// Decodes a counter index or [`FlowEvent::reason`].
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// Whether packets counted under this reason were dropped.
    pub const fn is_drop(self) -> bool {
        self as u8 >= 16
    }
}

/// One change to the policy map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyChange {
    /// Insert or replace an entry.
    Upsert(PolicyKey, PolicyValue),
    /// Remove an entry (removing a missing entry is not an error).
    Delete(PolicyKey),
}

impl PolicyKey {
    /// Builds a policy key from host-order parts; the one place where they
    /// become the network-order contract layout.
    ///
    /// * `identity`: remote identity, 0 = any identity.
    /// * `protocol`: 0 = any protocol (then `dport_prefix_len` must be 0).
    /// * `dport`, `dport_prefix_len`: match the first `dport_prefix_len`
    ///   bits (0..=16) of the destination port (the ICMP type for ICMP);
    ///   bits beyond the prefix are cleared.
    pub fn new(
        identity: u32,
        endpoint_id: u16,
        direction: Direction,
        protocol: u8,
        dport: u16,
        dport_prefix_len: u8,
    ) -> Result<Self, DatapathError> {
        if dport_prefix_len > 16 {
            return Err(DatapathError::InvalidPolicyKey(
                "dport_prefix_len must be at most 16",
            ));
        }
        if protocol == 0 && dport_prefix_len != 0 {
            return Err(DatapathError::InvalidPolicyKey(
                "a port match needs a protocol (protocol 0 means any protocol, any port)",
            ));
        }
        let (prefixlen, dport) = if protocol == 0 {
            (POLICY_PREFIX_L3, 0)
        } else {
            let mask = u16::MAX
                .checked_shl(16 - u32::from(dport_prefix_len))
                .unwrap_or(0);
            (
                POLICY_PREFIX_PROTO + u32::from(dport_prefix_len),
                dport & mask,
            )
        };
        Ok(Self {
            prefixlen,
            identity: identity.to_be(),
            endpoint_id: endpoint_id.to_be(),
            direction: direction.code(),
            protocol,
            dport: dport.to_be(),
            pad: 0,
        })
    }
}

impl PolicyValue {
    /// Allow, without redirect.
    pub const fn allow(rule_cookie: u32) -> Self {
        Self {
            verdict: VERDICT_ALLOW,
            flags: 0,
            proxy_port: 0,
            rule_cookie,
        }
    }

    /// Deny (drop).
    pub const fn deny(rule_cookie: u32) -> Self {
        Self {
            verdict: VERDICT_DENY,
            flags: 0,
            proxy_port: 0,
            rule_cookie,
        }
    }

    /// Allow, handing the flow to the proxy listening on `proxy_port`.
    pub const fn redirect(proxy_port: u16, rule_cookie: u32) -> Self {
        Self {
            verdict: VERDICT_ALLOW,
            flags: 0,
            proxy_port,
            rule_cookie,
        }
    }

    /// The same entry with `flags` (`POLICY_FLAG_*`) in place of its flags.
    pub const fn with_flags(self, flags: u8) -> Self {
        Self { flags, ..self }
    }

    /// An allow that a policy in audit mode would drop
    /// ([`POLICY_FLAG_AUDIT`]); `rule_cookie` is then the audited rule's.
    pub const fn audited(self) -> Self {
        self.with_flags(self.flags | POLICY_FLAG_AUDIT)
    }

    /// A deny that stands for "no rule allows this"
    /// ([`POLICY_FLAG_NO_RULE`]).
    pub const fn no_rule(self) -> Self {
        self.with_flags(self.flags | POLICY_FLAG_NO_RULE)
    }
}

pub(crate) fn addr_bytes(ip: std::net::IpAddr) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    match ip {
        std::net::IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (FAMILY_IPV4, addr)
        }
        std::net::IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets()),
    }
}

fn ip_from_bytes(family: u8, addr: &[u8; 16]) -> std::net::IpAddr {
    if family == FAMILY_IPV4 {
        std::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        std::net::IpAddr::from(*addr)
    }
}

impl FlowEvent {
    /// Source address.
    pub fn src_addr(&self) -> std::net::IpAddr {
        ip_from_bytes(self.family, &self.saddr)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> std::net::IpAddr {
        ip_from_bytes(self.family, &self.daddr)
    }

    /// Decoded reason, `None` for a code this build does not know.
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_code(self.reason)
    }

    /// Decoded hook.
    pub fn hook(&self) -> Option<Hook> {
        Hook::from_code(self.hook)
    }

    /// Whether the packet was dropped.
    pub fn is_drop(&self) -> bool {
        self.verdict == EVENT_DROPPED
    }

    /// Whether the flow passed only because a policy audits
    /// ([`EVENT_AUDIT`]).
    pub fn is_audit(&self) -> bool {
        self.verdict == EVENT_AUDIT
    }
}
