use super::*;

fn limits(policy: usize, per_endpoint: usize) -> MapLimits {
    MapLimits {
        ipcache: 8,
        policy,
        policy_per_endpoint: per_endpoint,
    }
}

fn d(id: u16, old: usize, new: usize) -> EndpointDemand {
    EndpointDemand { id, old, new }
}

#[test]
fn an_endpoint_over_its_budget_fails_closed_and_the_others_are_written() {
    let adm = admit_endpoints(&[d(1, 10, 81_920), d(2, 10, 2)], &limits(65_536, 16_384));
    assert_eq!(
        adm[&1],
        Admission::OverBudget {
            entries: 81_920,
            budget: 16_384
        }
    );
    assert_eq!(adm[&2], Admission::Full);
    assert!(adm[&1].reason().expect("a reason").contains("budget"));
}

#[test]
fn the_endpoint_that_grows_is_the_one_left_out_when_the_map_is_full() {
    // 3 fits-its-budget endpoints, 100 entries of room: the shrinking
    // and unchanged ones go in, the one that grows does not.
    let adm = admit_endpoints(
        &[d(1, 10, 60), d(2, 40, 40), d(3, 50, 30)],
        &limits(100, 64),
    );
    assert_eq!(adm[&2], Admission::Full);
    assert_eq!(adm[&3], Admission::Full);
    assert_eq!(
        adm[&1],
        Admission::NoRoom {
            entries: 60,
            free: 30
        }
    );
}

#[test]
fn a_change_that_only_removes_entries_is_always_admitted() {
    // Even with the map already over-full (e.g. a smaller map pinned).
    let adm = admit_endpoints(&[d(1, 90, 90), d(2, 50, 0)], &limits(64, 128));
    assert_eq!(adm[&2], Admission::Full);
    assert!(matches!(adm[&1], Admission::NoRoom { .. }));
}

#[test]
fn exactly_full_fits() {
    let adm = admit_endpoints(&[d(1, 0, 50), d(2, 0, 50)], &limits(100, 50));
    assert!(adm.values().all(|a| *a == Admission::Full));
}

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

#[test]
fn learned_addresses_are_left_out_before_cluster_entries() {
    use IpcacheClass::*;
    let old: BTreeMap<IpNet, u32> = [(p("10.201.0.1/32"), 300), (p("10.201.0.2/32"), 300)].into();
    let new = vec![
        (p("10.200.1.10/32"), 256, Cluster),
        (p("10.0.0.0/8"), 16_777_217, Cluster),
        (p("10.201.0.3/32"), 300, Learned),
        (p("10.201.0.1/32"), 300, Learned),
        (p("10.201.0.2/32"), 300, Learned),
    ];
    let plan = plan_ipcache(&old, &new, 3);
    // Cluster first, then the learned address already written; the
    // other old one is evicted, the new one not written.
    assert_eq!(
        plan.upserts,
        vec![(p("10.200.1.10/32"), 256), (p("10.0.0.0/8"), 16_777_217)]
    );
    assert_eq!(plan.deletes, vec![p("10.201.0.2/32")]);
    assert_eq!(
        plan.refused_learned,
        vec![p("10.201.0.2/32"), p("10.201.0.3/32")]
    );
    assert!(plan.unwritable.is_empty());
}

#[test]
fn cluster_entries_that_do_not_fit_are_reported() {
    use IpcacheClass::*;
    let new = vec![
        (p("10.200.1.10/32"), 256, Cluster),
        (p("10.200.1.11/32"), 257, Cluster),
    ];
    let plan = plan_ipcache(&BTreeMap::new(), &new, 1);
    assert_eq!(plan.unwritable, vec![p("10.200.1.11/32")]);
    assert_eq!(plan.upserts.len(), 1);
}

#[test]
fn unchanged_entries_are_not_rewritten_and_stale_ones_go() {
    use IpcacheClass::*;
    let old: BTreeMap<IpNet, u32> = [(p("10.200.1.10/32"), 256), (p("10.200.1.11/32"), 257)].into();
    let new = vec![
        (p("10.200.1.10/32"), 256, Cluster),
        (p("10.200.1.12/32"), 258, Cluster),
    ];
    let plan = plan_ipcache(&old, &new, 10);
    assert_eq!(plan.upserts, vec![(p("10.200.1.12/32"), 258)]);
    assert_eq!(plan.deletes, vec![p("10.200.1.11/32")]);
}
