//! Issue 13's datapath findings on synthetic packets with
//! `BPF_PROG_TEST_RUN` (root only): each test replays what an attacker sent
//! and checks the verdict of the kernel programs. The same attacks with real
//! packets on the wire are in `agent/tests/attack_datapath.rs`.

mod common;

use std::time::Duration;

use common::{L4, Packet, PinDir, TC_ACT_OK, TC_ACT_SHOT, packet, root_or_skip, run};
use redirect_ebpf::{
    Datapath, Direction, EndpointInfo, FlowEvent, Hook, PolicyChange, PolicyKey, PolicyValue,
};

const A4: &str = "10.200.1.2";
const B4: &str = "10.200.2.2";
const NODE4: &str = "10.200.1.1";
const WORLD4: &str = "10.201.0.5";
const WORLD4_OTHER: &str = "10.201.0.9";
const WORLD4_ROUTER: &str = "10.201.0.1";
const A6: &str = "fd00:200::a:2";
const B6: &str = "fd00:200::b:2";
const WORLD6: &str = "fd00:201::5";
const WORLD6_OTHER: &str = "fd00:201::9";
const EP_A: u16 = 11;
const EP_B: u16 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

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
    // The node's own address (the pods' gateway) is host.
    dp.set_ipcache(format!("{NODE4}/32").parse().expect("prefix"), 1)
        .expect("ipcache");
    Some(Fixture { dp, _pins: pins })
}

fn key(identity: u32, ep: u16, dir: Direction, proto: u8, port: u16) -> PolicyKey {
    PolicyKey::new(identity, ep, dir, proto, port, 16).expect("valid key")
}

impl Fixture {
    fn upsert(&mut self, key: PolicyKey, value: PolicyValue) {
        self.dp
            .apply_policy(&[PolicyChange::Upsert(key, value)])
            .expect("apply policy");
    }

    fn delete(&mut self, key: PolicyKey) {
        self.dp
            .apply_policy(&[PolicyChange::Delete(key)])
            .expect("apply policy");
    }

    fn verdict(&self, hook: Hook, p: &Packet) -> u32 {
        run(&self.dp, hook, &p.frame(), 0).retval
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut reader = self.dp.take_flow_events().expect("events reader");
        std::iter::from_fn(|| reader.try_next()).collect()
    }

    /// Makes every conntrack entry look `by` older.
    fn age_conntrack(&mut self, by: Duration) {
        for (k, mut e) in self.dp.conntrack_entries().expect("conntrack") {
            e.last_seen_ns = e.last_seen_ns.saturating_sub(by.as_nanos() as u64);
            self.dp.put_conntrack_entry(k, e).expect("put entry");
        }
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Packet {
    let mut p = packet(src, dst, L4::Tcp { sport, dport });
    p.tcp_flags = flags;
    p
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    packet(src, dst, L4::Udp { sport, dport })
}

fn icmp_error(outer_src: &str, outer_dst: &str, quoted: &Packet) -> Packet {
    let ty = if quoted.src.is_ipv4() { 3 } else { 1 };
    packet(
        outer_src,
        outer_dst,
        L4::IcmpError {
            ty,
            inner: quoted.ip_packet(),
        },
    )
}

// ---------------------------------------------------------------- finding 5

#[test]
fn a_syn_on_an_old_tuple_is_judged_in_either_direction() {
    let Some(mut f) = fixture("syn_on_old_tuple_either_direction") else {
        return;
    };
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 80),
        PolicyValue::allow(2),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80),
        PolicyValue::allow(3),
    );
    // client A:45000 -> B:80, answered.
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 45000, B4, 80, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(B4, 80, A4, 45000, SYN_ACK)),
        TC_ACT_OK
    );
    // The denied peer B opens peer:80 -> client:45000: a new connection,
    // B's egress allows nothing.
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(B4, 80, A4, 45000, SYN)),
        TC_ACT_SHOT,
        "a SYN in the reply direction of an old tuple passed as a reply"
    );
    // The same from the world, on a tuple A once used to reach it.
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 45001, WORLD4, 80, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, 45001, SYN)),
        TC_ACT_SHOT,
        "a world SYN on an old tuple reached a pod whose ingress allows nothing"
    );
    // IPv6 too.
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 443),
        PolicyValue::allow(4),
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A6, 45002, WORLD6, 443, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD6, 443, A6, 45002, SYN)),
        TC_ACT_SHOT
    );
    // A SYN-ACK (the reply to a SYN) still passes as a reply.
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD6, 443, A6, 45002, SYN_ACK)),
        TC_ACT_OK
    );
}

#[test]
fn rst_and_both_fins_end_a_tcp_entry_within_seconds() {
    let Some(mut f) = fixture("rst_and_fins_end_tcp_entries") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 80),
        PolicyValue::allow(1),
    );
    // Three connections: one reset, one closed with FINs, one left open.
    for sport in [41000, 41001, 41002] {
        assert_eq!(
            f.verdict(Hook::FromPod, &tcp(A4, sport, WORLD4, 80, SYN)),
            TC_ACT_OK
        );
        assert_eq!(
            f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, sport, SYN_ACK)),
            TC_ACT_OK
        );
    }
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 41000, WORLD4, 80, RST)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 41001, WORLD4, 80, FIN_ACK)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, 41001, FIN_ACK)),
        TC_ACT_OK
    );
    // Eleven seconds later (aged in the map, no sleeping): the closed
    // connections' entries are gone, the open one's is not.
    f.age_conntrack(Duration::from_secs(11));
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, 41002, ACK)),
        TC_ACT_OK,
        "an open connection's entry expired"
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, 41000, ACK)),
        TC_ACT_SHOT,
        "a reset connection's entry still lets the peer in 11 s later"
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 80, A4, 41001, ACK)),
        TC_ACT_SHOT,
        "a closed connection's entry still lets the peer in 11 s later"
    );
}

// ---------------------------------------------------------------- finding 3

#[test]
fn icmp_errors_pass_only_toward_the_quoted_sender_from_the_path() {
    let Some(mut f) = fixture("icmp_errors_outer_addresses") else {
        return;
    };
    // A's one allowed flow: DNS to the world; and A -> B on TCP/80.
    f.upsert(
        key(0, EP_A, Direction::Egress, UDP, 53),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(ID_B, EP_A, Direction::Egress, TCP, 80),
        PolicyValue::allow(2),
    );
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 80),
        PolicyValue::allow(3),
    );
    let query = udp(A4, 5353, WORLD4, 53);
    let to_b = tcp(A4, 42000, B4, 80, SYN);
    assert_eq!(f.verdict(Hook::FromPod, &query), TC_ACT_OK);
    assert_eq!(f.verdict(Hook::FromPod, &to_b), TC_ACT_OK);

    // Legitimate: the destination, a world router and the node tell A.
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD4, A4, &query)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD4_ROUTER, A4, &query)),
        TC_ACT_OK,
        "a router on the world path (PMTU, TTL) must reach A"
    );
    assert_eq!(
        f.verdict(Hook::ToPod, &icmp_error(NODE4, A4, &query)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(B4, A4, &to_b)),
        TC_ACT_OK
    );

    // A, with its allowed flow, sends errors to the deny-all pod B and to
    // a denied world host.
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(A4, B4, &query)),
        TC_ACT_SHOT,
        "pod -> deny-all pod error quoting the pod's own flow"
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(A4, WORLD4_OTHER, &query)),
        TC_ACT_SHOT,
        "pod -> denied world host error quoting the pod's own flow"
    );
    // A world host sends one to B quoting A's flow.
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD4_OTHER, B4, &query)),
        TC_ACT_SHOT,
        "world -> deny-all pod error quoting someone else's flow"
    );
    // A world host claims to be a router on the pod-to-pod path.
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD4, A4, &to_b)),
        TC_ACT_SHOT,
        "world host about a flow between two local pods"
    );
    // A pod is no router: B may speak about its own flows only.
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(B4, A4, &query)),
        TC_ACT_SHOT,
        "pod B about A's world flow"
    );

    // IPv6.
    f.upsert(
        key(0, EP_A, Direction::Egress, UDP, 53),
        PolicyValue::allow(1),
    );
    let query6 = udp(A6, 5353, WORLD6, 53);
    assert_eq!(f.verdict(Hook::FromPod, &query6), TC_ACT_OK);
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD6, A6, &query6)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(A6, B6, &query6)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &icmp_error(A6, WORLD6_OTHER, &query6)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &icmp_error(WORLD6_OTHER, B6, &query6)),
        TC_ACT_SHOT
    );
}

// ---------------------------------------------------------------- finding 4

#[test]
fn a_revocation_stops_established_flows_at_their_next_packet() {
    let Some(mut f) = fixture("revocation_reaches_established_flows") else {
        return;
    };
    let a_to_b = key(ID_B, EP_A, Direction::Egress, TCP, 80);
    f.upsert(a_to_b, PolicyValue::allow(1));
    f.upsert(
        key(ID_A, EP_B, Direction::Ingress, TCP, 80),
        PolicyValue::allow(2),
    );
    let udp_out = key(0, EP_A, Direction::Egress, UDP, 5000);
    f.upsert(udp_out, PolicyValue::allow(3));
    let world_in = key(0, EP_A, Direction::Ingress, TCP, 8080);
    f.upsert(world_in, PolicyValue::allow(4));
    let echo_out = key(0, EP_A, Direction::Egress, ICMP, 8);
    f.upsert(echo_out, PolicyValue::allow(5));
    let echo = |ty: u8, src: &str, dst: &str| packet(src, dst, L4::Icmp { ty, code: 0, id: 9 });

    // Established: TCP to B, UDP to the world (server streams replies),
    // TCP from the world into A, ping.
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 43000, B4, 80, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(B4, 80, A4, 43000, SYN_ACK)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &udp(A4, 5001, WORLD4, 5000)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &udp(WORLD4, 5000, A4, 5001)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 50000, A4, 8080, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 8080, WORLD4, 50000, SYN_ACK)),
        TC_ACT_OK
    );
    assert_eq!(f.verdict(Hook::FromPod, &echo(8, A4, WORLD4)), TC_ACT_OK);
    assert_eq!(f.verdict(Hook::FromUplink, &echo(0, WORLD4, A4)), TC_ACT_OK);

    // An unrelated change: nothing established is disturbed.
    f.upsert(
        key(0, EP_B, Direction::Egress, TCP, 9999),
        PolicyValue::allow(6),
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 43000, B4, 80, ACK)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &udp(WORLD4, 5000, A4, 5001)),
        TC_ACT_OK
    );

    // Revoke everything A had.
    for k in [a_to_b, udp_out, world_in, echo_out] {
        f.delete(k);
    }
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 43000, B4, 80, ACK)),
        TC_ACT_SHOT,
        "revoked TCP flow (original direction) still passes"
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(B4, 80, A4, 43000, ACK)),
        TC_ACT_SHOT,
        "revoked TCP flow (reply direction) still passes"
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &udp(WORLD4, 5000, A4, 5001)),
        TC_ACT_SHOT,
        "revoked UDP flow: the server's stream of replies still passes"
    );
    assert_eq!(
        f.verdict(Hook::FromUplink, &tcp(WORLD4, 50000, A4, 8080, ACK)),
        TC_ACT_SHOT,
        "revoked ingress flow still passes"
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &echo(8, A4, WORLD4)),
        TC_ACT_SHOT,
        "revoked ping still passes"
    );
    // Errors about a revoked flow are not related to anything allowed.
    assert_eq!(
        f.verdict(
            Hook::FromUplink,
            &icmp_error(WORLD4, A4, &udp(A4, 5001, WORLD4, 5000))
        ),
        TC_ACT_SHOT,
        "an ICMP error about a revoked flow passed as related"
    );
    // Stays dropped; allowing it again lets a new connection in.
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 43000, B4, 80, ACK)),
        TC_ACT_SHOT
    );
    f.upsert(a_to_b, PolicyValue::allow(1));
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 43001, B4, 80, SYN)),
        TC_ACT_OK
    );
}

#[test]
fn a_revoked_identity_stops_established_flows() {
    let Some(mut f) = fixture("revoked_identity_stops_flows") else {
        return;
    };
    // A may reach the learned address 10.201.0.5 (identity 7000) only.
    f.dp.set_ipcache(format!("{WORLD4}/32").parse().unwrap(), 7000)
        .unwrap();
    f.upsert(
        key(7000, EP_A, Direction::Egress, TCP, 443),
        PolicyValue::allow(1),
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 44000, WORLD4, 443, SYN)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 44000, WORLD4, 443, ACK)),
        TC_ACT_OK
    );
    // The name expires: the address is world again.
    f.dp.remove_ipcache(format!("{WORLD4}/32").parse().unwrap())
        .unwrap();
    assert_eq!(
        f.verdict(Hook::FromPod, &tcp(A4, 44000, WORLD4, 443, ACK)),
        TC_ACT_SHOT,
        "a flow to an address whose identity was withdrawn still passes"
    );
}

// ---------------------------------------------------------------- finding 7

#[test]
fn a_from_proxy_mark_without_the_proxy_socket_is_judged_like_any_packet() {
    let Some(f) = fixture("forged_from_proxy_mark") else {
        return;
    };
    // BPF_PROG_TEST_RUN packets have no socket: exactly a forged mark.
    let mark = f.dp.config().unwrap().from_proxy_mark;
    let forged = tcp(NODE4, 40000, B4, 80, SYN).frame();
    assert_eq!(
        run(&f.dp, Hook::ToPod, &forged, mark).retval,
        TC_ACT_SHOT,
        "a from-proxy mark without the proxy's socket passed B's deny-all ingress"
    );
}

// --------------------------------------------------------------- finding 13

#[test]
fn flow_events_are_rate_limited_per_endpoint() {
    let Some(mut f) = fixture("flow_events_rate_limited") else {
        return;
    };
    const FLOOD: u16 = 3000;
    for i in 0..FLOOD {
        let p = udp(A4, 10000 + i, WORLD4, 9);
        assert_eq!(f.verdict(Hook::FromPod, &p), TC_ACT_SHOT);
    }
    // B's one denied packet is still reported.
    assert_eq!(
        f.verdict(Hook::FromPod, &udp(B4, 1, WORLD4, 9)),
        TC_ACT_SHOT
    );
    let events = f.events();
    let from_a = events.iter().filter(|e| e.endpoint_id == EP_A).count();
    let from_b = events.iter().filter(|e| e.endpoint_id == EP_B).count();
    println!("{FLOOD} denied packets from A: {from_a} events; B: {from_b}");
    assert!(
        from_a < usize::from(FLOOD) / 2,
        "{from_a} events for {FLOOD} denied packets from one endpoint"
    );
    assert!(from_a > 0, "the first drops are reported");
    assert_eq!(from_b, 1, "another endpoint's drop is reported");
}

// ---------------------------------------------------------------- fragments

#[test]
fn allowed_fragmented_udp_passes_and_fragments_cannot_smuggle_ports() {
    let Some(mut f) = fixture("fragments_tracked") else {
        return;
    };
    f.upsert(
        key(0, EP_A, Direction::Egress, UDP, 5000),
        PolicyValue::allow(1),
    );
    f.upsert(
        key(0, EP_A, Direction::Egress, TCP, 5000),
        PolicyValue::allow(2),
    );
    let frag = |dport: u16, id: u16, offset: u16, more: bool| {
        let mut p = udp(A4, 7000, WORLD4, dport);
        p.ip_id = id;
        p.fragment_offset = offset;
        p.more_fragments = more;
        p
    };
    // Allowed: the first fragment, then the rest of the datagram.
    assert_eq!(f.verdict(Hook::FromPod, &frag(5000, 7, 0, true)), TC_ACT_OK);
    assert_eq!(
        f.verdict(Hook::FromPod, &frag(5000, 7, 185, true)),
        TC_ACT_OK,
        "the second fragment of an allowed datagram"
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag(5000, 7, 370, false)),
        TC_ACT_OK
    );
    // A non-first fragment whose first fragment was never seen.
    assert_eq!(
        f.verdict(Hook::FromPod, &frag(5000, 8, 185, false)),
        TC_ACT_SHOT
    );
    // A first fragment to a denied port, then its tail.
    assert_eq!(
        f.verdict(Hook::FromPod, &frag(6000, 9, 0, true)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag(6000, 9, 185, false)),
        TC_ACT_SHOT
    );
    // A tiny first fragment: not even the ports are in it.
    let mut tiny = frag(5000, 10, 0, true);
    tiny.l4_len = Some(2);
    assert_eq!(f.verdict(Hook::FromPod, &tiny), TC_ACT_SHOT);
    // A TCP first fragment holding the ports but not the flags.
    let mut tiny_tcp = tcp(A4, 7001, WORLD4, 5000, ACK);
    tiny_tcp.more_fragments = true;
    tiny_tcp.ip_id = 11;
    tiny_tcp.l4_len = Some(8);
    assert_eq!(f.verdict(Hook::FromPod, &tiny_tcp), TC_ACT_SHOT);
    // A TCP fragment at offset 8 bytes would rewrite the flags.
    let mut tcp_first = tcp(A4, 7002, WORLD4, 5000, SYN);
    tcp_first.more_fragments = true;
    tcp_first.ip_id = 12;
    assert_eq!(f.verdict(Hook::FromPod, &tcp_first), TC_ACT_OK);
    let mut overlap = tcp_first.clone();
    overlap.fragment_offset = 1;
    overlap.more_fragments = false;
    assert_eq!(f.verdict(Hook::FromPod, &overlap), TC_ACT_SHOT);
    // The same identification from another source is another datagram.
    let mut other_src = frag(5000, 7, 185, false);
    other_src.src = B4.parse().unwrap();
    assert_eq!(f.verdict(Hook::FromPod, &other_src), TC_ACT_SHOT);

    // IPv6: fragment header (offset, M flag, 32-bit identification).
    const FRAGMENT: u8 = 44;
    let frag6 = |dport: u16, id: u8, offset_units: u16, more: bool| {
        let mut p = udp(A6, 7000, WORLD6, dport);
        let off = (offset_units << 3) | u16::from(more);
        let [hi, lo] = off.to_be_bytes();
        p.ipv6_ext = vec![(FRAGMENT, [hi, lo, 0, 0, 0, id])];
        p
    };
    assert_eq!(
        f.verdict(Hook::FromPod, &frag6(5000, 1, 0, true)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag6(5000, 1, 181, false)),
        TC_ACT_OK
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag6(5000, 2, 181, false)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag6(6000, 3, 0, true)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.verdict(Hook::FromPod, &frag6(6000, 3, 181, false)),
        TC_ACT_SHOT
    );

    // The reply direction: a large answer to an allowed query arrives in
    // fragments from the world.
    assert_eq!(
        f.verdict(Hook::FromPod, &udp(A4, 7003, WORLD4, 5000)),
        TC_ACT_OK
    );
    let mut answer = udp(WORLD4, 5000, A4, 7003);
    answer.ip_id = 13;
    answer.more_fragments = true;
    assert_eq!(f.verdict(Hook::FromUplink, &answer), TC_ACT_OK);
    answer.fragment_offset = 185;
    answer.more_fragments = false;
    assert_eq!(
        f.verdict(Hook::FromUplink, &answer),
        TC_ACT_OK,
        "the tail of a fragmented reply"
    );
}

// ------------------------------------------------- finding 9, fragmented

/// A learned address past its TTL (written with a new-flow identity)
/// refuses a new fragmented UDP datagram, first fragment and tail, while
/// the flow already open to it keeps sending fragmented datagrams.
#[test]
fn a_lingering_learned_address_admits_no_new_fragmented_datagram() {
    let Some(mut f) = fixture("lingering_fragments") else {
        return;
    };
    // A may send UDP 5000 to the name's identity 7000 only; world is denied.
    for prefix in [format!("{WORLD4}/32"), format!("{WORLD6}/128")] {
        f.dp.set_ipcache(prefix.parse().unwrap(), 7000).unwrap();
    }
    f.upsert(
        key(7000, EP_A, Direction::Egress, UDP, 5000),
        PolicyValue::allow(1),
    );
    let frag = |src: &str, dst: &str, sport: u16, id: u16, offset: u16, more: bool| {
        let mut p = udp(src, sport, dst, 5000);
        if p.src.is_ipv4() {
            p.ip_id = id;
            p.fragment_offset = offset;
            p.more_fragments = more;
        } else {
            let off = (offset << 3) | u16::from(more);
            let [hi, lo] = off.to_be_bytes();
            let [i0, i1] = id.to_be_bytes();
            p.ipv6_ext = vec![(44, [hi, lo, 0, 0, i0, i1])];
        }
        p
    };
    for (src, dst, prefix) in [
        (A4, WORLD4, format!("{WORLD4}/32")),
        (A6, WORLD6, format!("{WORLD6}/128")),
    ] {
        // A flow opened while the name was fresh.
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7100, 1, 0, true)),
            TC_ACT_OK,
            "{dst}: first fragment while the name is fresh"
        );
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7100, 1, 185, false)),
            TC_ACT_OK
        );
        // The TTL runs out while the flow is open: the address lingers,
        // new flows see world.
        f.dp.set_ipcache_lingering(prefix.parse().unwrap(), 7000, 2)
            .unwrap();
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7101, 2, 0, true)),
            TC_ACT_SHOT,
            "{dst}: the first fragment of a new datagram flow to a lingering address passed"
        );
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7101, 2, 185, false)),
            TC_ACT_SHOT,
            "{dst}: the tail of a refused first fragment passed"
        );
        // The open flow goes on, fragmented datagrams included.
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7100, 3, 0, true)),
            TC_ACT_OK,
            "{dst}: the open flow's next datagram"
        );
        assert_eq!(
            f.verdict(Hook::FromPod, &frag(src, dst, 7100, 3, 185, false)),
            TC_ACT_OK
        );
    }
}
