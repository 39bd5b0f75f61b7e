use super::*;

fn policy(name: &str, version: &str) -> PolicyObject {
    PolicyObject {
        kind: PolicyKind::NetworkPolicy,
        namespace: Some("shop".into()),
        name: name.into(),
        resource_version: version.into(),
        json: format!("{{\"v\":\"{version}\"}}"),
    }
}

fn snapshot(policies: Vec<PolicyObject>) -> Snapshot {
    Snapshot {
        policies,
        ..Snapshot::default()
    }
}

#[test]
fn only_objects_with_a_new_version_in_force_are_upserted() {
    let before = snapshot(vec![
        policy("a", "1"),
        policy("b", "7"),
        policy("gone", "3"),
    ]);
    let after = snapshot(vec![policy("a", "1"), policy("b", "8"), policy("c", "1")]);
    let (upserted, removed) = after.policy_changes_since(&before);
    let names: Vec<&str> = upserted.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(
        removed,
        [(
            PolicyKind::NetworkPolicy,
            Some("shop".to_string()),
            "gone".to_string()
        )]
    );
    let (none, nothing) = after.policy_changes_since(&after);
    assert!(none.is_empty() && nothing.is_empty());
    // From nothing, everything is new.
    let (all, _) = after.policy_changes_since(&Snapshot::default());
    assert_eq!(all.len(), 3);
}

#[test]
fn a_cluster_wide_and_a_namespaced_object_of_one_name_are_two_objects() {
    let mut wide = policy("p", "1");
    wide.kind = PolicyKind::CiliumClusterwideNetworkPolicy;
    wide.namespace = None;
    let before = snapshot(vec![policy("p", "1")]);
    let after = snapshot(vec![policy("p", "1"), wide]);
    let (upserted, removed) = after.policy_changes_since(&before);
    assert_eq!(upserted.len(), 1);
    assert_eq!(upserted[0].namespace, None);
    assert!(removed.is_empty());
}

#[test]
fn the_policy_digest_follows_versions_not_order() {
    let a = [
        ("NetworkPolicy", Some("x"), "p", "5"),
        ("CiliumClusterwideNetworkPolicy", None, "c", "7"),
    ];
    let b = [a[1], a[0]];
    assert_eq!(policy_digest(a), policy_digest(b));
    let newer = [a[0], ("CiliumClusterwideNetworkPolicy", None, "c", "8")];
    assert_ne!(policy_digest(a), policy_digest(newer));
    assert_ne!(policy_digest(a), policy_digest([a[0]]));
    // The namespace is part of the key: x/p is not p cluster-wide.
    assert_ne!(
        policy_digest([("NetworkPolicy", Some("x"), "p", "5")]),
        policy_digest([("NetworkPolicy", None, "xp", "5")])
    );
}
