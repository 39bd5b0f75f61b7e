use super::*;

#[test]
fn every_address_of_every_interface_is_taken() {
    let json = br#"[
      {"ifindex":1,"ifname":"lo","addr_info":[
        {"family":"inet","local":"127.0.0.1","prefixlen":8},
        {"family":"inet","local":"10.200.0.1","prefixlen":32},
        {"family":"inet6","local":"::1","prefixlen":128}]},
      {"ifindex":2,"ifname":"pcup","addr_info":[
        {"family":"inet","local":"10.201.255.254","prefixlen":16},
        {"family":"inet6","local":"fd00:201::fffe","prefixlen":64},
        {"family":"inet6","local":"fe80::1c2d:3eff:fe4f:5a6b","prefixlen":64}]},
      {"ifindex":3,"ifname":"pc1","addr_info":[
        {"family":"inet","local":"169.254.1.1","prefixlen":32}]},
      {"ifindex":4,"ifname":"pc2","addr_info":[]},
      {"ifindex":5,"ifname":"down"}
    ]"#;
    let got = parse_ip_addr_json(json).expect("parses");
    let want: BTreeSet<IpAddr> = [
        "127.0.0.1",
        "10.200.0.1",
        "::1",
        "10.201.255.254",
        "fd00:201::fffe",
        "fe80::1c2d:3eff:fe4f:5a6b",
        "169.254.1.1",
    ]
    .iter()
    .map(|s| s.parse().expect("literal"))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn garbage_is_an_error_not_an_empty_set() {
    assert!(parse_ip_addr_json(b"not json").is_err());
    assert!(parse_ip_addr_json(b"{}").is_err());
}
