//! The Kubernetes deployment's documentation and manifests name only flags
//! the agent has: every `--flag` after `portcullis agent` in
//! `deploy/kubernetes/README.md` and every `--flag` the DaemonSet passes is
//! listed by `portcullis agent --help`.

use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");

/// The `--flags` in `text` (letters, digits and dashes after `--`).
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        rest = &rest[at + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.len() > 1 && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(format!("--{name}"));
        }
    }
    out
}

#[test]
fn the_kubernetes_readme_and_daemonset_name_only_flags_the_agent_has() {
    let help = Command::new(BIN)
        .args(["agent", "--help"])
        .output()
        .expect("portcullis agent --help");
    let known = flags(&String::from_utf8_lossy(&help.stdout));
    assert!(known.contains("--kubernetes"), "help: {known:?}");

    let readme = std::fs::read_to_string(format!("{DEPLOY}/README.md"))
        .expect("deploy/kubernetes/README.md");
    // The agent's command lines in the README: from `portcullis agent` to
    // the end of its paragraph.
    let mut documented = BTreeSet::new();
    for (at, _) in readme.match_indices("portcullis agent") {
        let paragraph = readme[at..].split("\n\n").next().unwrap_or_default();
        documented.extend(flags(paragraph));
    }
    let daemonset = std::fs::read_to_string(format!("{DEPLOY}/daemonset.yaml"))
        .expect("deploy/kubernetes/daemonset.yaml");
    let passed: BTreeSet<String> = daemonset
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- --"))
        .flat_map(flags)
        .collect();
    assert!(passed.contains("--node-name"), "DaemonSet args: {passed:?}");
    for (what, set) in [("README.md", &documented), ("daemonset.yaml", &passed)] {
        let unknown: Vec<&String> = set.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "deploy/kubernetes/{what} names flags `portcullis agent` does not have: {unknown:?}"
        );
    }
}
