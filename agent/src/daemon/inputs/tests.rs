use super::fingerprint;
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
