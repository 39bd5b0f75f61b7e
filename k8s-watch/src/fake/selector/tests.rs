use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_operator_matches_as_kubernetes_does() {
    let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
    let cases = [
        ("app=web", true),
        ("app==web", true),
        ("app!=web", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("app in (db, web)", true),
        ("app in (db)", false),
        ("app notin (db)", true),
        ("missing notin (db)", true),
        ("app notin (web)", false),
        ("tier", true),
        ("!tier", false),
        ("!missing", true),
        ("n>4", true),
        ("n<5", false),
        ("app=web,tier=front", true),
        ("app=web,tier in (back)", false),
        ("", true),
    ];
    for (text, want) in cases {
        let s = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(s.matches(&l), want, "{text}");
    }
}

#[test]
fn malformed_selectors_are_errors() {
    for text in ["app in (a", "app=(", ",", "a b c=d", "n>x", "app in a)"] {
        assert!(LabelSelector::parse(text).is_err(), "{text} parsed");
    }
}

#[test]
fn field_selectors_compare_string_fields() {
    let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}});
    let s = FieldSelector::parse("metadata.name=a,spec.nodeName!=n2").expect("parses");
    assert!(s.matches(&pod));
    let s = FieldSelector::parse("spec.nodeName==n2").expect("parses");
    assert!(!s.matches(&pod));
    assert!(FieldSelector::parse("nonsense").is_err());
}
