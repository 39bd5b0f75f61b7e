use super::*;
use serde_json::json;

#[test]
fn names_follow_rfc_1123() {
    assert!(is_dns_subdomain("a.b-c.d"));
    assert!(!is_dns_subdomain("A"));
    assert!(!is_dns_subdomain("a..b"));
    assert!(!is_dns_subdomain("-a"));
    assert!(is_dns_label("ns-1"));
    assert!(!is_dns_label("a.b"));
    assert!(!is_dns_label(&"a".repeat(64)));
    assert_eq!(check_name(None, false)[0].field, "metadata.name");
    assert!(check_name(Some("ok"), true).is_empty());
}

#[test]
fn label_keys_and_values_are_checked() {
    let obj = json!({"metadata": {"labels": {
        "app": "web", "example.com/tier": "x_y.z", "bad key": "v", "k": "-bad"
    }}});
    let causes = check_labels(&obj);
    assert_eq!(causes.len(), 2, "{causes:?}");
}

#[test]
fn the_policy_validator_gives_the_watchers_reason() {
    let v = policy_validator();
    let good = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"fromEntities": ["world"]}]}});
    assert_eq!(v(&good), Ok(()));
    let mut bad = good.clone();
    bad["spec"]["endpointSelector"] =
        json!({"matchExpressions": [{"key": "app", "operator": "Sometimes"}]});
    let err = v(&bad).expect_err("an unknown operator is refused");
    assert!(!err.contains("resourceVersion"), "{err}");
    assert!(v(&json!({"kind": "Pod", "metadata": {"name": "p"}})).is_ok());
}
