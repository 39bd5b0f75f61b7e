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
    assert_eq!(Protocol::parse("GREEN"), None);
    assert_eq!(Protocol::from_number(99), None);
}

#[test]
fn extended_protocols_parse_in_any_case_with_their_iana_numbers() {
    let want = [
        ("VRRP", Protocol::Vrrp, 112),
        ("IGMP", Protocol::Igmp, 2),
        ("GRE", Protocol::Gre, 47),
        ("IPIP", Protocol::Ipip, 4),
        ("IPV6", Protocol::Ipv6Encap, 41),
        ("ESP", Protocol::Esp, 50),
        ("AH", Protocol::Ah, 51),
    ];
    assert_eq!(want.len(), Protocol::EXTENDED.len());
    for (name, p, n) in want {
        assert_eq!(Protocol::parse(name), Some(p), "{name}");
        assert_eq!(
            Protocol::parse(&name.to_ascii_lowercase()),
            Some(p),
            "{name}"
        );
        assert_eq!(p.number(), n, "{name}");
        assert_eq!(Protocol::from_number(n), Some(p), "{name}");
        assert_eq!(p.to_string(), name);
        assert!(p.is_extended(), "{name}");
        assert_eq!(p.expand(), &[p], "{name} stands for itself alone");
    }
    assert_eq!(Protocol::parse("IPv6"), Some(Protocol::Ipv6Encap));
    // ANY stays TCP, UDP and SCTP: no extended protocol, no ICMP.
    assert!(!Protocol::Any.expand().iter().any(|p| p.is_extended()));
    for p in [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::Any,
    ] {
        assert!(!p.is_extended(), "{p}");
    }
}
