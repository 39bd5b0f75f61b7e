// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * portcullis TC programs.
 *
 *   from_pod    TC ingress on the node side of a pod veth (packets leaving a pod)
 *   to_pod      TC egress on the same veth (packets entering a pod)
 *   from_uplink TC ingress on the node's uplink (packets from the world)
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
#define IPV6_MAX_EXT_HEADERS 4
#define PC_COUNTER_EVENTS_LOST 31

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
	/* Other protocols carry no ports: policy sees port 0, which only an
	 * L3 (prefixlen 56) entry or a protocol-wide entry can match. */
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
		if (ip.frag_off & bpf_htons(0x1fff)) {
			f->fragment = 1;
			return PARSE_OK;
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

#pragma unroll
		for (i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
			__u8 ext[8];

			if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING &&
			    proto != IPPROTO_DSTOPTS && proto != IPPROTO_FRAGMENT &&
			    proto != IPPROTO_AH)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return PARSE_MALFORMED;
			if (proto == IPPROTO_FRAGMENT) {
				/* Offset is the top 13 bits of bytes 2..3. */
				if (((ext[2] << 8) | ext[3]) & 0xfff8) {
					f->protocol = ext[0];
					f->fragment = 1;
					return PARSE_OK;
				}
				off += 8;
			} else if (proto == IPPROTO_AH) {
				off += (ext[1] + 2) * 4;
			} else {
				off += (ext[1] + 1) * 8;
			}
			proto = ext[0];
		}
		/* More extension headers than we walk: we cannot find the
		 * ports, so the packet is malformed to us (fail closed). */
		if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING ||
		    proto == IPPROTO_DSTOPTS || proto == IPPROTO_FRAGMENT || proto == IPPROTO_AH)
			return PARSE_MALFORMED;
		f->protocol = proto;
	} else {
		return PARSE_NOT_IP;
	}

	ret = parse_l4(skb, off, f->family, proto, &f->sport, &f->dport, &f->policy_port,
		       &icmp_type);
	if (ret != PARSE_OK)
		return ret;
	if (proto == IPPROTO_TCP && !f->fragment) {
		__u8 tcp_flags;

		if (bpf_skb_load_bytes(skb, off + 13, &tcp_flags, 1) < 0)
			return PARSE_MALFORMED;
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

static __always_inline struct endpoint_info *endpoint_lookup(__u8 family, const __u8 *addr)
{
	struct endpoint_key k = {};

	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &k);
}

static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr, __u32 fallback)
{
	struct ipcache_key k = {};
	struct ipcache_value *v;

	k.prefixlen = 32 + (family == PC_FAMILY_IPV4 ? 32 : 128);
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&ipcache, &k);
	return v ? v->identity : fallback;
}

/* The identity a NEW flow sees for addr: as ipcache_identity, except for a
 * learned address past its TTL (new_flow_identity set), which admits only
 * the flows already open. */
static __always_inline __u32 ipcache_identity_new(__u8 family, const __u8 *addr, __u32 fallback)
{
	struct ipcache_key k = {};
	struct ipcache_value *v;

	k.prefixlen = 32 + (family == PC_FAMILY_IPV4 ? 32 : 128);
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&ipcache, &k);
	if (!v)
		return fallback;
	return v->new_flow_identity ? v->new_flow_identity : v->identity;
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
};

/*
 * One endpoint's policy for one direction: 0 when allowed (d->proxy_port
 * and d->rule_cookie filled in), otherwise the drop reason.
 */
static __always_inline int policy_check(const struct flow *f, __u32 remote, __u16 endpoint_id,
					__u8 direction, struct decision *d)
{
	struct policy_key k = {};
	struct policy_value *v;

	k.prefixlen = PC_POLICY_PREFIX_FULL;
	k.identity = bpf_htonl(remote);
	k.endpoint_id = bpf_htons(endpoint_id);
	k.direction = direction;
	k.protocol = f->protocol;
	k.dport = bpf_htons(f->policy_port);
	v = bpf_map_lookup_elem(&policy, &k);
	if (!v) {
		k.identity = 0;
		v = bpf_map_lookup_elem(&policy, &k);
	}
	d->endpoint_id = endpoint_id;
	d->direction = direction;
	/* Fail closed: the model installs complete tables for managed
	 * endpoints, so no entry means "not allowed". */
	if (!v)
		return PC_REASON_DROP_NO_POLICY;
	d->rule_cookie = v->rule_cookie;
	/* Fail closed: only an explicit allow passes; deny and any
	 * unknown verdict drop. */
	if (v->verdict != PC_VERDICT_ALLOW)
		return PC_REASON_DROP_POLICY_DENIED;
	if (v->proxy_port && !d->proxy_port)
		d->proxy_port = v->proxy_port;
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

static __always_inline int ct_fresh(struct ct_entry *e, __u8 protocol, __u64 now)
{
	__u64 lifetime = protocol == IPPROTO_TCP ? CT_LIFETIME_TCP_NS : CT_LIFETIME_OTHER_NS;

	if (now - e->last_seen_ns > lifetime)
		return 0;
	e->last_seen_ns = now;
	return 1;
}

static __always_inline int ct_lookup(const struct flow *f, struct ct_entry **entry)
{
	__u64 now = bpf_ktime_get_ns();
	struct ct_key k = {};
	struct ct_key r = {};
	struct ct_entry *e;

	*entry = 0;
	if (f->icmp_error) {
		/* Errors about a tracked flow, in either direction. */
		if (bpf_map_lookup_elem(&conntrack, &f->inner))
			return CT_RELATED;
		ct_key_reverse(&r, &f->inner);
		if (bpf_map_lookup_elem(&conntrack, &r))
			return CT_RELATED;
		return CT_NEW;
	}
	if (f->untracked)
		return CT_NEW;
	ct_key_of(&k, f);
	e = bpf_map_lookup_elem(&conntrack, &k);
	if (e && ct_fresh(e, f->protocol, now)) {
		*entry = e;
		return CT_ESTABLISHED;
	}
	ct_key_reverse(&r, &k);
	e = bpf_map_lookup_elem(&conntrack, &r);
	if (e && ct_fresh(e, f->protocol, now)) {
		*entry = e;
		return CT_REPLY;
	}
	return CT_NEW;
}

static __always_inline void ct_create(const struct flow *f, const struct decision *d)
{
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
	/* If the LRU cannot take the entry the next packet is simply
	 * checked against policy again: no verdict depends on it. */
	bpf_map_update_elem(&conntrack, &k, &e, BPF_ANY);
}

/* ------------------------------------------------- counters and events */

static __always_inline void count(__u32 index)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &index);

	if (c)
		*c += 1;
}

static __always_inline void emit(struct __sk_buff *skb, const struct flow *f,
				 const struct decision *d, __u8 verdict, __u8 reason)
{
	struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

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

static __always_inline int trace_new_flows(void)
{
	__u32 zero = 0;
	struct datapath_config *cfg = bpf_map_lookup_elem(&config, &zero);

	return cfg && (cfg->flags & PC_CONFIG_TRACE_NEW_FLOWS);
}

static __always_inline int drop(struct __sk_buff *skb, const struct flow *f,
				const struct decision *d, __u8 reason)
{
	count(reason);
	emit(skb, f, d, PC_EVENT_DROPPED, reason);
	return TC_ACT_SHOT;
}

static __always_inline int pass(__u8 reason)
{
	count(reason);
	return TC_ACT_OK;
}

static __always_inline int pass_decided(struct __sk_buff *skb, __u8 reason)
{
	skb->mark = (skb->mark & ~PC_MARK_MASK) | PC_MARK_POLICY_DONE;
	return pass(reason);
}

static __always_inline int pass_new_flow(struct __sk_buff *skb, const struct flow *f,
					 const struct decision *d)
{
	if (trace_new_flows())
		emit(skb, f, d, PC_EVENT_FORWARDED, PC_REASON_PASS_POLICY);
	return pass_decided(skb, PC_REASON_PASS_POLICY);
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

static __always_inline int redirect_or_drop(struct __sk_buff *skb, const struct flow *f,
					    const struct decision *d, int new_flow)
{
	if (redirect_to_proxy(skb, f, d->proxy_port) != 0)
		return drop(skb, f, d, PC_REASON_DROP_PROXY_UNAVAILABLE);
	if (new_flow)
		emit(skb, f, d, PC_EVENT_REDIRECTED, PC_REASON_REDIRECT);
	return pass(PC_REASON_REDIRECT);
}

/* An entry the proxy's own upstream connection left (it may use the
 * client's address and any port) only stands for packets the proxy sends.
 * A packet arriving from a pod or the uplink with the same tuple is another
 * flow that happens to collide with it: it must not pass as established
 * without a policy decision (fail closed), so it is treated as new. */
static __always_inline int ct_not_proxy_upstream(int ct, const struct ct_entry *e,
						 const struct flow *f)
{
	if (ct == CT_ESTABLISHED && e && (e->flags & PC_CT_PROXY_UPSTREAM) && !e->proxy_port)
		return CT_NEW;
	/* A SYN opens a new connection, whatever an old entry for the same
	 * tuple says (there is no FIN/RST tracking: a closed connection's
	 * entry lingers); the new connection gets a policy decision. */
	if (ct == CT_ESTABLISHED && f->tcp_syn)
		return CT_NEW;
	return ct;
}

/* A tracked flow continues: pass, or keep feeding the proxy. */
static __always_inline int continue_flow(struct __sk_buff *skb, const struct flow *f,
					 struct decision *d, int ct, struct ct_entry *e)
{
	if (ct == CT_ESTABLISHED && e && e->proxy_port) {
		d->proxy_port = e->proxy_port;
		d->endpoint_id = e->endpoint_id;
		d->direction = e->direction;
		d->rule_cookie = e->rule_cookie;
		return redirect_or_drop(skb, f, d, 0);
	}
	if (ct == CT_ESTABLISHED)
		return pass_decided(skb, PC_REASON_PASS_ESTABLISHED);
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
		return pass_decided(skb, PC_REASON_PASS_REPLY);
	return pass_decided(skb, PC_REASON_PASS_RELATED);
}

/* ------------------------------------------------------------ programs */

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_FROM_POD, .direction = PC_DIR_EGRESS };
	struct endpoint_info *src, *dst;
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
		return drop(skb, &f, &d, PC_REASON_DROP_FRAGMENT);

	ct = ct_not_proxy_upstream(ct_lookup(&f, &e), e, &f);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e);

	dst = endpoint_lookup(f.family, f.daddr);
	d.dst_identity =
		dst ? dst->identity : ipcache_identity_new(f.family, f.daddr, PC_IDENTITY_WORLD);
	ret = policy_check(&f, d.dst_identity, src->endpoint_id, PC_DIR_EGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	if (dst) {
		__u32 egress_cookie = d.rule_cookie;
		__u16 egress_proxy = d.proxy_port;

		/* The destination's ingress policy, decided here so that
		 * to_pod can trust the policy-done mark. */
		ret = policy_check(&f, src->identity, dst->endpoint_id, PC_DIR_INGRESS, &d);
		if (ret)
			return drop(skb, &f, &d, ret);
		/* Report the egress decision unless only ingress redirects. */
		if (egress_proxy || !d.proxy_port) {
			d.endpoint_id = src->endpoint_id;
			d.direction = PC_DIR_EGRESS;
			d.rule_cookie = egress_cookie;
		}
	}
	ct_create(&f, &d);
	if (d.proxy_port)
		return redirect_or_drop(skb, &f, &d, 1);
	return pass_new_flow(skb, &f, &d);
}

SEC("classifier")
int from_uplink(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_FROM_UPLINK, .direction = PC_DIR_INGRESS };
	struct endpoint_info *dst;
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
	d.src_identity = ipcache_identity(f.family, f.saddr, PC_IDENTITY_WORLD);
	if (f.fragment)
		return drop(skb, &f, &d, PC_REASON_DROP_FRAGMENT);

	ct = ct_not_proxy_upstream(ct_lookup(&f, &e), e, &f);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e);

	d.src_identity = ipcache_identity_new(f.family, f.saddr, PC_IDENTITY_WORLD);
	ret = policy_check(&f, d.src_identity, dst->endpoint_id, PC_DIR_INGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	ct_create(&f, &d);
	if (d.proxy_port)
		return redirect_or_drop(skb, &f, &d, 1);
	return pass_new_flow(skb, &f, &d);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	struct decision d = { .hook = PC_HOOK_TO_POD, .direction = PC_DIR_INGRESS };
	struct datapath_config *cfg;
	struct endpoint_info *dst;
	struct ct_entry *e;
	struct flow f = {};
	__u32 zero = 0;
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

	/* Marks cannot be forged by pods or the world: crossing a network
	 * namespace (veth) scrubs skb->mark, and only privileged node
	 * processes can set SO_MARK. */
	if ((skb->mark & PC_MARK_MASK) == PC_MARK_POLICY_DONE)
		return pass(PC_REASON_PASS_MARKED);
	cfg = bpf_map_lookup_elem(&config, &zero);
	/* A zero mask means "no proxy mark configured": never trusted. */
	if (cfg && cfg->from_proxy_mark_mask &&
	    (skb->mark & cfg->from_proxy_mark_mask) == cfg->from_proxy_mark) {
		/* The proxy already applied both sides' policy; remember the
		 * flow so the endpoint's replies pass. */
		d.src_identity = PC_IDENTITY_HOST;
		d.ct_flags = PC_CT_PROXY_UPSTREAM;
		if (!f.fragment) {
			ct = ct_lookup(&f, &e);
			if (ct == CT_NEW)
				ct_create(&f, &d);
			/* A fully transparent upstream reuses the client's
			 * tuple: its replies must go to the proxy too. */
			else if (ct == CT_ESTABLISHED && e)
				e->flags |= PC_CT_PROXY_UPSTREAM;
		}
		return pass(PC_REASON_PASS_MARKED);
	}

	d.src_identity = ipcache_identity(f.family, f.saddr, PC_IDENTITY_HOST);
	if (f.fragment)
		return drop(skb, &f, &d, PC_REASON_DROP_FRAGMENT);

	ct = ct_lookup(&f, &e);
	if (ct == CT_ESTABLISHED && f.tcp_syn)
		ct = CT_NEW; /* a new connection on an old tuple: decide again */
	if (ct == CT_ESTABLISHED && e && e->proxy_port)
		/* Fail closed: a redirect cannot be done at egress. */
		return drop(skb, &f, &d, PC_REASON_DROP_REDIRECT_AT_EGRESS);
	if (ct != CT_NEW)
		return continue_flow(skb, &f, &d, ct, e);

	d.src_identity = ipcache_identity_new(f.family, f.saddr, PC_IDENTITY_HOST);
	ret = policy_check(&f, d.src_identity, dst->endpoint_id, PC_DIR_INGRESS, &d);
	if (ret)
		return drop(skb, &f, &d, ret);
	/* Fail closed: sk_assign only works at ingress; the node's own
	 * connections to an L7-policed port are refused, not let through. */
	if (d.proxy_port)
		return drop(skb, &f, &d, PC_REASON_DROP_REDIRECT_AT_EGRESS);
	ct_create(&f, &d);
	return pass_new_flow(skb, &f, &d);
}
