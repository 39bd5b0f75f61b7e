use super::*;
use k8s_watch::PolicyObject;
use policy_model::rules::PolicyKind;

fn np(name: &str, version: &str, port: u16) -> PolicyObject {
    PolicyObject {
        kind: PolicyKind::NetworkPolicy,
        namespace: Some("shop".into()),
        name: name.into(),
        resource_version: version.into(),
        json: format!(
            r#"{{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{{"name":"{name}","namespace":"shop"}},"spec":{{"podSelector":{{}},"ingress":[{{"ports":[{{"port":{port}}}]}}]}}}}"#
        ),
    }
}

fn snap(policies: Vec<PolicyObject>) -> Arc<Snapshot> {
    let mut s = Snapshot {
        policies,
        ..Snapshot::default()
    };
    s.topology
        .namespaces
        .push(policy_model::topology::NamespaceSpec {
            name: "shop".into(),
            ..Default::default()
        });
    Arc::new(s)
}

fn key(name: &str) -> ObjectKey {
    ("NetworkPolicy".into(), Some("shop".into()), name.into())
}

fn ports(update: &InputUpdate) -> Vec<String> {
    let set = &update.snapshot.as_ref().expect("a snapshot").policies;
    set.iter()
        .map(|p| {
            format!(
                "{}:{:?}",
                p.origin.name, p.rules[0].ingress.entries[0].ports
            )
        })
        .collect()
}

#[test]
fn a_new_snapshot_reparses_only_the_objects_that_changed() {
    let mut objects = KubeObjects::default();
    let first = objects.read(&snap(vec![np("a", "1", 80), np("b", "1", 81)]));
    assert!(first.rejected.is_empty());
    assert_eq!(
        first.changes.policies.added,
        [key("a"), key("b")].into_iter().collect()
    );
    assert!(
        first.changes.topology.is_none(),
        "no delta before a first read"
    );

    let second = objects.read(&snap(vec![
        np("a", "1", 80),
        np("b", "2", 8081),
        np("c", "1", 82),
    ]));
    let d = &second.changes.policies;
    assert_eq!(d.added, [key("c")].into_iter().collect());
    assert_eq!(
        d.updated,
        [key("b")].into_iter().collect(),
        "a kept its version"
    );
    assert!(d.removed.is_empty());
    let now = ports(&second);
    assert_eq!(now.len(), 3);
    assert!(
        now[1].starts_with("b:") && now[1].contains("8081"),
        "{now:?}"
    );

    let third = objects.read(&snap(vec![np("b", "2", 8081)]));
    let d = &third.changes.policies;
    assert_eq!(d.removed, [key("a"), key("c")].into_iter().collect());
    assert!(d.added.is_empty() && d.updated.is_empty());
    assert_eq!(ports(&third).len(), 1);
}

#[test]
fn an_object_that_does_not_parse_changes_nothing() {
    let mut objects = KubeObjects::default();
    objects.read(&snap(vec![np("a", "1", 80)]));
    let mut broken = np("a", "2", 80);
    broken.json = "{not json".into();
    let read = objects.read(&snap(vec![broken]));
    assert!(read.snapshot.is_none());
    assert_eq!(read.rejected.len(), 1);
    assert!(
        read.rejected[0].contains("k8s:NetworkPolicy/shop/a"),
        "{:?}",
        read.rejected
    );
    // The next good version is still seen as an update of the kept one.
    let fixed = objects.read(&snap(vec![np("a", "3", 90)]));
    assert_eq!(
        fixed.changes.policies.updated,
        [key("a")].into_iter().collect()
    );
}
