//! The ClusterRole in deploy/kubernetes/rbac.yaml grants exactly what the
//! watcher uses: the (group, resource, verb) triples of its requests to
//! the fake API server.

use k8s_watch::fake::FakeApiServer;
use k8s_watch::{WatchConfig, Watcher};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

type Grant = (String, String, String);

fn granted() -> BTreeSet<Grant> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).expect("deploy/kubernetes/rbac.yaml");
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_yaml_ng::Value::deserialize(doc).expect("yaml");
        if v["kind"].as_str() != Some("ClusterRole") {
            continue;
        }
        for rule in v["rules"].as_sequence().expect("rules") {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_sequence()
                    .expect("a list")
                    .iter()
                    .map(|s| s.as_str().expect("a string").to_string())
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for verb in list("verbs") {
                        out.insert((g.clone(), r.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// `GET /apis/G/V/[namespaces/NS/]RESOURCE?...` -> (G, RESOURCE, verb).
fn used(request: &str) -> Option<Grant> {
    let target = request.strip_prefix("GET ")?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let resource = match rest {
        [r] | ["namespaces", _, r] => *r,
        _ => return None,
    };
    let verb = if query.split('&').any(|p| p == "watch=true") {
        "watch"
    } else {
        "list"
    };
    Some((group.into(), resource.into(), verb.into()))
}

#[tokio::test]
async fn the_cluster_role_grants_exactly_what_the_watcher_uses() {
    let (_url, h) = FakeApiServer::start().await.expect("fake starts");
    let w = Watcher::start(h.client(), WatchConfig::new("n1"));
    // The agent's Secret watch for TLS contexts (terminatingTLS/originatingTLS).
    let _secrets = k8s_watch::secrets::watch_secrets(h.client(), |_| {});
    tokio::time::timeout(Duration::from_secs(10), w.ready())
        .await
        .expect("a snapshot");
    // Let every watcher open its watch after the list.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen: BTreeSet<Grant>;
    loop {
        seen = h.requests().iter().filter_map(|r| used(r)).collect();
        if seen.iter().filter(|g| g.2 == "watch").count() >= 8
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, granted(), "requests: {:#?}", h.requests());
}
