use super::*;
use crate::identity::NumericIdentity;
use crate::mapstate::MapVerdict::Allow;
use crate::resolve::FqdnCache;
use crate::resolve::testing::*;
use crate::rules::Direction;

#[test]
fn to_fqdns_allows_learned_addresses_only() {
    let mut fq = FqdnCache::default();
    fq.learn("API.Example.com.", ip("8.8.8.8"));
    fq.learn("other.org", ip("7.7.7.7"));
    fq.learn("api.example.com", ip("10.0.2.1")); // a pod address
    let c = cluster_with(
        &cnp(
            "fqdn",
            &format!("{ON_A}  egress: [{{toFQDNs: [{{matchName: api.example.com}}]}}]"),
        ),
        &fq,
    );
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    let learned = c.identity_of_ip(ip("8.8.8.8"));
    assert!(learned.is_local());
    assert_eq!(verdict(&p, e, learned, TCP, 443), Some(Allow));
    assert_eq!(
        verdict(&p, e, c.identity_of_ip(ip("9.9.9.9")), TCP, 443),
        None
    );
    assert_eq!(
        c.identity_of_ip(ip("7.7.7.7")),
        NumericIdentity::WORLD_IPV4,
        "names no toFQDNs selects get no identity"
    );
    assert_eq!(c.identity_of_ip(ip("10.0.2.1")), id(&c, "ns2/c"));
    assert_eq!(verdict(&p, e, id(&c, "ns2/c"), TCP, 443), None);
}

#[test]
fn learned_addresses_share_the_identity_of_their_selector_set_and_cidrs() {
    let policies = cnp(
        "fqdn",
        &format!(
            "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}, {{matchName: api.example.com}}]}}, {{toCIDR: [8.8.0.0/16], toPorts: [{{ports: [{{port: '53'}}]}}]}}]"
        ),
    );
    let mut fq = FqdnCache::default();
    fq.learn("a.example.com", ip("8.8.8.8"));
    fq.learn("b.example.com", ip("9.9.9.9"));
    fq.learn("api.example.com", ip("9.9.9.10"));
    fq.learn("other.org", ip("7.7.7.7"));
    let c = cluster_with(&policies, &fq);
    let (in_cidr, plain, api) = (
        c.identity_of_ip(ip("8.8.8.8")),
        c.identity_of_ip(ip("9.9.9.9")),
        c.identity_of_ip(ip("9.9.9.10")),
    );
    assert!(in_cidr.is_local() && plain.is_local() && api.is_local());
    assert!(in_cidr != plain && plain != api && in_cidr != api);
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    assert_eq!(verdict(&p, e, in_cidr, UDP, 53), Some(Allow), "toCIDR");
    assert_eq!(verdict(&p, e, plain, TCP, 443), Some(Allow), "toFQDNs");
    let world = c.identity_of_ip(ip("7.7.7.7"));
    assert_eq!(world, NumericIdentity::WORLD_IPV4);
    assert_eq!(verdict(&p, e, world, UDP, 53), None);

    // A new address of a known selector set: one ipcache entry, and the
    // cluster resolved with it learned is the same, entry for entry.
    for (name, addr, expect) in [
        ("c.example.com.", "9.9.9.11", plain),
        ("d.example.com.", "8.8.4.4", in_cidr),
        ("api.example.com.", "5.5.5.5", api),
    ] {
        let mut incremental = c.clone();
        let LearnedAddress::Ipcache(prefix, id) = c.learned_address(ip(addr), &[name]) else {
            panic!("{addr} should need only an ipcache entry");
        };
        assert_eq!(id, expect, "{addr}");
        incremental.add_learned_address(prefix, id);
        let mut fq2 = fq.clone();
        fq2.learn(name, ip(addr));
        let full = cluster_with(&policies, &fq2);
        assert_eq!(incremental.ipcache(), full.ipcache(), "{addr}");
        assert_eq!(
            pol(&full, "ns1/a").map,
            p.map,
            "{addr}: no policy map change"
        );
    }
    // Names no selector selects, and addresses that keep their identity.
    assert_eq!(
        c.learned_address(ip("7.7.7.8"), &["other.org."]),
        LearnedAddress::Unchanged
    );
    assert_eq!(
        c.learned_address(ip("9.9.9.9"), &["b.example.com.", "x.example.com."]),
        LearnedAddress::Unchanged
    );
    assert_eq!(
        c.learned_address(ip("10.0.2.1"), &["b.example.com."]),
        LearnedAddress::Unchanged,
        "a pod address keeps its identity"
    );
    // A new label set, or an address whose set grows: resolve again.
    assert_eq!(
        c.learned_address(ip("2001:db8::1"), &["a.example.com."]),
        LearnedAddress::Resolve
    );
    assert_eq!(
        c.learned_address(ip("9.9.9.9"), &["b.example.com.", "api.example.com."]),
        LearnedAddress::Resolve
    );
}

#[test]
fn forgetting_a_learned_address_matches_a_resolve_without_it() {
    let policies = cnp(
        "fqdn",
        &format!(
            "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}, {{matchName: api.example.com}}]}}, {{toCIDR: [8.8.0.0/16], toPorts: [{{ports: [{{port: '53'}}]}}]}}]"
        ),
    );
    let mut fq = FqdnCache::default();
    for (name, addr) in [
        ("a.example.com", "8.8.8.8"),
        ("d.example.com", "8.8.4.4"),
        ("b.example.com", "9.9.9.9"),
        ("c.example.com", "9.9.9.11"),
        ("api.example.com", "9.9.9.10"),
    ] {
        fq.learn(name, ip(addr));
    }
    let c = cluster_with(&policies, &fq);
    for (name, addr) in [
        ("c.example.com.", "9.9.9.11"),
        ("d.example.com.", "8.8.4.4"),
    ] {
        let mut incremental = c.clone();
        let fallback = incremental
            .forget_learned_address(ip(addr))
            .expect("its identity keeps another address");
        let mut fq2 = fq.clone();
        fq2.names.remove(name);
        let full = cluster_with(&policies, &fq2);
        assert_eq!(incremental.ipcache(), full.ipcache(), "{addr}");
        assert_eq!(fallback, full.identity_of_ip(ip(addr)), "{addr}");
        assert_eq!(pol(&full, "ns1/a").map, pol(&c, "ns1/a").map, "{addr}");
    }
    // The last address of an identity, a pod, an unknown address: no.
    let mut c2 = c.clone();
    assert_eq!(c2.forget_learned_address(ip("9.9.9.10")), None);
    assert_eq!(c2.forget_learned_address(ip("10.0.1.1")), None);
    assert_eq!(c2.forget_learned_address(ip("1.1.1.1")), None);
    assert_eq!(c2.ipcache(), c.ipcache(), "nothing changed");
}
