use std::mem::{offset_of, size_of};

use crate::abi::*;
use crate::raw::flow_event_from_bytes;
use crate::vocabulary::*;
use crate::*;

mod c {
    include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
}

macro_rules! rust_fields {
    ($($c:literal => $ty:ty { $($field:ident),* $(,)? })*) => {
        vec![$($(($c, stringify!($field), offset_of!($ty, $field), {
            let value = <$ty>::default();
            std::mem::size_of_val(&value.$field)
        }),)*)*]
    };
}

fn rust_sizes() -> Vec<(&'static str, usize)> {
    vec![
        ("ipcache_key", size_of::<IpcacheKey>()),
        ("ipcache_value", size_of::<IpcacheValue>()),
        ("endpoint_key", size_of::<EndpointKey>()),
        ("endpoint_info", size_of::<EndpointInfo>()),
        ("policy_key", size_of::<PolicyKey>()),
        ("policy_value", size_of::<PolicyValue>()),
        ("ct_key", size_of::<CtKey>()),
        ("ct_entry", size_of::<CtEntry>()),
        ("flow_event", size_of::<FlowEvent>()),
        ("datapath_config", size_of::<DatapathConfig>()),
        ("frag_key", size_of::<FragKey>()),
        ("frag_entry", size_of::<FragEntry>()),
        ("event_budget", size_of::<EventBudget>()),
    ]
}

#[test]
fn struct_sizes_match_the_c_header() {
    assert_eq!(rust_sizes(), c::C_SIZES.to_vec());
}

#[test]
fn field_offsets_match_the_c_header() {
    let rust = rust_fields! {
        "ipcache_key" => IpcacheKey { prefixlen, family, pad, addr }
        "ipcache_value" => IpcacheValue { identity, new_flow_identity }
        "endpoint_key" => EndpointKey { family, pad, addr }
        "endpoint_info" => EndpointInfo { identity, ifindex, endpoint_id, flags }
        "policy_key" => PolicyKey { prefixlen, identity, endpoint_id, direction, protocol, dport, pad }
        "policy_value" => PolicyValue { verdict, flags, proxy_port, rule_cookie }
        "ct_key" => CtKey { saddr, daddr, sport, dport, protocol, family, pad }
        "ct_entry" => CtEntry { last_seen_ns, src_identity, dst_identity, rule_cookie, proxy_port, endpoint_id, direction, hook, flags, policy_epoch }
        "flow_event" => FlowEvent { timestamp_ns, saddr, daddr, sport, dport, src_identity, dst_identity, ifindex, rule_cookie, endpoint_id, proxy_port, family, protocol, verdict, reason, direction, hook, redirected, pad }
        "datapath_config" => DatapathConfig { from_proxy_mark, from_proxy_mark_mask, flags, policy_epoch, events_per_second, pad, proxy_cgroup_id }
    };
    assert_eq!(rust, c::C_FIELDS.to_vec());
}

#[test]
fn lpm_data_is_the_key_without_prefixlen() {
    assert_eq!(size_of::<IpcacheLpmData>() + 4, size_of::<IpcacheKey>());
    assert_eq!(size_of::<PolicyLpmData>() + 4, size_of::<PolicyKey>());
    assert_eq!(
        offset_of!(IpcacheKey, family) - 4,
        offset_of!(IpcacheLpmData, family)
    );
    assert_eq!(
        offset_of!(IpcacheKey, addr) - 4,
        offset_of!(IpcacheLpmData, addr)
    );
    assert_eq!(
        offset_of!(PolicyKey, identity) - 4,
        offset_of!(PolicyLpmData, identity)
    );
    assert_eq!(
        offset_of!(PolicyKey, dport) - 4,
        offset_of!(PolicyLpmData, dport)
    );
}

#[test]
fn constants_match_the_c_header() {
    let c: std::collections::HashMap<&str, u64> = c::C_CONSTANTS.iter().copied().collect();
    let expect = |name: &str, value: u64| assert_eq!(c[name], value, "{name}");
    expect("PC_FAMILY_IPV4", FAMILY_IPV4.into());
    expect("PC_FAMILY_IPV6", FAMILY_IPV6.into());
    expect("PC_IDENTITY_HOST", IDENTITY_HOST.into());
    expect("PC_IDENTITY_WORLD", IDENTITY_WORLD.into());
    expect("PC_DIR_INGRESS", Direction::Ingress.code().into());
    expect("PC_DIR_EGRESS", Direction::Egress.code().into());
    expect("PC_VERDICT_ALLOW", VERDICT_ALLOW.into());
    expect("PC_VERDICT_DENY", VERDICT_DENY.into());
    expect("PC_POLICY_FLAG_AUDIT", POLICY_FLAG_AUDIT.into());
    expect("PC_POLICY_FLAG_NO_RULE", POLICY_FLAG_NO_RULE.into());
    expect("PC_EP_FLAG_AUDIT", ENDPOINT_FLAG_AUDIT.into());
    expect("PC_EVENT_FORWARDED", EVENT_FORWARDED.into());
    expect("PC_EVENT_DROPPED", EVENT_DROPPED.into());
    expect("PC_EVENT_REDIRECTED", EVENT_REDIRECTED.into());
    expect("PC_EVENT_AUDIT", EVENT_AUDIT.into());
    expect("PC_MARK_MASK", MARK_MASK.into());
    expect("PC_MARK_TO_PROXY", MARK_TO_PROXY.into());
    expect("PC_MARK_POLICY_DONE", MARK_POLICY_DONE.into());
    expect("PC_DEFAULT_FROM_PROXY_MARK", DEFAULT_FROM_PROXY_MARK.into());
    expect("PC_CONFIG_TRACE_NEW_FLOWS", CONFIG_TRACE_NEW_FLOWS.into());
    expect("PC_CT_PROXY_UPSTREAM", CT_PROXY_UPSTREAM.into());
    expect("PC_CT_FIN_ORIG", CT_FIN_ORIG.into());
    expect("PC_CT_FIN_REPLY", CT_FIN_REPLY.into());
    expect("PC_CT_CLOSED", CT_CLOSED.into());
    expect("PC_CT_CLOSE_SECONDS", CT_CLOSE_SECONDS);
    expect("PC_FRAG_SECONDS", FRAG_SECONDS);
    expect("PC_COUNTER_FORGED_MARK", COUNTER_FORGED_MARK.into());
    expect(
        "PC_COUNTER_EVENTS_SUPPRESSED",
        COUNTER_EVENTS_SUPPRESSED.into(),
    );
    expect("PC_COUNTER_EVENTS_LOST", COUNTER_EVENTS_LOST.into());
    expect("PC_POLICY_PREFIX_L3", POLICY_PREFIX_L3.into());
    expect("PC_POLICY_PREFIX_PROTO", POLICY_PREFIX_PROTO.into());
    expect("PC_POLICY_PREFIX_FULL", 80);
    let reasons = [
        ("PC_REASON_PASS_UNMANAGED", Reason::PassUnmanaged),
        ("PC_REASON_PASS_NOT_IP", Reason::PassNotIp),
        ("PC_REASON_PASS_NDP", Reason::PassNdp),
        ("PC_REASON_PASS_MARKED", Reason::PassMarked),
        ("PC_REASON_PASS_ESTABLISHED", Reason::PassEstablished),
        ("PC_REASON_PASS_REPLY", Reason::PassReply),
        ("PC_REASON_PASS_RELATED", Reason::PassRelated),
        ("PC_REASON_PASS_POLICY", Reason::PassPolicy),
        ("PC_REASON_REDIRECT", Reason::Redirect),
        ("PC_REASON_PASS_FRAGMENT", Reason::PassFragment),
        ("PC_REASON_AUDIT_DENIED", Reason::AuditDenied),
        ("PC_REASON_AUDIT_NO_POLICY", Reason::AuditNoPolicy),
        ("PC_REASON_DROP_POLICY_DENIED", Reason::DropPolicyDenied),
        ("PC_REASON_DROP_NO_POLICY", Reason::DropNoPolicy),
        ("PC_REASON_DROP_SPOOFED", Reason::DropSpoofed),
        (
            "PC_REASON_DROP_PROXY_UNAVAILABLE",
            Reason::DropProxyUnavailable,
        ),
        ("PC_REASON_DROP_MALFORMED", Reason::DropMalformed),
        ("PC_REASON_DROP_FRAGMENT", Reason::DropFragment),
        ("PC_REASON_DROP_NOT_IP", Reason::DropNotIp),
        (
            "PC_REASON_DROP_REDIRECT_AT_EGRESS",
            Reason::DropRedirectAtEgress,
        ),
        ("PC_REASON_DROP_REVOKED", Reason::DropRevoked),
    ];
    assert_eq!(reasons.len(), Reason::ALL.len());
    for (name, reason) in reasons {
        expect(name, reason as u64);
        assert_eq!(Reason::from_code(reason as u8), Some(reason));
    }
    assert!(
        c["PC_REASON_MAX"] > 31,
        "counter index 31 counts lost events"
    );
    assert!(!Reason::AuditDenied.is_drop() && !Reason::AuditNoPolicy.is_drop());
}

#[test]
fn policy_value_flags_leave_the_verdict_alone() {
    let audited = PolicyValue::redirect(15001, 42).audited();
    assert_eq!(
        (audited.verdict, audited.flags, audited.proxy_port),
        (VERDICT_ALLOW, POLICY_FLAG_AUDIT, 15001)
    );
    assert_eq!(audited.rule_cookie, 42);
    let no_rule = PolicyValue::deny(0).no_rule();
    assert_eq!(
        (no_rule.verdict, no_rule.flags),
        (VERDICT_DENY, POLICY_FLAG_NO_RULE)
    );
    assert_eq!(no_rule.audited().with_flags(0), PolicyValue::deny(0));
}

#[test]
fn policy_key_is_network_order() {
    let key = PolicyKey::new(0x0102_0304, 0x0506, Direction::Egress, 6, 0x5000, 16).unwrap();
    assert_eq!(key.prefixlen, 80);
    assert_eq!(key.identity.to_ne_bytes(), [1, 2, 3, 4]);
    assert_eq!(key.endpoint_id.to_ne_bytes(), [5, 6]);
    assert_eq!(key.direction, 1);
    assert_eq!(key.dport.to_ne_bytes(), [0x50, 0]);
}

#[test]
fn policy_key_prefixes() {
    let l3 = PolicyKey::new(7, 1, Direction::Ingress, 0, 0, 0).unwrap();
    assert_eq!((l3.prefixlen, l3.protocol, l3.dport), (56, 0, 0));
    let proto = PolicyKey::new(7, 1, Direction::Ingress, 17, 53, 0).unwrap();
    assert_eq!(
        (proto.prefixlen, proto.dport),
        (64, 0),
        "port bits beyond the prefix are cleared"
    );
    let range = PolicyKey::new(7, 1, Direction::Ingress, 6, 8080 | 0x3, 14).unwrap();
    assert_eq!(range.prefixlen, 78);
    assert_eq!(u16::from_be(range.dport), 8080);
}

#[test]
fn policy_key_rejects_nonsense() {
    assert!(matches!(
        PolicyKey::new(7, 1, Direction::Ingress, 0, 80, 16),
        Err(DatapathError::InvalidPolicyKey(_))
    ));
    assert!(matches!(
        PolicyKey::new(7, 1, Direction::Ingress, 6, 80, 17),
        Err(DatapathError::InvalidPolicyKey(_))
    ));
}

#[test]
fn flow_event_decodes_from_bytes() {
    let mut bytes = vec![0u8; size_of::<FlowEvent>()];
    bytes[8..12].copy_from_slice(&[10, 200, 1, 2]);
    bytes[offset_of!(FlowEvent, family)] = 4;
    bytes[offset_of!(FlowEvent, reason)] = Reason::DropNoPolicy as u8;
    let event = flow_event_from_bytes(&bytes).unwrap();
    assert_eq!(
        event.src_addr(),
        "10.200.1.2".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(event.reason(), Some(Reason::DropNoPolicy));
    assert!(flow_event_from_bytes(&bytes[1..]).is_none());
}

#[test]
fn link_pin_names_have_no_dots() {
    use crate::datapath::link_pin_name;
    assert_eq!(link_pin_name(Hook::FromPod, "veth1"), "from_pod-veth1");
    assert_eq!(link_pin_name(Hook::ToPod, "eth0.100"), "to_pod-eth0%2e100");
    assert_eq!(link_pin_name(Hook::FromUplink, "a%b"), "from_uplink-a%25b");
}

#[test]
fn ipcache_keys_are_truncated_and_tagged() {
    use crate::datapath::ipcache_key;
    let v4 = ipcache_key("10.201.3.4/16".parse().unwrap());
    assert_eq!(v4.prefix_len(), 32 + 16);
    let data = v4.data();
    assert_eq!(data.family, 4);
    assert_eq!(&data.addr[..4], &[10, 201, 0, 0]);
    assert_eq!(&data.addr[4..], &[0u8; 12]);
    let v6 = ipcache_key("fd00:201::1/64".parse().unwrap());
    assert_eq!(v6.prefix_len(), 32 + 64);
    assert_eq!(v6.data().family, 6);
    assert_eq!(v6.data().addr[15], 0);
}
