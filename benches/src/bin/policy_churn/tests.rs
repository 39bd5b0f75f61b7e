use crate::drive::realization;
use crate::generate::{GenConfig, RemoteChange, remote_change};
use crate::report::{percentile, spread};

fn small() -> GenConfig {
    GenConfig {
        policies: 200,
        pods: 500,
        namespaces: 10,
        local: 10,
        nodes: 4,
        seed: 15,
    }
}

#[test]
fn the_cluster_is_the_same_for_the_same_flags_and_loads_cleanly() {
    let cfg = small();
    cfg.check().expect("valid counts");
    assert_eq!(cfg.topology_yaml(0), small().topology_yaml(0));
    let topo =
        policy_model::Topology::from_yaml(&cfg.topology_yaml(0), "t.yaml").expect("topology");
    assert_eq!(topo.pods.len(), 500);
    assert_eq!(topo.pods_on(crate::generate::LAB_NODE).count(), 10);
    portcullis_lab::net::check_lab_addresses(&topo).expect("lab addresses");
    let mut yaml = cfg.flip_policy(true);
    for i in 1..cfg.policies {
        yaml.push_str("---\n");
        yaml.push_str(&cfg.policy(i).1);
    }
    let set = match policy_model::load::load_str(&yaml, "gen.yaml") {
        Ok(s) => s,
        Err(e) => panic!(
            "{:?}",
            e.iter().take(3).map(|e| e.to_string()).collect::<Vec<_>>()
        ),
    };
    assert_eq!(set.policies.len(), 200);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings.len());
}

#[test]
fn the_flip_pair_is_local_and_in_two_namespaces() {
    let cfg = small();
    let pods = cfg.pods();
    let (c, s) = (&pods[cfg.client()], &pods[cfg.server()]);
    assert!(c.node.is_none() && s.node.is_none());
    assert_ne!(c.namespace, s.namespace);
    assert!(cfg.flip_policy(true).contains("port: \"8080\""));
    assert!(cfg.flip_policy(false).contains("port: \"8081\""));
    assert!(!cfg.flip_policy(false).contains("8080"));
}

#[test]
fn no_generated_subject_selects_the_flip_pair() {
    // Subjects select by a deployment's app or by tier; the pair has
    // neither, so only the flip policy governs it.
    let cfg = small();
    for i in 1..cfg.policies {
        let body = cfg.policy(i).1;
        assert!(!body.contains("churn-"), "policy {i} names the flip pair");
        let selector = body.split("Selector").nth(1).expect("a subject selector");
        assert!(
            selector.contains("app: app-") || selector.contains("key: tier"),
            "policy {i}: {selector}"
        );
    }
}

#[test]
fn remote_changes_add_remove_and_relabel_remote_pods_only() {
    let cfg = small();
    let base = policy_model::Topology::from_yaml(&cfg.topology_yaml(0), "t").expect("t0");
    let after_add = policy_model::Topology::from_yaml(&cfg.topology_yaml(1), "t").expect("t1");
    let after_remove = policy_model::Topology::from_yaml(&cfg.topology_yaml(2), "t").expect("t2");
    let after_relabel = policy_model::Topology::from_yaml(&cfg.topology_yaml(3), "t").expect("t3");
    assert!(matches!(remote_change(&cfg, 0), RemoteChange::Add { .. }));
    assert!(matches!(
        remote_change(&cfg, 1),
        RemoteChange::Remove { .. }
    ));
    assert_eq!(after_add.pods.len(), base.pods.len() + 1);
    let added = after_add.pods.last().expect("added");
    assert!(!added.is_on(crate::generate::LAB_NODE));
    assert_eq!(after_remove.pods, base.pods);
    let RemoteChange::Relabel { pod, .. } = remote_change(&cfg, 2) else {
        panic!("third change relabels");
    };
    let relabelled = after_relabel.pod(&pod).expect("relabelled pod");
    assert!(!relabelled.is_on(crate::generate::LAB_NODE));
    assert_ne!(Some(relabelled), base.pod(&pod));
    // A later relabel gives yet another label set (a new identity).
    let t6 = policy_model::Topology::from_yaml(&cfg.topology_yaml(6), "t").expect("t6");
    assert_ne!(t6.pod(&pod).map(|p| &p.labels), Some(&relabelled.labels));
    assert_eq!(after_relabel.pods_on(crate::generate::LAB_NODE).count(), 10);
}

#[test]
fn the_realization_histogram_is_summed_over_label_sets() {
    let text = "# HELP x\nportcullis_policy_realization_seconds_sum{kind=\"policy\"} 0.5\n\
                portcullis_policy_realization_seconds_count{kind=\"policy\"} 3\n\
                portcullis_policy_realization_seconds_sum{kind=\"pod\"} 0.25\n\
                portcullis_policy_realization_seconds_count{kind=\"pod\"} 2\n\
                portcullis_policy_realization_seconds_bucket{le=\"0.01\"} 5\n";
    assert_eq!(realization(text), Some((0.75, 5)));
    assert_eq!(realization("portcullis_endpoints 3\n"), None);
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(100.0));
    assert_eq!(percentile(&v, 99.0), Some(198.0));
    assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(
        spread(vec![3.0, 1.0, 2.0], "ms"),
        "2.0 / 3.0 / 3.0 ms (n=3)"
    );
    assert_eq!(spread(vec![], "ms"), "n/a");
}
