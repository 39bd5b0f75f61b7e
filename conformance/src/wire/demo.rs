//! `portcullis lab demo`: the multi-tenant isolation scenario end to end.
//! Builds a two-node cluster lab (pods 1-4 on `node-1`, 5-8 on `node-2`,
//! one agent per node fed by the lab's API server) from the conformance
//! case `multi-tenant/cnp`, or the one-node lab with `--one-node`; starts
//! responders in every pod, probes every pod pair with real TCP connects
//! and UDP exchanges (IPv4 and IPv6), and prints the observed matrix next
//! to the expected one.

use anyhow::{Context, Result, bail};
use policy_model::Topology;
use portcullis_lab::servers::{Processes, start_responders};
use portcullis_lab::{self as lab, paths, probe};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

const TOPOLOGY: &str = include_str!("../../topologies/multi-tenant.yaml");
const CASE: &str = include_str!("../../cases/multi-tenant/cnp.yaml");

/// The seed's cluster: the multi-tenant topology on two nodes, its pods
/// 1-4 on `node-1` and 5-8 on `node-2` (the one-node `node:` becomes
/// `node-1`'s entry).
pub fn two_nodes(topo: &Topology) -> Topology {
    let mut t = topo.clone();
    let host = t.node.take().unwrap_or_default();
    let mut second = policy_model::topology::NodeSpec {
        name: "node-2".into(),
        ips: vec![
            "10.200.0.2".parse().expect("literal"),
            "fd00:200::2".parse().expect("literal"),
        ],
        labels: host.labels.clone(),
    };
    second
        .labels
        .insert("kubernetes.io/hostname".into(), "node2".into());
    t.nodes = vec![
        policy_model::topology::NodeSpec {
            name: "node-1".into(),
            ips: host.ips,
            labels: host.labels,
        },
        second,
    ];
    let half = t.pods.len().div_ceil(2);
    for (i, pod) in t.pods.iter_mut().enumerate() {
        std::sync::Arc::make_mut(pod).node =
            Some(if i < half { "node-1" } else { "node-2" }.into());
    }
    t
}

/// Runs the demo with the agent binary `me`: on two nodes (Kubernetes
/// mode), or with `one_node` on the one-node lab (file mode, or
/// Kubernetes mode with `kubernetes`).
pub fn run(me: &Path, keep: bool, kubernetes: bool, one_node: bool) -> Result<()> {
    let dir = paths::work_dir("demo");
    std::fs::create_dir_all(&dir)?;
    let case: serde_yaml_ng::Value = serde_yaml_ng::from_str(CASE).context("embedded case")?;
    let policies = case["policies"].as_str().context("case has policies")?;
    let topo_path = dir.join("topology.yaml");
    let pol_path = dir.join("policy.yaml");
    let mut topo =
        Topology::from_yaml(TOPOLOGY, "multi-tenant.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
    if !one_node {
        topo = two_nodes(&topo);
    }
    std::fs::write(&topo_path, serde_yaml_ng::to_string(&topo)?)?;
    std::fs::write(&pol_path, policies)?;

    println!(
        "portcullis lab demo: multi-tenant isolation (CiliumNetworkPolicy){}",
        if kubernetes || !one_node {
            ", from Kubernetes API objects (the lab's API server, list+watch)"
        } else {
            ""
        }
    );
    println!(
        "building the lab: {} pods in namespaces {}",
        topo.pods.len(),
        topo.namespaces
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let state = lab::up(
        &topo_path,
        std::slice::from_ref(&pol_path),
        me,
        kubernetes,
        &[],
    )?;
    if state.cluster {
        for node in &state.nodes {
            let pods: Vec<String> = topo
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.node.as_deref() == Some(node.name.as_str()))
                .map(|(i, p)| format!("{} {}", i + 1, p.full_name()))
                .collect();
            println!(
                "{}: its own agent (pid {}), pods {}",
                node.name,
                node.agent_pid.unwrap_or(0),
                pods.join(", ")
            );
        }
        println!("egress policy is enforced on the client's node, ingress policy on the server's");
    }
    let result = (|| -> Result<bool> {
        let mut servers = Processes::new();
        let (tcp, udp) = (BTreeSet::from([80, 9090]), BTreeSet::from([80]));
        for (_, ns) in &state.pods {
            start_responders(&mut servers, me, ns, &tcp, &udp, &[])?;
        }
        std::thread::sleep(Duration::from_millis(500));

        let set = policy_model::load::load_str(policies, "multi-tenant/cnp")
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let cluster = policy_model::Cluster::new(
            topo.clone(),
            set.rules().cloned().collect(),
            &policy_model::FqdnCache::default(),
        );
        let mut all_ok = true;
        for (label, proto, port, v6) in [
            (
                "TCP/80 over IPv4",
                policy_model::Protocol::Tcp,
                80u16,
                false,
            ),
            ("TCP/80 over IPv6", policy_model::Protocol::Tcp, 80, true),
            ("UDP/80 over IPv4", policy_model::Protocol::Udp, 80, false),
            ("UDP/80 over IPv6", policy_model::Protocol::Udp, 80, true),
        ] {
            let expected = policy_model::matrix::reachability(&cluster, proto, port);
            let observed = observe_matrix(&state, &topo, proto, port, v6)?;
            all_ok &= print_side_by_side(label, &expected, &observed, &topo);
        }
        if state.cluster {
            let n = topo.pods.len();
            let node = |i: usize| topo.pods[i].node.clone();
            let cross = (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .filter(|(i, j)| i != j && node(*i) != node(*j))
                .count();
            println!(
                "\n{} of the {} ordered pod pairs cross nodes (probed 4 ways each: TCP and UDP, IPv4 and IPv6)",
                cross,
                n * (n - 1)
            );
        }
        drop(servers);
        Ok(all_ok)
    })();
    if !keep {
        lab::down()?;
    } else {
        println!("the lab stays up (portcullis lab down removes it)");
    }
    match result? {
        true => {
            println!("observed == expected for every probed pair");
            Ok(())
        }
        false => bail!("the observed matrix differs from the expected one"),
    }
}

/// Probes every ordered pair of distinct pods concurrently.
fn observe_matrix(
    state: &lab::LabState,
    topo: &Topology,
    proto: policy_model::Protocol,
    port: u16,
    v6: bool,
) -> Result<Vec<Vec<Option<bool>>>> {
    let pods: Vec<(String, String, IpAddr)> = state
        .pods
        .iter()
        .map(|(name, ns)| {
            let ip = topo
                .pod(name)
                .and_then(|p| p.addresses().into_iter().find(|a| a.is_ipv6() == v6))
                .context("pod address")?;
            Ok((name.clone(), ns.clone(), ip))
        })
        .collect::<Result<_>>()?;
    let mut handles = Vec::new();
    for (i, (_, ns, _)) in pods.iter().enumerate() {
        for (j, (_, _, ip)) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            let (ns, ip) = (ns.clone(), *ip);
            handles.push((
                i,
                j,
                std::thread::spawn(move || {
                    let t = Duration::from_millis(1500);
                    match proto {
                        policy_model::Protocol::Udp => probe::udp(&ns, ip, port, t),
                        _ => probe::tcp(&ns, ip, port, t),
                    }
                }),
            ));
        }
    }
    let mut m = vec![vec![None; pods.len()]; pods.len()];
    for (i, j, h) in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        m[i][j] = Some(r == probe::Observed::Connected);
    }
    Ok(m)
}

/// Prints the model's matrix and the observed one side by side; rows name
/// the pod's node when `topo` places pods (`[node-1] ta/web`).
fn print_side_by_side(
    label: &str,
    expected: &policy_model::matrix::Reachability,
    observed: &[Vec<Option<bool>>],
    topo: &Topology,
) -> bool {
    let short: Vec<String> = expected
        .pods
        .iter()
        .map(|p| {
            let name = p.replace("tenant-", "t");
            match topo.pod(p).and_then(|pod| pod.node.as_deref()) {
                Some(node) => format!("[{node}] {name}"),
                None => name,
            }
        })
        .collect();
    let w = short.iter().map(|s| s.len()).max().unwrap_or(4);
    println!(
        "\n{label}: expected (model)  |  observed (real traffic)   . allowed  X denied  ! mismatch"
    );
    let header: String = (0..short.len())
        .map(|i| format!("{:>2}", i + 1))
        .collect::<Vec<_>>()
        .join(" ");
    println!("{:>w$}   {header}   |   {header}", "");
    let mut ok = true;
    for (i, name) in short.iter().enumerate() {
        let e: Vec<String> = expected.cells[i]
            .iter()
            .enumerate()
            .map(|(j, v)| {
                if i == j {
                    " -".into()
                } else if *v == policy_model::Verdict::Allowed {
                    " .".into()
                } else {
                    " X".into()
                }
            })
            .collect();
        let o: Vec<String> = observed[i]
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                None => " -".to_string(),
                Some(allowed) => {
                    let exp = expected.cells[i][j] == policy_model::Verdict::Allowed;
                    if *allowed != exp {
                        ok = false;
                        " !".to_string()
                    } else if *allowed {
                        " .".to_string()
                    } else {
                        " X".to_string()
                    }
                }
            })
            .collect();
        println!(
            "{:>w$} {:>2} {}   |   {}",
            name,
            i + 1,
            e.join(" "),
            o.join(" ")
        );
    }
    ok
}
