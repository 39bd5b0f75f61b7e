//! Rust twins of the structs in `bpf/portcullis.h` (their `aya::Pod` impls
//! are in `raw.rs`, with the rest of the crate's `unsafe`).
//!
//! Every type is `#[repr(C)]`, holds only integers and byte arrays (no
//! `bool`, `Option`, enums or padding the C side does not spell out), and
//! the unit test in `tests.rs` checks sizes and offsets against the header.

use std::mem::size_of;

/// Key of the `ipcache` LPM trie: `prefixlen` is 32 + the prefix length
/// (family and padding always match). Addresses in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Value of the `ipcache` trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheValue {
    /// Security identity of the prefix, host byte order.
    pub identity: u32,
    /// 0: new flows see `identity` too. Otherwise a learned address past
    /// its TTL that open flows still use: new flows are judged as this
    /// identity (see [`crate::Datapath::set_ipcache_lingering`]).
    pub new_flow_identity: u32,
}

/// Key of the `endpoints` hash: a local pod address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// A managed local endpoint (value of the `endpoints` hash). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// The endpoint's own security identity.
    pub identity: u32,
    /// Interface index of the pod veth (node side); packets claiming this
    /// endpoint's address on any other veth are dropped as spoofed. 0 turns
    /// the check off.
    pub ifindex: u32,
    /// Endpoint id used in policy keys.
    pub endpoint_id: u16,
    /// `ENDPOINT_FLAG_*` (audit mode).
    pub flags: u16,
}

/// Key of the `policy` LPM trie, in the exact layout of the C header. This
/// is the contract with the agent: build it with [`PolicyKey::new`], the
/// only place where host byte order becomes network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    /// 56: identity, endpoint and direction only; 64: plus protocol;
    /// 64 + p: plus the first p bits of `dport`.
    pub prefixlen: u32,
    /// Remote identity, network byte order; 0 = any identity.
    pub identity: u32,
    /// Network byte order.
    pub endpoint_id: u16,
    /// 0 = ingress, 1 = egress.
    pub direction: u8,
    /// IP protocol number; 0 only with prefixlen 56.
    pub protocol: u8,
    /// Network byte order; the ICMP type for ICMP and ICMPv6.
    pub dport: u16,
    pub pad: u16,
}

/// Value of the `policy` trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// 1 allow, 2 deny; anything else drops.
    pub verdict: u8,
    /// `POLICY_FLAG_*` (audit, no rule).
    pub flags: u8,
    /// Host byte order; non-zero with an allow = hand the flow to the proxy
    /// listening on this port.
    pub proxy_port: u16,
    /// Opaque id of the deciding rule, copied into flow events.
    pub rule_cookie: u32,
}

/// Key of the `conntrack` LRU hash: the tuple as first seen. Ports network
/// byte order (for ICMP echo the identifier, see the header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub family: u8,
    pub pad: u16,
}

/// Value of the `conntrack` hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet.
    pub last_seen_ns: u64,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub rule_cookie: u32,
    /// Host byte order; non-zero = packets of this flow go to the proxy.
    pub proxy_port: u16,
    pub endpoint_id: u16,
    pub direction: u8,
    pub hook: u8,
    /// `CT_*` flags.
    pub flags: u16,
    /// `DatapathConfig::policy_epoch` the verdict was taken (or last
    /// confirmed) at; a packet of the flow under a newer epoch makes the
    /// kernel take the flow's decision again.
    pub policy_epoch: u32,
}

/// One record of the `events` ring buffer. Ports host byte order,
/// addresses network byte order (IPv4 in the first four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub ifindex: u32,
    pub rule_cookie: u32,
    pub endpoint_id: u16,
    pub proxy_port: u16,
    /// 4 or 6.
    pub family: u8,
    pub protocol: u8,
    /// `EVENT_*`: 0 forwarded, 1 dropped, 2 redirected, 3 audit.
    pub verdict: u8,
    /// A [`crate::Reason`] code.
    pub reason: u8,
    /// 0 ingress, 1 egress, from `endpoint_id`'s point of view.
    pub direction: u8,
    /// A [`crate::Hook`] code.
    pub hook: u8,
    /// 1 with `EVENT_REDIRECTED`: this side's policy handed the flow to the
    /// proxy.
    pub redirected: u8,
    pub pad: u8,
}

/// The single element of the `config` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatapathConfig {
    /// skb mark the proxy sets (SO_MARK) on its upstream sockets.
    pub from_proxy_mark: u32,
    /// Mask for `from_proxy_mark`; 0 = never trust a mark as from-proxy.
    pub from_proxy_mark_mask: u32,
    /// `CONFIG_*` flags.
    pub flags: u32,
    /// Bumped by [`crate::Datapath`] after every map change; tracked flows
    /// decided under an older epoch are checked again at their next packet.
    pub policy_epoch: u32,
    /// Flow events each endpoint may emit per second, per CPU (more are
    /// counted as suppressed); 0 = no limit.
    pub events_per_second: u32,
    pub pad: u32,
    /// cgroup v2 id of the agent's proxy: only packets of sockets in this
    /// cgroup carry the from-proxy verdict. 0 = nothing is trusted.
    pub proxy_cgroup_id: u64,
}

/// Key of the `fragments` LRU hash: a datagram whose first fragment passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// IPv4 identification or IPv6 fragment identification, host order.
    pub id: u32,
    pub protocol: u8,
    pub family: u8,
    pub pad: u16,
}

/// Value of the `fragments` hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragEntry {
    /// `bpf_ktime_get_ns()` of the first fragment.
    pub first_seen_ns: u64,
}

/// Value of the per-CPU `event_budget` hash (keyed by endpoint id, u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventBudget {
    pub window_start_ns: u64,
    pub events: u32,
    pub pad: u32,
}

/// LPM data of an `ipcache` key: [`IpcacheKey`] without `prefixlen`, which
/// `aya::maps::lpm_trie::Key` carries itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct IpcacheLpmData {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// LPM data of a policy key: [`PolicyKey`] without `prefixlen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct PolicyLpmData {
    pub identity: u32,
    pub endpoint_id: u16,
    pub direction: u8,
    pub protocol: u8,
    pub dport: u16,
    pub pad: u16,
}

// Compile-time size checks (the unit test also compares every offset with
// the C compiler's view of the header).
const _: () = assert!(size_of::<IpcacheKey>() == 24);
const _: () = assert!(size_of::<IpcacheLpmData>() == 20);
const _: () = assert!(size_of::<IpcacheValue>() == 8);
const _: () = assert!(size_of::<EndpointKey>() == 20);
const _: () = assert!(size_of::<EndpointInfo>() == 12);
const _: () = assert!(size_of::<PolicyKey>() == 16);
const _: () = assert!(size_of::<PolicyLpmData>() == 12);
const _: () = assert!(size_of::<PolicyValue>() == 8);
const _: () = assert!(size_of::<CtKey>() == 40);
const _: () = assert!(size_of::<CtEntry>() == 32);
const _: () = assert!(size_of::<FlowEvent>() == 72);
const _: () = assert!(size_of::<DatapathConfig>() == 32);
const _: () = assert!(size_of::<FragKey>() == 40);
const _: () = assert!(size_of::<FragEntry>() == 8);
const _: () = assert!(size_of::<EventBudget>() == 16);
