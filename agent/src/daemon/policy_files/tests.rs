use super::{PolicyFileCache, TopologyFile, TopologyRefresh};
use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "portcullis-policy-files-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn policy(name: &str, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{pod: c}}}}\n  ingress:\n  \
         - toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n"
    )
}

const INVALID: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: broken, namespace: x}\nspec: {endpointSelector: {}, nodeSelector: {}}\n";

fn names(cache: &mut PolicyFileCache) -> Vec<String> {
    cache.set().iter().map(|p| p.origin.name.clone()).collect()
}

/// The port ranges of every rule in force, as text ("80-80 9090-9090"). Only
/// the ports: the whole debug form holds the temporary directory's name, whose
/// process id can contain any digits.
fn ports(cache: &mut PolicyFileCache) -> String {
    let text = format!("{:?}", cache.set().iter().collect::<Vec<_>>());
    let mut out = Vec::new();
    for piece in text.split("Range(").skip(1) {
        let end = piece.find(')').unwrap_or(piece.len());
        out.push(piece[..end].replace(", ", "-"));
    }
    out.join(" ")
}

fn keys(names: &[&str]) -> std::collections::BTreeSet<super::ObjectKey> {
    names
        .iter()
        .map(|n| {
            (
                "CiliumNetworkPolicy".to_string(),
                Some("x".to_string()),
                n.to_string(),
            )
        })
        .collect()
}

#[test]
fn only_files_whose_content_changed_are_parsed_again() {
    let d = Dir::new("reparse");
    let a = d.write("a.yaml", &policy("a", 80));
    d.write("b.yaml", &policy("b", 81));
    let mut cache = PolicyFileCache::default();
    let first = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(first.delta.added, keys(&["a", "b"]));
    assert_eq!(names(&mut cache), ["a", "b"]);
    // Nothing changed: nothing re-parsed.
    let again = cache.refresh(std::slice::from_ref(&d.0), None);
    assert!(again.delta.is_empty(), "{again:?}");
    // Same content written again (new mtime): still nothing.
    d.write("b.yaml", &policy("b", 81));
    assert!(
        cache
            .refresh(std::slice::from_ref(&d.0), None)
            .delta
            .is_empty()
    );
    // a edited: only a is re-parsed, b keeps its objects.
    std::fs::write(&a, policy("a", 8080)).unwrap();
    let edit = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(edit.delta.files_changed, vec![a.clone()]);
    assert_eq!(edit.delta.updated, keys(&["a"]));
    assert!(edit.delta.added.is_empty() && edit.delta.removed.is_empty());
    assert!(ports(&mut cache).contains("8080"), "{}", ports(&mut cache));
    assert_eq!(names(&mut cache), ["a", "b"]);
}

#[test]
fn an_invalid_file_keeps_its_previous_version_while_another_file_updates() {
    let d = Dir::new("invalid");
    let a = d.write("a.yaml", &policy("a", 80));
    let b = d.write("b.yaml", &policy("b", 81));
    let mut cache = PolicyFileCache::default();
    cache.refresh(std::slice::from_ref(&d.0), None);
    let applied = cache.content_hash();
    std::fs::write(&a, INVALID).unwrap();
    std::fs::write(&b, policy("b", 9090)).unwrap();
    let r = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert!(r.rejected[0].contains("a.yaml"), "names the file: {r:?}");
    assert_eq!(r.delta.files_changed, vec![b.clone()]);
    // a's previous version stays, b's new one is in force.
    assert_eq!(names(&mut cache), ["a", "b"]);
    let text = ports(&mut cache);
    assert!(
        text.contains("9090-9090") && !text.contains("81-81"),
        "{text}"
    );
    assert_eq!(cache.rejections().len(), 1);
    assert_eq!(cache.kept_back(), keys(&["a"]));
    assert_ne!(cache.content_hash(), applied);
    // The rejection is not reported again until the file changes.
    assert!(
        cache
            .refresh(std::slice::from_ref(&d.0), None)
            .rejected
            .is_empty()
    );
    // Fixed: in force, no rejection left.
    std::fs::write(&a, policy("a", 7070)).unwrap();
    let fixed = cache.refresh(std::slice::from_ref(&d.0), None);
    assert!(fixed.rejected.is_empty());
    assert_eq!(fixed.delta.updated, keys(&["a"]));
    assert!(cache.rejections().is_empty());
    assert!(ports(&mut cache).contains("7070"));
}

#[test]
fn an_invalid_new_file_adds_nothing_and_a_removed_file_removes_its_objects() {
    let d = Dir::new("removed");
    d.write("a.yaml", &policy("a", 80));
    let b = d.write("b.yaml", &policy("b", 81));
    let mut cache = PolicyFileCache::default();
    cache.refresh(std::slice::from_ref(&d.0), None);
    let c = d.write("c.yaml", INVALID);
    let r = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(names(&mut cache), ["a", "b"]);
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(&c).unwrap();
    let r = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(r.delta.removed, keys(&["b"]));
    assert_eq!(r.delta.files_removed.len(), 2, "{r:?}");
    assert_eq!(names(&mut cache), ["a"]);
    assert!(cache.rejections().is_empty());
}

#[test]
fn a_rename_over_the_file_is_its_new_content() {
    let d = Dir::new("rename");
    let a = d.write("a.yaml", &policy("a", 80));
    let mut cache = PolicyFileCache::default();
    cache.refresh(std::slice::from_ref(&a), None);
    // An editor's save: write a temp file (not a policy file), rename it
    // over the original.
    let tmp = d.write("a.yaml.tmp", &policy("renamed", 80));
    let r = cache.refresh(std::slice::from_ref(&a), None);
    assert!(r.delta.is_empty(), "the temp file is not an input");
    std::fs::rename(&tmp, &a).unwrap();
    let r = cache.refresh(std::slice::from_ref(&a), None);
    assert_eq!(r.delta.added, keys(&["renamed"]));
    assert_eq!(r.delta.removed, keys(&["a"]));
    assert_eq!(names(&mut cache), ["renamed"]);
}

#[test]
fn the_hash_in_force_is_the_loaders_content_hash() {
    let d = Dir::new("hash");
    d.write("a.yaml", &policy("a", 80));
    std::fs::create_dir_all(d.0.join("sub")).unwrap();
    d.write("sub/b.yml", &policy("b", 81));
    let inputs = vec![d.0.clone()];
    let mut cache = PolicyFileCache::default();
    cache.refresh(&inputs, None);
    assert_eq!(
        cache.content_hash(),
        policy_model::load::content_hash(&inputs)
    );
    // A missing input keeps the files it had in force.
    let single = d.0.join("sub/b.yml");
    let mut one = PolicyFileCache::default();
    one.refresh(std::slice::from_ref(&single), None);
    std::fs::remove_dir_all(d.0.join("sub")).unwrap();
    let r = one.refresh(std::slice::from_ref(&single), None);
    // A named file that is gone is an error of the walk: kept, reported.
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert_eq!(names(&mut one), ["b"]);
}

fn topo(pods: &str) -> String {
    format!("namespaces:\n  - {{name: x, labels: {{ns: x}}}}\npods:\n{pods}")
}

#[test]
fn the_topology_is_parsed_again_only_when_it_changed_and_an_invalid_one_is_kept_back() {
    let d = Dir::new("topology");
    let a = "  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10]}\n";
    let b = "  - {namespace: x, name: b, labels: {pod: b}, ips: [10.200.1.11], node: other}\n";
    let path = d.write("topology.yaml", &topo(a));
    let mut file = TopologyFile::open(&path).expect("valid");
    assert!(matches!(file.refresh(), TopologyRefresh::Unchanged));
    std::fs::write(&path, topo(&format!("{a}{b}"))).unwrap();
    match file.refresh() {
        TopologyRefresh::Changed(d) => {
            assert_eq!(d.pods_added.iter().collect::<Vec<_>>(), ["x/b"]);
            assert!(d.pods_removed.is_empty() && d.pods_changed.is_empty());
        }
        _ => panic!("a pod added is a change"),
    }
    // Relabel a, remove b.
    std::fs::write(&path, topo(&a.replace("pod: a", "pod: a2"))).unwrap();
    match file.refresh() {
        TopologyRefresh::Changed(d) => {
            assert_eq!(d.pods_changed.iter().collect::<Vec<_>>(), ["x/a"]);
            assert_eq!(d.pods_removed.iter().collect::<Vec<_>>(), ["x/b"]);
        }
        _ => panic!("a relabel is a change"),
    }
    std::fs::write(&path, "pods: [{nmespace: x}]\n").unwrap();
    assert!(matches!(file.refresh(), TopologyRefresh::Rejected(_)));
    assert_eq!(file.topology().pods.len(), 1, "the previous topology stays");
    assert_eq!(file.topology().pods[0].labels["pod"], "a2");
}

#[test]
fn the_delta_the_reader_knows_is_the_delta_of_the_whole_topologies() {
    use super::super::changes::TopologyDelta;
    let d = Dir::new("topology-delta");
    let pod = |name: &str, label: &str, ip: u8| {
        format!(
            "  - {{namespace: x, name: {name}, labels: {{pod: {label}}}, ips: [10.200.1.{ip}]}}\n"
        )
    };
    // Each step's pods; the fourth is rejected (a duplicate address), the
    // fifth only rewrites an entry (same pod, other spelling).
    let steps = [
        format!(
            "{}{}{}",
            pod("a", "a", 1),
            pod("b", "b", 2),
            pod("c", "c", 3)
        ),
        format!(
            "{}{}{}",
            pod("a", "a2", 1),
            pod("c", "c", 3),
            pod("d", "d", 4)
        ),
        format!("{}{}", pod("a", "a2", 1), pod("d", "d", 4)),
        format!("{}{}", pod("a", "a2", 1), pod("e", "e", 1)),
        format!(
            "{}  - {{ namespace: x, name: d, labels: {{pod: d}}, ips: [10.200.1.4] }}\n{}",
            pod("a", "a3", 1),
            pod("f", "f", 6)
        ),
        format!("{}{}", pod("d", "d", 4), pod("b", "b", 2)),
    ];
    let path = d.write("topology.yaml", &topo(&steps[0]));
    let mut file = TopologyFile::open(&path).expect("valid");
    for (i, step) in steps.iter().enumerate().skip(1) {
        let before = file.topology().clone();
        std::fs::write(&path, topo(step)).unwrap();
        match file.refresh() {
            TopologyRefresh::Changed(delta) => {
                let whole = TopologyDelta::between(&before, file.topology());
                assert_eq!(delta, whole, "step {i}");
                assert!(!delta.is_empty(), "step {i}");
            }
            TopologyRefresh::Rejected(_) => assert_eq!(i, 3, "only step 3 is invalid"),
            _ => panic!("step {i}: a change"),
        }
    }
}

#[test]
fn a_refresh_of_named_files_reads_only_those_and_new_files() {
    let d = Dir::new("only");
    let a = d.write("a.yaml", &policy("a", 80));
    let b = d.write("b.yaml", &policy("b", 81));
    let mut cache = PolicyFileCache::default();
    cache.refresh(std::slice::from_ref(&d.0), None);
    std::fs::write(&a, policy("a", 8080)).unwrap();
    std::fs::write(&b, policy("b", 8181)).unwrap();
    let only_a: std::collections::BTreeSet<_> = [a.clone()].into_iter().collect();
    let r = cache.refresh(std::slice::from_ref(&d.0), Some(&only_a));
    assert_eq!(r.delta.files_changed, vec![a.clone()], "b is not read");
    let text = ports(&mut cache);
    assert!(
        text.contains("8080-8080") && !text.contains("8181-8181"),
        "{text}"
    );
    // A new file named: the directory is walked, the new file read, b
    // (not named) still not.
    let c = d.write("c.yaml", &policy("c", 82));
    let only_c: std::collections::BTreeSet<_> = [c.clone()].into_iter().collect();
    let r = cache.refresh(std::slice::from_ref(&d.0), Some(&only_c));
    assert_eq!(r.delta.added, keys(&["c"]));
    assert_eq!(names(&mut cache), ["a", "b", "c"]);
    assert!(!ports(&mut cache).contains("8181-8181"));
    // Everything: b's edit is seen.
    let r = cache.refresh(std::slice::from_ref(&d.0), None);
    assert_eq!(r.delta.files_changed, vec![b]);
}
