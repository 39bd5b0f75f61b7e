//! The lab's stand-in for the Kubernetes API server (Kubernetes mode): the
//! topology and the policy files served as real API objects over the real
//! list/watch protocol (`k8s_watch::fake`), kept in step with the files.

use anyhow::Result;
use policy_model::Topology;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::LAB_NODE;

/// The topology's namespaces, pods and node as API objects.
pub fn topology_objects(topo: &Topology) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in &topo.namespaces {
        out.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns.name, "labels": policy_model::topology::namespace_labels(ns)},
        }));
    }
    for p in &topo.pods {
        let ips: Vec<Value> = p
            .addresses()
            .iter()
            .map(|a| json!({"ip": a.to_string()}))
            .collect();
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|c| {
                let mut port = json!({"containerPort": c.container_port,
                    "protocol": c.protocol.clone().unwrap_or_else(|| "TCP".into())});
                if let Some(n) = &c.name {
                    port["name"] = json!(n);
                }
                port
            })
            .collect();
        out.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
            "spec": {
                "nodeName": p.node.as_deref().unwrap_or(LAB_NODE),
                "serviceAccountName": p.service_account.clone().unwrap_or_else(|| "default".into()),
                "containers": [{"name": "main", "image": "lab", "ports": ports}],
            },
            "status": {
                "phase": "Running",
                "podIP": p.addresses().first().map(|a| a.to_string()),
                "podIPs": ips,
            },
        }));
    }
    let node_addrs: Vec<Value> = topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter())
        .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
        .collect();
    out.push(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": LAB_NODE,
            "labels": topo.node.as_ref().map(|n| n.labels.clone()).unwrap_or_default()},
        "status": {"addresses": node_addrs},
    }));
    // The other nodes of the `nodes:` list (the lab's own is the one
    // above, with `node:`'s addresses).
    for n in topo.nodes.iter().filter(|n| n.name != LAB_NODE) {
        let addrs: Vec<Value> = n
            .ips
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        out.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": n.labels},
            "status": {"addresses": addrs},
        }));
    }
    if let Some(api) = &topo.kube_apiserver {
        let eps: Vec<Value> = api
            .ips
            .iter()
            .map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}}))
            .collect();
        out.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }));
    }
    out
}

/// The lab's TLS secret files (`DIR/<namespace>/<name>/<item>`) as
/// Secret objects, so Kubernetes mode reads them from the API.
fn secret_objects(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = namespaces
        .flatten()
        .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    for p in paths {
        let (Some(name), Some(ns)) = (
            p.file_name().and_then(|n| n.to_str()),
            p.parent()
                .and_then(|n| n.file_name())
                .and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let mut data = std::collections::BTreeMap::new();
        for item in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let key = item.file_name().to_string_lossy().into_owned();
            if key.starts_with('.') {
                continue;
            }
            if let Ok(bytes) = std::fs::read(item.path()) {
                data.insert(key, k8s_openapi::ByteString(bytes));
            }
        }
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        if let Ok(mut v) = serde_json::to_value(&secret) {
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Secret");
            out.push(v);
        }
    }
    out
}

/// Every document of the policy files as API objects.
fn policy_objects(paths: &[PathBuf]) -> Vec<Value> {
    // The files the agent's loader would read (one walker for both).
    let files = policy_model::load::policy_files(paths).files;
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            use serde::Deserialize;
            if let Ok(v) = Value::deserialize(doc)
                && v.is_object()
            {
                out.push(v);
            }
        }
    }
    out
}

fn object_key(v: &Value) -> (String, String, String) {
    (
        v["kind"].as_str().unwrap_or("").to_string(),
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// `portcullis lab fake-apiserver`: serves the topology and the policy
/// files as API objects, writes a kubeconfig for the agent, and keeps the
/// policies and the TLS secret files under `secrets_dir` in step with the
/// files (apply on change, delete on removal).
pub fn run_fake_apiserver(
    topology: &Path,
    policies: &[PathBuf],
    kubeconfig_out: &Path,
    secrets_dir: &Path,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let topo = Topology::from_file(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_url, handle) = k8s_watch::fake::FakeApiServer::start()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for obj in topology_objects(&topo) {
            handle.apply(obj).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let mut applied: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut last = String::new();
        let tmp = kubeconfig_out.with_extension("tmp");
        std::fs::write(&tmp, handle.kubeconfig_yaml())?;
        std::fs::rename(&tmp, kubeconfig_out)?;
        loop {
            let mut objs = policy_objects(policies);
            objs.extend(secret_objects(secrets_dir));
            let text = serde_json::to_string(&objs)?;
            if text != last {
                last = text;
                let now: BTreeSet<_> = objs.iter().map(object_key).collect();
                for obj in objs {
                    if let Err(e) = handle.apply(obj) {
                        tracing::warn!(error = %e, "fake apiserver rejected an object");
                    }
                }
                for (kind, ns, name) in applied.difference(&now) {
                    let ns = (!ns.is_empty()).then_some(ns.as_str());
                    let _ = handle.delete(kind, ns, name);
                }
                applied = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[cfg(test)]
mod tests;
