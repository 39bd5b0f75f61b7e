//! The TC programs on synthetic packets with `BPF_PROG_TEST_RUN` (root only).
//!
//! Each test loads its own datapath into a private bpffs (its own maps), so
//! tests run in parallel without seeing each other's state.

mod common;

use std::io::Write;

use common::{L4, PinDir, TC_ACT_OK, TC_ACT_SHOT, packet, root_or_skip, run};
use redirect_ebpf::{
    Datapath, Direction, ENDPOINT_FLAG_AUDIT, EVENT_AUDIT, EVENT_FORWARDED, EndpointInfo,
    FlowEvent, Hook, IDENTITY_WORLD, MARK_MASK, MARK_POLICY_DONE, PolicyChange, PolicyKey,
    PolicyValue, Reason,
};

const A4: &str = "10.200.1.2";
const B4: &str = "10.200.2.2";
const WORLD4: &str = "10.201.0.5";
const A6: &str = "fd00:200::a:2";
const B6: &str = "fd00:200::b:2";
const EP_A: u16 = 11;
const EP_B: u16 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// A loaded datapath with endpoints A and B (IPv4 and IPv6) and no policy.
struct Fixture {
    dp: Datapath,
    _pins: PinDir,
}

fn fixture(test: &str) -> Option<Fixture> {
    if !root_or_skip(test) {
        return None;
    }
    let pins = PinDir::new();
    let mut dp = Datapath::load(pins.path()).expect("load datapath");
    for (ip, endpoint_id, identity) in [
        (A4, EP_A, ID_A),
        (A6, EP_A, ID_A),
        (B4, EP_B, ID_B),
        (B6, EP_B, ID_B),
    ] {
        dp.set_endpoint(
            ip.parse().expect("ip"),
            EndpointInfo {
                identity,
                ifindex: 0,
                endpoint_id,
                flags: 0,
            },
        )
        .expect("set endpoint");
    }
    Some(Fixture { dp, _pins: pins })
}

fn now_monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn key(identity: u32, ep: u16, dir: Direction, proto: u8, port: u16, bits: u8) -> PolicyKey {
    PolicyKey::new(identity, ep, dir, proto, port, bits).expect("valid key")
}

impl Fixture {
    fn upsert(&mut self, key: PolicyKey, value: PolicyValue) {
        self.dp
            .apply_policy(&[PolicyChange::Upsert(key, value)])
            .expect("apply policy");
    }

    /// A allowed to reach B on TCP/80, both sides.
    fn allow_a_to_b_tcp80(&mut self) {
        self.upsert(
            key(ID_B, EP_A, Direction::Egress, TCP, 80, 16),
            PolicyValue::allow(1),
        );
        self.upsert(
            key(ID_A, EP_B, Direction::Ingress, TCP, 80, 16),
            PolicyValue::allow(2),
        );
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut reader = self.dp.take_flow_events().expect("events reader");
        std::iter::from_fn(|| reader.try_next()).collect()
    }

    fn count(&self, reason: Reason) -> u64 {
        self.dp.counters().expect("counters").get(reason)
    }

    /// Replaces the `EndpointInfo::flags` of one of the fixture's endpoints.
    fn set_endpoint_flags(&mut self, ip: &str, endpoint_id: u16, identity: u32, flags: u16) {
        self.dp
            .set_endpoint(
                ip.parse().expect("ip"),
                EndpointInfo {
                    identity,
                    ifindex: 0,
                    endpoint_id,
                    flags,
                },
            )
            .expect("set endpoint");
    }

    /// New flows that pass are not traced: only AUDIT events (and drops)
    /// are reported.
    fn stop_tracing_new_flows(&mut self) {
        let mut config = self.dp.config().expect("config");
        config.flags = 0;
        self.dp.set_config(config).expect("set config");
    }
}

fn tcp(sport: u16, dport: u16) -> L4 {
    L4::Tcp { sport, dport }
}

/// A TCP SYN-ACK frame: the answer to a SYN (a SYN itself opens a new
/// connection in either direction and is judged as one).
fn syn_ack(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = packet(src, dst, tcp(sport, dport));
    p.tcp_flags = 0x12;
    p.frame()
}

#[test]
fn allowed_flow_passes_and_marks_policy_done() {
    let Some(mut f) = fixture("allowed_flow_passes_and_marks_policy_done") else {
        return;
    };
    f.allow_a_to_b_tcp80();
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    assert_eq!(r.mark & MARK_MASK, MARK_POLICY_DONE);
    assert_eq!(f.count(Reason::PassPolicy), 1);
    let events = f.events();
    assert_eq!(events.len(), 2, "one new-flow event per side: {events:?}");
    let ev = events[0];
    assert!(!ev.is_drop());
    assert_eq!(ev.src_addr().to_string(), A4);
    assert_eq!((ev.sport, ev.dport, ev.protocol), (40000, 80, TCP));
    assert_eq!((ev.src_identity, ev.dst_identity), (ID_A, ID_B));
    assert_eq!((ev.endpoint_id, ev.direction, ev.rule_cookie), (EP_A, 1, 1));
    assert_eq!(ev.hook(), Some(Hook::FromPod));
    let ev = events[1];
    assert_eq!((ev.endpoint_id, ev.direction, ev.rule_cookie), (EP_B, 0, 2));
}

#[test]
fn deny_entry_drops() {
    let Some(mut f) = fixture("deny_entry_drops") else {
        return;
    };
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::deny(7),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropPolicyDenied), 1);
    let events = f.events();
    assert_eq!(events.len(), 1);
    assert!(events[0].is_drop());
    assert_eq!(events[0].reason(), Some(Reason::DropPolicyDenied));
    assert_eq!(events[0].rule_cookie, 7);
}

#[test]
fn no_matching_entry_drops() {
    let Some(mut f) = fixture("no_matching_entry_drops") else {
        return;
    };
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    // Egress allowed but B's ingress has no entry: still dropped.
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::allow(1),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40001, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropNoPolicy), 2);
    let events = f.events();
    assert_eq!(events[1].endpoint_id, EP_B);
    assert_eq!(events[1].direction, Direction::Ingress.code());
}

#[test]
fn wildcard_identity_matches_any_remote() {
    let Some(mut f) = fixture("wildcard_identity_matches_any_remote") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 443, 16),
        PolicyValue::allow(3),
    );
    // World (no ipcache entry) on 443: wildcard allow.
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40000, 443)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    // An identity-specific deny wins over the wildcard for that identity.
    f.dp.set_ipcache("10.201.0.0/24".parse().unwrap(), 5000)
        .unwrap();
    f.upsert(
        key(5000, EP_A, Direction::Egress, TCP, 443, 16),
        PolicyValue::deny(4),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40001, 443)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    let events = f.events();
    assert_eq!(events[0].dst_identity, IDENTITY_WORLD);
    assert_eq!(events[1].dst_identity, 5000);
    assert_eq!(events[1].rule_cookie, 4);
}

#[test]
fn port_prefix_matches_a_port_range() {
    let Some(mut f) = fixture("port_prefix_matches_a_port_range") else {
        return;
    };
    // 8080..=8087
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 8080, 13),
        PolicyValue::allow(5),
    );
    for (port, expected) in [
        (8079, TC_ACT_SHOT),
        (8080, TC_ACT_OK),
        (8083, TC_ACT_OK),
        (8087, TC_ACT_OK),
        (8088, TC_ACT_SHOT),
    ] {
        let r = run(
            &f.dp,
            Hook::FromPod,
            &packet(A4, WORLD4, tcp(40000, port)).frame(),
            0,
        );
        assert_eq!(r.retval, expected, "port {port}");
    }
    // The same range does not cover UDP.
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(
            A4,
            WORLD4,
            L4::Udp {
                sport: 5000,
                dport: 8080,
            },
        )
        .frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
}

#[test]
fn deny_beats_allow() {
    let Some(mut f) = fixture("deny_beats_allow") else {
        return;
    };
    // Longest match: a port deny inside a protocol-wide allow.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 0, 0),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 22, 16),
        PolicyValue::deny(2),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40000, 22)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40000, 23)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    // Both sides: A's egress allows everything, B's ingress denies.
    f.upsert(
        key(0, EP_B, Direction::Ingress, 0, 0, 0),
        PolicyValue::deny(3),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 23)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropPolicyDenied), 2);
}

#[test]
fn reply_passes_via_conntrack() {
    let Some(mut f) = fixture("reply_passes_via_conntrack") else {
        return;
    };
    f.allow_a_to_b_tcp80();
    let request = packet(A4, B4, tcp(40000, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &request, 0).retval, TC_ACT_OK);
    // B's egress has no policy at all, yet its reply passes.
    let reply = syn_ack(B4, A4, 80, 40000);
    assert_eq!(run(&f.dp, Hook::FromPod, &reply, 0).retval, TC_ACT_OK);
    assert_eq!(run(&f.dp, Hook::ToPod, &reply, 0).retval, TC_ACT_OK);
    // A new connection from B to A is not a reply.
    let new_flow = packet(B4, A4, tcp(80, 40001)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &new_flow, 0).retval, TC_ACT_SHOT);
    // Established: the next request packet (an ACK) passes without a new
    // lookup.
    let mut next = request.clone();
    next[14 + 20 + 13] = 0x10; // TCP flags: ACK
    assert_eq!(run(&f.dp, Hook::FromPod, &next, 0).retval, TC_ACT_OK);
    assert_eq!(f.count(Reason::PassReply), 2);
    assert_eq!(f.count(Reason::PassEstablished), 1);
    // Flushing conntrack makes the reply a new (denied) flow.
    assert!(f.dp.flush_conntrack().unwrap() >= 1);
    assert_eq!(run(&f.dp, Hook::FromPod, &reply, 0).retval, TC_ACT_SHOT);
}

#[test]
fn ipv6_allow_and_deny() {
    let Some(mut f) = fixture("ipv6_allow_and_deny") else {
        return;
    };
    f.allow_a_to_b_tcp80();
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 81, 16),
        PolicyValue::deny(9),
    );
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 81, 16),
        PolicyValue::allow(9),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A6, B6, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A6, B6, tcp(40000, 81)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    let r = run(&f.dp, Hook::FromPod, &syn_ack(B6, A6, 80, 40000), 0);
    assert_eq!(r.retval, TC_ACT_OK, "IPv6 reply via conntrack");
    let events = f.events();
    assert_eq!(events[0].family, 6);
    assert_eq!(events[0].dst_addr().to_string(), B6);
    // events[1]: B's side of the first flow.
    assert_eq!(events[2].reason(), Some(Reason::DropPolicyDenied));
}

#[test]
fn icmp_type_is_the_policy_port_and_echo_replies_are_tracked() {
    let Some(mut f) = fixture("icmp_type_is_the_policy_port") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, ICMP, 8, 16),
        PolicyValue::allow(1),
    );
    let echo = packet(
        A4,
        WORLD4,
        L4::Icmp {
            ty: 8,
            code: 0,
            id: 77,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &echo.frame(), 0).retval,
        TC_ACT_OK
    );
    let timestamp = packet(
        A4,
        WORLD4,
        L4::Icmp {
            ty: 13,
            code: 0,
            id: 77,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &timestamp.frame(), 0).retval,
        TC_ACT_SHOT
    );
    // The echo reply comes back through the uplink; A's ingress has no entry.
    let reply = packet(
        WORLD4,
        A4,
        L4::Icmp {
            ty: 0,
            code: 0,
            id: 77,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &reply.frame(), 0).retval,
        TC_ACT_OK
    );
    let other_id = packet(
        WORLD4,
        A4,
        L4::Icmp {
            ty: 0,
            code: 0,
            id: 78,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &other_id.frame(), 0).retval,
        TC_ACT_SHOT
    );
    // ICMPv6 echo request: type 128 under protocol 58.
    f.upsert(
        key(0, EP_A, Direction::Egress, 58, 128, 16),
        PolicyValue::allow(2),
    );
    let echo6 = packet(
        A6,
        "fd00:201::5",
        L4::Icmp {
            ty: 128,
            code: 0,
            id: 5,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &echo6.frame(), 0).retval,
        TC_ACT_OK
    );
}

#[test]
fn icmp_error_about_a_tracked_flow_is_related() {
    let Some(mut f) = fixture("icmp_error_about_a_tracked_flow_is_related") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, UDP, 53, 16),
        PolicyValue::allow(1),
    );
    let query = packet(
        A4,
        WORLD4,
        L4::Udp {
            sport: 5353,
            dport: 53,
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &query.frame(), 0).retval,
        TC_ACT_OK
    );
    let unreachable = packet(
        WORLD4,
        A4,
        L4::IcmpError {
            ty: 3,
            inner: query.ip_packet(),
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &unreachable.frame(), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(f.count(Reason::PassRelated), 1);
    let unrelated = packet(
        WORLD4,
        A4,
        L4::IcmpError {
            ty: 3,
            inner: packet(
                A4,
                WORLD4,
                L4::Udp {
                    sport: 5354,
                    dport: 53,
                },
            )
            .ip_packet(),
        },
    );
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &unrelated.frame(), 0).retval,
        TC_ACT_SHOT
    );
}

#[test]
fn unmanaged_endpoints_pass_and_unknown_pod_sources_drop() {
    let Some(mut f) = fixture("unmanaged_endpoints_pass") else {
        return;
    };
    let to_unmanaged = packet(WORLD4, "10.200.9.9", tcp(1234, 80)).frame();
    assert_eq!(run(&f.dp, Hook::ToPod, &to_unmanaged, 0).retval, TC_ACT_OK);
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &to_unmanaged, 0).retval,
        TC_ACT_OK
    );
    assert_eq!(f.count(Reason::PassUnmanaged), 2);
    // On a pod veth an unknown source address is spoofing.
    let spoofed = packet("10.200.9.9", B4, tcp(1234, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &spoofed, 0).retval, TC_ACT_SHOT);
    // So is a managed address arriving on another pod's veth.
    f.dp.set_endpoint(
        A4.parse().unwrap(),
        EndpointInfo {
            identity: ID_A,
            ifindex: 999,
            endpoint_id: EP_A,
            flags: 0,
        },
    )
    .unwrap();
    let from_a = packet(A4, B4, tcp(1234, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &from_a, 0).retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropSpoofed), 2);
}

#[test]
fn redirect_without_proxy_listener_drops() {
    let Some(mut f) = fixture("redirect_without_proxy_listener_drops") else {
        return;
    };
    // Port 1 (tcpmux): nothing listens there in the test's namespace.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::redirect(1, 42),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    // The conntrack entry keeps the redirect: the next packet is not let
    // through either.
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, WORLD4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropProxyUnavailable), 2);
    let events = f.events();
    assert_eq!(events[0].reason(), Some(Reason::DropProxyUnavailable));
    assert_eq!((events[0].proxy_port, events[0].rule_cookie), (1, 42));
    // At an egress hook a redirect cannot be done at all.
    f.upsert(
        key(0, EP_B, Direction::Ingress, TCP, 80, 16),
        PolicyValue::redirect(1, 43),
    );
    let r = run(
        &f.dp,
        Hook::ToPod,
        &packet("10.0.0.1", B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropRedirectAtEgress), 1);
}

#[test]
fn marks_skip_to_pod_checks() {
    let Some(f) = fixture("marks_skip_to_pod_checks") else {
        return;
    };
    let frame = packet("10.0.0.1", B4, tcp(40000, 80)).frame();
    assert_eq!(run(&f.dp, Hook::ToPod, &frame, 0).retval, TC_ACT_SHOT);
    assert_eq!(
        run(&f.dp, Hook::ToPod, &frame, MARK_POLICY_DONE).retval,
        TC_ACT_OK
    );
    assert_eq!(f.count(Reason::PassMarked), 1);
    // The from-proxy mark alone proves nothing (test-run packets have no
    // socket, so none in the proxy's cgroup): judged, and counted. The
    // proxy's own packets are in tests/netns.rs.
    let from_proxy = f.dp.config().unwrap().from_proxy_mark;
    assert_eq!(
        run(&f.dp, Hook::ToPod, &frame, from_proxy).retval,
        TC_ACT_SHOT
    );
    assert_eq!(f.dp.counters().unwrap().forged_marks, 1);
    // BPF_PROG_TEST_RUN's stand-in socket belongs to this process's
    // cgroup: trusting that cgroup as the proxy's lets the mark count.
    let Fixture { mut dp, _pins } = f;
    let own = redirect_ebpf::cgroup::cgroup2_mount().unwrap().join(
        redirect_ebpf::cgroup::own_cgroup()
            .unwrap()
            .trim_start_matches('/'),
    );
    dp.set_proxy_cgroup(redirect_ebpf::cgroup::cgroup_id(&own).unwrap())
        .unwrap();
    assert_eq!(run(&dp, Hook::ToPod, &frame, from_proxy).retval, TC_ACT_OK);
    // The proxy's connection is tracked: B's reply passes.
    let reply = syn_ack(B4, "10.0.0.1", 80, 40000);
    assert_eq!(run(&dp, Hook::FromPod, &reply, 0).retval, TC_ACT_OK);
    drop(_pins);
}

#[test]
fn non_first_fragments_of_managed_flows_drop() {
    let Some(mut f) = fixture("non_first_fragments_drop") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, 0, 0, 0),
        PolicyValue::allow(1),
    );
    let mut frag = packet(A4, WORLD4, L4::Udp { sport: 1, dport: 2 });
    frag.fragment_offset = 185;
    assert_eq!(
        run(&f.dp, Hook::FromPod, &frag.frame(), 0).retval,
        TC_ACT_SHOT
    );
    assert_eq!(f.count(Reason::DropFragment), 1);
}

#[test]
fn pinned_state_survives_a_reload() {
    if !root_or_skip("pinned_state_survives_a_reload") {
        return;
    }
    let pins = PinDir::new();
    let frame = packet(A4, WORLD4, tcp(40000, 443)).frame();
    {
        let mut dp = Datapath::load(pins.path()).expect("first load");
        dp.set_endpoint(
            A4.parse().unwrap(),
            EndpointInfo {
                identity: ID_A,
                ifindex: 0,
                endpoint_id: EP_A,
                flags: 0,
            },
        )
        .unwrap();
        dp.apply_policy(&[PolicyChange::Upsert(
            key(0, EP_A, Direction::Egress, TCP, 443, 16),
            PolicyValue::allow(1),
        )])
        .unwrap();
        assert_eq!(run(&dp, Hook::FromPod, &frame, 0).retval, TC_ACT_OK);
    }
    let mut dp = Datapath::load(pins.path()).expect("second load reuses the pins");
    assert_eq!(dp.counters().unwrap().get(Reason::PassPolicy), 1);
    let other = packet(A4, WORLD4, tcp(40001, 443)).frame();
    assert_eq!(run(&dp, Hook::FromPod, &other, 0).retval, TC_ACT_OK);
    dp.apply_policy(&[PolicyChange::Delete(key(
        0,
        EP_A,
        Direction::Egress,
        TCP,
        443,
        16,
    ))])
    .unwrap();
    let third = packet(A4, WORLD4, tcp(40002, 443)).frame();
    assert_eq!(run(&dp, Hook::FromPod, &third, 0).retval, TC_ACT_SHOT);
    drop(dp);
}

#[test]
fn uplink_traffic_meets_the_destination_ingress_policy() {
    let Some(mut f) = fixture("uplink_traffic_meets_the_destination_ingress_policy") else {
        return;
    };
    f.dp.set_ipcache("10.201.0.0/16".parse().unwrap(), 6000)
        .unwrap();
    f.upsert(
        key(6000, EP_B, Direction::Ingress, TCP, 443, 16),
        PolicyValue::allow(8),
    );
    let allowed = packet(WORLD4, B4, tcp(50000, 443)).frame();
    let r = run(&f.dp, Hook::FromUplink, &allowed, 0);
    assert_eq!(r.retval, TC_ACT_OK);
    assert_eq!(
        r.mark & MARK_MASK,
        MARK_POLICY_DONE,
        "to_pod will not re-check"
    );
    let denied = packet("10.202.0.1", B4, tcp(50000, 443)).frame();
    assert_eq!(run(&f.dp, Hook::FromUplink, &denied, 0).retval, TC_ACT_SHOT);
    // B's reply leaves through from_pod without any egress policy.
    let reply = syn_ack(B4, WORLD4, 443, 50000);
    assert_eq!(run(&f.dp, Hook::FromPod, &reply, 0).retval, TC_ACT_OK);
    let events = f.events();
    assert_eq!(events[0].src_identity, 6000);
    assert_eq!(events[1].src_identity, IDENTITY_WORLD);
    assert_eq!(events[1].hook(), Some(Hook::FromUplink));
}

#[test]
fn neighbour_discovery_passes_only_on_the_link() {
    let Some(f) = fixture("neighbour_discovery_passes_only_on_the_link") else {
        return;
    };
    let ns = |dst: &str, ttl: u8| {
        let mut p = packet(
            A6,
            dst,
            L4::Icmp {
                ty: 135,
                code: 0,
                id: 0,
            },
        );
        p.ttl = ttl;
        p.frame()
    };
    // Solicited-node multicast and link-local: the node consumes them.
    assert_eq!(
        run(&f.dp, Hook::FromPod, &ns("ff02::1:ff00:1", 255), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &ns("fe80::1", 255), 0).retval,
        TC_ACT_OK
    );
    // To a remote address it would be routed on: policy applies (none here).
    assert_eq!(
        run(&f.dp, Hook::FromPod, &ns("fd00:201::5", 255), 0).retval,
        TC_ACT_SHOT
    );
    // A routed (hop limit < 255) "NDP" packet is not NDP.
    assert_eq!(run(&f.dp, Hook::ToPod, &ns(B6, 254), 0).retval, TC_ACT_SHOT);
    assert_eq!(run(&f.dp, Hook::ToPod, &ns(B6, 255), 0).retval, TC_ACT_OK);
    assert_eq!(f.count(Reason::PassNdp), 3);
}

#[test]
fn flow_events_arrive_through_the_async_reader() {
    let Some(mut f) = fixture("flow_events_arrive_through_the_async_reader") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut events = runtime.block_on(async {
        f.dp.take_flow_events()
            .expect("reader")
            .into_async()
            .expect("async reader")
    });
    assert!(matches!(
        f.dp.take_flow_events(),
        Err(redirect_ebpf::DatapathError::EventsTaken)
    ));
    let frame = packet(A4, B4, tcp(40000, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &frame, 0).retval, TC_ACT_SHOT);
    let event = runtime
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(2), events.next()).await
        })
        .expect("an event within 2s")
        .expect("event");
    assert_eq!(event.reason(), Some(Reason::DropNoPolicy));
    assert_eq!(event.dport, 80);
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let Some(mut f) = fixture("ipv6_extension_headers_are_skipped") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 443, 16),
        PolicyValue::allow(1),
    );
    const HOP_BY_HOP: u8 = 0;
    const DEST_OPTS: u8 = 60;
    const FRAGMENT: u8 = 44;
    let pad_n = [1, 4, 0, 0, 0, 0];
    let with = |ext: Vec<(u8, [u8; 6])>, port: u16| {
        let mut p = packet(A6, "fd00:201::5", tcp(40000, port));
        p.ipv6_ext = ext;
        p.frame()
    };
    let ok = with(vec![(HOP_BY_HOP, pad_n), (DEST_OPTS, pad_n)], 443);
    assert_eq!(run(&f.dp, Hook::FromPod, &ok, 0).retval, TC_ACT_OK);
    let other_port = with(vec![(HOP_BY_HOP, pad_n)], 444);
    assert_eq!(
        run(&f.dp, Hook::FromPod, &other_port, 0).retval,
        TC_ACT_SHOT
    );
    // First fragment (offset 0, more fragments): ports are there.
    let first = with(vec![(FRAGMENT, [0, 1, 0, 0, 0, 9])], 443);
    assert_eq!(run(&f.dp, Hook::FromPod, &first, 0).retval, TC_ACT_OK);
    // Later fragment (offset 8 * 8): no ports; it passes behind its
    // allowed first fragment (same id 9), not without one (id 10).
    let later = with(vec![(FRAGMENT, [0, 64, 0, 0, 0, 9])], 443);
    assert_eq!(run(&f.dp, Hook::FromPod, &later, 0).retval, TC_ACT_OK);
    let stray = with(vec![(FRAGMENT, [0, 64, 0, 0, 0, 10])], 443);
    assert_eq!(run(&f.dp, Hook::FromPod, &stray, 0).retval, TC_ACT_SHOT);
    // More extension headers than the program walks: fail closed.
    let deep = with(vec![(DEST_OPTS, pad_n); 5], 443);
    assert_eq!(run(&f.dp, Hook::FromPod, &deep, 0).retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropFragment), 1);
    assert_eq!(f.count(Reason::DropMalformed), 1);
}

#[test]
fn a_pod_flow_colliding_with_a_proxy_upstream_tuple_is_still_judged() {
    let Some(f) = fixture("proxy_upstream_collision") else {
        return;
    };
    // The proxy's upstream connection from A's address to B, as to_pod
    // tracks it for a packet from the proxy's cgroup (tests/netns.rs)...
    let Fixture { mut dp, _pins } = f;
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[10, 200, 1, 2]);
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&[10, 200, 2, 2]);
    dp.put_conntrack_entry(
        redirect_ebpf::CtKey {
            saddr,
            daddr,
            sport: 40001u16.to_be(),
            dport: 53u16.to_be(),
            protocol: UDP,
            family: 4,
            pad: 0,
        },
        redirect_ebpf::CtEntry {
            last_seen_ns: now_monotonic_ns(),
            src_identity: 1,
            dst_identity: ID_B,
            hook: Hook::ToPod.code(),
            flags: redirect_ebpf::CT_PROXY_UPSTREAM,
            ..Default::default()
        },
    )
    .unwrap();
    let f = Fixture { dp, _pins };
    let upstream = packet(
        A4,
        B4,
        L4::Udp {
            sport: 40001,
            dport: 53,
        },
    )
    .frame();
    // ...and a packet from pod A with the same tuple is another flow: with
    // no policy entry allowing it, it is dropped, not passed as established.
    assert_eq!(run(&f.dp, Hook::FromPod, &upstream, 0).retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropNoPolicy), 1);
}

#[test]
fn a_new_syn_on_an_old_tuple_gets_a_policy_decision() {
    let Some(mut f) = fixture("syn_on_old_tuple") else {
        return;
    };
    f.allow_a_to_b_tcp80();
    let syn = packet(A4, B4, tcp(40000, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &syn, 0).retval, TC_ACT_OK);
    // The allow goes away.
    f.dp.apply_policy(&[PolicyChange::Delete(key(
        ID_B,
        EP_A,
        Direction::Egress,
        TCP,
        80,
        16,
    ))])
    .unwrap();
    let mut ack = syn.clone();
    ack[14 + 20 + 13] = 0x10;
    // Issue 13 (finding 4): a revocation reaches established flows too.
    assert_eq!(
        run(&f.dp, Hook::FromPod, &ack, 0).retval,
        TC_ACT_SHOT,
        "a revoked flow's established packets are dropped"
    );
    // A new connection reusing the tuple is judged again: denied now.
    assert_eq!(run(&f.dp, Hook::FromPod, &syn, 0).retval, TC_ACT_SHOT);
}

/// (verdict, reason, endpoint, direction, cookie) of an event.
fn summary(ev: &FlowEvent) -> (u8, Option<Reason>, u16, u8, u32) {
    (
        ev.verdict,
        ev.reason(),
        ev.endpoint_id,
        ev.direction,
        ev.rule_cookie,
    )
}

const EGRESS: u8 = Direction::Egress.code();
const INGRESS: u8 = Direction::Ingress.code();

#[test]
fn an_audited_allow_passes_and_names_the_rule_that_would_drop() {
    let Some(mut f) = fixture("an_audited_allow_passes_and_names_the_rule_that_would_drop") else {
        return;
    };
    f.stop_tracing_new_flows();
    // An audited deny rule (cookie 42) would drop port 80; port 81 only
    // its default deny (cookie 0).
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::allow(42).audited(),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 81, 16),
        PolicyValue::allow(0).audited(),
    );
    let syn = packet(A4, WORLD4, tcp(40000, 80)).frame();
    let r = run(&f.dp, Hook::FromPod, &syn, 0);
    assert_eq!(r.retval, TC_ACT_OK);
    assert_eq!(r.mark & MARK_MASK, MARK_POLICY_DONE);
    let mut ack = syn.clone();
    ack[14 + 20 + 13] = 0x10;
    assert_eq!(run(&f.dp, Hook::FromPod, &ack, 0).retval, TC_ACT_OK);
    let other = packet(A4, WORLD4, tcp(40001, 81)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &other, 0).retval, TC_ACT_OK);
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (EVENT_AUDIT, Some(Reason::AuditDenied), EP_A, EGRESS, 42),
            (EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, EGRESS, 0),
        ],
        "one AUDIT event per new flow, none for its established packets, \
         though new flows are not traced"
    );
    assert!(events[0].is_audit() && !events[0].is_drop());
    assert_eq!(events[0].dport, 80);
    assert_eq!(f.count(Reason::AuditDenied), 1);
    assert_eq!(f.count(Reason::AuditNoPolicy), 1);
    assert_eq!(f.count(Reason::PassEstablished), 1);
    assert_eq!(f.count(Reason::PassPolicy), 0);
}

#[test]
fn the_audit_event_names_the_audited_side_of_a_local_flow() {
    let Some(mut f) = fixture("the_audit_event_names_the_audited_side_of_a_local_flow") else {
        return;
    };
    // A's egress is enforced and allows; B's ingress would be dropped by
    // an audited rule (cookie 77).
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 80, 16),
        PolicyValue::allow(77).audited(),
    );
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    // Tracing is on: A's enforced egress reports FORWARDED; the AUDIT
    // event takes the place of B's.
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_A, EGRESS, 1),
            (EVENT_AUDIT, Some(Reason::AuditDenied), EP_B, INGRESS, 77)
        ]
    );
    assert_eq!(
        (events[1].src_identity, events[1].dst_identity),
        (ID_A, ID_B)
    );
    // The conntrack entry keeps the reported (egress) decision.
    let entries = f.dp.conntrack_entries().expect("conntrack");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].1.endpoint_id, entries[0].1.rule_cookie),
        (EP_A, 1)
    );
}

#[test]
fn audit_and_no_rule_flags_never_turn_a_deny_into_a_pass() {
    let Some(mut f) = fixture("audit_and_no_rule_flags_never_turn_a_deny_into_a_pass") else {
        return;
    };
    // An audit flag on a deny means nothing: dropped as denied.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::deny(7).audited(),
    );
    // "No rule allows this": dropped as no policy.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 81, 16),
        PolicyValue::deny(0).no_rule(),
    );
    // No rule on an allow means nothing: passes as any allow.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 82, 16),
        PolicyValue::allow(5).no_rule(),
    );
    for (port, verdict) in [(80, TC_ACT_SHOT), (81, TC_ACT_SHOT), (82, TC_ACT_OK)] {
        let r = run(
            &f.dp,
            Hook::FromPod,
            &packet(A4, WORLD4, tcp(40000, port)).frame(),
            0,
        );
        assert_eq!(r.retval, verdict, "port {port}");
    }
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (1, Some(Reason::DropPolicyDenied), EP_A, EGRESS, 7),
            (1, Some(Reason::DropNoPolicy), EP_A, EGRESS, 0),
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_A, EGRESS, 5),
        ]
    );
    assert_eq!(Reason::DropNoPolicy as u8, 17);
    assert_eq!(f.count(Reason::DropPolicyDenied), 1);
    assert_eq!(f.count(Reason::DropNoPolicy), 1);
    assert_eq!(
        f.count(Reason::AuditDenied) + f.count(Reason::AuditNoPolicy),
        0
    );
}

#[test]
fn an_audited_endpoint_passes_what_its_policy_would_drop() {
    let Some(mut f) = fixture("an_audited_endpoint_passes_what_its_policy_would_drop") else {
        return;
    };
    f.stop_tracing_new_flows();
    f.set_endpoint_flags(A4, EP_A, ID_A, ENDPOINT_FLAG_AUDIT);
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 81, 16),
        PolicyValue::deny(9),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 82, 16),
        PolicyValue::deny(3).no_rule(),
    );
    // Fail closed: an entry with an unknown verdict is no policy's
    // decision, so audit mode does not pass it.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 83, 16),
        PolicyValue {
            verdict: 7,
            flags: 0,
            proxy_port: 0,
            rule_cookie: 4,
        },
    );
    let verdict = |f: &Fixture, hook: Hook, src: &str, dst: &str, port: u16| {
        run(&f.dp, hook, &packet(src, dst, tcp(40000, port)).frame(), 0).retval
    };
    // A's egress: no entry, a deny, a "no rule" deny; its ingress from the
    // world (no entry).
    assert_eq!(verdict(&f, Hook::FromPod, A4, WORLD4, 80), TC_ACT_OK);
    assert_eq!(verdict(&f, Hook::FromPod, A4, WORLD4, 81), TC_ACT_OK);
    assert_eq!(verdict(&f, Hook::FromPod, A4, WORLD4, 82), TC_ACT_OK);
    assert_eq!(verdict(&f, Hook::FromUplink, WORLD4, A4, 8080), TC_ACT_OK);
    assert_eq!(verdict(&f, Hook::ToPod, "10.0.0.1", A4, 8080), TC_ACT_OK);
    assert_eq!(verdict(&f, Hook::FromPod, A4, WORLD4, 83), TC_ACT_SHOT);
    // B's ingress is enforced: A's audit mode does not reach it.
    assert_eq!(verdict(&f, Hook::FromPod, A4, B4, 80), TC_ACT_SHOT);
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, EGRESS, 0),
            (EVENT_AUDIT, Some(Reason::AuditDenied), EP_A, EGRESS, 9),
            (EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, EGRESS, 3),
            (EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, INGRESS, 0),
            (EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, INGRESS, 0),
            (1, Some(Reason::DropPolicyDenied), EP_A, EGRESS, 4),
            (1, Some(Reason::DropNoPolicy), EP_B, INGRESS, 0),
        ]
    );
    assert_eq!(
        (events[3].hook(), events[4].hook()),
        (Some(Hook::FromUplink), Some(Hook::ToPod))
    );
    assert_eq!(f.count(Reason::AuditNoPolicy), 4);
    assert_eq!(f.count(Reason::AuditDenied), 1);
    assert_eq!(f.count(Reason::PassPolicy), 0);
}

#[test]
fn an_endpoint_without_the_audit_flag_still_drops() {
    let Some(mut f) = fixture("an_endpoint_without_the_audit_flag_still_drops") else {
        return;
    };
    // A audits, B does not: B's packets, like those A passes above, drop.
    f.set_endpoint_flags(A4, EP_A, ID_A, ENDPOINT_FLAG_AUDIT);
    f.upsert(
        key(0, EP_B, Direction::Egress, TCP, 81, 16),
        PolicyValue::deny(9),
    );
    let verdict = |f: &Fixture, hook: Hook, src: &str, dst: &str, port: u16| {
        run(&f.dp, hook, &packet(src, dst, tcp(40000, port)).frame(), 0).retval
    };
    assert_eq!(verdict(&f, Hook::FromPod, B4, WORLD4, 80), TC_ACT_SHOT);
    assert_eq!(verdict(&f, Hook::FromPod, B4, WORLD4, 81), TC_ACT_SHOT);
    assert_eq!(verdict(&f, Hook::FromUplink, WORLD4, B4, 8080), TC_ACT_SHOT);
    assert_eq!(verdict(&f, Hook::ToPod, "10.0.0.1", B4, 8080), TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropNoPolicy), 3);
    assert_eq!(f.count(Reason::DropPolicyDenied), 1);
    assert!(f.events().iter().all(FlowEvent::is_drop));
}

#[test]
fn an_audited_endpoint_keeps_its_established_flows_when_policy_changes() {
    let Some(mut f) = fixture("an_audited_endpoint_keeps_its_established_flows") else {
        return;
    };
    f.stop_tracing_new_flows();
    // A audits, B does not; both may reach the world on 443.
    f.set_endpoint_flags(A4, EP_A, ID_A, ENDPOINT_FLAG_AUDIT);
    for ep in [EP_A, EP_B] {
        f.upsert(
            key(0, ep, Direction::Egress, TCP, 443, 16),
            PolicyValue::allow(1),
        );
    }
    let (mut from_a, mut from_b) = (
        packet(A4, WORLD4, tcp(40000, 443)),
        packet(B4, WORLD4, tcp(40000, 443)),
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &from_a.frame(), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &from_b.frame(), 0).retval,
        TC_ACT_OK
    );
    // The allows go away (a new policy epoch) and both flows continue.
    for ep in [EP_A, EP_B] {
        f.dp.apply_policy(&[PolicyChange::Delete(key(
            0,
            ep,
            Direction::Egress,
            TCP,
            443,
            16,
        ))])
        .expect("apply policy");
    }
    from_a.tcp_flags = 0x10;
    from_b.tcp_flags = 0x10;
    assert_eq!(
        run(&f.dp, Hook::FromPod, &from_a.frame(), 0).retval,
        TC_ACT_OK,
        "an audited endpoint's flow was revoked"
    );
    f.dp.bump_epoch().expect("bump epoch");
    assert_eq!(
        run(&f.dp, Hook::FromUplink, &syn_ack(WORLD4, A4, 443, 40000), 0).retval,
        TC_ACT_OK,
        "the reply of an audited endpoint's flow was revoked"
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &from_b.frame(), 0).retval,
        TC_ACT_SHOT
    );
    assert_eq!(f.count(Reason::DropRevoked), 1);
    // Revocation checks report nothing of their own (and the flows'
    // first packets, plain allows, were not traced).
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [(1, Some(Reason::DropRevoked), EP_B, EGRESS, 1)]
    );
}

#[test]
fn a_flow_between_local_pods_reports_each_sides_policy_verdict() {
    let Some(mut f) = fixture("a_flow_between_local_pods_reports_each_sides_policy_verdict") else {
        return;
    };
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::allow(5),
    );
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 80, 16),
        PolicyValue::allow(6),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 443, 16),
        PolicyValue::allow(7),
    );
    let verdict = |f: &Fixture, dst: &str, sport: u16, dport: u16| {
        run(
            &f.dp,
            Hook::FromPod,
            &packet(A4, dst, tcp(sport, dport)).frame(),
            0,
        )
        .retval
    };
    assert_eq!(verdict(&f, B4, 40000, 80), TC_ACT_OK);
    // Leaving the node, only A's egress decides: one event.
    assert_eq!(verdict(&f, WORLD4, 40000, 443), TC_ACT_OK);
    // Untraced, neither side reports a flow that passes.
    f.stop_tracing_new_flows();
    assert_eq!(verdict(&f, B4, 40001, 80), TC_ACT_OK);
    let events = f.events();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_A, EGRESS, 5),
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_B, INGRESS, 6),
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_A, EGRESS, 7),
        ]
    );
    for ev in &events[..2] {
        assert_eq!((ev.src_identity, ev.dst_identity), (ID_A, ID_B));
        assert_eq!((ev.sport, ev.dport), (40000, 80));
        assert_eq!(ev.hook(), Some(Hook::FromPod));
        assert_eq!((ev.proxy_port, ev.redirected), (0, 0));
    }
    // Each packet is counted once; conntrack keeps the egress decision.
    assert_eq!(f.count(Reason::PassPolicy), 3);
    let entries = f.dp.conntrack_entries().expect("conntrack");
    let local: Vec<_> = entries
        .iter()
        .filter(|(k, _)| k.dport == 80u16.to_be())
        .map(|(_, e)| (e.endpoint_id, e.direction, e.rule_cookie, e.proxy_port))
        .collect();
    assert_eq!(local, [(EP_A, EGRESS, 5, 0); 2]);
}

#[test]
fn each_sides_event_is_charged_to_its_own_endpoint() {
    let Some(mut f) = fixture("each_sides_event_is_charged_to_its_own_endpoint") else {
        return;
    };
    // Budgets are per CPU: stay on one.
    let me = nix::unistd::Pid::from_raw(0);
    let allowed = nix::sched::sched_getaffinity(me).expect("CPU affinity");
    let first = (0..nix::sched::CpuSet::count())
        .find(|&i| allowed.is_set(i).unwrap_or(false))
        .expect("an allowed CPU");
    let mut one = nix::sched::CpuSet::new();
    one.set(first).expect("CPU set");
    nix::sched::sched_setaffinity(me, &one).expect("pin to one CPU");
    let mut config = f.dp.config().expect("config");
    config.events_per_second = 1;
    f.dp.set_config(config).expect("set config");
    f.allow_a_to_b_tcp80();
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 443, 16),
        PolicyValue::allow(3),
    );
    let started = now_monotonic_ns();
    // A's one event this second...
    let to_world = packet(A4, WORLD4, tcp(40000, 443)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &to_world, 0).retval, TC_ACT_OK);
    // ...so only B's side of this flow is reported.
    let to_b = packet(A4, B4, tcp(40000, 80)).frame();
    assert_eq!(run(&f.dp, Hook::FromPod, &to_b, 0).retval, TC_ACT_OK);
    if now_monotonic_ns() - started >= 1_000_000_000 {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP each_sides_event_is_charged_to_its_own_endpoint: the budget window ended"
        );
        return;
    }
    assert_eq!(
        f.events().iter().map(summary).collect::<Vec<_>>(),
        [
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_A, EGRESS, 3),
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_B, INGRESS, 2),
        ]
    );
    assert_eq!(f.dp.counters().expect("counters").events_suppressed, 1);
}

#[test]
fn a_side_that_passes_only_under_audit_is_never_reported_forwarded() {
    let Some(mut f) = fixture("a_side_that_passes_only_under_audit_is_never_reported_forwarded")
    else {
        return;
    };
    // Both endpoints audit and no entry allows A -> B.
    f.set_endpoint_flags(A4, EP_A, ID_A, ENDPOINT_FLAG_AUDIT);
    f.set_endpoint_flags(B4, EP_B, ID_B, ENDPOINT_FLAG_AUDIT);
    let r = run(
        &f.dp,
        Hook::FromPod,
        &packet(A4, B4, tcp(40000, 80)).frame(),
        0,
    );
    assert_eq!(r.retval, TC_ACT_OK);
    // One AUDIT event, for the first side checked; B's ingress, audited
    // too, is not reported as FORWARDED although tracing is on.
    assert_eq!(
        f.events().iter().map(summary).collect::<Vec<_>>(),
        [(EVENT_AUDIT, Some(Reason::AuditNoPolicy), EP_A, EGRESS, 0)]
    );
    assert_eq!(f.count(Reason::AuditNoPolicy), 1);
}

// ------------------------------------------------ extended protocols

/// The extended protocols of a policy (VRRP, IGMP, GRE, IPIP, IPv6-in-IP,
/// ESP, AH): no ports, looked up with port 0.
const EXTENDED: [(&str, u8); 7] = [
    ("VRRP", 112),
    ("IGMP", 2),
    ("GRE", 47),
    ("IPIP", 4),
    ("IPV6", 41),
    ("ESP", 50),
    ("AH", 51),
];
const WORLD6: &str = "fd00:201::5";
const HOP_BY_HOP: u8 = 0;
const DEST_OPTS: u8 = 60;
const FRAGMENT: u8 = 44;
const PAD_N: [u8; 6] = [1, 4, 0, 0, 0, 0];

/// A packet of IP protocol `proto` with a few bytes of payload.
fn raw(src: &str, dst: &str, proto: u8) -> common::Packet {
    packet(
        src,
        dst,
        L4::Raw {
            proto,
            payload: vec![0, 0, 0x88, 0xbe, 1, 2, 3, 4, 5, 6, 7, 8],
        },
    )
}

/// A protocol-wide allow (no port bits) for `ep` towards any identity.
fn allow_protocol(f: &mut Fixture, ep: u16, dir: Direction, proto: u8, cookie: u32) {
    f.upsert(key(0, ep, dir, proto, 0, 0), PolicyValue::allow(cookie));
}

#[test]
fn each_extended_protocol_passes_only_where_its_own_entry_allows_it() {
    let Some(mut f) = fixture("each_extended_protocol_passes_only_where_its_own_entry_allows_it")
    else {
        return;
    };
    let mut denied = 0;
    for (i, (name, proto)) in EXTENDED.iter().enumerate() {
        for (src, dst) in [(A4, WORLD4), (A6, WORLD6)] {
            let frame = raw(src, dst, *proto).frame();
            assert_eq!(
                run(&f.dp, Hook::FromPod, &frame, 0).retval,
                TC_ACT_SHOT,
                "{name} {src} before its entry"
            );
            denied += 1;
        }
        allow_protocol(&mut f, EP_A, Direction::Egress, *proto, 100 + i as u32);
        for (src, dst) in [(A4, WORLD4), (A6, WORLD6)] {
            let frame = raw(src, dst, *proto).frame();
            assert_eq!(
                run(&f.dp, Hook::FromPod, &frame, 0).retval,
                TC_ACT_OK,
                "{name} {src} with its entry"
            );
        }
        // The next protocol is not allowed by this one's entry.
        if let Some((next, proto)) = EXTENDED.get(i + 1) {
            let frame = raw(A4, "10.201.0.6", *proto).frame();
            assert_eq!(
                run(&f.dp, Hook::FromPod, &frame, 0).retval,
                TC_ACT_SHOT,
                "{next} under {name}'s entry"
            );
            denied += 1;
        }
    }
    assert_eq!(f.count(Reason::DropNoPolicy), denied);
    assert_eq!(f.count(Reason::PassPolicy), 2 * EXTENDED.len() as u64);
    // A port-wide TCP entry admits no extended protocol, nor does an
    // entry of another protocol with port 0 bits set.
    let Some(mut g) = fixture("extended_protocols_and_port_entries") else {
        return;
    };
    g.upsert(
        key(0, EP_A, Direction::Egress, TCP, 0, 0),
        PolicyValue::allow(1),
    );
    g.upsert(
        key(0, EP_A, Direction::Egress, UDP, 0, 16),
        PolicyValue::allow(2),
    );
    for (name, proto) in EXTENDED {
        let frame = raw(A4, WORLD4, proto).frame();
        assert_eq!(
            run(&g.dp, Hook::FromPod, &frame, 0).retval,
            TC_ACT_SHOT,
            "{name}"
        );
    }
}

#[test]
fn an_extended_protocol_deny_beats_an_l3_allow() {
    let Some(mut f) = fixture("an_extended_protocol_deny_beats_an_l3_allow") else {
        return;
    };
    // B admits everything from A at L3, but denies GRE from it.
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, 0, 0, 0),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, 47, 0, 0),
        PolicyValue::deny(2),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, 0, 0, 0),
        PolicyValue::allow(3),
    );
    for (src, dst) in [(A4, B4), (A6, B6)] {
        let esp = raw(src, dst, 50).frame();
        assert_eq!(run(&f.dp, Hook::FromPod, &esp, 0).retval, TC_ACT_OK);
        let gre = raw(src, dst, 47).frame();
        assert_eq!(run(&f.dp, Hook::FromPod, &gre, 0).retval, TC_ACT_SHOT);
    }
    assert_eq!(f.count(Reason::DropPolicyDenied), 2);
}

#[test]
fn a_gre_reply_from_the_allowed_peer_passes_as_a_reply() {
    let Some(mut f) = fixture("a_gre_reply_from_the_allowed_peer_passes_as_a_reply") else {
        return;
    };
    allow_protocol(&mut f, EP_A, Direction::Egress, 47, 1);
    for (a, peer, other) in [(A4, WORLD4, "10.201.0.6"), (A6, WORLD6, "fd00:201::6")] {
        let out = raw(a, peer, 47).frame();
        assert_eq!(run(&f.dp, Hook::FromPod, &out, 0).retval, TC_ACT_OK);
        // A has no ingress entry: the peer's GRE passes as the reply of
        // the tracked flow (addresses and protocol), another host's not.
        let back = raw(peer, a, 47).frame();
        assert_eq!(run(&f.dp, Hook::FromUplink, &back, 0).retval, TC_ACT_OK);
        let stranger = raw(other, a, 47).frame();
        assert_eq!(
            run(&f.dp, Hook::FromUplink, &stranger, 0).retval,
            TC_ACT_SHOT
        );
        // Nor does the peer's ESP ride on the GRE flow.
        let esp = raw(peer, a, 50).frame();
        assert_eq!(run(&f.dp, Hook::FromUplink, &esp, 0).retval, TC_ACT_SHOT);
    }
    assert_eq!(f.count(Reason::PassPolicy), 2);
    assert_eq!(f.count(Reason::PassReply), 2);
    assert_eq!(f.count(Reason::DropNoPolicy), 4);
}

/// An AH header (RFC 4302: next header, length in 4-byte units minus 2,
/// reserved, SPI, sequence, 12 bytes of ICV) carrying a TCP SYN to `dport`.
fn ah_over_tcp(dport: u16) -> Vec<u8> {
    let mut p = vec![TCP, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
    p.extend_from_slice(&[0xa5; 12]);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

#[test]
fn ah_is_the_protocol_in_both_families_not_what_it_carries() {
    let Some(mut f) = fixture("ah_is_the_protocol_in_both_families_not_what_it_carries") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80, 16),
        PolicyValue::allow(1),
    );
    let ah = |src: &str, dst: &str, ext: Vec<(u8, [u8; 6])>| {
        let mut p = packet(
            src,
            dst,
            L4::Raw {
                proto: 51,
                payload: ah_over_tcp(80),
            },
        );
        p.ipv6_ext = ext;
        p.frame()
    };
    // TCP/80 is allowed, but an AH-protected TCP/80 is AH: dropped, in
    // IPv6 (where AH could be walked past) as in IPv4.
    for frame in [
        ah(A4, WORLD4, vec![]),
        ah(A6, WORLD6, vec![]),
        ah(A6, WORLD6, vec![(HOP_BY_HOP, PAD_N)]),
    ] {
        assert_eq!(run(&f.dp, Hook::FromPod, &frame, 0).retval, TC_ACT_SHOT);
    }
    assert_eq!(f.count(Reason::DropNoPolicy), 3);
    // Allowing AH admits it, whatever it carries; an AH deny drops it
    // although what it carries is allowed.
    allow_protocol(&mut f, EP_A, Direction::Egress, 51, 2);
    for frame in [
        ah(A4, WORLD4, vec![]),
        ah(A6, WORLD6, vec![(DEST_OPTS, PAD_N)]),
    ] {
        assert_eq!(run(&f.dp, Hook::FromPod, &frame, 0).retval, TC_ACT_OK);
    }
    f.upsert(
        key(0, EP_A, Direction::Egress, 51, 0, 0),
        PolicyValue::deny(3),
    );
    let again = ah(A6, "fd00:201::7", vec![]);
    assert_eq!(run(&f.dp, Hook::FromPod, &again, 0).retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropPolicyDenied), 1);
}

#[test]
fn extension_headers_before_an_extended_protocol_are_walked_within_the_bound() {
    let Some(mut f) =
        fixture("extension_headers_before_an_extended_protocol_are_walked_within_the_bound")
    else {
        return;
    };
    allow_protocol(&mut f, EP_A, Direction::Egress, 47, 1);
    let gre = |ext: Vec<(u8, [u8; 6])>, dst: &str| {
        let mut p = raw(A6, dst, 47);
        p.ipv6_ext = ext;
        p.frame()
    };
    // Up to four extension headers: judged as GRE.
    let four = gre(
        vec![
            (HOP_BY_HOP, PAD_N),
            (DEST_OPTS, PAD_N),
            (43, [0, 0, 0, 0, 0, 0]),
            (DEST_OPTS, PAD_N),
        ],
        WORLD6,
    );
    assert_eq!(run(&f.dp, Hook::FromPod, &four, 0).retval, TC_ACT_OK);
    // Five: the walk stops before the protocol; dropped as malformed
    // although GRE is allowed (never judged by a guess).
    let five = gre(vec![(DEST_OPTS, PAD_N); 5], "fd00:201::6");
    assert_eq!(run(&f.dp, Hook::FromPod, &five, 0).retval, TC_ACT_SHOT);
    // Truncated: the header chain promises a hop-by-hop header the frame
    // does not hold.
    let mut cut = gre(vec![(HOP_BY_HOP, PAD_N)], "fd00:201::7");
    cut.truncate(14 + 40 + 4);
    assert_eq!(run(&f.dp, Hook::FromPod, &cut, 0).retval, TC_ACT_SHOT);
    // An IPv4 header shorter than its minimum (IHL 4): nothing after it
    // can be located. (BPF_PROG_TEST_RUN refuses frames that end inside
    // the IPv4 header, so this stands for a truncated one.)
    let mut short = raw(A4, WORLD4, 47).frame();
    short[14] = 0x44;
    assert_eq!(run(&f.dp, Hook::FromPod, &short, 0).retval, TC_ACT_SHOT);
    assert_eq!(f.count(Reason::DropMalformed), 3);
    assert_eq!(f.count(Reason::PassPolicy), 1);
}

#[test]
fn fragments_of_an_extended_protocol_follow_their_first_fragment() {
    let Some(mut f) = fixture("fragments_of_an_extended_protocol_follow_their_first_fragment")
    else {
        return;
    };
    allow_protocol(&mut f, EP_A, Direction::Egress, 50, 1);
    let esp4 = |proto: u8, offset: u16, more: bool, id: u16| {
        let mut p = raw(A4, WORLD4, proto);
        p.fragment_offset = offset;
        p.more_fragments = more;
        p.ip_id = id;
        p.frame()
    };
    // IPv4: first fragment judged (ESP allowed), its later fragment
    // follows; a later fragment without a passed first one drops, and so
    // does one of a denied protocol's datagram.
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp4(50, 0, true, 7), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp4(50, 8, false, 7), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp4(50, 8, false, 8), 0).retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp4(47, 0, true, 9), 0).retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp4(47, 8, false, 9), 0).retval,
        TC_ACT_SHOT
    );
    // A tiny first fragment (less than 8 bytes of ESP) is not judged.
    let mut tiny = raw(A4, WORLD4, 50);
    tiny.more_fragments = true;
    tiny.ip_id = 10;
    tiny.l4_len = Some(4);
    assert_eq!(
        run(&f.dp, Hook::FromPod, &tiny.frame(), 0).retval,
        TC_ACT_SHOT
    );
    // IPv6: the fragment header's next header is the protocol.
    let esp6 = |offset_units: u8, more: u8, id: u8| {
        let mut p = raw(A6, WORLD6, 50);
        p.ipv6_ext = vec![(FRAGMENT, [0, (offset_units << 3) | more, 0, 0, 0, id])];
        p.frame()
    };
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp6(0, 1, 3), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp6(8, 0, 3), 0).retval,
        TC_ACT_OK
    );
    assert_eq!(
        run(&f.dp, Hook::FromPod, &esp6(8, 0, 4), 0).retval,
        TC_ACT_SHOT
    );
    assert_eq!(f.count(Reason::PassFragment), 2);
    assert_eq!(f.count(Reason::DropFragment), 4);
    assert_eq!(f.count(Reason::DropNoPolicy), 1);
}
