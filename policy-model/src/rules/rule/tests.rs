use super::*;

#[test]
fn protocol_helpers_round_trip() {
    for p in [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::Icmpv6,
        Protocol::Any,
    ] {
        assert_eq!(Protocol::from_number(p.number()), Some(p));
        assert_eq!(Protocol::parse(&p.to_string()), Some(p));
    }
    assert_eq!(Protocol::parse("tcp"), Some(Protocol::Tcp));
    assert_eq!(Protocol::parse("ICMPV6"), Some(Protocol::Icmpv6));
    assert_eq!(Protocol::parse("GRE"), None);
    assert_eq!(Protocol::from_number(47), None);
}
