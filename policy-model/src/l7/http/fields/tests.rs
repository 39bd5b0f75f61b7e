use super::*;

#[test]
fn a_pattern_is_compiled_once_and_its_error_is_kept_too() {
    // Patterns no other test uses, so the shared cache is this test's.
    let good = "/fields-cache-test/[0-9]+";
    assert!(!PATTERNS.contains(&good.to_string()));
    let first = anchored_regex(0, "path", good).expect("compiles");
    assert!(PATTERNS.contains(&good.to_string()));
    let again = anchored_regex(3, "path", good).expect("compiles");
    assert_eq!(first.as_str(), again.as_str());
    assert!(again.is_match("/fields-cache-test/42"));
    assert!(!again.is_match("x/fields-cache-test/42"), "anchored");

    let bad = "/fields-cache-test/(";
    for rule in [1, 7] {
        let err = anchored_regex(rule, "path", bad).expect_err("unbalanced");
        // The cached error still names this rule, field and pattern.
        let text = err.to_string();
        assert!(text.contains(bad), "{text}");
        assert!(matches!(err, L7RuleError::InvalidRegex { rule: r, .. } if r == rule));
    }
}

#[test]
fn a_set_of_patterns_is_compiled_once() {
    let patterns = vec![
        r"\A(?:/fields-cache-set/a.*)\z".to_string(),
        r"\A(?:/fields-cache-set/b.*)\z".to_string(),
    ];
    assert!(!SETS.contains(&patterns));
    let set = compiled_set(&patterns).expect("compiles");
    assert!(SETS.contains(&patterns));
    assert_eq!(
        set.matches("/fields-cache-set/b1")
            .iter()
            .collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn the_cache_starts_over_when_full() {
    let cache: CompileCache<usize, usize> = CompileCache::new();
    for i in 0..CACHE_ENTRIES {
        assert_eq!(cache.get_or_compile(i, |k| k * 2), i * 2);
    }
    assert!(cache.contains(&0));
    cache.get_or_compile(CACHE_ENTRIES, |k| *k);
    assert!(!cache.contains(&0), "cleared rather than grown");
    assert!(cache.contains(&CACHE_ENTRIES));
}
