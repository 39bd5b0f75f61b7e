use crate::identity::NumericIdentity;
use crate::incremental::{Change, IncrementalCluster, IpcacheChange, PolicyKey};
use crate::mapstate::MapVerdict::Allow;
use crate::resolve::FqdnCache;
use crate::resolve::testing::*;
use crate::rules::Direction;
use ipnet::IpNet;

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

    // A new address of a known selector set: one ipcache entry, no policy
    // map change (the engine's delta), and the same as a resolution with
    // the address learned.
    let engine = engine_of(&c, &fq);
    for (name, addr, expect) in [
        ("c.example.com.", "9.9.9.11", plain),
        ("d.example.com.", "8.8.4.4", in_cidr),
        ("api.example.com.", "5.5.5.5", api),
    ] {
        let mut e = engine.clone();
        let d = e.apply(Change::Learned {
            name: name.into(),
            ips: vec![ip(addr)],
        });
        assert_eq!(
            d.ipcache,
            [IpcacheChange::Upsert(IpNet::from(ip(addr)), expect)],
            "{addr}"
        );
        // No new number: at most the identity's record (its representative
        // address) is restated.
        assert!(d.policy.is_empty(), "{addr}: {d:?}");
        assert!(
            d.identities_added.iter().all(|i| i.id == expect),
            "{addr}: {d:?}"
        );
        let mut fq2 = fq.clone();
        fq2.learn(name, ip(addr));
        let full = cluster_with(&policies, &fq2);
        assert_eq!(e.ipcache(), full.ipcache().to_vec(), "{addr}");
        assert_eq!(
            pol(&full, "ns1/a").map,
            p.map,
            "{addr}: no policy map change"
        );
    }
    // Names no selector selects, and addresses that keep their identity:
    // nothing changes.
    for (name, addr) in [
        ("other.org.", "7.7.7.8"),
        ("x.example.com.", "9.9.9.9"),
        ("b.example.com.", "10.0.2.1"),
    ] {
        let mut e = engine.clone();
        let d = e.apply(Change::Learned {
            name: name.into(),
            ips: vec![ip(addr)],
        });
        assert!(d.is_empty(), "{name} {addr}: {d:?}");
    }
}

/// The engine of `c`'s inputs with the names of `fq`.
fn engine_of(c: &crate::Cluster, fq: &FqdnCache) -> IncrementalCluster {
    IncrementalCluster::new(
        c.topology.clone(),
        c.rules
            .iter()
            .map(|r| (PolicyKey::of(&r.origin), vec![r.clone()])),
        fq.clone(),
        "node",
    )
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
    let engine = engine_of(&c, &fq);
    for (name, addr) in [
        ("c.example.com.", "9.9.9.11"),
        ("d.example.com.", "8.8.4.4"),
    ] {
        // Its identity keeps another address: one ipcache delete.
        let mut e = engine.clone();
        let d = e.apply(Change::Expired {
            name: name.into(),
            ips: vec![ip(addr)],
        });
        assert_eq!(
            d.ipcache,
            [IpcacheChange::Delete(IpNet::from(ip(addr)))],
            "{addr}"
        );
        assert!(
            d.policy.is_empty() && d.identities_removed.is_empty(),
            "{addr}: {d:?}"
        );
        let mut fq2 = fq.clone();
        fq2.names.remove(name);
        let full = cluster_with(&policies, &fq2);
        assert_eq!(e.ipcache(), full.ipcache().to_vec(), "{addr}");
        assert_eq!(
            e.identity_of_ip(ip(addr)),
            full.identity_of_ip(ip(addr)),
            "{addr}"
        );
        assert_eq!(pol(&full, "ns1/a").map, pol(&c, "ns1/a").map, "{addr}");
        // Before it expired: learned, falling back to what it is now.
        assert_eq!(
            c.learned_and_fallback_identity(ip(addr)).map(|(_, f)| f),
            Some(full.identity_of_ip(ip(addr))),
            "{addr}"
        );
    }
    // A pod or an unknown address has no learned identity.
    assert_eq!(c.learned_and_fallback_identity(ip("10.0.1.1")), None);
    assert_eq!(c.learned_and_fallback_identity(ip("1.1.1.1")), None);
}

/// `toFQDNs` in `egressDeny` (portcullis's, not Cilium's): the addresses
/// learned for a denied name are denied, over a wildcard allow, also when
/// the same address was learned for an allowed name; its `toPorts` narrow
/// the deny.
#[test]
fn fqdn_deny_denies_learned_addresses_even_when_an_allowed_name_shares_them() {
    use crate::mapstate::MapVerdict::Deny;
    let policies = cnp(
        "fqdn-deny",
        &format!(
            "{ON_A}  egress: [{{toFQDNs: [{{matchPattern: '*.example.com'}}]}}]\n  egressDeny:\n  - toFQDNs: [{{matchName: bad.example.com}}]\n  - toFQDNs: [{{matchPattern: '*.ads.example.com'}}]\n    toPorts: [{{ports: [{{port: '443', protocol: TCP}}]}}]"
        ),
    );
    let mut fq = FqdnCache::default();
    fq.learn("good.example.com", ip("8.8.8.1"));
    fq.learn("bad.example.com", ip("8.8.8.2"));
    // One address, an allowed and a denied name.
    fq.learn("shared.example.com", ip("8.8.8.3"));
    fq.learn("bad.example.com", ip("8.8.8.3"));
    fq.learn("x.ads.example.com", ip("8.8.8.4"));
    fq.learn("bad.example.com", ip("2001:db8::2"));
    let c = cluster_with(&policies, &fq);
    let p = pol(&c, "ns1/a");
    let e = Direction::Egress;
    let at = |addr: &str, port| verdict(&p, e, c.identity_of_ip(ip(addr)), TCP, port);
    assert_eq!(at("8.8.8.1", 443), Some(Allow), "allowed name");
    assert_eq!(at("8.8.8.2", 443), Some(Deny), "denied name");
    assert_eq!(at("2001:db8::2", 80), Some(Deny), "denied name, AAAA");
    assert_eq!(at("8.8.8.3", 443), Some(Deny), "shared address: deny wins");
    assert_eq!(at("8.8.8.4", 443), Some(Deny), "denied name on its port");
    assert_eq!(
        at("8.8.8.4", 80),
        None,
        "the deny's port only; *.ads is not *.example.com"
    );
    // The incremental engine learns the same, one name at a time.
    let mut engine = engine_of(
        &cluster_with(&policies, &FqdnCache::default()),
        &FqdnCache::default(),
    );
    for (name, ips) in &fq.names {
        engine.apply(Change::Learned {
            name: name.clone(),
            ips: ips.iter().copied().collect(),
        });
    }
    // (Numbers follow the learning order; verdicts must not.)
    let a = c.endpoint("ns1/a").expect("pod in topology");
    let from_engine = engine.endpoint_policy(a.id).expect("pod a has a policy");
    for addr in ["8.8.8.1", "8.8.8.2", "2001:db8::2", "8.8.8.3", "8.8.8.4"] {
        for port in [80, 443] {
            let learned = engine.identity_of_ip(ip(addr));
            assert_eq!(
                verdict(from_engine, e, learned, TCP, port),
                at(addr, port),
                "{addr} {port}"
            );
        }
    }
}

#[test]
fn an_endpoint_whose_dns_the_proxy_does_not_see_is_warned_about_its_fqdn_deny() {
    let deny = "  egressDeny: [{toFQDNs: [{matchName: bad.example.com}]}]\n";
    let unseen = cluster(&cnp("fqdn-deny", &format!("{ON_A}{deny}")));
    let w = pol(&unseen, "ns1/a").warnings;
    assert!(
        w.iter().any(|m| m.contains("spec.egressDeny[0].toFQDNs")
            && m.contains("fqdn-deny")
            && m.contains("not redirected")),
        "{w:?}"
    );
    let dns = "  egress: [{toPorts: [{ports: [{port: '53', protocol: ANY}], rules: {dns: [{matchPattern: '*'}]}}]}]\n";
    let seen = cluster(&cnp("fqdn-deny", &format!("{ON_A}{dns}{deny}")));
    let w = pol(&seen, "ns1/a").warnings;
    assert!(w.iter().all(|m| !m.contains("toFQDNs")), "{w:?}");
    // Pods the rule does not select are not warned.
    assert!(pol(&unseen, "ns1/b").warnings.is_empty());
}
