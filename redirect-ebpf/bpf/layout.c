/* Host program run by build.rs: prints the layout of portcullis.h as Rust
 * constants so a unit test can compare it with the Rust twins. */
#include <stddef.h>
#include <stdio.h>

#include "portcullis.h"

#define SIZE(s) printf("    (\"%s\", %zu),\n", #s, sizeof(struct s))
#define FIELD(s, f)                                                                  \
	printf("    (\"%s\", \"%s\", %zu, %zu),\n", #s, #f, offsetof(struct s, f), \
	       sizeof(((struct s *)0)->f))
#define CONST(c) printf("    (\"%s\", %llu),\n", #c, (unsigned long long)(c))

int main(void)
{
	printf("/// (struct, size) of every struct in portcullis.h.\n");
	printf("pub const C_SIZES: &[(&str, usize)] = &[\n");
	SIZE(ipcache_key);
	SIZE(ipcache_value);
	SIZE(endpoint_key);
	SIZE(endpoint_info);
	SIZE(policy_key);
	SIZE(policy_value);
	SIZE(ct_key);
	SIZE(ct_entry);
	SIZE(flow_event);
	SIZE(datapath_config);
	SIZE(frag_key);
	SIZE(frag_entry);
	SIZE(event_budget);
	printf("];\n");

	printf("/// (struct, field, offset, size) of every field in portcullis.h.\n");
	printf("pub const C_FIELDS: &[(&str, &str, usize, usize)] = &[\n");
	FIELD(ipcache_key, prefixlen);
	FIELD(ipcache_key, family);
	FIELD(ipcache_key, pad);
	FIELD(ipcache_key, addr);
	FIELD(ipcache_value, identity);
	FIELD(ipcache_value, new_flow_identity);
	FIELD(endpoint_key, family);
	FIELD(endpoint_key, pad);
	FIELD(endpoint_key, addr);
	FIELD(endpoint_info, identity);
	FIELD(endpoint_info, ifindex);
	FIELD(endpoint_info, endpoint_id);
	FIELD(endpoint_info, flags);
	FIELD(policy_key, prefixlen);
	FIELD(policy_key, identity);
	FIELD(policy_key, endpoint_id);
	FIELD(policy_key, direction);
	FIELD(policy_key, protocol);
	FIELD(policy_key, dport);
	FIELD(policy_key, pad);
	FIELD(policy_value, verdict);
	FIELD(policy_value, flags);
	FIELD(policy_value, proxy_port);
	FIELD(policy_value, rule_cookie);
	FIELD(ct_key, saddr);
	FIELD(ct_key, daddr);
	FIELD(ct_key, sport);
	FIELD(ct_key, dport);
	FIELD(ct_key, protocol);
	FIELD(ct_key, family);
	FIELD(ct_key, pad);
	FIELD(ct_entry, last_seen_ns);
	FIELD(ct_entry, src_identity);
	FIELD(ct_entry, dst_identity);
	FIELD(ct_entry, rule_cookie);
	FIELD(ct_entry, proxy_port);
	FIELD(ct_entry, endpoint_id);
	FIELD(ct_entry, direction);
	FIELD(ct_entry, hook);
	FIELD(ct_entry, flags);
	FIELD(ct_entry, policy_epoch);
	FIELD(flow_event, timestamp_ns);
	FIELD(flow_event, saddr);
	FIELD(flow_event, daddr);
	FIELD(flow_event, sport);
	FIELD(flow_event, dport);
	FIELD(flow_event, src_identity);
	FIELD(flow_event, dst_identity);
	FIELD(flow_event, ifindex);
	FIELD(flow_event, rule_cookie);
	FIELD(flow_event, endpoint_id);
	FIELD(flow_event, proxy_port);
	FIELD(flow_event, family);
	FIELD(flow_event, protocol);
	FIELD(flow_event, verdict);
	FIELD(flow_event, reason);
	FIELD(flow_event, direction);
	FIELD(flow_event, hook);
	FIELD(flow_event, redirected);
	FIELD(flow_event, pad);
	FIELD(datapath_config, from_proxy_mark);
	FIELD(datapath_config, from_proxy_mark_mask);
	FIELD(datapath_config, flags);
	FIELD(datapath_config, policy_epoch);
	FIELD(datapath_config, events_per_second);
	FIELD(datapath_config, pad);
	FIELD(datapath_config, proxy_cgroup_id);
	printf("];\n");

	printf("/// (name, value) of the constants in portcullis.h the Rust side mirrors.\n");
	printf("pub const C_CONSTANTS: &[(&str, u64)] = &[\n");
	CONST(PC_FAMILY_IPV4);
	CONST(PC_FAMILY_IPV6);
	CONST(PC_IDENTITY_HOST);
	CONST(PC_IDENTITY_WORLD);
	CONST(PC_DIR_INGRESS);
	CONST(PC_DIR_EGRESS);
	CONST(PC_VERDICT_ALLOW);
	CONST(PC_VERDICT_DENY);
	CONST(PC_POLICY_FLAG_AUDIT);
	CONST(PC_POLICY_FLAG_NO_RULE);
	CONST(PC_EP_FLAG_AUDIT);
	CONST(PC_EVENT_FORWARDED);
	CONST(PC_EVENT_DROPPED);
	CONST(PC_EVENT_REDIRECTED);
	CONST(PC_EVENT_AUDIT);
	CONST(PC_MARK_MASK);
	CONST(PC_MARK_TO_PROXY);
	CONST(PC_MARK_POLICY_DONE);
	CONST(PC_DEFAULT_FROM_PROXY_MARK);
	CONST(PC_CONFIG_TRACE_NEW_FLOWS);
	CONST(PC_CT_PROXY_UPSTREAM);
	CONST(PC_CT_FIN_ORIG);
	CONST(PC_CT_FIN_REPLY);
	CONST(PC_CT_CLOSED);
	CONST(PC_CT_CLOSE_SECONDS);
	CONST(PC_FRAG_SECONDS);
	CONST(PC_COUNTER_FORGED_MARK);
	CONST(PC_COUNTER_EVENTS_SUPPRESSED);
	CONST(PC_COUNTER_EVENTS_LOST);
	CONST(PC_POLICY_PREFIX_L3);
	CONST(PC_POLICY_PREFIX_PROTO);
	CONST(PC_POLICY_PREFIX_FULL);
	CONST(PC_REASON_MAX);
	CONST(PC_REASON_PASS_UNMANAGED);
	CONST(PC_REASON_PASS_NOT_IP);
	CONST(PC_REASON_PASS_NDP);
	CONST(PC_REASON_PASS_MARKED);
	CONST(PC_REASON_PASS_ESTABLISHED);
	CONST(PC_REASON_PASS_REPLY);
	CONST(PC_REASON_PASS_RELATED);
	CONST(PC_REASON_PASS_POLICY);
	CONST(PC_REASON_REDIRECT);
	CONST(PC_REASON_PASS_FRAGMENT);
	CONST(PC_REASON_AUDIT_DENIED);
	CONST(PC_REASON_AUDIT_NO_POLICY);
	CONST(PC_REASON_DROP_POLICY_DENIED);
	CONST(PC_REASON_DROP_NO_POLICY);
	CONST(PC_REASON_DROP_SPOOFED);
	CONST(PC_REASON_DROP_PROXY_UNAVAILABLE);
	CONST(PC_REASON_DROP_MALFORMED);
	CONST(PC_REASON_DROP_FRAGMENT);
	CONST(PC_REASON_DROP_NOT_IP);
	CONST(PC_REASON_DROP_REDIRECT_AT_EGRESS);
	CONST(PC_REASON_DROP_REVOKED);
	printf("];\n");
	return 0;
}
