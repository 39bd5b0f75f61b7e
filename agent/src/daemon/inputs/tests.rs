use super::{FileInputs, Inputs, fingerprint};
use crate::daemon::events::FileBatch;
use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "portcullis-fingerprint-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_fingerprint_follows_the_policy_files_the_loader_reads() {
    let d = Dir::new("files");
    let inputs = vec![d.0.clone()];
    std::fs::write(d.0.join("a.yaml"), "a: 1\n").unwrap();
    let first = fingerprint(&inputs);
    // A file the loader does not read changes nothing.
    std::fs::write(d.0.join("README.md"), "notes\n").unwrap();
    std::fs::write(d.0.join(".a.yaml.swp"), "x").unwrap();
    assert_eq!(fingerprint(&inputs), first, "a README or swap file");
    // A policy file edited (size), added in a subdirectory, removed.
    std::fs::write(d.0.join("a.yaml"), "a: 12\n").unwrap();
    let edited = fingerprint(&inputs);
    assert_ne!(edited, first, "an edited policy file");
    std::fs::create_dir_all(d.0.join("sub")).unwrap();
    std::fs::write(d.0.join("sub/b.yml"), "b: 1\n").unwrap();
    let added = fingerprint(&inputs);
    assert_ne!(added, edited, "a policy file added in a subdirectory");
    std::fs::remove_file(d.0.join("sub/b.yml")).unwrap();
    assert_eq!(fingerprint(&inputs), edited, "the added file removed again");
    // The whole input gone, then back.
    let gone_dir = d.0.join("sub");
    let missing = vec![gone_dir.join("nothing-here")];
    let absent = fingerprint(&missing);
    assert_eq!(absent.len(), 1, "a missing input counts: {absent:?}");
    std::fs::write(&missing[0], "c: 1\n").unwrap();
    assert_ne!(
        fingerprint(&missing),
        absent,
        "a missing input that appears"
    );
}

const PLACED: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
nodes:
  - {name: lab-node, ips: [10.0.0.1]}
  - {name: other, ips: [10.0.0.2]}
pods:
  - {namespace: x, name: here, labels: {pod: here}, ips: [10.200.1.10], node: lab-node}
  - {namespace: x, name: there, labels: {pod: there}, ips: [10.200.2.10], node: other}
  - {namespace: x, name: anywhere, labels: {pod: anywhere}, ips: [10.200.1.11]}
"#;

fn file_inputs(d: &Dir, node: &str) -> Inputs {
    std::fs::write(d.0.join("topology.yaml"), PLACED).unwrap();
    std::fs::write(d.0.join("policy.yaml"), "").unwrap();
    Inputs::Files(Box::new(FileInputs {
        topology_path: d.0.join("topology.yaml"),
        policies: vec![d.0.join("policy.yaml")],
        topology: None,
        view: None,
        cache: Default::default(),
        node: node.into(),
        stamp: Vec::new(),
    }))
}

#[test]
fn in_file_mode_only_this_nodes_pods_and_pods_without_a_node_are_local() {
    let d = Dir::new("placement");
    let mut inputs = file_inputs(&d, "lab-node");
    let first = inputs.initial().expect("valid inputs");
    assert!(first.local_pods.contains("x/here"));
    assert!(first.local_pods.contains("x/anywhere"));
    assert!(!first.local_pods.contains("x/there"), "another node's pod");
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let host = first.topology.node.as_ref().expect("the node is host");
    assert!(host.ips.contains(&ip("10.0.0.1")));
    let remote = first.topology.remote_nodes.as_ref().expect("remote nodes");
    assert!(remote.ips.contains(&ip("10.0.0.2")));
    assert_eq!(
        first.topology.pods.len(),
        3,
        "remote pods stay in the topology"
    );
    // The other node's agent sees it the other way round.
    let mut other = file_inputs(&d, "other");
    let theirs = other.initial().expect("valid inputs");
    assert!(theirs.local_pods.contains("x/there"));
    assert!(!theirs.local_pods.contains("x/here"));
}

#[test]
fn a_topology_edit_is_a_change_with_its_pod_delta_and_new_placement() {
    let d = Dir::new("topology-edit");
    let mut inputs = file_inputs(&d, "lab-node");
    inputs.initial().expect("valid inputs");
    let topo = d.0.join("topology.yaml");
    // x/there moves to this node.
    std::fs::write(&topo, PLACED.replace("node: other}", "node: lab-node}")).unwrap();
    let batch = FileBatch {
        first: std::time::Instant::now(),
        paths: Some([topo.clone()].into_iter().collect()),
    };
    let update = inputs
        .changed(Some(&batch))
        .expect("file mode always answers");
    let delta = update.changes.topology.expect("the topology changed");
    assert_eq!(delta.pods_changed.iter().collect::<Vec<_>>(), ["x/there"]);
    assert!(update.changes.policies.is_empty(), "no policy file named");
    let snap = update.snapshot.expect("something in force changed");
    assert!(snap.local_pods.contains("x/there"));
    // An invalid topology keeps the previous one, and is reported.
    std::fs::write(&topo, "pods: [{nmespace: x}]\n").unwrap();
    let update = inputs
        .changed(Some(&batch))
        .expect("file mode always answers");
    assert_eq!(update.rejected.len(), 1);
    assert_eq!(update.standing.len(), 1);
    assert!(update.snapshot.is_none());
}
