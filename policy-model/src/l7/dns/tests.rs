use super::*;

fn name(n: &str) -> FqdnSelector {
    FqdnSelector {
        match_name: Some(n.to_string()),
        match_pattern: None,
    }
}

fn pat(p: &str) -> FqdnSelector {
    FqdnSelector {
        match_name: None,
        match_pattern: Some(p.to_string()),
    }
}

fn compiled(sel: FqdnSelector) -> FqdnPattern {
    FqdnPattern::from_selector(&sel).expect("valid selector")
}

fn check(sel: FqdnSelector, accept: &[&str], reject: &[&str]) {
    let p = compiled(sel.clone());
    for a in accept {
        assert!(p.matches(a), "{sel:?} should match {a:?}");
    }
    for r in reject {
        assert!(!p.matches(r), "{sel:?} should not match {r:?}");
    }
}

#[test]
fn normalize_lowercases_and_qualifies() {
    assert_eq!(normalize_name("WWW.Example.COM"), "www.example.com.");
    assert_eq!(normalize_name("example.com."), "example.com.");
    assert_eq!(normalize_name(""), ".");
    assert_eq!(normalize_name("."), ".");
}

#[test]
fn match_name_is_exact() {
    check(
        name("cilium.io"),
        &["cilium.io", "cilium.io."],
        &[
            "www.cilium.io",
            "cilium.io.evil",
            "ilium.io",
            "cilium.iox",
            "",
        ],
    );
}

#[test]
fn match_name_is_case_insensitive_on_both_sides() {
    check(
        name("Cilium.IO"),
        &["cilium.io", "CILIUM.io."],
        &["cilium.org"],
    );
}

#[test]
fn match_name_with_trailing_dot() {
    check(
        name("cilium.io."),
        &["cilium.io", "cilium.io."],
        &["cilium.io.."],
    );
}

#[test]
fn match_name_dot_is_literal() {
    check(name("a.b"), &["a.b"], &["axb", "a-b"]);
}

#[test]
fn match_name_rejects_star() {
    let err = FqdnPattern::from_selector(&name("*.cilium.io")).unwrap_err();
    assert!(matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "matchName"));
    assert!(err.to_string().contains("matchPattern"), "{err}");
}

#[test]
fn match_name_allows_underscore() {
    check(
        name("_sip._tcp.example.com"),
        &["_SIP._tcp.example.com."],
        &["sip._tcp.example.com"],
    );
}

#[test]
fn star_within_a_label_does_not_cross_dots() {
    check(
        pat("*.cilium.io"),
        &[
            "www.cilium.io",
            "blog.cilium.io.",
            "WWW.CILIUM.IO",
            "_x.cilium.io",
        ],
        &[
            "cilium.io",
            "a.b.cilium.io",
            "www.cilium.io.com",
            "wwwcilium.io",
        ],
    );
}

#[test]
fn star_prefix_without_dot_includes_the_bare_name() {
    check(
        pat("*cilium.io"),
        &["cilium.io", "subcilium.io", "my-cilium.io"],
        &["www.cilium.io", "cilium.io.x"],
    );
}

#[test]
fn star_in_the_middle_of_a_label() {
    check(
        pat("sub*.cilium.io"),
        &["sub.cilium.io", "subdomain.cilium.io"],
        &[
            "www.cilium.io",
            "blog.cilium.io",
            "cilium.io",
            "sub.x.cilium.io",
        ],
    );
    check(
        pat("*.ci*.io"),
        &[
            "anysub.cilium.io",
            "anysub.ci.io",
            "anysub.ciliumandmore.io",
        ],
        &["cilium.io", "a.b.ci.io"],
    );
}

#[test]
fn trailing_star_label() {
    check(
        pat("cilium.*"),
        &["cilium.io", "cilium.com."],
        &["cilium.io.x", "www.cilium.io"],
    );
}

#[test]
fn two_stars_in_two_labels() {
    check(
        pat("*.*.cilium.io"),
        &["_foobar._tcp.cilium.io", "a.b.cilium.io"],
        &["a.cilium.io"],
    );
}

#[test]
fn lone_star_matches_every_dns_name_and_root() {
    check(
        pat("*"),
        &[
            ".",
            "io",
            "io.",
            "cilium.io",
            "service.namespace.svc.cluster.local",
            "_x._tcp.a",
        ],
        &["a..b", ".io", "bad name.io", "caf\u{e9}.com"],
    );
}

#[test]
fn star_forms_equivalent_to_match_all() {
    for p in ["**", "***", "*.", "**."] {
        check(pat(p), &["a.b.c.d", "x", "."], &["a..b"]);
    }
}

#[test]
fn double_star_prefix_matches_one_or_more_labels() {
    check(
        pat("**.cilium.io"),
        &[
            "a.cilium.io",
            "a.b.cilium.io",
            "x-1.y_2.z.cilium.io.",
            "A.B.CILIUM.IO",
        ],
        &["cilium.io", ".cilium.io", "a.cilium.io.evil", "acilium.io"],
    );
}

#[test]
fn more_than_two_leading_stars_is_the_same_as_two() {
    check(
        pat("***.cilium.io"),
        &["a.b.cilium.io", "a.cilium.io"],
        &["cilium.io"],
    );
}

#[test]
fn double_star_not_followed_by_dot_is_a_single_star() {
    check(
        pat("**cilium.io"),
        &["cilium.io", "xcilium.io"],
        &["a.cilium.io"],
    );
    check(pat("a.**.io"), &["a.b.io", "a..io"], &["a.b.c.io"]);
}

#[test]
fn pattern_without_star_is_exact() {
    check(pat("Cilium.io"), &["cilium.io."], &["www.cilium.io"]);
}

#[test]
fn invalid_characters_are_rejected() {
    for bad in [
        "cilium.io/",
        "a b.com",
        "[a].com",
        "a+.com",
        "a,b",
        "caf\u{e9}.com",
        "a?.com",
    ] {
        let err = FqdnPattern::from_selector(&pat(bad)).unwrap_err();
        assert!(
            matches!(err, L7RuleError::InvalidValue { .. }),
            "{bad}: {err}"
        );
    }
    assert!(FqdnPattern::from_selector(&name("a b.com")).is_err());
}

#[test]
fn empty_labels_are_rejected() {
    for bad in [".cilium.io", "a..b", "."] {
        assert!(FqdnPattern::from_selector(&pat(bad)).is_err(), "{bad}");
        assert!(FqdnPattern::from_selector(&name(bad)).is_err(), "{bad}");
    }
}

#[test]
fn too_long_is_rejected() {
    let long = format!("{}.com", "a".repeat(252));
    assert_eq!(long.len(), 256);
    assert!(FqdnPattern::from_selector(&name(&long)).is_err());
    let ok = format!("{}.com", "a".repeat(251));
    assert!(FqdnPattern::from_selector(&name(&ok)).is_ok());
}

#[test]
fn both_fields_is_an_error() {
    let sel = FqdnSelector {
        match_name: Some("a.com".into()),
        match_pattern: Some("*.a.com".into()),
    };
    let err = FqdnPattern::from_selector(&sel).unwrap_err();
    assert!(
        matches!(err, L7RuleError::ConflictingFields { .. }),
        "{err}"
    );
}

#[test]
fn neither_field_is_an_error() {
    let err = FqdnPattern::from_selector(&FqdnSelector::default()).unwrap_err();
    assert!(matches!(err, L7RuleError::MissingField { .. }), "{err}");
    let empty = FqdnSelector {
        match_name: Some(String::new()),
        match_pattern: Some(String::new()),
    };
    assert!(FqdnPattern::from_selector(&empty).is_err());
}

#[test]
fn rule_set_errors_carry_the_index() {
    let err = DnsRuleSet::compile(&[name("ok.com"), pat("*.ok.com"), pat("bad!")]).unwrap_err();
    assert_eq!(err.rule(), 2);
    assert!(err.to_string().contains("dns rule 2"), "{err}");
}

#[test]
fn rule_set_ors_selectors_and_reports_the_lowest_rule() {
    let set = DnsRuleSet::compile(&[
        pat("*.example.com"),
        name("api.example.com"),
        name("cilium.io"),
        pat("**.svc.cluster.local"),
    ])
    .unwrap();
    assert_eq!(set.matching_rule("api.example.com"), Some(0));
    assert_eq!(set.matching_rule("www.example.com."), Some(0));
    assert_eq!(set.matching_rule("CILIUM.IO"), Some(2));
    assert_eq!(set.matching_rule("db.ns.svc.cluster.local"), Some(3));
    assert_eq!(set.matching_rule("example.com"), None);
    assert_eq!(set.matching_rule("svc.cluster.local"), None);
    assert!(!set.allows("a.b.example.com"));
}

#[test]
fn rule_set_with_match_all() {
    let set = DnsRuleSet::compile(&[name("x.com"), pat("*")]).unwrap();
    assert_eq!(set.matching_rule("x.com"), Some(0));
    assert_eq!(set.matching_rule("anything.at.all"), Some(1));
    assert_eq!(set.matching_rule("."), Some(1));
}

#[test]
fn empty_rule_set_allows_nothing() {
    let set = DnsRuleSet::compile(&[]).unwrap();
    assert!(set.is_empty());
    assert!(!set.allows("example.com"));
}

/// A tiny deterministic PRNG so the randomized checks need no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The set must agree with matching each pattern on its own.
#[test]
fn rule_set_agrees_with_individual_patterns() {
    let selectors: Vec<FqdnSelector> = [
        "*.a.com", "b.com", "**.c.org", "x*.d.net", "*", "e.*", "*f.com", "g.h.i",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| if i == 1 || i == 7 { name(p) } else { pat(p) })
    .collect();
    let labels = [
        "a", "b", "c", "com", "org", "net", "d", "x", "xy", "f", "e", "g", "h", "i", "A", "_",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for n in 1..selectors.len() {
        let set = DnsRuleSet::compile(&selectors[..n]).unwrap();
        let single: Vec<_> = selectors[..n].iter().map(|s| compiled(s.clone())).collect();
        for _ in 0..500 {
            let count = 1 + rng.next() % 4;
            let mut qname: Vec<&str> = (0..count).map(|_| rng.pick(&labels)).collect();
            if rng.next().is_multiple_of(2) {
                qname.push("");
            }
            let qname = qname.join(".");
            let expected = single.iter().position(|p| p.matches(&qname));
            assert_eq!(
                set.matching_rule(&qname),
                expected,
                "{qname:?} with {n} selectors"
            );
        }
    }
}
