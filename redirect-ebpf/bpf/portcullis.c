// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * portcullis TC programs.
 *
 *   from_pod    TC ingress on the node side of a pod veth (packets leaving a pod)
 *   to_pod      TC egress on the same veth (packets entering a pod)
 *   from_uplink TC ingress on the node's uplink (packets from the world and other nodes)
 *   to_uplink   TC egress on the uplink: remembers the proxy's upstream flows
 *               to pods on other nodes, so their replies reach the proxy
 *
 * Each program: parse -> identities -> conntrack -> policy -> drop | pass |
 * hand to the proxy (BPF TPROXY). The rule everywhere: when in doubt about
 * a managed endpoint's packet, drop. Comments marked "fail closed" explain
 * why a branch that passes traffic cannot open a hole.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "portcullis.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define CT_LIFETIME_OTHER_NS (60ULL * 1000000000ULL)
#define CT_LIFETIME_CLOSE_NS (PC_CT_CLOSE_SECONDS * 1000000000ULL)
#define FRAG_LIFETIME_NS (PC_FRAG_SECONDS * 1000000000ULL)
#define EVENT_WINDOW_NS 1000000000ULL
#define IPV6_MAX_EXT_HEADERS 4

/* ---------------------------------------------------------------- maps */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 4096);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PC_REASON_MAX);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(max_entries, 1);
} config SEC(".maps");

/* Datagrams whose first fragment passed: their later fragments may follow.
 * LRU: a flood of first fragments evicts old entries, whose later
 * fragments are then dropped (fail closed). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(max_entries, 16384);
} fragments SEC(".maps");

/* Flow events each endpoint may still emit in the current second, per CPU
 * (no cross-CPU races; the effective limit is events_per_second x CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct event_budget);
	__uint(max_entries, 4096);
} event_budget SEC(".maps");

/* ------------------------------------------------------------- parsing */

#define PARSE_OK 0
#define PARSE_NOT_IP 1
#define PARSE_MALFORMED -1

/* What one packet is, as far as policy is concerned. */
struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;        /* network order; conntrack/socket tuple */
	__u16 dport;        /* network order */
	__u16 policy_port;  /* host order; destination port or ICMP type */
	__u16 eth_proto;    /* network order */
	__u8 family;
	__u8 protocol;
	__u8 fragment;      /* non-first fragment: no L4 header to look at */
	__u8 untracked;     /* no conntrack for this packet (ICMP info/errors) */
	__u8 icmp_error;    /* inner holds the tuple quoted by the ICMP error */
	__u8 ndp;           /* IPv6 neighbour discovery with hop limit 255 */
	__u8 hop_limit;     /* IPv6 only */
	__u8 tcp_syn;       /* TCP SYN without ACK: a new connection attempt */
	__u8 tcp_flags;     /* TCP only */
	__u8 frag_first;    /* first fragment of a fragmented datagram */
	__u16 frag_offset;  /* non-first fragment: its offset in bytes */
	__u32 frag_id;      /* fragmented datagram: its identification */
	struct ct_key inner;
};

/* Ports of TCP/UDP/SCTP, or type and identifier of ICMP, at offset off. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u8 family, __u8 proto,
				    __u16 *sport, __u16 *dport, __u16 *policy_port, __u8 *icmp_type)
{
	__u8 echo_request = family == PC_FAMILY_IPV4 ? 8 : 128;
	__u8 echo_reply = family == PC_FAMILY_IPV4 ? 0 : 129;
	__u8 icmp_proto = family == PC_FAMILY_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	__u16 ports[2];
	struct {
		__u8 type;
		__u8 code;
		__u16 csum;
		__u16 id;
		__u16 seq;
	} icmp;

	*sport = 0;
	*dport = 0;
	*policy_port = 0;
	*icmp_type = 0xff;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return PARSE_MALFORMED;
		*sport = ports[0];
		*dport = ports[1];
		*policy_port = bpf_ntohs(ports[1]);
		return PARSE_OK;
	}
	if (proto == icmp_proto) {
		if (bpf_skb_load_bytes(skb, off, &icmp, sizeof(icmp)) < 0)
			return PARSE_MALFORMED;
		*icmp_type = icmp.type;
		*policy_port = icmp.type;
		/* Echo: the identifier plays the port, placed so that the
		 * reply's tuple is the request's tuple reversed. */
		if (icmp.type == echo_request)
			*sport = icmp.id;
		else if (icmp.type == echo_reply)
			*dport = icmp.id;
		return PARSE_OK;
	}
	/* Other protocols carry no ports (the extended protocols of a
	 * policy: VRRP, IGMP, GRE, IPIP, IPv6-in-IP, ESP, AH, and any
	 * other): policy sees port 0, which only an L3 (prefixlen 56) entry
	 * or a protocol-wide entry (prefixlen 64) can match. Conntrack keys
	 * them by addresses and protocol (ports 0), so the peer's packets of
	 * the same protocol pass as replies. Nothing is read from their
	 * headers, so a truncated one cannot be misread. */
	return PARSE_OK;
}

static __always_inline int is_icmp_error(__u8 family, __u8 type)
{
	if (family == PC_FAMILY_IPV4)
		return type == 3 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

static __always_inline int is_icmp_echo(__u8 family, __u8 type)
{
	if (family == PC_FAMILY_IPV4)
		return type == 8 || type == 0;
	return type == 128 || type == 129;
}

/* The tuple of the packet quoted inside an ICMP error, as a conntrack key. */
static __always_inline void parse_icmp_inner(struct __sk_buff *skb, __u32 off, struct flow *f)
{
	__u16 policy_port;
	__u8 icmp_type;
	__u8 proto;
	__u32 l4;

	if (f->family == PC_FAMILY_IPV4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
			return;
		__builtin_memcpy(f->inner.saddr, &ip.saddr, 4);
		__builtin_memcpy(f->inner.daddr, &ip.daddr, 4);
		proto = ip.protocol;
		l4 = off + ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return;
		__builtin_memcpy(f->inner.saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->inner.daddr, &ip6.daddr, 16);
		proto = ip6.nexthdr;
		l4 = off + sizeof(ip6);
	}
	if (parse_l4(skb, l4, f->family, proto, &f->inner.sport, &f->inner.dport, &policy_port,
		     &icmp_type) != PARSE_OK)
		return;
	f->inner.protocol = proto;
	f->inner.family = f->family;
	f->icmp_error = 1;
}

static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	struct ethhdr eth;
	__u8 icmp_type;
	__u32 ip_end;
	__u32 off;
	__u8 proto;
	int ret;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return PARSE_MALFORMED;
	f->eth_proto = eth.h_proto;
	off = sizeof(eth);

	if (eth.h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return PARSE_MALFORMED;
		if (ip.version != 4 || ip.ihl < 5)
			return PARSE_MALFORMED;
		f->family = PC_FAMILY_IPV4;
		__builtin_memcpy(f->saddr, &ip.saddr, 4);
		__builtin_memcpy(f->daddr, &ip.daddr, 4);
		proto = ip.protocol;
		f->protocol = proto;
		ip_end = off + bpf_ntohs(ip.tot_len);
		if (ip.frag_off & bpf_htons(0x1fff)) {
			f->fragment = 1;
			f->frag_id = bpf_ntohs(ip.id);
			f->frag_offset = (bpf_ntohs(ip.frag_off) & 0x1fff) * 8;
			return PARSE_OK;
		}
		if (ip.frag_off & bpf_htons(0x2000)) {
			f->frag_first = 1;
			f->frag_id = bpf_ntohs(ip.id);
		}
		off += ip.ihl * 4;
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		int i;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return PARSE_MALFORMED;
		if (ip6.version != 6)
			return PARSE_MALFORMED;
		f->family = PC_FAMILY_IPV6;
		__builtin_memcpy(f->saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->daddr, &ip6.daddr, 16);
		proto = ip6.nexthdr;
		f->hop_limit = ip6.hop_limit;
		off += sizeof(ip6);
		ip_end = off + bpf_ntohs(ip6.payload_len);

		/*
		 * The upper-layer protocol is the first header that is not
		 * hop-by-hop options, routing, fragment or destination
		 * options. AH is that protocol, not a header walked past
		 * (Cilium walks past it in IPv6): a packet is judged by the
		 * same protocol number in IPv4 and IPv6, so `protocol: AH`
		 * admits the same traffic in both families, an AH deny cannot
		 * be stepped around by what AH carries, and AH-wrapped TCP is
		 * not admitted by a TCP port rule (what AH carries is opaque
		 * to policy, like ESP's payload). A bounded walk (unrolled):
		 * a longer chain is malformed below (fail closed).
		 */
#pragma unroll
		for (i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
			__u8 ext[8];

			if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING &&
			    proto != IPPROTO_DSTOPTS && proto != IPPROTO_FRAGMENT)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return PARSE_MALFORMED;
			if (proto == IPPROTO_FRAGMENT) {
				/* Offset is the top 13 bits of bytes 2..3 (in
				 * 8-byte units, so masked it is in bytes), the
				 * M flag bit 0 of byte 3, the id bytes 4..7. */
				__u16 offset = ((ext[2] << 8) | ext[3]) & 0xfff8;
				__u32 id = ((__u32)ext[4] << 24) | ((__u32)ext[5] << 16) |
					   ((__u32)ext[6] << 8) | ext[7];

				if (offset) {
					f->protocol = ext[0];
					f->fragment = 1;
					f->frag_id = id;
					f->frag_offset = offset;
					return PARSE_OK;
				}
				if (ext[3] & 1) {
					f->frag_first = 1;
					f->frag_id = id;
				}
				off += 8;
			} else {
				off += (ext[1] + 1) * 8;
			}
			proto = ext[0];
		}
		/* More extension headers than we walk: we cannot find the
		 * upper-layer protocol, so the packet is malformed to us
		 * (fail closed). */
		if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING ||
		    proto == IPPROTO_DSTOPTS || proto == IPPROTO_FRAGMENT)
			return PARSE_MALFORMED;
		f->protocol = proto;
	} else {
		return PARSE_NOT_IP;
	}

	/* A first fragment must hold the whole header policy looks at (ports
	 * and, for TCP, the flags): a tiny first fragment would leave them to
	 * a later fragment. It is treated as a fragment whose first fragment
	 * never passed, so it is dropped for managed endpoints. The length
	 * comes from the IP header, not the frame (which may be padded). */
	if (f->frag_first) {
		__u32 need = proto == IPPROTO_TCP ? 20 : proto == IPPROTO_SCTP ? 12 : 8;

		if (ip_end < off + need) {
			f->fragment = 1;
			f->frag_first = 0;
			f->frag_offset = 0;
			return PARSE_OK;
		}
	}

	ret = parse_l4(skb, off, f->family, proto, &f->sport, &f->dport, &f->policy_port,
		       &icmp_type);
	if (ret != PARSE_OK)
		return ret;
	if (proto == IPPROTO_TCP && !f->fragment) {
		__u8 tcp_flags;

		if (bpf_skb_load_bytes(skb, off + 13, &tcp_flags, 1) < 0)
			return PARSE_MALFORMED;
		f->tcp_flags = tcp_flags;
		f->tcp_syn = (tcp_flags & 0x02) && !(tcp_flags & 0x10);
	}
	if (icmp_type != 0xff && !is_icmp_echo(f->family, icmp_type)) {
		/* ICMP without an identifier cannot be tracked per flow:
		 * every such packet takes the policy path (or the related
		 * path for errors). */
		f->untracked = 1;
		/* RFC 4861: genuine neighbour discovery has hop limit 255,
		 * i.e. it was sent by a neighbour on this link, not routed. */
		if (f->family == PC_FAMILY_IPV6 && icmp_type >= 133 && icmp_type <= 137 &&
		    f->hop_limit == 255)
			f->ndp = 1;
		if (is_icmp_error(f->family, icmp_type))
			parse_icmp_inner(skb, off + 8, f);
	}
	return PARSE_OK;
}

/* ------------------------------------------------------------- lookups */

static __always_inline struct datapath_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct endpoint_info *endpoint_lookup(__u8 family, const __u8 *addr)
{
	struct endpoint_key k = {};

	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &k);
}

/* The ipcache entry of addr's host prefix (longest match), or NULL. */
static __always_inline struct ipcache_value *ipcache_lookup(__u8 family, const __u8 *addr)
{
	struct ipcache_key k = {};

	k.prefixlen = 32 + (family == PC_FAMILY_IPV4 ? 32 : 128);
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&ipcache, &k);
}

static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr, __u32 fallback)
{
	struct ipcache_value *v = ipcache_lookup(family, addr);

	return v ? v->identity : fallback;
}

/* The identity a NEW flow sees for an ipcache entry: its identity, except
 * for a learned address past its TTL (new_flow_identity set), which admits
 * only the flows already open. */
static __always_inline __u32 new_flow_identity(const struct ipcache_value *v, __u32 fallback)
{
	if (!v)
		return fallback;
	return v->new_flow_identity ? v->new_flow_identity : v->identity;
}

static __always_inline int addr_eq(__u8 family, const __u8 *a, const __u8 *b)
{
	if (family == PC_FAMILY_IPV4)
		return *(const __u32 *)a == *(const __u32 *)b;
	return ((const __u64 *)a)[0] == ((const __u64 *)b)[0] &&
	       ((const __u64 *)a)[1] == ((const __u64 *)b)[1];
}

/*
 * Whether an NDP packet from a pod ends at the node: link-local or
 * link-scope multicast destinations are never forwarded, and neither is a
 * packet to one of the node's own addresses (ipcache identity host). Any
 * other destination would be routed on, so the exemption does not apply.
 */
static __always_inline int ndp_stays_local(const struct flow *f)
{
	if (f->daddr[0] == 0xfe && (f->daddr[1] & 0xc0) == 0x80)
		return 1;
	if (f->daddr[0] == 0xff && (f->daddr[1] & 0x0f) == 0x02)
		return 1;
	return ipcache_identity(f->family, f->daddr, 0) == PC_IDENTITY_HOST;
}

/* Outcome of one policy decision, carried into conntrack and events. */
struct decision {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_cookie;
	__u16 endpoint_id;
	__u16 proxy_port;
	__u8 direction;
	__u8 hook;
	__u16 ct_flags;
	/* Audit mark: the flow passes although a policy in audit mode would
	 * drop it (audit_reason PC_REASON_AUDIT_*, 0 = no mark); the audited
	 * side's endpoint, direction and rule. */
	__u32 audit_cookie;
	__u16 audit_endpoint_id;
	__u8 audit_direction;
	__u8 audit_reason;
	/* Bit 1 << PC_DIR_* of every side that passed only under an audit
	 * mark, reported or not. */
	__u8 audited_dirs;
};

/* Marks the decision as audited. When both sides of a flow between local
 * pods are audited, the first one checked (egress) is the one reported. */
static __always_inline void audit_mark(struct decision *d, __u8 reason, __u16 endpoint_id,
				       __u8 direction, __u32 cookie)
{
	d->audited_dirs |= 1 << direction;
	if (d->audit_reason)
		return;
	d->audit_reason = reason;
	d->audit_endpoint_id = endpoint_id;
	d->audit_direction = direction;
	d->audit_cookie = cookie;
}

/*
 * The policy of endpoint ep for one direction: 0 when the flow may pass
 * (d->proxy_port and d->rule_cookie filled in, and the audit mark when it
 * passes only because of audit mode), otherwise the drop reason.
 */
static __always_inline int policy_check(__u8 protocol, __u16 port, __u32 remote,
					const struct endpoint_info *ep, __u8 direction,
					struct decision *d)
{
	struct policy_key k = {};
	struct policy_value *v;
	__u32 cookie;
	int reason;

	k.prefixlen = PC_POLICY_PREFIX_FULL;
	k.identity = bpf_htonl(remote);
	k.endpoint_id = bpf_htons(ep->endpoint_id);
	k.direction = direction;
	k.protocol = protocol;
	k.dport = bpf_htons(port);
	v = bpf_map_lookup_elem(&policy, &k);
	if (!v) {
		k.identity = 0;
		v = bpf_map_lookup_elem(&policy, &k);
	}
	d->endpoint_id = ep->endpoint_id;
	d->direction = direction;
	cookie = v ? v->rule_cookie : 0;
	d->rule_cookie = cookie;
	if (v && v->verdict == PC_VERDICT_ALLOW) {
		if (v->proxy_port && !d->proxy_port)
			d->proxy_port = v->proxy_port;
		if (v->flags & PC_POLICY_FLAG_AUDIT)
			audit_mark(d, cookie ? PC_REASON_AUDIT_DENIED : PC_REASON_AUDIT_NO_POLICY,
				   ep->endpoint_id, direction, cookie);
		return 0;
	}
	/* Fail closed: the model installs complete tables for managed
	 * endpoints, so no entry means "not allowed"; an unknown verdict
	 * drops, audit mode or not (no policy decided it, so there is nothing
	 * to audit). */
	if (!v)
		reason = PC_REASON_DROP_NO_POLICY;
	else if (v->verdict != PC_VERDICT_DENY)
		return PC_REASON_DROP_POLICY_DENIED;
	else if (v->flags & PC_POLICY_FLAG_NO_RULE)
		reason = PC_REASON_DROP_NO_POLICY;
	else
		reason = PC_REASON_DROP_POLICY_DENIED;
	if (!(ep->flags & PC_EP_FLAG_AUDIT))
		return reason;
	/* Audit mode passes what the policy would drop, without redirect
	 * (a deny entry has no proxy port); the drop is reported instead. */
	audit_mark(d,
		   reason == PC_REASON_DROP_NO_POLICY ? PC_REASON_AUDIT_NO_POLICY
						      : PC_REASON_AUDIT_DENIED,
		   ep->endpoint_id, direction, cookie);
	return 0;
}

/* ----------------------------------------------------------- conntrack */

#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2
#define CT_RELATED 3

static __always_inline void ct_key_of(struct ct_key *k, const struct flow *f)
{
	__builtin_memcpy(k->saddr, f->saddr, 16);
	__builtin_memcpy(k->daddr, f->daddr, 16);
	k->sport = f->sport;
	k->dport = f->dport;
	k->protocol = f->protocol;
	k->family = f->family;
	k->pad = 0;
}

static __always_inline void ct_key_reverse(struct ct_key *out, const struct ct_key *in)
{
	__builtin_memcpy(out->saddr, in->daddr, 16);
	__builtin_memcpy(out->daddr, in->saddr, 16);
	out->sport = in->dport;
	out->dport = in->sport;
	out->protocol = in->protocol;
	out->family = in->family;
	out->pad = 0;
}

/*
 * Whether the entry is still alive; refreshes it. A closed TCP entry (RST,
 * or FINs both ways) lives PC_CT_CLOSE_SECONDS after the close and is not
 * refreshed by later packets, so a closed tuple cannot be kept open.
 */
static __always_inline int ct_fresh(struct ct_entry *e, __u8 protocol, __u64 now)
{
	__u64 lifetime = protocol == IPPROTO_TCP ? CT_LIFETIME_TCP_NS : CT_LIFETIME_OTHER_NS;

	if (e->flags & PC_CT_CLOSED)
		return now - e->last_seen_ns <= CT_LIFETIME_CLOSE_NS;
	if (now - e->last_seen_ns > lifetime)
		return 0;
	e->last_seen_ns = now;
	return 1;
}

/* Notes FIN and RST on a TCP entry; reply: the packet goes the reply way. */
static __always_inline void ct_tcp_close(struct ct_entry *e, const struct flow *f, int reply,
					 __u64 now)
{
	__u16 flags = e->flags;

	if (f->protocol != IPPROTO_TCP || (flags & PC_CT_CLOSED))
		return;
	if (f->tcp_flags & 0x04) /* RST */
		flags |= PC_CT_CLOSED;
	if (f->tcp_flags & 0x01) /* FIN */
		flags |= reply ? PC_CT_FIN_REPLY : PC_CT_FIN_ORIG;
	if ((flags & PC_CT_FIN_ORIG) && (flags & PC_CT_FIN_REPLY))
		flags |= PC_CT_CLOSED;
	if (flags == e->flags)
		return;
	if (flags & PC_CT_CLOSED)
		e->last_seen_ns = now;
	e->flags = flags;
}

/*
 * Whether the outer source of an ICMP error may speak about the quoted
 * packet when it is not the quoted packet's destination: a router on that
 * packet's path. The node routes every pod's traffic, so its own addresses
 * (identity host) and link-local addresses (never routed, so sent by the
 * node itself on this link) may. A pod is never a router. Anything else is
 * beyond the node and may only speak about packets that left the node: not
 * about packets between local pods or to the node itself.
 */
static __always_inline int icmp_error_from_path(const struct flow *f)
{
	if (f->family == PC_FAMILY_IPV6 && f->saddr[0] == 0xfe && (f->saddr[1] & 0xc0) == 0x80)
		return 1;
	if (ipcache_identity(f->family, f->saddr, 0) == PC_IDENTITY_HOST)
		return 1;
	if (endpoint_lookup(f->family, f->saddr))
		return 0;
	if (endpoint_lookup(f->family, f->inner.daddr))
		return 0;
	return ipcache_identity(f->family, f->inner.daddr, 0) != PC_IDENTITY_HOST;
}

static __always_inline int ct_revalidate(const struct ct_key *k, struct ct_entry *e);

/*
 * Looks the packet up. *entry and *found (the entry's key) are set for
 * CT_ESTABLISHED and CT_REPLY.
 */
static __always_inline int ct_lookup(const struct flow *f, struct ct_entry **entry,
				     struct ct_key *found)
{
	__u64 now = bpf_ktime_get_ns();
	struct ct_key r = {};
	struct ct_entry *e;

	*entry = 0;
	if (f->icmp_error) {
		/*
		 * An error about a packet goes back to that packet's sender
		 * (outer destination = quoted source), from its destination
		 * or from a router on its path; and the quoted packet must
		 * belong to a tracked flow (either direction of it). Anything
		 * else is judged by policy as a new packet (fail closed): a
		 * pod with one allowed flow cannot aim errors at others.
		 */
		if (!addr_eq(f->family, f->daddr, f->inner.saddr))
			return CT_NEW;
		if (!addr_eq(f->family, f->saddr, f->inner.daddr) && !icmp_error_from_path(f))
			return CT_NEW;
		/* ...and still allowed: errors about a revoked flow are not
		 * related to anything allowed. */
		e = bpf_map_lookup_elem(&conntrack, &f->inner);
		if (e && !ct_revalidate(&f->inner, e))
			return CT_RELATED;
		ct_key_reverse(&r, &f->inner);
		e = bpf_map_lookup_elem(&conntrack, &r);
		if (e && !ct_revalidate(&r, e))
			return CT_RELATED;
		return CT_NEW;
	}
	if (f->untracked)
		return CT_NEW;
	ct_key_of(found, f);
	e = bpf_map_lookup_elem(&conntrack, found);
	if (e && ct_fresh(e, f->protocol, now)) {
		ct_tcp_close(e, f, 0, now);
		*entry = e;
		return CT_ESTABLISHED;
	}
	ct_key_reverse(&r, found);
	e = bpf_map_lookup_elem(&conntrack, &r);
	if (e && ct_fresh(e, f->protocol, now)) {
		ct_tcp_close(e, f, 1, now);
		__builtin_memcpy(found, &r, sizeof(r));
		*entry = e;
		return CT_REPLY;
	}
	return CT_NEW;
}

/* The policy port of a tracked flow, from its key (see parse_l4). */
static __always_inline __u16 ct_policy_port(const struct ct_key *k)
{
	if (k->protocol == IPPROTO_TCP || k->protocol == IPPROTO_UDP ||
	    k->protocol == IPPROTO_SCTP)
		return bpf_ntohs(k->dport);
	/* Only echo is tracked: the request's type. */
	if (k->protocol == IPPROTO_ICMP)
		return 8;
	if (k->protocol == IPPROTO_ICMPV6)
		return 128;
	return 0;
}

/*
 * Revocation: a tracked flow's verdict holds only for the policy epoch it
 * was taken at. When the loader has changed any map since (it bumps
 * config.policy_epoch after every change), the flow's original decision is
 * taken again against the current maps, for packets in either direction
 * (a server's stream of replies is stopped as well as the client). Returns
 * 0 when still allowed (the entry is stamped with the current epoch), else
 * PC_REASON_DROP_REVOKED. The entry stays: a later packet is checked again,
 * so a flow that only a transient state during an apply refused continues
 * once the apply is complete, and a revoked one stays dropped.
 *
 * The proxy's own upstream flows are the proxy's to judge (it applied both
 * sides' L7 rules; closing them on revocation is the proxy's part). An
 * endpoint in audit mode revokes nothing: policy_check passes what its
 * policy would drop, here as for new flows.
 */
static __always_inline int ct_revalidate(const struct ct_key *k, struct ct_entry *e)
{
	struct datapath_config *cfg = config_get();
	struct endpoint_info *src, *dst;
	struct decision nd = {};
	__u32 epoch, remote;
	__u16 port;

	if (!cfg)
		return PC_REASON_DROP_REVOKED;
	epoch = cfg->policy_epoch;
	if (e->policy_epoch == epoch)
		return 0;
	/* An entry only the proxy's upstream connection made (no redirect of
	 * its own) carries no decision to take again. A client's redirected
	 * flow whose tuple the proxy reuses upstream is re-checked. */
	if ((e->flags & PC_CT_PROXY_UPSTREAM) && !e->proxy_port) {
		e->policy_epoch = epoch;
		return 0;
	}
	port = ct_policy_port(k);
	dst = endpoint_lookup(k->family, k->daddr);
	if (e->hook == PC_HOOK_FROM_POD) {
		src = endpoint_lookup(k->family, k->saddr);
		if (!src)
			return PC_REASON_DROP_REVOKED;
		remote = dst ? dst->identity : ipcache_identity(k->family, k->daddr, PC_IDENTITY_WORLD);
		if (policy_check(k->protocol, port, remote, src, PC_DIR_EGRESS, &nd))
			return PC_REASON_DROP_REVOKED;
		if (dst && policy_check(k->protocol, port, src->identity, dst, PC_DIR_INGRESS, &nd))
			return PC_REASON_DROP_REVOKED;
	} else if (e->hook == PC_HOOK_FROM_UPLINK || e->hook == PC_HOOK_TO_POD) {
		__u32 fallback = e->hook == PC_HOOK_TO_POD ? PC_IDENTITY_HOST : PC_IDENTITY_WORLD;

		if (!dst)
			return PC_REASON_DROP_REVOKED;
		remote = ipcache_identity(k->family, k->saddr, fallback);
		if (policy_check(k->protocol, port, remote, dst, PC_DIR_INGRESS, &nd))
			return PC_REASON_DROP_REVOKED;
	} else {
		return PC_REASON_DROP_REVOKED;
	}
	/* A connection cannot move into or out of the proxy mid-stream: a
	 * changed redirect ends it (fail closed). */
	if (nd.proxy_port != e->proxy_port)
		return PC_REASON_DROP_REVOKED;
	e->policy_epoch = epoch;
	return 0;
}

static __always_inline void ct_create(const struct flow *f, const struct decision *d)
{
	struct datapath_config *cfg = config_get();
	struct ct_key k = {};
	struct ct_entry e = {};

	if (f->untracked)
		return;
	ct_key_of(&k, f);
	e.last_seen_ns = bpf_ktime_get_ns();
	e.src_identity = d->src_identity;
	e.dst_identity = d->dst_identity;
	e.rule_cookie = d->rule_cookie;
	e.proxy_port = d->proxy_port;
	e.endpoint_id = d->endpoint_id;
	e.direction = d->direction;
	e.hook = d->hook;
	e.flags = d->ct_flags;
	/* No config: epoch 0, re-checked at the next packet once there is. */
	e.policy_epoch = cfg ? cfg->policy_epoch : 0;
	/* If the LRU cannot take the entry the next packet is simply
	 * checked against policy again: no verdict depends on it. */
	bpf_map_update_elem(&conntrack, &k, &e, BPF_ANY);
}

/* ----------------------------------------------------------- fragments */

static __always_inline void frag_key_of(struct frag_key *k, const struct flow *f)
{
	__builtin_memcpy(k->saddr, f->saddr, 16);
	__builtin_memcpy(k->daddr, f->daddr, 16);
	k->id = f->frag_id;
	k->protocol = f->protocol;
	k->family = f->family;
	k->pad = 0;
}

/* A first fragment passed: its datagram's later fragments may follow. */
static __always_inline void frag_remember(const struct flow *f)
{
	struct frag_key k = {};
	struct frag_entry e = {};

	if (!f->frag_first)
		return;
	frag_key_of(&k, f);
	e.first_seen_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&fragments, &k, &e, BPF_ANY);
}

/* A first fragment did not pass: forget an older datagram with the same
 * identification, so its entry cannot admit this one's later fragments. */
static __always_inline void frag_forget(const struct flow *f)
{
	struct frag_key k = {};

	if (!f->frag_first)
		return;
	frag_key_of(&k, f);
	bpf_map_delete_elem(&fragments, &k);
}

/*
 * Whether a later fragment belongs to a datagram whose first fragment
 * passed (same source, destination, protocol and identification, within
 * PC_FRAG_SECONDS). Later fragments carry no ports, so they can only
 * follow a judged first fragment; one that could overwrite the judged
 * header on reassembly (TCP flags at offset 13, or offset 0: a tiny first
 * fragment) never passes. Overlaps further on cannot change what was
 * judged; the destination's reassembly discards overlapping datagrams.
 */
static __always_inline int frag_allowed(const struct flow *f)
{
	struct frag_key k = {};
	struct frag_entry *e;

	if (f->frag_offset < (f->protocol == IPPROTO_TCP ? 16 : 8))
		return 0;
	frag_key_of(&k, f);
	e = bpf_map_lookup_elem(&fragments, &k);
	return e && bpf_ktime_get_ns() - e->first_seen_ns <= FRAG_LIFETIME_NS;
}

/* ------------------------------------------------- counters and events */

static __always_inline void count(__u32 index)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &index);

	if (c)
		*c += 1;
}

/*
 * Whether the endpoint may emit one more flow event this second (per CPU).
 * A pod flooding denied packets would otherwise fill the ring buffer and
 * keep the agent busy reading it; suppressed events are counted.
 */
static __always_inline int event_budget_take(__u16 endpoint_id)
{
	struct datapath_config *cfg = config_get();
	struct event_budget *b;
	__u32 key = endpoint_id;
	__u64 now;

	if (!cfg || !cfg->events_per_second)
		return 1;
	now = bpf_ktime_get_ns();
	b = bpf_map_lookup_elem(&event_budget, &key);
	if (!b) {
		struct event_budget fresh = { .window_start_ns = now, .events = 1 };

		bpf_map_update_elem(&event_budget, &key, &fresh, BPF_ANY);
		return 1;
	}
	if (now - b->window_start_ns >= EVENT_WINDOW_NS) {
		b->window_start_ns = now;
		b->events = 1;
		return 1;
	}
	if (b->events >= cfg->events_per_second) {
		count(PC_COUNTER_EVENTS_SUPPRESSED);
		return 0;
	}
	b->events += 1;
	return 1;
}

/*
 * One flow event, charged to d's endpoint. A function of its own (a
 * BPF-to-BPF call), the only one not inlined: a new flow between local
 * pods reaches it up to three times, and every inlined copy had the
 * verifier walk it again for each path through the policy checks
 * (from_pod went past the 1M-instruction limit).
 */
static __noinline void emit(struct __sk_buff *skb, const struct flow *f,
			    const struct decision *d, __u8 verdict, __u8 reason)
{
	struct flow_event *ev;

	if (!event_budget_take(d->endpoint_id))
		return;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(PC_COUNTER_EVENTS_LOST);
		return;
	}
	ev->timestamp_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev->saddr, f->saddr, 16);
	__builtin_memcpy(ev->daddr, f->daddr, 16);
	ev->sport = f->icmp_error || f->untracked ? 0 : bpf_ntohs(f->sport);
	ev->dport = f->untracked ? f->policy_port : bpf_ntohs(f->dport);
	ev->src_identity = d->src_identity;
	ev->dst_identity = d->dst_identity;
	ev->ifindex = skb->ifindex;
	ev->rule_cookie = d->rule_cookie;
	ev->endpoint_id = d->endpoint_id;
	ev->proxy_port = d->proxy_port;
	ev->family = f->family;
	ev->protocol = f->protocol;
	ev->verdict = verdict;
	ev->reason = reason;
	ev->direction = d->direction;
	ev->hook = d->hook;
	ev->redirected = verdict == PC_EVENT_REDIRECTED;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
}

/* The AUDIT event of a new flow with an audit mark, naming the audited side. */
static __always_inline void emit_audit(struct __sk_buff *skb, const struct flow *f,
				       const struct decision *d)
{
	struct decision audited = *d;

	audited.endpoint_id = d->audit_endpoint_id;
	audited.direction = d->audit_direction;
	audited.rule_cookie = d->audit_cookie;
	emit(skb, f, &audited, PC_EVENT_AUDIT, d->audit_reason);
}

static __always_inline int trace_new_flows(void)
{
	struct datapath_config *cfg = config_get();

	return cfg && (cfg->flags & PC_CONFIG_TRACE_NEW_FLOWS);
}

static __always_inline int drop(struct __sk_buff *skb, const struct flow *f,
				const struct decision *d, __u8 reason)
{
	frag_forget(f);
	count(reason);
	emit(skb, f, d, PC_EVENT_DROPPED, reason);
	return TC_ACT_SHOT;
}

static __always_inline int pass(__u8 reason)
{
	count(reason);
	return TC_ACT_OK;
}

/* Passes a packet this program decided; a first fragment's datagram may
 * then send its later fragments. */
static __always_inline int pass_decided(struct __sk_buff *skb, const struct flow *f,
					__u8 reason)
{
	frag_remember(f);
	skb->mark = (skb->mark & ~PC_MARK_MASK) | PC_MARK_POLICY_DONE;
	return pass(reason);
}

/* A later fragment: passes only behind a first fragment that passed. */
static __always_inline int fragment_verdict(struct __sk_buff *skb, const struct flow *f,
					    const struct decision *d)
{
	if (frag_allowed(f))
		return pass_decided(skb, f, PC_REASON_PASS_FRAGMENT);
	return drop(skb, f, d, PC_REASON_DROP_FRAGMENT);
}

/* ------------------------------------------------------------ redirect */

/* The packet's 4-tuple as a socket lookup key; returns its size. */
static __always_inline __u32 sock_tuple(const struct flow *f, struct bpf_sock_tuple *t)
{
	if (f->family == PC_FAMILY_IPV4) {
		__builtin_memcpy(&t->ipv4.saddr, f->saddr, 4);
		__builtin_memcpy(&t->ipv4.daddr, f->daddr, 4);
		t->ipv4.sport = f->sport;
		t->ipv4.dport = f->dport;
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, f->saddr, 16);
	__builtin_memcpy(t->ipv6.daddr, f->daddr, 16);
	t->ipv6.sport = f->sport;
	t->ipv6.dport = f->dport;
	return sizeof(t->ipv6);
}

/* Assigns the packet to sk (consuming the reference); 0 on success. */
static __always_inline int assign(struct __sk_buff *skb, struct bpf_sock *sk)
{
	long ret = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (ret != 0)
		return -1;
	skb->mark = (skb->mark & ~PC_MARK_MASK) | PC_MARK_TO_PROXY;
	return 0;
}

/*
 * Assigns the packet to a local socket that owns exactly its 4-tuple (an
 * accepted or connected proxy socket). Returns 0 when assigned.
 */
static __always_inline int assign_established(struct __sk_buff *skb, const struct flow *f,
					      struct bpf_sock_tuple *t, __u32 len)
{
	struct bpf_sock *sk;

	if (f->protocol == IPPROTO_TCP) {
		sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
		/* A listener on the original port is not the proxy. */
		if (sk->state == BPF_TCP_LISTEN || sk->state == BPF_TCP_TIME_WAIT) {
			bpf_sk_release(sk);
			return -1;
		}
		return assign(skb, sk);
	}
	if (f->protocol == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(skb, t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
		/* Only a socket connected to exactly this peer is a per-flow
		 * proxy socket; a wildcard-bound server on the original port
		 * is not the proxy. */
		if (sk->dst_port == 0) {
			bpf_sk_release(sk);
			return -1;
		}
		return assign(skb, sk);
	}
	return -1;
}

/*
 * BPF TPROXY: give the packet to the proxy's socket in this namespace. An
 * established proxy socket for the 4-tuple wins; otherwise the proxy's
 * wildcard listener on proxy_port. Returns 0 when assigned; any failure
 * means the caller drops (fail closed, the proxy is never bypassed).
 */
static __always_inline int redirect_to_proxy(struct __sk_buff *skb, const struct flow *f,
					     __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;

	/* No proxy for other protocols: fail closed. */
	if (f->protocol != IPPROTO_TCP && f->protocol != IPPROTO_UDP)
		return -1;
	len = sock_tuple(f, &t);
	if (assign_established(skb, f, &t, len) == 0)
		return 0;

	if (f->family == PC_FAMILY_IPV4) {
		t.ipv4.daddr = 0;
		t.ipv4.dport = bpf_htons(proxy_port);
	} else {
		__builtin_memset(t.ipv6.daddr, 0, 16);
		t.ipv6.dport = bpf_htons(proxy_port);
	}
	if (f->protocol == IPPROTO_TCP) {
		sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return -1;
		}
	} else {
		sk = bpf_sk_lookup_udp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
	}
	return assign(skb, sk);
}

/* A tracked flow's packet for the proxy. */
static __always_inline int redirect_or_drop(struct __sk_buff *skb, const struct flow *f,
					    const struct decision *d)
{
	if (redirect_to_proxy(skb, f, d->proxy_port) != 0)
		return drop(skb, f, d, PC_REASON_DROP_PROXY_UNAVAILABLE);
	/* Fragments of redirected datagrams are not tracked: the proxy
	 * socket gets whole datagrams only (later fragments drop). */
	return pass(PC_REASON_REDIRECT);
}

/* Whether the side d reports passed only under an audit mark. */
static __always_inline int side_audited(const struct decision *d)
{
	return d->audited_dirs & (1 << d->direction);
}

/*
 * A new flow that policy lets through: tracked, then handed to the proxy
 * (d->proxy_port) or passed, its first packet counted once (under its
 * audit reason when it has an audit mark). Each side's policy verdict is
 * reported on its own, charged to its endpoint: d's, then, for a flow
 * between local pods, peer's (the side conntrack does not keep).
 * REDIRECTED for a side whose policy redirects, FORWARDED for another one
 * when new flows are traced. The AUDIT event is emitted whatever the trace
 * flag and takes the audited side's FORWARDED event's place (a redirected
 * side reports both REDIRECTED and AUDIT).
 */
static __always_inline int new_flow_verdict(struct __sk_buff *skb, const struct flow *f,
					    const struct decision *d, const struct decision *peer)
{
	__u8 reason = d->proxy_port ? PC_REASON_REDIRECT : PC_REASON_PASS_POLICY;

	ct_create(f, d);
	if (d->proxy_port) {
		if (redirect_to_proxy(skb, f, d->proxy_port) != 0)
			return drop(skb, f, d, PC_REASON_DROP_PROXY_UNAVAILABLE);
		emit(skb, f, d, PC_EVENT_REDIRECTED, PC_REASON_REDIRECT);
	} else if (!side_audited(d) && trace_new_flows()) {
		emit(skb, f, d, PC_EVENT_FORWARDED, PC_REASON_PASS_POLICY);
	}
	/* A peer that redirects too rides on d's redirect: the proxy
	 * applies both sides' L7 rules. */
	if (peer && peer->proxy_port)
		emit(skb, f, peer, PC_EVENT_REDIRECTED, PC_REASON_REDIRECT);
	else if (peer && !side_audited(peer) && trace_new_flows())
		emit(skb, f, peer, PC_EVENT_FORWARDED, PC_REASON_PASS_POLICY);
	if (d->audit_reason) {
		emit_audit(skb, f, d);
		reason = d->audit_reason;
	}
	if (d->proxy_port)
		return pass(reason);
	return pass_decided(skb, f, reason);
}

/*
 * What a conntrack hit may not decide on its own:
 * - An entry the proxy's own upstream connection left (it may use the
 *   client's address and any port) only stands for packets the proxy
 *   sends. A packet arriving from a pod or the uplink with the same tuple
 *   is another flow that happens to collide with it: it is treated as new.
 * - A SYN (without ACK) opens a new connection in either direction,
 *   whatever an old entry for the tuple or its reverse says: a denied peer
 *   cannot connect back on a tuple its victim once used.
 */
static __always_inline int ct_not_proxy_upstream(int ct, const struct ct_entry *e,
						 const struct flow *f)
{
	if (ct == CT_ESTABLISHED && e && (e->flags & PC_CT_PROXY_UPSTREAM) && !e->proxy_port)
		return CT_NEW;
	if ((ct == CT_ESTABLISHED || ct == CT_REPLY) && f->tcp_syn)
		return CT_NEW;
	return ct;
}

/* A tracked flow continues: pass, or keep feeding the proxy. */
static __always_inline int continue_flow(struct __sk_buff *skb, const struct flow *f,
					 struct decision *d, int ct, struct ct_entry *e,
					 const struct ct_key *found)
{
	int ret;

	if ((ct == CT_ESTABLISHED || ct == CT_REPLY) && e) {
		ret = ct_revalidate(found, e);
		if (ret) {
			d->rule_cookie = e->rule_cookie;
			return drop(skb, f, d, ret);
		}
	}
	if (ct == CT_ESTABLISHED && e && e->proxy_port) {
		d->proxy_port = e->proxy_port;
		d->endpoint_id = e->endpoint_id;
		d->direction = e->direction;
		d->rule_cookie = e->rule_cookie;
		return redirect_or_drop(skb, f, d);
	}
	if (ct == CT_ESTABLISHED)
		return pass_decided(skb, f, PC_REASON_PASS_ESTABLISHED);
	if (ct == CT_REPLY && e && (e->flags & PC_CT_PROXY_UPSTREAM) && d->hook != PC_HOOK_TO_POD) {
		struct bpf_sock_tuple t = {};
		__u32 len = sock_tuple(f, &t);

		/* A reply to the proxy's upstream connection (which may use
		 * the client's address as its source): hand it to the proxy
		 * socket that owns the tuple. Without one it is an ordinary
		 * reply and passes like any other. */
		if (assign_established(skb, f, &t, len) == 0)
			return pass(PC_REASON_PASS_REPLY);
	}
	if (ct == CT_REPLY)
		return pass_decided(skb, f, PC_REASON_PASS_REPLY);
	return pass_decided(skb, f, PC_REASON_PASS_RELATED);
}

/*
 * Whether a packet leaving the node carries the from-proxy verdict. The
 * mark alone proves nothing: any node process with CAP_NET_RAW (or
 * CAP_NET_ADMIN) can set it with SO_MARK or on a raw socket. The proof is
 * the sending socket's cgroup (v2): the agent runs its proxy in a cgroup of
 * its own and writes that cgroup's id into the config; a socket's cgroup is
 * fixed when the socket is created, and moving a process into the agent's
 * cgroup needs write access to the cgroup tree, which a hostNetwork
 * container does not have. Socket cookies registered per proxy socket
 * would prove the same, at a map write per upstream connection.
 */
static __always_inline int from_proxy(struct __sk_buff *skb, const struct datapath_config *cfg)
{
	/* A zero mask means "no proxy mark configured": never trusted. */
	if (!cfg || !cfg->from_proxy_mark_mask ||
	    (skb->mark & cfg->from_proxy_mark_mask) != cfg->from_proxy_mark)
		return 0;
	if (cfg->proxy_cgroup_id && bpf_skb_cgroup_id(skb) == cfg->proxy_cgroup_id)
		return 1;
	count(PC_COUNTER_FORGED_MARK);
	return 0;
}

/* ------------------------------------------------------------ programs */

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_FROM_POD, .direction = PC_DIR_EGRESS };
	struct endpoint_info *src, *dst;
	struct decision peer;
	struct ct_key found = {};
	struct ct_entry *e;
	struct flow f = {};
	int ret, ct;

	ret = parse(skb, &f);
	if (ret == PARSE_NOT_IP) {
		/* A pod needs ARP; nothing else non-IP is routed for it. */
		if (f.eth_proto == bpf_htons(ETH_P_ARP))
			return pass(PC_REASON_PASS_NOT_IP);
		return drop(skb, &f, &d, PC_REASON_DROP_NOT_IP);
	}
	/* Fail closed: this veth belongs to a pod, whatever we cannot read
	 * we cannot allow. */
	if (ret != PARSE_OK)
		return drop(skb, &f, &d, PC_REASON_DROP_MALFORMED);
	/* Neighbour discovery the node consumes itself (see ndp_stays_local);
	 * NDP-looking packets to anywhere else take the policy path. */
	if (f.ndp && ndp_stays_local(&f))
		return pass(PC_REASON_PASS_NDP);

	src = endpoint_lookup(f.family, f.saddr);
	/* Fail closed: a pod veth only speaks for its own addresses. */
	if (!src || (src->ifindex && src->ifindex != skb->ifindex))
		return drop(skb, &f, &d, PC_REASON_DROP_SPOOFED);
	d.src_identity = src->identity;
	d.endpoint_id = src->endpoint_id;
	if (f.fragment)
		return fragment_verdict(skb, &f, &d);

	ct = ct_not_proxy_upstream(ct_lookup(&f, &e, &found), e, &f);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e, &found);

	dst = endpoint_lookup(f.family, f.daddr);
	d.dst_identity =
		dst ? dst->identity
		    : new_flow_identity(ipcache_lookup(f.family, f.daddr), PC_IDENTITY_WORLD);
	ret = policy_check(f.protocol, f.policy_port, d.dst_identity, src, PC_DIR_EGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	if (dst) {
		__u32 egress_cookie = d.rule_cookie;
		__u16 egress_proxy = d.proxy_port;

		/* The destination's ingress policy, decided here so that
		 * to_pod can trust the policy-done mark; its own redirect
		 * apart from the egress one, for its event. */
		d.proxy_port = 0;
		ret = policy_check(f.protocol, f.policy_port, src->identity, dst, PC_DIR_INGRESS,
				   &d);
		if (ret)
			return drop(skb, &f, &d, ret);
		/* Conntrack keeps the egress decision unless only ingress
		 * redirects; the other side is the peer. */
		peer = d;
		if (egress_proxy || !d.proxy_port) {
			d.endpoint_id = src->endpoint_id;
			d.direction = PC_DIR_EGRESS;
			d.rule_cookie = egress_cookie;
			d.proxy_port = egress_proxy;
		} else {
			peer.endpoint_id = src->endpoint_id;
			peer.direction = PC_DIR_EGRESS;
			peer.rule_cookie = egress_cookie;
			peer.proxy_port = 0;
		}
	}
	return new_flow_verdict(skb, &f, &d, dst ? &peer : 0);
}

SEC("classifier")
int from_uplink(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_FROM_UPLINK, .direction = PC_DIR_INGRESS };
	struct endpoint_info *dst;
	struct ct_key found = {};
	struct ipcache_value *src_ipc;
	struct ct_entry *e;
	struct flow f = {};
	int ret, ct;

	ret = parse(skb, &f);
	/* Non-IP frames are for the node itself; pods are only reachable
	 * through IP routing, which every IP packet below goes through. */
	if (ret == PARSE_NOT_IP)
		return pass(PC_REASON_PASS_NOT_IP);
	/* Fail closed: we cannot tell whether it is for a pod. */
	if (ret != PARSE_OK)
		return drop(skb, &f, &d, PC_REASON_DROP_MALFORMED);
	/* Hop limit 255: from the uplink's neighbour, for the node. If the
	 * node routes it on to a pod, to_pod sees hop limit 254 and checks it. */
	if (f.ndp)
		return pass(PC_REASON_PASS_NDP);

	dst = endpoint_lookup(f.family, f.daddr);
	/* Not for a managed endpoint: the node's own traffic. Packets the
	 * node forwards on to a pod meet to_pod, which checks them. */
	if (!dst)
		return pass(PC_REASON_PASS_UNMANAGED);
	d.dst_identity = dst->identity;
	d.endpoint_id = dst->endpoint_id;
	src_ipc = ipcache_lookup(f.family, f.saddr);
	d.src_identity = src_ipc ? src_ipc->identity : PC_IDENTITY_WORLD;
	if (f.fragment)
		return fragment_verdict(skb, &f, &d);

	ct = ct_not_proxy_upstream(ct_lookup(&f, &e, &found), e, &f);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e, &found);

	d.src_identity = new_flow_identity(src_ipc, PC_IDENTITY_WORLD);
	ret = policy_check(f.protocol, f.policy_port, d.src_identity, dst, PC_DIR_INGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	return new_flow_verdict(skb, &f, &d, 0);
}

/*
 * The uplink's outgoing side decides nothing: pods' packets were judged by
 * from_pod, the node's own are not ours. It only remembers the proxy's
 * upstream connections that leave the node with a local client's address
 * (towards a pod on another node, whose ingress is judged there by that
 * client's identity): their replies come back through from_uplink
 * addressed to the client, and the entry made here (PC_CT_PROXY_UPSTREAM)
 * is what hands them to the proxy's socket instead of the client pod. The
 * mark is proven by the sending socket's cgroup (from_proxy), so a node
 * process cannot plant such an entry; a forged one would only make replies
 * look for a proxy socket, and pass as plain replies without one.
 */
SEC("classifier")
int to_uplink(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_TO_UPLINK, .direction = PC_DIR_EGRESS };
	struct ct_key found = {};
	struct ct_entry *e;
	struct flow f = {};
	int ct;

	if (parse(skb, &f) != PARSE_OK || f.fragment)
		return pass(PC_REASON_PASS_UNMANAGED);
	if (!from_proxy(skb, config_get()))
		return pass(PC_REASON_PASS_UNMANAGED);
	/* Only an upstream flow from a local client's address needs its
	 * replies steered; from the node's own address they reach the
	 * proxy's socket by routing. */
	if (!endpoint_lookup(f.family, f.saddr))
		return pass(PC_REASON_PASS_MARKED);
	d.src_identity = PC_IDENTITY_HOST;
	d.ct_flags = PC_CT_PROXY_UPSTREAM;
	ct = ct_lookup(&f, &e, &found);
	if (ct == CT_NEW)
		ct_create(&f, &d);
	else if (ct == CT_ESTABLISHED && e)
		e->flags |= PC_CT_PROXY_UPSTREAM;
	return pass(PC_REASON_PASS_MARKED);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_TO_POD, .direction = PC_DIR_INGRESS };
	struct datapath_config *cfg;
	struct endpoint_info *dst;
	struct ct_key found = {};
	struct ipcache_value *src_ipc;
	struct ct_entry *e;
	struct flow f = {};
	int ret, ct;

	ret = parse(skb, &f);
	/* ARP and friends: the pod needs them, they carry no IP payload. */
	if (ret == PARSE_NOT_IP)
		return pass(PC_REASON_PASS_NOT_IP);
	if (ret != PARSE_OK)
		return drop(skb, &f, &d, PC_REASON_DROP_MALFORMED);
	/* Hop limit 255 on the way into the pod: sent by the node itself,
	 * not routed from anywhere (that would have decremented it). */
	if (f.ndp)
		return pass(PC_REASON_PASS_NDP);

	dst = endpoint_lookup(f.family, f.daddr);
	/* Not a managed endpoint: its traffic is not ours to police. */
	if (!dst)
		return pass(PC_REASON_PASS_UNMANAGED);
	d.dst_identity = dst->identity;
	d.endpoint_id = dst->endpoint_id;

	/* Pods and the world cannot forge marks: crossing a network
	 * namespace (veth) scrubs skb->mark. Node processes can (SO_MARK,
	 * raw sockets), so the policy-done mark counts only on packets
	 * without a local socket: those from_pod/from_uplink passed and the
	 * node forwarded. A locally sent packet is judged (or proven to be
	 * the proxy's below). Every real socket has a type (stream, datagram,
	 * raw, ...); type 0 is only BPF_PROG_TEST_RUN's stand-in socket. */
	if ((skb->mark & PC_MARK_MASK) == PC_MARK_POLICY_DONE) {
		struct bpf_sock *sk = skb->sk;

		if (sk)
			sk = bpf_sk_fullsock(sk);
		if (!skb->sk || (sk && sk->type == 0))
			return pass(PC_REASON_PASS_MARKED);
		count(PC_COUNTER_FORGED_MARK);
	}
	cfg = config_get();
	if (from_proxy(skb, cfg)) {
		/* The proxy already applied both sides' policy; remember the
		 * flow so the endpoint's replies pass. */
		d.src_identity = PC_IDENTITY_HOST;
		d.ct_flags = PC_CT_PROXY_UPSTREAM;
		if (!f.fragment) {
			ct = ct_lookup(&f, &e, &found);
			if (ct == CT_NEW)
				ct_create(&f, &d);
			/* A fully transparent upstream reuses the client's
			 * tuple: its replies must go to the proxy too. */
			else if (ct == CT_ESTABLISHED && e)
				e->flags |= PC_CT_PROXY_UPSTREAM;
		}
		return pass(PC_REASON_PASS_MARKED);
	}

	src_ipc = ipcache_lookup(f.family, f.saddr);
	d.src_identity = src_ipc ? src_ipc->identity : PC_IDENTITY_HOST;
	if (f.fragment)
		return fragment_verdict(skb, &f, &d);

	ct = ct_lookup(&f, &e, &found);
	if ((ct == CT_ESTABLISHED || ct == CT_REPLY) && f.tcp_syn)
		ct = CT_NEW; /* a new connection on an old tuple: decide again */
	if (ct == CT_ESTABLISHED && e && e->proxy_port)
		/* Fail closed: a redirect cannot be done at egress. */
		return drop(skb, &f, &d, PC_REASON_DROP_REDIRECT_AT_EGRESS);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e, &found);

	d.src_identity = new_flow_identity(src_ipc, PC_IDENTITY_HOST);
	ret = policy_check(f.protocol, f.policy_port, d.src_identity, dst, PC_DIR_INGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	/* Fail closed: sk_assign only works at ingress; the node's own
	 * connections to an L7-policed port are refused, not let through. */
	if (d.proxy_port)
		return drop(skb, &f, &d, PC_REASON_DROP_REDIRECT_AT_EGRESS);
	return new_flow_verdict(skb, &f, &d, 0);
}
