use crate::identity::NumericIdentity;
use crate::resolve::testing::*;

#[test]
fn identities_and_ipcache() {
    let c = cluster("");
    assert_eq!(
        id(&c, "ns1/a"),
        id(&c, "ns1/a2"),
        "same labels, same identity"
    );
    assert_ne!(id(&c, "ns1/a"), id(&c, "ns1/b"));
    assert!(id(&c, "ns1/a").0 >= NumericIdentity::FIRST_ENDPOINT);
    assert_eq!(c.identity_of_ip(ip("10.0.1.2")), id(&c, "ns1/b"));
    assert_eq!(c.identity_of_ip(ip("192.168.0.10")), NumericIdentity::HOST);
    assert_eq!(
        c.identity_of_ip(ip("192.168.0.1")),
        NumericIdentity::KUBE_APISERVER
    );
    assert_eq!(
        c.identity_of_ip(ip("192.168.0.11")),
        NumericIdentity::REMOTE_NODE
    );
    assert_eq!(c.identity_of_ip(ip("1.1.1.1")), NumericIdentity::WORLD_IPV4);
    assert_eq!(
        c.identity_of_ip(ip("2001:db8::1")),
        NumericIdentity::WORLD_IPV6
    );
    let ids: Vec<u16> = c.endpoints().iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(
        c.endpoint_by_ip(ip("10.0.2.1")).map(|e| e.full_name()),
        Some("ns2/c".into())
    );
}
