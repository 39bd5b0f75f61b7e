use super::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ID: NumericIdentity = NumericIdentity(256);

fn pk(protocol: u8, port: u16, prefix_len: u8) -> PortKey {
    PortKey {
        protocol,
        port,
        prefix_len,
    }
}

fn key(direction: Direction, identity: NumericIdentity, port: PortKey) -> MapKey {
    MapKey {
        direction,
        identity,
        port,
    }
}

fn val(verdict: MapVerdict, cookie: u32) -> MapValue {
    MapValue {
        verdict,
        redirect: None,
        cookie,
        audit: false,
    }
}

/// Checks by brute force that `range(lo, hi)` covers exactly `lo..=hi`,
/// each port by exactly one key, with prefixes aligned and of the protocol.
fn assert_range_exact(lo: u16, hi: u16) -> Vec<PortKey> {
    let keys = PortKey::range(TCP, lo, hi);
    for k in &keys {
        assert_eq!(k.protocol, TCP);
        assert!(k.prefix_len <= 16, "{k:?}");
        let (a, _) = k.port_bounds();
        assert_eq!(a, k.port, "key {k:?} is not aligned");
    }
    for p in 0..=u16::MAX {
        let n = keys.iter().filter(|k| k.matches(TCP, p)).count();
        let want = usize::from((lo..=hi).contains(&p));
        assert_eq!(n, want, "range {lo}-{hi}: port {p} covered {n} times");
        assert!(
            !keys.iter().any(|k| k.matches(UDP, p)),
            "range {lo}-{hi} leaks into UDP"
        );
    }
    keys
}

#[test]
fn range_80_90_is_three_aligned_prefixes() {
    let keys = assert_range_exact(80, 90);
    assert_eq!(
        keys,
        vec![pk(TCP, 80, 13), pk(TCP, 88, 15), pk(TCP, 90, 16)]
    );
}

#[test]
fn range_of_all_ports_is_the_protocol_key() {
    let keys = assert_range_exact(0, u16::MAX);
    assert_eq!(keys, vec![PortKey::protocol(TCP)]);
}

#[test]
fn range_1_65535_excludes_port_zero_with_sixteen_prefixes() {
    let keys = assert_range_exact(1, u16::MAX);
    assert_eq!(keys.len(), 16);
    assert_eq!(keys[0], PortKey::exact(TCP, 1));
    assert_eq!(*keys.last().expect("non-empty"), pk(TCP, 32768, 1));
}

#[test]
fn range_of_one_port_is_exact() {
    for p in [1u16, 80, 443, 65535] {
        assert_eq!(PortKey::range(TCP, p, p), vec![PortKey::exact(TCP, p)]);
    }
    assert_range_exact(65535, 65535);
    assert_range_exact(0, 0);
}

#[test]
fn assorted_ranges_are_exact_by_brute_force() {
    for (lo, hi) in [
        (1024, 65535),
        (0, 1023),
        (3, 17),
        (0, 65534),
        (8080, 8090),
        (32767, 32768),
    ] {
        let keys = assert_range_exact(lo, hi);
        // Minimality sanity: never more than 2 * 16 prefixes.
        assert!(keys.len() <= 32, "{lo}-{hi}: {}", keys.len());
    }
    assert_eq!(PortKey::range(TCP, 1024, 65535).len(), 6);
}

#[test]
fn contains_is_protocol_then_prefix_nesting() {
    let any = PortKey::ANY;
    let tcp = PortKey::protocol(TCP);
    let p80 = PortKey::exact(TCP, 80);
    let block = pk(TCP, 80, 13); // 80-87
    assert!(any.contains(&tcp) && any.contains(&p80) && any.contains(&any));
    assert!(tcp.contains(&p80) && tcp.contains(&block) && tcp.contains(&tcp));
    assert!(!tcp.contains(&any), "a protocol key is narrower than any");
    assert!(!tcp.contains(&PortKey::exact(UDP, 80)));
    assert!(block.contains(&PortKey::exact(TCP, 87)));
    assert!(!block.contains(&PortKey::exact(TCP, 88)));
    assert!(!block.contains(&PortKey::exact(TCP, 79)));
    assert!(!p80.contains(&block), "exact port does not contain a block");
    assert!(!p80.contains(&tcp));
    assert!(p80.contains(&p80));
}

#[test]
fn matches_is_contains_of_an_exact_port() {
    let block = pk(TCP, 32768, 1);
    assert!(block.matches(TCP, 32768) && block.matches(TCP, 65535));
    assert!(!block.matches(TCP, 32767));
    assert!(!block.matches(UDP, 40000));
    assert!(PortKey::ANY.matches(UDP, 0));
    assert!(PortKey::protocol(UDP).matches(UDP, 53));
}

#[test]
fn specificity_orders_any_protocol_prefix_exact() {
    let s = |k: PortKey| k.specificity();
    assert_eq!(s(PortKey::ANY), 0);
    assert_eq!(s(PortKey::protocol(TCP)), 8);
    assert_eq!(s(pk(TCP, 80, 13)), 21);
    assert_eq!(s(PortKey::exact(TCP, 80)), 24);
}

#[test]
fn port_bounds_and_display() {
    assert_eq!(pk(TCP, 85, 13).port_bounds(), (80, 87));
    assert_eq!(PortKey::ANY.port_bounds(), (0, 65535));
    assert_eq!(PortKey::protocol(UDP).port_bounds(), (0, 65535));
    assert_eq!(PortKey::ANY.to_string(), "any protocol");
    assert_eq!(PortKey::protocol(TCP).to_string(), "TCP/any");
    assert_eq!(PortKey::exact(UDP, 53).to_string(), "UDP/53");
    assert_eq!(pk(TCP, 80, 13).to_string(), "TCP/80-87");
    assert_eq!(PortKey::exact(132, 9).to_string(), "SCTP/9");
    assert_eq!(PortKey::exact(1, 8).to_string(), "ICMP/8");
    assert_eq!(PortKey::exact(58, 128).to_string(), "ICMPv6/128");
    // The extended protocols have no ports: their name alone.
    assert_eq!(PortKey::protocol(47).to_string(), "GRE");
    assert_eq!(PortKey::exact(51, 0).to_string(), "AH");
    assert_eq!(PortKey::protocol(99).to_string(), "proto 99/any");
}

#[test]
fn lookup_prefers_the_identity_table_over_the_wildcard_table() {
    let mut m = MapState::default();
    let d = Direction::Ingress;
    // A wildcard deny on TCP/80 is hidden by any identity entry: this is
    // why resolution must copy wildcard entries into identity tables.
    m.entries.insert(
        key(d, NumericIdentity::ANY, PortKey::exact(TCP, 80)),
        val(MapVerdict::Deny, 1),
    );
    m.entries
        .insert(key(d, ID, PortKey::ANY), val(MapVerdict::Allow, 2));
    let (k, v) = m.lookup(d, ID, TCP, 80).expect("identity entry");
    assert_eq!(k.identity, ID);
    assert_eq!(v.cookie, 2);
    // Another identity falls through to the wildcard table.
    let (k, v) = m
        .lookup(d, NumericIdentity(257), TCP, 80)
        .expect("wildcard entry");
    assert_eq!(k.identity, NumericIdentity::ANY);
    assert_eq!(v.verdict, MapVerdict::Deny);
    assert!(m.lookup(d, NumericIdentity(257), TCP, 81).is_none());
}

#[test]
fn lookup_falls_back_when_the_identity_table_has_no_matching_key() {
    let mut m = MapState::default();
    let d = Direction::Egress;
    m.entries.insert(
        key(d, ID, PortKey::exact(TCP, 443)),
        val(MapVerdict::Allow, 1),
    );
    m.entries.insert(
        key(d, NumericIdentity::ANY, PortKey::protocol(UDP)),
        val(MapVerdict::Allow, 2),
    );
    assert_eq!(m.lookup(d, ID, TCP, 443).expect("own").1.cookie, 1);
    assert_eq!(m.lookup(d, ID, UDP, 53).expect("wildcard").1.cookie, 2);
    assert!(m.lookup(d, ID, TCP, 80).is_none());
}

#[test]
fn lookup_takes_the_longest_prefix_within_a_table() {
    let mut m = MapState::default();
    let d = Direction::Ingress;
    m.entries
        .insert(key(d, ID, PortKey::ANY), val(MapVerdict::Allow, 1));
    m.entries.insert(
        key(d, ID, PortKey::protocol(TCP)),
        val(MapVerdict::Allow, 2),
    );
    m.entries
        .insert(key(d, ID, pk(TCP, 80, 13)), val(MapVerdict::Deny, 3));
    m.entries.insert(
        key(d, ID, PortKey::exact(TCP, 81)),
        val(MapVerdict::Allow, 4),
    );
    let c = |proto, port| m.lookup(d, ID, proto, port).expect("match").1.cookie;
    assert_eq!(c(UDP, 80), 1);
    assert_eq!(c(TCP, 79), 2);
    assert_eq!(c(TCP, 80), 3);
    assert_eq!(c(TCP, 87), 3);
    assert_eq!(c(TCP, 81), 4);
    assert_eq!(c(TCP, 88), 2);
}

#[test]
fn lookup_keeps_directions_apart() {
    let mut m = MapState::default();
    m.entries.insert(
        key(Direction::Ingress, NumericIdentity::ANY, PortKey::ANY),
        val(MapVerdict::Allow, 1),
    );
    assert!(m.lookup(Direction::Ingress, ID, TCP, 1).is_some());
    assert!(m.lookup(Direction::Egress, ID, TCP, 1).is_none());
}

#[test]
fn diff_of_equal_states_is_empty() {
    let mut m = MapState::default();
    m.entries.insert(
        key(Direction::Ingress, ID, PortKey::ANY),
        val(MapVerdict::Allow, 1),
    );
    assert!(m.diff(&m.clone()).is_empty());
    assert!(MapState::default().diff(&MapState::default()).is_empty());
}

#[test]
fn diff_puts_upserts_before_deletes() {
    let d = Direction::Ingress;
    let gone = key(d, NumericIdentity(300), PortKey::ANY);
    let kept = key(d, ID, PortKey::protocol(TCP));
    let changed = key(d, ID, PortKey::exact(TCP, 80));
    let added = key(d, NumericIdentity(1), PortKey::ANY);
    let mut old = MapState::default();
    old.entries.insert(gone, val(MapVerdict::Allow, 1));
    old.entries.insert(kept, val(MapVerdict::Allow, 2));
    old.entries.insert(changed, val(MapVerdict::Allow, 3));
    let mut new = MapState::default();
    new.entries.insert(kept, val(MapVerdict::Allow, 2));
    new.entries.insert(changed, val(MapVerdict::Deny, 3));
    new.entries.insert(added, val(MapVerdict::Allow, 4));
    let changes = old.diff(&new);
    assert_eq!(changes.len(), 3, "{changes:?}");
    let first_delete = changes
        .iter()
        .position(|c| matches!(c, MapChange::Delete(_)))
        .expect("one delete");
    assert!(
        changes[..first_delete]
            .iter()
            .all(|c| matches!(c, MapChange::Upsert(..)))
    );
    assert_eq!(first_delete, 2);
    assert!(changes.contains(&MapChange::Upsert(changed, val(MapVerdict::Deny, 3))));
    assert!(changes.contains(&MapChange::Upsert(added, val(MapVerdict::Allow, 4))));
    assert_eq!(changes[2], MapChange::Delete(gone));
    // Applying the diff to the old state yields the new one.
    let mut applied = old.clone();
    for c in changes {
        match c {
            MapChange::Upsert(k, v) => {
                applied.entries.insert(k, v);
            }
            MapChange::Delete(k) => {
                applied.entries.remove(&k);
            }
        }
    }
    assert_eq!(applied, new);
}

#[test]
fn diff_sees_a_redirect_change() {
    let k = key(Direction::Egress, ID, PortKey::exact(TCP, 80));
    let mut old = MapState::default();
    old.entries.insert(k, val(MapVerdict::Allow, 1));
    let mut new = old.clone();
    new.entries.get_mut(&k).expect("entry").redirect = Some(L7Parser::Http);
    assert_eq!(old.diff(&new), vec![MapChange::Upsert(k, new.entries[&k])]);
}

#[test]
fn len_and_is_empty() {
    let mut m = MapState::default();
    assert!(m.is_empty());
    assert_eq!(m.len(), 0);
    m.entries.insert(
        key(Direction::Egress, ID, PortKey::ANY),
        val(MapVerdict::Deny, 0),
    );
    assert!(!m.is_empty());
    assert_eq!(m.len(), 1);
}
