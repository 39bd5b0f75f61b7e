use super::*;
use serde_json::json;

fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
    causes
        .iter()
        .map(|c| (c.field.as_str(), c.reason))
        .collect()
}

#[test]
fn scalars_are_checked_with_their_paths() {
    let schema = json!({"type": "object", "properties": {
        "tier": {"type": "string", "enum": ["Admin", "Baseline"]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
        "log": {"type": "string", "maxLength": 3},
        "topic": {"type": "string", "pattern": "^[a-z]+$"},
        "net": {"type": "string", "format": "cidr"},
    }});
    let good = json!({"tier": "Admin", "priority": 1000, "log": "abc", "topic": "x",
                      "net": "10.0.0.0/8"});
    assert_eq!(check(&schema, &good, ""), []);
    let bad = json!({"tier": "admin", "priority": 1001, "log": "abcd", "topic": "X",
                     "net": "10.0.0.1"});
    let causes = check(&schema, &bad, "spec");
    assert_eq!(
        fields(&causes),
        [
            ("spec.log", "FieldValueTooLong"),
            ("spec.net", "FieldValueInvalid"),
            ("spec.priority", "FieldValueInvalid"),
            ("spec.tier", "FieldValueNotSupported"),
            ("spec.topic", "FieldValueInvalid"),
        ]
    );
    assert_eq!(
        causes[3].message,
        "Unsupported value: \"admin\": supported values: \"Admin\", \"Baseline\""
    );
    assert_eq!(
        causes[2].message,
        "Invalid value: 1001: spec.priority in body should be less than or equal to 1000"
    );
}

#[test]
fn int_or_string_takes_bounds_for_numbers_and_patterns_for_strings() {
    let schema = json!({"x-kubernetes-int-or-string": true, "minimum": 0, "maximum": 65535,
                        "pattern": "^([0-9]{1,5}|[a-z-]+)$"});
    for ok in [json!(80), json!("80"), json!("http")] {
        assert_eq!(check(&schema, &ok, "port"), [], "{ok}");
    }
    for bad in [json!(70000), json!("HTTP!")] {
        assert_eq!(check(&schema, &bad, "port").len(), 1, "{bad}");
    }
}

#[test]
fn objects_lists_and_one_of() {
    let schema = json!({"type": "object",
    "required": ["spec"],
    "properties": {"spec": {"type": "object",
        "oneOf": [{"required": ["cidr"]}, {"required": ["cidrGroupRef"]}],
        "minProperties": 1,
        "properties": {
            "cidr": {"type": "string"},
            "cidrGroupRef": {"type": "string"},
            "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set",
                     "items": {"type": "string"}},
        }}}});
    assert_eq!(
        check(&schema, &json!({"spec": {"cidr": "10.0.0.0/8"}}), ""),
        []
    );
    assert_eq!(
        fields(&check(&schema, &json!({}), "")),
        [("spec", "FieldValueRequired")]
    );
    let none = check(&schema, &json!({"spec": {"tags": ["a"]}}), "");
    assert_eq!(fields(&none), [("spec", "FieldValueInvalid")]);
    assert!(none[0].message.contains("Found none valid"), "{none:?}");
    let both = check(
        &schema,
        &json!({"spec": {"cidr": "a", "cidrGroupRef": "b"}}),
        "",
    );
    assert!(
        both[0].message.contains("Found 2 valid alternatives"),
        "{both:?}"
    );
    let tags = check(
        &schema,
        &json!({"spec": {"cidr": "a", "tags": ["x", "y", "x"]}}),
        "",
    );
    assert_eq!(
        fields(&tags),
        [
            ("spec.tags", "FieldValueTooMany"),
            ("spec.tags[2]", "FieldValueDuplicate")
        ]
    );
    let empty = check(&schema, &json!({"spec": {}}), "");
    assert!(
        empty
            .iter()
            .any(|c| c.message.contains("at least 1 properties")),
        "{empty:?}"
    );
}

#[test]
fn cidrs_parse_as_go_does() {
    for ok in [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "2001:db8::/32",
        "::/0",
        "10.1.2.3/32",
    ] {
        assert!(is_cidr(ok), "{ok}");
    }
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "2001:db8::/129",
        "x/8",
        "10.0.0.0/-1",
        "",
    ] {
        assert!(!is_cidr(bad), "{bad}");
    }
}
