//! The pod-to-pod reachability matrix (the Kubernetes e2e "reachability"
//! table) and its text form.

use crate::explain::{FlowPeer, FlowQuery, Verdict, explain};
use crate::resolve::Cluster;
use crate::rules::Protocol;

/// Verdicts for every ordered pair of pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// Pod names (`ns/pod`) in topology order; rows are sources, columns
    /// destinations.
    pub pods: Vec<String>,
    pub cells: Vec<Vec<Verdict>>,
    pub protocol: Protocol,
    pub port: u16,
}

/// Computes the matrix for one port and protocol.
pub fn reachability(cluster: &Cluster, protocol: Protocol, port: u16) -> Reachability {
    let pods: Vec<String> = cluster.endpoints().iter().map(|e| e.full_name()).collect();
    let cells = pods
        .iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    let q = FlowQuery {
                        from: FlowPeer::Pod(from.clone()),
                        to: FlowPeer::Pod(to.clone()),
                        to_fqdn: None,
                        protocol,
                        port,
                        l7: None,
                    };
                    explain(cluster, &q)
                        .map(|e| e.verdict)
                        .unwrap_or(Verdict::Denied)
                })
                .collect()
        })
        .collect();
    Reachability {
        pods,
        cells,
        protocol,
        port,
    }
}

impl Reachability {
    /// The e2e-style table: `.` allowed, `X` denied.
    pub fn to_table(&self) -> String {
        let w = self.pods.iter().map(|p| p.len()).max().unwrap_or(1).max(1);
        let mut s = format!("{:<w$}", "-");
        for p in &self.pods {
            s.push_str(&format!(" {p:<w$}"));
        }
        s.push('\n');
        for (i, from) in self.pods.iter().enumerate() {
            s.push_str(&format!("{from:<w$}"));
            for v in &self.cells[i] {
                let c = if *v == Verdict::Allowed { "." } else { "X" };
                s.push_str(&format!(" {c:<w$}"));
            }
            s.push('\n');
        }
        s
    }

    /// Number of allowed cells.
    pub fn allowed(&self) -> usize {
        self.cells
            .iter()
            .flatten()
            .filter(|v| **v == Verdict::Allowed)
            .count()
    }
}
