//! Unit tests of the store.

use super::*;
use crate::convert::RawPolicy;
use policy_model::topology::PodSpec;

fn ns(name: &str) -> Update {
    Update {
        resource: Resource::Namespace,
        event: Event::Apply {
            key: name.into(),
            value: Value::Namespace(NamespaceSpec {
                name: name.into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            }),
        },
    }
}

fn pod_value(ns: &str, name: &str, ip: &str, node: &str) -> Value {
    Value::Pod(Some(PodEndpoint {
        spec: std::sync::Arc::new(PodSpec {
            namespace: ns.into(),
            name: name.into(),
            ips: vec![ip.parse().expect("ip")],
            ..PodSpec::default()
        }),
        node_name: Some(node.into()),
    }))
}

fn pod(ns: &str, name: &str, ip: &str) -> Update {
    Update {
        resource: Resource::Pod,
        event: Event::Apply {
            key: format!("{ns}/{name}"),
            value: pod_value(ns, name, ip, "n1"),
        },
    }
}

fn cnp_json(ns: &str, name: &str, rv: &str, port: &str) -> String {
    format!(
        r#"{{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{{"namespace":"{ns}","name":"{name}","resourceVersion":"{rv}"}},"spec":{{"endpointSelector":{{}},"ingress":[{{"toPorts":[{{"ports":[{{"port":"{port}"}}]}}]}}]}}}}"#
    )
}

fn cnp(ns: &str, name: &str, rv: &str, json: String) -> Update {
    Update {
        resource: Resource::Policy(PolicyKind::CiliumNetworkPolicy),
        event: Event::Apply {
            key: format!("{ns}/{name}"),
            value: Value::Policy(RawPolicy {
                kind: PolicyKind::CiliumNetworkPolicy,
                namespace: Some(ns.into()),
                name: name.into(),
                resource_version: rv.into(),
                json,
            }),
        },
    }
}

fn listed(store: &mut Store) {
    for r in Resource::all() {
        store.apply(Update {
            resource: r,
            event: Event::Init,
        });
        store.apply(Update {
            resource: r,
            event: Event::InitDone,
        });
    }
}

#[test]
fn ready_only_after_every_resource_is_listed() {
    let mut s = Store::new("n1");
    assert!(!s.ready());
    for r in Resource::all() {
        assert!(!s.ready());
        assert!(s.pending().contains(&r));
        s.apply(Update {
            resource: r,
            event: Event::Init,
        });
        s.apply(Update {
            resource: r,
            event: Event::InitDone,
        });
    }
    assert!(s.ready());
}

#[test]
fn a_relist_replaces_the_table() {
    let mut s = Store::new("n1");
    listed(&mut s);
    assert!(s.apply(ns("x")));
    assert!(s.apply(pod("x", "a", "10.0.0.1")));
    assert!(s.apply(pod("x", "b", "10.0.0.2")));
    // Relist: only x/b is left (x/a was deleted during the gap).
    let r = Resource::Pod;
    assert!(!s.apply(Update {
        resource: r,
        event: Event::Init
    }));
    assert!(!s.apply(Update {
        resource: r,
        event: Event::InitApply {
            key: "x/b".into(),
            value: pod_value("x", "b", "10.0.0.2", "n1"),
        },
    }));
    // Not applied before InitDone.
    assert_eq!(s.snapshot().topology.pods.len(), 2);
    assert!(s.apply(Update {
        resource: r,
        event: Event::InitDone
    }));
    let pods: Vec<_> = s
        .snapshot()
        .topology
        .pods
        .iter()
        .map(|p| p.full_name())
        .collect();
    assert_eq!(pods, ["x/b"]);
    // The same relist again changes nothing.
    s.apply(Update {
        resource: r,
        event: Event::Init,
    });
    s.apply(Update {
        resource: r,
        event: Event::InitApply {
            key: "x/b".into(),
            value: pod_value("x", "b", "10.0.0.2", "n1"),
        },
    });
    assert!(!s.apply(Update {
        resource: r,
        event: Event::InitDone
    }));
}

#[test]
fn a_pod_losing_its_address_leaves() {
    let mut s = Store::new("n1");
    listed(&mut s);
    s.apply(pod("x", "a", "10.0.0.1"));
    assert!(s.apply(Update {
        resource: Resource::Pod,
        event: Event::Apply {
            key: "x/a".into(),
            value: Value::Pod(None)
        },
    }));
    assert!(s.snapshot().topology.pods.is_empty());
}

#[test]
fn duplicate_addresses_and_missing_namespaces() {
    let mut s = Store::new("n1");
    listed(&mut s);
    s.apply(pod("x", "a", "10.0.0.1"));
    s.apply(pod("x", "b", "10.0.0.1"));
    s.apply(Update {
        resource: Resource::Pod,
        event: Event::Apply {
            key: "y/c".into(),
            value: pod_value("y", "c", "10.0.0.3", "n2"),
        },
    });
    let snap = s.snapshot();
    let pods: Vec<_> = snap.topology.pods.iter().map(|p| p.full_name()).collect();
    assert_eq!(pods, ["x/a", "y/c"]);
    assert_eq!(snap.local_pods, ["x/a"]);
    assert_eq!(snap.warnings.len(), 1);
    assert!(snap.warnings[0].contains("x/b"), "{:?}", snap.warnings);
    // Namespaces x and y have no objects: they are synthesized.
    let names: Vec<_> = snap.topology.namespaces.iter().map(|n| &n.name).collect();
    assert_eq!(names, ["x", "y"]);
    snap.topology.validate("t").expect("valid");
}

#[test]
fn invalid_update_keeps_the_previous_valid_version() {
    let mut s = Store::new("n1");
    listed(&mut s);
    s.apply(cnp("x", "p", "1", cnp_json("x", "p", "1", "80")));
    let bad = cnp_json("x", "p", "2", "80").replace("toPorts", "toPortz");
    assert!(s.apply(cnp("x", "p", "2", bad)));
    let snap = s.snapshot();
    assert_eq!(snap.policies.len(), 1);
    assert_eq!(snap.policies[0].resource_version, "1");
    assert!(!snap.status[0].valid);
    let reason = snap.status[0].reason.as_deref().expect("reason");
    assert!(reason.contains("resourceVersion 2 is invalid"), "{reason}");
    assert!(
        reason.contains("resourceVersion 1 stays in force"),
        "{reason}"
    );

    // A second invalid version still keeps version 1.
    let bad3 = cnp_json("x", "p", "3", "80").replace("ingress", "ingres");
    s.apply(cnp("x", "p", "3", bad3));
    assert_eq!(s.snapshot().policies[0].resource_version, "1");

    // A relist that brings the invalid version keeps version 1 too.
    let r = Resource::Policy(PolicyKind::CiliumNetworkPolicy);
    s.apply(Update {
        resource: r,
        event: Event::Init,
    });
    let bad4 = cnp_json("x", "p", "4", "80").replace("toPorts", "toPortz");
    if let Update {
        event: Event::Apply { key, value },
        ..
    } = cnp("x", "p", "4", bad4)
    {
        s.apply(Update {
            resource: r,
            event: Event::InitApply { key, value },
        });
    }
    s.apply(Update {
        resource: r,
        event: Event::InitDone,
    });
    let snap = s.snapshot();
    assert_eq!(snap.policies[0].resource_version, "1");
    assert!(!snap.status[0].valid);

    // Deleted: gone entirely.
    s.apply(Update {
        resource: r,
        event: Event::Delete { key: "x/p".into() },
    });
    let snap = s.snapshot();
    assert!(snap.policies.is_empty() && snap.status.is_empty());
}

#[test]
fn invalid_new_object_is_reported_not_enforced() {
    let mut s = Store::new("n1");
    listed(&mut s);
    s.apply(cnp("x", "p", "1", "{\"kind\":".into()));
    let snap = s.snapshot();
    assert!(snap.policies.is_empty());
    assert_eq!(snap.status.len(), 1);
    assert!(
        snap.status[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no valid version to keep"))
    );
}

#[test]
fn an_absent_resource_is_empty_and_synced() {
    let mut s = Store::new("n1");
    listed(&mut s);
    s.apply(cnp("x", "p", "1", cnp_json("x", "p", "1", "80")));
    assert!(s.apply(Update {
        resource: Resource::Policy(PolicyKind::CiliumNetworkPolicy),
        event: Event::Absent,
    }));
    assert!(s.ready());
    assert!(s.snapshot().policies.is_empty());
    assert!(!s.apply(Update {
        resource: Resource::Policy(PolicyKind::CiliumNetworkPolicy),
        event: Event::Absent,
    }));
}

fn group(name: &str, value: Result<CidrGroup, String>) -> Update {
    Update {
        resource: Resource::CidrGroup,
        event: Event::Apply {
            key: name.into(),
            value: Value::CidrGroup(value),
        },
    }
}

#[test]
fn cidr_groups_are_in_the_topology_by_name_and_bad_ones_are_warned_about() {
    let mut s = Store::new("n1");
    listed(&mut s);
    let g = |name: &str, cidr: &str| CidrGroup {
        name: name.into(),
        labels: BTreeMap::new(),
        cidrs: vec![cidr.parse().expect("cidr")],
    };
    assert!(s.apply(group("b", Ok(g("b", "10.201.2.0/24")))));
    assert!(s.apply(group("a", Ok(g("a", "10.201.1.0/24")))));
    assert!(s.apply(group(
        "c",
        Err("CiliumCIDRGroup/c: spec.externalCIDRs[0]: \"x\" is not a CIDR".into())
    )));
    let snap = s.snapshot();
    let names: Vec<&str> = snap
        .topology
        .cidr_groups
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.contains("spec.externalCIDRs[0]")),
        "{:?}",
        snap.warnings
    );
    assert!(s.apply(Update {
        resource: Resource::CidrGroup,
        event: Event::Delete { key: "a".into() },
    }));
    assert_eq!(s.snapshot().topology.cidr_groups.len(), 1);
}
