//! The project's own policy examples, for the tests that feed them to the
//! fake API server (`kubectl.rs`, `crds.rs`).

use serde_json::Value;
use std::path::Path;

/// Every policy of the conformance cases (`policies:` of
/// `conformance/cases/*/*.yaml`), one JSON document each.
pub fn project_policies() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cases");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root)
        .expect("the conformance cases")
        .flatten()
    {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "yaml") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("a readable case");
        let Ok(case) = serde_yaml_ng::from_str::<Value>(&text) else {
            continue;
        };
        let Some(policies) = case.get("policies").and_then(Value::as_str) else {
            continue;
        };
        for doc in serde_yaml_ng::Deserializer::from_str(policies) {
            let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
            if matches!(
                kind,
                "NetworkPolicy" | "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy"
            ) {
                out.push(v);
            }
        }
    }
    out
}
