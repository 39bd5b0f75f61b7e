/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Everything the kernel programs share with the Rust loader: map key and
 * value layouts, reason codes and mark values. Only fixed-width types, no
 * bool, no enum-typed fields. The Rust twins live in src/abi.rs and a unit
 * test compares their sizes and field offsets with this header.
 *
 * Byte order: the policy key is network byte order (the contract with the
 * agent). Everything else is host byte order unless a field says otherwise.
 */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

#include <linux/types.h>

/* Address family tags used in keys (not AF_*: one byte, stable). */
#define PC_FAMILY_IPV4 4
#define PC_FAMILY_IPV6 6

/* Reserved identities (Cilium numbering). */
#define PC_IDENTITY_HOST 1
#define PC_IDENTITY_WORLD 2

/* Policy directions, from the endpoint's point of view. */
#define PC_DIR_INGRESS 0
#define PC_DIR_EGRESS 1

/* Policy verdicts. Anything else is treated as a drop. */
#define PC_VERDICT_ALLOW 1
#define PC_VERDICT_DENY 2

/*
 * skb->mark values, all inside PC_MARK_MASK. TO_PROXY selects the TPROXY
 * routing table (ip rule fwmark 0x200/0xf00 lookup 100). POLICY_DONE tells
 * to_pod that from_pod already decided this packet. The from-proxy mark
 * (set by the proxy with SO_MARK) lives in the config map.
 */
#define PC_MARK_MASK 0x0f00
#define PC_MARK_TO_PROXY 0x0200
#define PC_MARK_POLICY_DONE 0x0400
#define PC_DEFAULT_FROM_PROXY_MARK 0x0a00

/* Hooks, as reported in flow events. */
#define PC_HOOK_FROM_POD 0
#define PC_HOOK_TO_POD 1
#define PC_HOOK_FROM_UPLINK 2
#define PC_HOOK_TO_UPLINK 3

/* Flow event verdicts. A new flow between two local pods has one
 * FORWARDED or REDIRECTED event per side (endpoint, direction). */
#define PC_EVENT_FORWARDED 0
#define PC_EVENT_DROPPED 1
#define PC_EVENT_REDIRECTED 2
/* A new flow that passed only because a policy in audit mode would have
 * dropped it; reason is PC_REASON_AUDIT_*, and endpoint_id, direction and
 * rule_cookie name the audited side. Emitted for every such flow (not only
 * under PC_CONFIG_TRACE_NEW_FLOWS), within the endpoint's event budget. */
#define PC_EVENT_AUDIT 3

/* config.flags */
#define PC_CONFIG_TRACE_NEW_FLOWS 0x1 /* emit an event for every new allowed flow */

/*
 * Reason codes: index into the counters map and the reason field of flow
 * events. Codes below PC_REASON_FIRST_DROP count passed packets.
 */
#define PC_REASON_PASS_UNMANAGED 0    /* neither side is a managed endpoint */
#define PC_REASON_PASS_NOT_IP 1       /* ARP and other non-IP frames that may pass */
#define PC_REASON_PASS_NDP 2          /* IPv6 neighbour discovery */
#define PC_REASON_PASS_MARKED 3       /* decided earlier (policy-done or from-proxy mark) */
#define PC_REASON_PASS_ESTABLISHED 4  /* conntrack hit, original direction */
#define PC_REASON_PASS_REPLY 5        /* conntrack hit, reply direction */
#define PC_REASON_PASS_RELATED 6      /* ICMP error about a tracked flow */
#define PC_REASON_PASS_POLICY 7       /* new flow allowed by policy */
#define PC_REASON_REDIRECT 8          /* handed to the proxy */
#define PC_REASON_PASS_FRAGMENT 9     /* later fragment of a datagram whose first fragment passed */
/* First packet of a new flow that passed under an audit mark (counted here
 * instead of PASS_POLICY or REDIRECT): */
#define PC_REASON_AUDIT_DENIED 10     /* an audited deny rule would have dropped it */
#define PC_REASON_AUDIT_NO_POLICY 11  /* no rule would have allowed it */
#define PC_REASON_FIRST_DROP 16
#define PC_REASON_DROP_POLICY_DENIED 16  /* a deny entry matched */
#define PC_REASON_DROP_NO_POLICY 17      /* no entry matched (fail closed) */
#define PC_REASON_DROP_SPOOFED 18        /* unknown or foreign source IP on a pod veth */
#define PC_REASON_DROP_PROXY_UNAVAILABLE 19 /* redirect wanted, no proxy socket */
#define PC_REASON_DROP_MALFORMED 20      /* truncated or invalid headers */
#define PC_REASON_DROP_FRAGMENT 21       /* non-first fragment of a managed flow */
#define PC_REASON_DROP_NOT_IP 22         /* non-IP, non-ARP frame from a pod */
#define PC_REASON_DROP_REDIRECT_AT_EGRESS 23 /* redirect wanted at an egress hook */
#define PC_REASON_DROP_REVOKED 24        /* tracked flow no longer allowed by the current policy */
#define PC_REASON_MAX 32

/*
 * Counters that are not packet verdicts, at the top of the counters map.
 * FORGED_MARK: packets carrying the from-proxy mark without coming from
 * the proxy's cgroup, or the policy-done mark from a local socket (they
 * are then judged like any other packet). EVENTS_SUPPRESSED: flow events
 * not emitted because their endpoint was over its per-second budget.
 * EVENTS_LOST: events lost because the ring buffer was full.
 */
#define PC_COUNTER_FORGED_MARK 29
#define PC_COUNTER_EVENTS_SUPPRESSED 30
#define PC_COUNTER_EVENTS_LOST 31

/* ipcache: LPM trie. prefixlen = 32 + prefix length (family and pad always match). */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family; /* PC_FAMILY_* */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	/* 0: new flows see `identity` too. Otherwise the prefix is a learned
	 * (toFQDNs) address past its TTL that open flows still use: they
	 * keep `identity`, a new flow is judged as this identity instead, so
	 * an expired address admits no new connection it would not admit
	 * without the name. */
	__u32 new_flow_identity;
};

/* endpoints: hash keyed by local pod IP. */
struct endpoint_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct endpoint_info {
	__u32 identity;
	__u32 ifindex; /* 0 = do not check the arriving interface */
	__u16 endpoint_id;
	__u16 flags;   /* PC_EP_FLAG_* */
};

/* endpoint_info.flags: the endpoint's policy only audits. Whatever it
 * would drop (no entry, a deny entry) passes, without redirect, reported
 * as PC_EVENT_AUDIT: PC_REASON_AUDIT_NO_POLICY for no entry (or a
 * PC_POLICY_FLAG_NO_RULE deny), else PC_REASON_AUDIT_DENIED with the deny
 * entry's rule_cookie. An unknown verdict still drops. */
#define PC_EP_FLAG_AUDIT 0x1

/* policy: LPM trie. The layout is the contract with the agent. */
struct policy_key {
	__u32 prefixlen;    /* 56: identity+endpoint+direction; 64: +protocol; 64+p: +p bits of dport */
	__u32 identity;     /* network byte order; 0 = any identity */
	__u16 endpoint_id;  /* network byte order */
	__u8 direction;     /* PC_DIR_* */
	__u8 protocol;      /* IPPROTO_*; 0 only with prefixlen 56 */
	__u16 dport;        /* network byte order; ICMP type for ICMP/ICMPv6 */
	__u16 pad;
};

#define PC_POLICY_PREFIX_L3 56
#define PC_POLICY_PREFIX_PROTO 64
#define PC_POLICY_PREFIX_FULL 80

struct policy_value {
	__u8 verdict;       /* PC_VERDICT_* */
	__u8 flags;         /* PC_POLICY_FLAG_* */
	__u16 proxy_port;   /* host byte order; 0 = no redirect */
	__u32 rule_cookie;  /* opaque id of the deciding rule */
};

/*
 * policy_value.flags; each means something with one verdict only and is
 * ignored with the other (so neither can turn a deny into a pass).
 * AUDIT, with ALLOW: the enforced policies allow the flow but a policy in
 * audit mode would drop it. The flow passes (redirected if proxy_port says
 * so) and is reported as PC_EVENT_AUDIT; rule_cookie is the audited rule
 * that would drop it: PC_REASON_AUDIT_DENIED when non-zero, 0 (the audited
 * policy's default deny) gives PC_REASON_AUDIT_NO_POLICY.
 * NO_RULE, with DENY: the entry stands for "no rule allows this", not for
 * a deny rule: the drop reason is PC_REASON_DROP_NO_POLICY.
 */
#define PC_POLICY_FLAG_AUDIT 0x1
#define PC_POLICY_FLAG_NO_RULE 0x2

/* conntrack: LRU hash keyed by the tuple as first seen. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;   /* network byte order; ICMP echo: identifier (request) */
	__u16 dport;   /* network byte order; ICMP echo: identifier (reply) */
	__u8 protocol;
	__u8 family;
	__u16 pad;
};

struct ct_entry {
	__u64 last_seen_ns;  /* bpf_ktime_get_ns() */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_cookie;
	__u16 proxy_port;    /* host byte order; 0 = not redirected */
	__u16 endpoint_id;   /* endpoint whose policy created the entry */
	__u8 direction;      /* PC_DIR_* of that decision */
	__u8 hook;           /* PC_HOOK_* that created the entry */
	__u16 flags;         /* PC_CT_* */
	__u32 policy_epoch;  /* config.policy_epoch the verdict was taken at */
};

/* ct_entry.flags: the flow is the proxy's upstream connection (from-proxy
 * mark seen at to_pod); replies are handed back to the proxy's socket. */
#define PC_CT_PROXY_UPSTREAM 0x1
/* TCP: FIN seen in the original / reply direction. */
#define PC_CT_FIN_ORIG 0x2
#define PC_CT_FIN_REPLY 0x4
/* TCP: RST or both FINs seen; the entry dies PC_CT_CLOSE_SECONDS after
 * that, whatever follows (last_seen_ns is no longer refreshed). */
#define PC_CT_CLOSED 0x8
#define PC_CT_CLOSE_SECONDS 10

/* fragments: LRU hash of datagrams whose first fragment passed. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;      /* IPv4 identification or IPv6 fragment id, host order */
	__u8 protocol;
	__u8 family;
	__u16 pad;
};

struct frag_entry {
	__u64 first_seen_ns; /* later fragments pass for PC_FRAG_SECONDS */
};

#define PC_FRAG_SECONDS 30

/* event_budget: per-CPU LRU hash keyed by endpoint id (u32). */
struct event_budget {
	__u64 window_start_ns;
	__u32 events;
	__u32 pad;
};

/* events: ring buffer records. Ports host byte order. */
struct flow_event {
	__u64 timestamp_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u32 rule_cookie;
	__u16 endpoint_id;
	__u16 proxy_port;
	__u8 family;
	__u8 protocol;
	__u8 verdict;     /* PC_EVENT_* */
	__u8 reason;      /* PC_REASON_* */
	__u8 direction;   /* PC_DIR_* */
	__u8 hook;        /* PC_HOOK_* */
	__u8 redirected;  /* 1 when handed to the proxy */
	__u8 pad;
};

/* config: array with one element. */
struct datapath_config {
	__u32 from_proxy_mark;      /* value the proxy sets with SO_MARK */
	__u32 from_proxy_mark_mask; /* 0 = never trust a mark as from-proxy */
	__u32 flags;                /* PC_CONFIG_* */
	__u32 policy_epoch;         /* bumped by the loader after every map change */
	__u32 events_per_second;    /* flow events per endpoint per CPU per second; 0 = no limit */
	__u32 pad;
	__u64 proxy_cgroup_id;      /* cgroup v2 id of the proxy; 0 = no proxy is trusted */
};

#endif /* PORTCULLIS_H */
