//! The cluster runs of `portcullis lab conformance`, their pure parts: the
//! placements of a one-node topology's pods over two nodes such that every
//! two pods sit on different nodes in at least one of them, the cases
//! dealt over the placements so that the pod pairs they probe cross nodes, and the tallies a run prints per node pair
//! (and the pod pairs that crossed nodes).

use super::plan::{WireProbe, sendable};
use crate::case::Case;
use policy_model::Topology;
use policy_model::topology::NodeSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The nodes of a placement's cluster.
pub const NODES: [&str; 2] = ["node-1", "node-2"];

/// Placements of `pods` pods over two nodes (for each pod, the position of
/// its node in [`NODES`]) such that any two pods are on different nodes in
/// at least one placement: placement `b` puts pod `i` on node `(i >> b) & 1`,
/// and two different positions differ in some bit. `ceil(log2(pods))`
/// placements; one when there are fewer than three pods.
pub fn placements(pods: usize) -> Vec<Vec<usize>> {
    let bits = (usize::BITS - pods.saturating_sub(1).leading_zeros()).max(1);
    (0..bits)
        .map(|b| (0..pods).map(|i| (i >> b) & 1).collect())
        .collect()
}

/// `topo` (a one-node topology) on the two nodes of [`NODES`], its pods
/// placed as `placement` says. The topology's `node:` becomes `node-1`
/// (its addresses and labels); `node-2` has a hostname label and the
/// addresses the lab gives it.
pub fn place(topo: &Topology, placement: &[usize]) -> Topology {
    let mut placed = topo.clone();
    let host = placed.node.take().unwrap_or_default();
    let mut first_labels = host.labels;
    first_labels
        .entry("kubernetes.io/hostname".into())
        .or_insert_with(|| NODES[0].into());
    placed.nodes = vec![
        NodeSpec {
            name: NODES[0].into(),
            ips: host.ips,
            labels: first_labels,
        },
        NodeSpec {
            name: NODES[1].into(),
            ips: vec![],
            labels: [("kubernetes.io/hostname".to_string(), NODES[1].to_string())].into(),
        },
    ];
    for (pod, node) in placed.pods.iter_mut().zip(placement) {
        Arc::make_mut(pod).node = Some(NODES[*node].into());
    }
    placed
}

/// The ordered pairs of distinct pods (positions in `topo.pods`) that the
/// case's sendable probes go between, naming the pods or their addresses.
pub fn pod_pairs(case: &Case, topo: &Topology) -> BTreeSet<(usize, usize)> {
    let position = |side: &Option<String>, ip: &Option<String>| {
        let ip: Option<IpAddr> = ip.as_ref().and_then(|s| s.parse().ok());
        topo.pods.iter().position(|p| {
            side.as_ref().is_some_and(|s| *s == p.full_name())
                || ip.is_some_and(|ip| p.addresses().contains(&ip))
        })
    };
    case.probes
        .iter()
        .filter(|p| sendable(p))
        .filter_map(|p| Some((position(&p.from, &p.from_ip)?, position(&p.to, &p.to_ip)?)))
        .filter(|(a, b)| a != b)
        .collect()
}

/// Deals `cases` (in order) over `placements` of `topo`'s pods so that
/// the pairs of pods they probe cross nodes, and the probes are shared
/// out evenly: each case goes to the placement that splits the most of
/// its pod pairs no earlier case has sent across nodes, and among equals
/// to the one with the fewest probes so far. A pair probed by a single
/// case is therefore split whenever that case has no other new pair to
/// split elsewhere; the run checks the coverage it got.
pub fn assign(cases: Vec<Case>, topo: &Topology, placements: &[Vec<usize>]) -> Vec<Vec<Case>> {
    let mut piles: Vec<Vec<Case>> = placements.iter().map(|_| Vec::new()).collect();
    let mut load = vec![0usize; placements.len()];
    let mut crossed: BTreeSet<(usize, usize)> = BTreeSet::new();
    for case in cases {
        let pairs = pod_pairs(&case, topo);
        let splits = |pl: &Vec<usize>| {
            pairs
                .iter()
                .filter(|(a, b)| pl.get(*a) != pl.get(*b) && !crossed.contains(&(*a, *b)))
                .count()
        };
        let Some(best) = (0..placements.len())
            .max_by_key(|i| (splits(&placements[*i]), std::cmp::Reverse((load[*i], *i))))
        else {
            continue;
        };
        let pl = &placements[best];
        crossed.extend(pairs.iter().filter(|(a, b)| pl.get(*a) != pl.get(*b)));
        load[best] += case.probes.iter().filter(|p| sendable(p)).count();
        piles[best].push(case);
    }
    piles
}

/// A column of a cluster run's rows: the probes from one node to another
/// (positions in the lab's nodes, from 1), or those with the world on a
/// side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Nodes(usize, usize),
    World,
}

impl Column {
    /// The column of `w` in a lab with `nodes` (in order).
    pub fn of(w: &WireProbe, nodes: &[String]) -> Column {
        let pos = |n: &Option<String>| {
            n.as_ref()
                .and_then(|n| nodes.iter().position(|m| m == n))
                .map(|i| i + 1)
        };
        match (pos(&w.src_node), pos(&w.dst_node)) {
            (Some(a), Some(b)) => Column::Nodes(a, b),
            _ => Column::World,
        }
    }

    /// Every column of a lab with `nodes` nodes, in print order.
    pub fn all(nodes: usize) -> Vec<Column> {
        let mut v: Vec<Column> = (1..=nodes)
            .flat_map(|a| (1..=nodes).map(move |b| Column::Nodes(a, b)))
            .collect();
        v.push(Column::World);
        v
    }

    /// Both sides on nodes, different ones.
    pub fn crosses(&self) -> bool {
        matches!(self, Column::Nodes(a, b) if a != b)
    }
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Nodes(a, b) => write!(f, "{a}>{b}"),
            Column::World => f.write_str("world"),
        }
    }
}

/// Probes and failures of one column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub probes: usize,
    pub failed: usize,
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.probes, self.failed)
    }
}

/// What a cluster run saw, by column, and which pod pairs it probed and
/// which of them across nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeTally {
    pub columns: BTreeMap<Column, Count>,
    /// Ordered pairs of distinct pods (`ns/pod`) some probe went between.
    pub probed: BTreeSet<(String, String)>,
    /// Those of them some probe went between while on different nodes.
    pub crossed: BTreeSet<(String, String)>,
}

impl NodeTally {
    /// Counts one probe of a lab with `nodes`, failed or not.
    pub fn add(&mut self, w: &WireProbe, nodes: &[String], failed: bool) {
        let column = Column::of(w, nodes);
        let count = self.columns.entry(column).or_default();
        count.probes += 1;
        count.failed += usize::from(failed);
        if let (Some(a), Some(b)) = (&w.src_pod, &w.dst_pod)
            && a != b
        {
            let pair = (a.clone(), b.clone());
            if column.crosses() {
                self.crossed.insert(pair.clone());
            }
            self.probed.insert(pair);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &NodeTally) {
        for (c, n) in &other.columns {
            let count = self.columns.entry(*c).or_default();
            count.probes += n.probes;
            count.failed += n.failed;
        }
        self.probed.extend(other.probed.iter().cloned());
        self.crossed.extend(other.crossed.iter().cloned());
    }

    /// The column's count (zero when nothing went there).
    pub fn count(&self, c: Column) -> Count {
        self.columns.get(&c).copied().unwrap_or_default()
    }

    /// The sum of the columns `which` selects.
    pub fn sum(&self, which: impl Fn(&Column) -> bool) -> Count {
        self.columns
            .iter()
            .filter(|(c, _)| which(c))
            .fold(Count::default(), |acc, (_, n)| Count {
                probes: acc.probes + n.probes,
                failed: acc.failed + n.failed,
            })
    }

    /// The probed pairs that never crossed nodes.
    pub fn uncrossed(&self) -> Vec<&(String, String)> {
        self.probed.difference(&self.crossed).collect()
    }
}

#[cfg(test)]
mod tests;
