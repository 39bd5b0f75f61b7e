use super::*;

/// Parses a selector written as in a policy (YAML flow or block style).
fn sel_yaml(yaml: &str) -> LabelSelector {
    serde_yaml_ng::from_str(yaml).expect("test selector is valid YAML")
}

fn compile(yaml: &str, default_source: &str) -> Selector {
    Selector::compile(&sel_yaml(yaml), default_source).expect("test selector compiles")
}

fn pod(labels: &[(&str, &str)]) -> LabelSet {
    let mut l = LabelSet::new();
    for (k, v) in labels {
        l.insert(SOURCE_K8S, k, v);
    }
    l
}

#[test]
fn label_set_is_unique_by_key_and_displays_sorted_with_sources() {
    let l = LabelSet::new()
        .with(SOURCE_K8S, "zone", "a")
        .with(SOURCE_K8S, "app", "web")
        .with(SOURCE_RESERVED, "host", "")
        .with(SOURCE_K8S, "app", "db");
    assert_eq!(l.len(), 3);
    assert!(!l.is_empty());
    assert_eq!(
        l.get("app"),
        Some(&LabelValue {
            source: "k8s".into(),
            value: "db".into()
        })
    );
    assert_eq!(l.to_string(), "k8s:app=db,reserved:host,k8s:zone=a");
    let keys: Vec<&str> = l.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["app", "host", "zone"]);
    assert!(LabelSet::new().is_empty());
    assert_eq!(LabelSet::new().to_string(), "");
}

#[test]
fn match_labels_needs_every_pair() {
    let s = compile("matchLabels: {app: web, tier: front}", SOURCE_K8S);
    assert!(s.matches(&pod(&[("app", "web"), ("tier", "front"), ("x", "y")])));
    assert!(!s.matches(&pod(&[("app", "web")])));
    assert!(!s.matches(&pod(&[("app", "web"), ("tier", "back")])));
    assert!(!s.matches(&pod(&[])));
}

#[test]
fn in_matches_any_listed_value_and_needs_the_key() {
    let s = compile(
        "matchExpressions: [{key: app, operator: In, values: [web, api]}]",
        SOURCE_K8S,
    );
    assert!(s.matches(&pod(&[("app", "web")])));
    assert!(s.matches(&pod(&[("app", "api")])));
    assert!(!s.matches(&pod(&[("app", "db")])));
    assert!(!s.matches(&pod(&[("other", "web")])));
}

#[test]
fn not_in_matches_a_missing_key() {
    let s = compile(
        "matchExpressions: [{key: app, operator: NotIn, values: [web, api]}]",
        SOURCE_K8S,
    );
    assert!(!s.matches(&pod(&[("app", "web")])));
    assert!(!s.matches(&pod(&[("app", "api")])));
    assert!(s.matches(&pod(&[("app", "db")])));
    // Kubernetes semantics: NotIn is satisfied when the label is absent.
    assert!(s.matches(&pod(&[])));
    assert!(s.matches(&pod(&[("tier", "web")])));
}

#[test]
fn exists_and_does_not_exist_ignore_the_value() {
    let ex = compile(
        "matchExpressions: [{key: app, operator: Exists}]",
        SOURCE_K8S,
    );
    let dne = compile(
        "matchExpressions: [{key: app, operator: DoesNotExist}]",
        SOURCE_K8S,
    );
    for v in ["", "web", "x"] {
        assert!(ex.matches(&pod(&[("app", v)])), "Exists with value {v:?}");
        assert!(!dne.matches(&pod(&[("app", v)])), "DoesNotExist {v:?}");
    }
    assert!(!ex.matches(&pod(&[("tier", "a")])));
    assert!(dne.matches(&pod(&[("tier", "a")])));
}

#[test]
fn k8s_prefix_does_not_match_a_label_of_another_source() {
    let s = compile("matchLabels: {'k8s:host': ''}", SOURCE_ANY);
    let reserved = LabelSet::new().with(SOURCE_RESERVED, "host", "");
    let k8s = LabelSet::new().with(SOURCE_K8S, "host", "");
    assert!(!s.matches(&reserved));
    assert!(s.matches(&k8s));
}

#[test]
fn reserved_prefix_matches_only_reserved_labels() {
    let s = compile("matchLabels: {'reserved:host': ''}", SOURCE_ANY);
    assert!(s.matches(&LabelSet::new().with(SOURCE_RESERVED, "host", "")));
    assert!(!s.matches(&LabelSet::new().with(SOURCE_K8S, "host", "")));
    assert_eq!(s.requirements[0].source, "reserved");
    assert_eq!(s.requirements[0].key, "host");
}

#[test]
fn any_prefix_and_unprefixed_cilium_keys_match_every_source() {
    let explicit = compile("matchLabels: {'any:role': db}", SOURCE_K8S);
    let bare = compile("matchLabels: {role: db}", SOURCE_ANY);
    for src in [SOURCE_K8S, SOURCE_RESERVED, "container"] {
        let l = LabelSet::new().with(src, "role", "db");
        assert!(explicit.matches(&l), "any: vs {src}");
        assert!(bare.matches(&l), "bare key vs {src}");
    }
}

#[test]
fn unprefixed_key_gets_the_default_source() {
    // NetworkPolicy selectors default to k8s: they never select reserved labels.
    let s = compile("matchLabels: {host: ''}", SOURCE_K8S);
    assert_eq!(s.requirements[0].source, SOURCE_K8S);
    assert!(!s.matches(&LabelSet::new().with(SOURCE_RESERVED, "host", "")));
}

#[test]
fn split_source_handles_prefixes_and_slashes() {
    assert_eq!(split_source("k8s:app"), ("k8s", "app"));
    assert_eq!(split_source("reserved:host"), ("reserved", "host"));
    assert_eq!(split_source("app"), ("any", "app"));
    // A key with a DNS prefix has no source; its '/' keeps it whole.
    assert_eq!(
        split_source("app.kubernetes.io/name"),
        ("any", "app.kubernetes.io/name")
    );
    assert_eq!(split_source("example.com/a:b"), ("any", "example.com/a:b"));
    // Only the first ':' separates the source.
    assert_eq!(split_source("k8s:a:b"), ("k8s", "a:b"));
    // An empty source is not a source.
    assert_eq!(split_source(":app"), ("any", ":app"));
    assert_eq!(
        split_source("k8s:io.cilium.k8s.namespace.labels.team"),
        ("k8s", "io.cilium.k8s.namespace.labels.team")
    );
}

#[test]
fn in_and_not_in_without_values_are_errors_with_the_index() {
    let e = Selector::compile(
        &sel_yaml(
            "matchExpressions: [{key: a, operator: Exists}, {key: b, operator: In, values: []}]",
        ),
        SOURCE_K8S,
    )
    .unwrap_err();
    assert_eq!(
        e,
        SelectorError::MissingValues {
            index: 1,
            op: SelectorOperator::In
        }
    );
    assert!(e.to_string().contains("matchExpressions[1]"), "{e}");
    let e = Selector::compile(
        &sel_yaml("matchExpressions: [{key: b, operator: NotIn}]"),
        SOURCE_K8S,
    )
    .unwrap_err();
    assert_eq!(
        e,
        SelectorError::MissingValues {
            index: 0,
            op: SelectorOperator::NotIn
        }
    );
}

#[test]
fn exists_and_does_not_exist_with_values_are_errors() {
    for op in ["Exists", "DoesNotExist"] {
        let y = format!("matchExpressions: [{{key: a, operator: {op}, values: [x]}}]");
        let e = Selector::compile(&sel_yaml(&y), SOURCE_K8S).unwrap_err();
        assert!(
            matches!(e, SelectorError::UnexpectedValues { index: 0, .. }),
            "{op}: {e:?}"
        );
    }
}

#[test]
fn empty_keys_are_errors() {
    for y in [
        "matchLabels: {'': x}",
        "matchLabels: {'k8s:': x}",
        "matchExpressions: [{key: '', operator: Exists}]",
        "matchExpressions: [{key: 'any:', operator: Exists}]",
    ] {
        assert_eq!(
            Selector::compile(&sel_yaml(y), SOURCE_K8S),
            Err(SelectorError::EmptyKey),
            "{y}"
        );
    }
}

#[test]
fn unknown_selector_fields_and_operators_do_not_parse() {
    assert!(serde_yaml_ng::from_str::<LabelSelector>("matchLabel: {a: b}").is_err());
    assert!(
        serde_yaml_ng::from_str::<LabelSelector>("matchExpressions: [{key: a, operator: Exist}]")
            .is_err()
    );
}

#[test]
fn empty_selector_selects_everything() {
    let s = compile("{}", SOURCE_ANY);
    assert!(s.is_wildcard());
    assert_eq!(s, Selector::all());
    assert!(s.matches(&LabelSet::new()));
    assert!(s.matches(&LabelSet::new().with(SOURCE_RESERVED, "world", "")));
    assert_eq!(s.to_string(), "{}");
    assert!(!compile("matchLabels: {a: b}", SOURCE_ANY).is_wildcard());
}

#[test]
fn display_of_each_operator() {
    let s = compile(
        "matchLabels: {'k8s:app': web}
matchExpressions:
  - {key: tier, operator: In, values: [b, a]}
  - {key: env, operator: NotIn, values: [prod]}
  - {key: 'k8s:owner', operator: Exists}
  - {key: legacy, operator: DoesNotExist}",
        SOURCE_ANY,
    );
    let text = s.to_string();
    for part in [
        "k8s:app=web",
        "tier in (a,b)",
        "env notin (prod)",
        "k8s:owner",
        "!legacy",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
    assert!(!text.contains("any:"), "the any source is implicit: {text}");
}

#[test]
fn requirement_values_are_sorted_and_deduplicated() {
    let r = Requirement::new(
        SOURCE_K8S,
        "a",
        SelectorOperator::In,
        vec!["z".into(), "a".into(), "z".into()],
    );
    assert_eq!(r.values, ["a", "z"]);
    assert_eq!(r.to_string(), "k8s:a in (a,z)");
}

#[test]
fn identical_requirements_collapse_and_order_is_canonical() {
    let a = compile(
        "matchLabels: {app: web}\nmatchExpressions: [{key: app, operator: In, values: [web]}]",
        SOURCE_K8S,
    );
    assert_eq!(a.requirements.len(), 1);
    let b = compile("matchLabels: {x: '1', y: '2'}", SOURCE_K8S);
    let c = Selector::all()
        .and(Requirement::equals(SOURCE_K8S, "y", "2"))
        .and(Requirement::equals(SOURCE_K8S, "x", "1"));
    assert_eq!(b, c, "requirement order must not matter");
}

#[test]
fn with_key_prefix_turns_a_namespace_selector_into_pod_labels() {
    let s = compile("matchLabels: {team: a}", SOURCE_K8S).with_key_prefix(NAMESPACE_LABELS_PREFIX);
    assert_eq!(s.requirements[0].key, "io.cilium.k8s.namespace.labels.team");
    assert_eq!(s.requirements[0].source, SOURCE_K8S);
    assert!(s.matches(&pod(&[("io.cilium.k8s.namespace.labels.team", "a")])));
    assert!(!s.matches(&pod(&[("team", "a")])));
}

#[test]
fn and_all_requires_both_selectors() {
    let a = compile("matchLabels: {app: web}", SOURCE_K8S);
    let b = compile("matchLabels: {tier: front}", SOURCE_K8S);
    let both = a.clone().and_all(&b);
    assert_eq!(both.requirements.len(), 2);
    assert!(both.matches(&pod(&[("app", "web"), ("tier", "front")])));
    assert!(!both.matches(&pod(&[("app", "web")])));
    assert!(!both.matches(&pod(&[("tier", "front")])));
    // AND with itself changes nothing.
    assert_eq!(a.clone().and_all(&a), a);
}

#[test]
fn namespace_requirement_detection() {
    let k8s = Selector::all().and(Requirement::equals(SOURCE_K8S, POD_NAMESPACE_LABEL, "x"));
    let any = compile("matchLabels: {io.kubernetes.pod.namespace: x}", SOURCE_ANY);
    let reserved = Selector::all().and(Requirement::equals(
        SOURCE_RESERVED,
        POD_NAMESPACE_LABEL,
        "x",
    ));
    let other = compile("matchLabels: {app: x}", SOURCE_ANY);
    let ns_labels = compile(
        "matchLabels: {io.cilium.k8s.namespace.labels.team: x}",
        SOURCE_ANY,
    );
    assert!(k8s.has_namespace_requirement());
    assert!(any.has_namespace_requirement());
    assert!(!reserved.has_namespace_requirement());
    assert!(!other.has_namespace_requirement());
    assert!(!ns_labels.has_namespace_requirement());
}

#[test]
fn a_value_mismatch_is_not_a_match_for_any_source() {
    let s = compile("matchLabels: {app: web}", SOURCE_ANY);
    assert!(!s.matches(&LabelSet::new().with(SOURCE_RESERVED, "app", "db")));
    assert!(!s.matches(&LabelSet::new().with(SOURCE_K8S, "app", "")));
}
