use super::*;
use crate::case::{default_root, load_case};
use crate::wire::plan::{WireCall, WireProbe};
use policy_model::{Protocol, Verdict};
use portcullis_lab::probe::Outcome;

#[test]
fn every_two_pods_are_apart_in_some_placement() {
    for pods in 1..=40 {
        let ps = placements(pods);
        let bits = usize::BITS - (pods.max(2) - 1).leading_zeros();
        assert_eq!(ps.len(), bits as usize, "{pods} pods");
        for i in 0..pods {
            for j in 0..pods {
                if i != j {
                    assert!(
                        ps.iter().any(|p| p[i] != p[j]),
                        "{pods} pods: {i} and {j} always together"
                    );
                }
            }
        }
    }
    // The e2e topology's ten pods take four placements.
    assert_eq!(placements(10).len(), 4);
}

#[test]
fn a_placed_topology_has_two_nodes_the_first_with_the_old_node() {
    let root = default_root();
    let c = load_case(&root, &root.join("cases/k8s-e2e/default-deny-ingress.yaml"))
        .expect("case loads");
    let placement = &placements(c.topology.pods.len())[0];
    let placed = place(&c.topology, placement);
    placed.validate("placed").expect("valid");
    assert!(placed.node.is_none());
    let names: Vec<&str> = placed.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, NODES);
    assert_eq!(
        placed.nodes[0].ips,
        c.topology.node.as_ref().expect("xyz has a node").ips
    );
    let on: Vec<(String, &str)> = placed
        .pods
        .iter()
        .map(|p| (p.full_name(), p.node.as_deref().unwrap_or("-")))
        .take(3)
        .collect();
    assert_eq!(
        on,
        [
            ("x/a".to_string(), "node-1"),
            ("x/b".to_string(), "node-2"),
            ("x/c".to_string(), "node-1"),
        ]
    );
}

#[test]
fn the_e2e_cases_dealt_over_the_placements_cross_every_probed_pair_evenly() {
    let root = default_root();
    let cases: Vec<Case> = crate::case::load_cases(&root)
        .expect("cases load")
        .into_iter()
        .filter(|c| c.name.starts_with("k8s-e2e/"))
        .collect();
    let topo = cases[0].topology.clone();
    let ps = placements(topo.pods.len());
    let probed: BTreeSet<(usize, usize)> = cases.iter().flat_map(|c| pod_pairs(c, &topo)).collect();
    // Every ordered pair of the nine x/y/z pods, and some with kube-dns.
    assert!(probed.len() > 9 * 8, "{} pairs", probed.len());
    let total = cases.len();
    let piles = assign(cases, &topo, &ps);
    assert_eq!(piles.iter().map(Vec::len).sum::<usize>(), total);
    let mut crossed = BTreeSet::new();
    for (pile, pl) in piles.iter().zip(&ps) {
        for c in pile {
            crossed.extend(
                pod_pairs(c, &topo)
                    .into_iter()
                    .filter(|(a, b)| pl[*a] != pl[*b]),
            );
        }
    }
    assert_eq!(crossed, probed);
    let loads: Vec<usize> = piles
        .iter()
        .map(|p| {
            p.iter()
                .flat_map(|c| &c.probes)
                .filter(|p| sendable(p))
                .count()
        })
        .collect();
    let (min, max) = (loads.iter().min(), loads.iter().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| *max < min + min / 5),
        "uneven: {loads:?}"
    );
}

fn probe(src: (&str, &str), dst: (&str, &str)) -> WireProbe {
    let side = |s: &str| (!s.is_empty()).then(|| s.to_string());
    WireProbe {
        describe: String::new(),
        family: "v4",
        call: WireCall::L4,
        want: Outcome::Connected,
        resolve_first: Vec::new(),
        src_ns: String::new(),
        src_ip: None,
        dst: "10.200.1.10".parse().expect("literal"),
        src_pod: side(src.0),
        dst_pod: side(dst.0),
        src_node: side(src.1),
        dst_node: side(dst.1),
        protocol: Protocol::Tcp,
        port: 80,
        model: Verdict::Allowed,
        expect: crate::case::Expect::Allowed,
    }
}

#[test]
fn a_tally_counts_node_pairs_and_the_pod_pairs_that_crossed() {
    let nodes = vec!["node-1".to_string(), "node-2".to_string()];
    let mut t = NodeTally::default();
    t.add(&probe(("x/a", "node-1"), ("x/b", "node-2")), &nodes, false);
    t.add(&probe(("x/b", "node-2"), ("x/a", "node-2")), &nodes, true);
    t.add(&probe(("", "node-2"), ("x/a", "node-1")), &nodes, false);
    t.add(&probe(("x/a", "node-1"), ("", "")), &nodes, false);
    assert_eq!(
        Column::all(2)
            .into_iter()
            .map(|c| format!("{c} {}", t.count(c)))
            .collect::<Vec<_>>(),
        ["1>1 0/0", "1>2 1/0", "2>1 1/0", "2>2 1/1", "world 1/0"]
    );
    assert_eq!(
        t.sum(Column::crosses),
        Count {
            probes: 2,
            failed: 0
        }
    );
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(t.probed, [pair("x/a", "x/b"), pair("x/b", "x/a")].into());
    assert_eq!(t.uncrossed(), [&pair("x/b", "x/a")]);
    let mut all = NodeTally::default();
    all.merge(&t);
    all.add(&probe(("x/b", "node-1"), ("x/a", "node-2")), &nodes, false);
    assert!(all.uncrossed().is_empty());
    assert_eq!(all.count(Column::Nodes(1, 2)).probes, 2);
}
