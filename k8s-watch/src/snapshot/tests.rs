use super::*;
use policy_model::topology::HostSpec;

fn pod(name: &str, app: &str, ip: &str) -> PodSpec {
    PodSpec {
        namespace: "shop".into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ips: vec![ip.parse().expect("ip")],
        ..PodSpec::default()
    }
}

fn policy(name: &str, version: &str) -> PolicyObject {
    PolicyObject {
        kind: PolicyKind::NetworkPolicy,
        namespace: Some("shop".into()),
        name: name.into(),
        resource_version: version.into(),
        json: format!("{{\"v\":\"{version}\"}}"),
    }
}

fn snapshot(pods: Vec<PodSpec>, policies: Vec<PolicyObject>) -> Snapshot {
    Snapshot {
        topology: Topology {
            namespaces: vec![NamespaceSpec {
                name: "shop".into(),
                ..NamespaceSpec::default()
            }],
            pods,
            ..Topology::default()
        },
        policies,
        ..Snapshot::default()
    }
}

#[test]
fn only_what_changed_is_reported() {
    let before = snapshot(
        vec![
            pod("web", "web", "10.200.0.1"),
            pod("db", "db", "10.200.0.2"),
        ],
        vec![policy("a", "1"), policy("b", "7")],
    );
    let after = snapshot(
        vec![
            pod("web", "web2", "10.200.0.1"),
            pod("cache", "c", "10.200.0.3"),
        ],
        vec![policy("a", "1"), policy("b", "8"), policy("c", "1")],
    );
    let changes = after.changes_since(&before);
    let names = |v: &[PolicyObject]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&changes.policies_upserted), ["b", "c"]);
    assert!(changes.policies_removed.is_empty());
    let pods: Vec<String> = changes
        .pods_upserted
        .iter()
        .map(|p| p.full_name())
        .collect();
    assert_eq!(pods, ["shop/web", "shop/cache"]);
    assert_eq!(changes.pods_removed, ["shop/db"]);
    assert!(changes.namespaces_upserted.is_empty() && changes.namespaces_removed.is_empty());
    assert!(!changes.hosts_changed && !changes.local_pods_changed);
}

#[test]
fn removals_relabels_and_hosts_are_reported() {
    let before = snapshot(
        vec![pod("web", "web", "10.200.0.1")],
        vec![policy("a", "1")],
    );
    let mut after = snapshot(vec![pod("web", "web", "10.200.0.1")], Vec::new());
    after.topology.namespaces[0]
        .labels
        .insert("team".into(), "x".into());
    after.topology.node = Some(HostSpec {
        ips: vec!["192.168.1.1".parse().expect("ip")],
        ..HostSpec::default()
    });
    after.local_pods = vec!["shop/web".into()];
    let changes = after.changes_since(&before);
    assert_eq!(
        changes.policies_removed,
        [(
            PolicyKind::NetworkPolicy,
            Some("shop".to_string()),
            "a".to_string()
        )]
    );
    assert_eq!(changes.namespaces_upserted.len(), 1);
    assert!(changes.pods_upserted.is_empty());
    assert!(changes.hosts_changed && changes.local_pods_changed);
    assert!(!changes.is_empty());
    assert!(after.changes_since(&after).is_empty());
}
