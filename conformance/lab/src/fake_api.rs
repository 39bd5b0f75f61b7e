//! The lab's stand-in for the Kubernetes API server (Kubernetes mode): the
//! topology and the policy files served as real API objects over the real
//! list/watch protocol (`k8s_watch::fake`), kept in step with the files.

use anyhow::Result;
use policy_model::Topology;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::{self, LAB_NODE};

/// The topology's namespaces, pods and node as API objects.
pub fn topology_objects(topo: &Topology) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in &topo.namespaces {
        out.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": ns.name,
                "labels": policy_model::topology::namespace_labels(ns),
                "annotations": ns.annotations,
            },
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
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels,
                "annotations": p.annotations},
            "spec": {
                "nodeName": p.node.as_deref().unwrap_or(LAB_NODE),
                "serviceAccountName": p.service_account.clone().unwrap_or_else(|| "default".into()),
                "containers": [{"name": "main", "image": "lab", "ports": ports}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0,
                    "image": "lab", "imageID": "", "state": {"running": {}}}],
                "podIP": p.addresses().first().map(|a| a.to_string()),
                "podIPs": ips,
            },
        }));
    }
    // The lab's one node, with `node:`'s addresses (and those of its
    // `nodes:` entry, if any), unless `nodes:` names every node and not it
    // (a cluster lab).
    let lab_entry = topo.nodes.iter().find(|n| n.name == LAB_NODE);
    if topo.nodes.is_empty() || lab_entry.is_some() {
        let mut ips: Vec<std::net::IpAddr> = topo
            .node
            .iter()
            .flat_map(|n| n.ips.iter().copied())
            .collect();
        let mut labels = topo
            .node
            .as_ref()
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        if let Some(n) = lab_entry {
            ips.extend(
                n.ips
                    .iter()
                    .filter(|ip| !ips.contains(ip))
                    .copied()
                    .collect::<Vec<_>>(),
            );
            for (k, v) in &n.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let node_addrs: Vec<Value> = ips
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        out.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": LAB_NODE, "labels": labels},
            "status": {"addresses": node_addrs, "conditions": [{"type": "Ready", "status": "True"}]},
        }));
    }
    // The other nodes of the `nodes:` list.
    for n in topo.nodes.iter().filter(|n| n.name != LAB_NODE) {
        let addrs: Vec<Value> = n
            .ips
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        out.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": n.labels},
            "status": {"addresses": addrs, "conditions": [{"type": "Ready", "status": "True"}]},
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

/// Where `lab fake-apiserver` writes and listens.
#[derive(Debug, Clone)]
pub struct ApiServerPaths {
    /// The agents' kubeconfig (pointing at `agents_listen`).
    pub kubeconfig_out: PathBuf,
    /// The user's kubeconfig (127.0.0.1 of the caller's namespace).
    pub user_kubeconfig_out: PathBuf,
    /// The namespace and address of the agents' listener.
    pub agents_netns: String,
    pub agents_listen: std::net::SocketAddr,
}

fn write_kubeconfig(path: &Path, url: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: portcullis-lab\n  cluster:\n    server: {url}\n\
         users:\n- name: portcullis-lab\n  user: {{}}\ncontexts:\n- name: portcullis-lab\n  context:\n    cluster: portcullis-lab\n    user: portcullis-lab\n\
         current-context: portcullis-lab\n"
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `obj` with `metadata.creationTimestamp` now, unless it has one (the
/// objects the lab puts in through the in-process hook, so kubectl shows
/// their age).
fn stamped(mut obj: Value) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("creationTimestamp").or_insert_with(|| {
            json!(
                k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            )
        });
    }
    obj
}

/// Binds `at` in network namespace `ns` (a socket keeps the namespace it
/// was made in).
fn bind_in(ns: &str, at: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let listener = crate::netns::in_netns(ns, move || std::net::TcpListener::bind(at))?
        .map_err(|e| anyhow::anyhow!("binding {at} in namespace {ns}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `portcullis lab fake-apiserver`: serves the topology and the policy
/// files as API objects on 127.0.0.1 (the user's kubectl) and at the
/// agents' address in their namespace; writes both kubeconfigs; refuses a
/// written policy object the agents would reject (422, with their reason:
/// [`k8s_watch::fake::policy_validator`]);
/// keeps the policies and the TLS secret files under `secrets_dir` in step
/// with the files (apply on change, delete on removal). Objects made
/// through the API (kubectl) stay until deleted through it.
pub fn run_fake_apiserver(
    topology: &Path,
    policies: &[PathBuf],
    out: &ApiServerPaths,
    secrets_dir: &Path,
) -> Result<()> {
    // Bound before the runtime starts: the namespace switch happens on a
    // thread of its own.
    let agents = bind_in(&out.agents_netns, out.agents_listen)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let topo = Topology::from_file(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (url, handle) = k8s_watch::fake::FakeApiServer::start()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        handle.serve_listener(tokio::net::TcpListener::from_std(agents)?);
        handle.set_validator(k8s_watch::fake::policy_validator());
        for obj in topology_objects(&topo) {
            handle
                .apply(stamped(obj))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let mut applied: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut last = String::new();
        write_kubeconfig(&out.user_kubeconfig_out, &url)?;
        write_kubeconfig(
            &out.kubeconfig_out,
            &format!("http://{}", out.agents_listen),
        )?;
        let client = handle.client();
        let mut last_hash = None;
        loop {
            let files_hash = policy_model::load::content_hash(policies);
            let mut objs = policy_objects(policies);
            objs.extend(secret_objects(secrets_dir));
            let text = serde_json::to_string(&objs)?;
            let changed = text != last;
            if changed {
                last = text;
                let now: BTreeSet<_> = objs.iter().map(object_key).collect();
                for obj in objs {
                    if let Err(e) = handle.apply(stamped(obj)) {
                        tracing::warn!(error = %e, "fake apiserver rejected an object");
                    }
                }
                for (kind, ns, name) in applied.difference(&now) {
                    let ns = (!ns.is_empty()).then_some(ns.as_str());
                    let _ = handle.delete(kind, ns, name);
                }
                applied = now;
            }
            // The files' hash with the digest of the policies stored once
            // they are in: the files did not change meanwhile.
            if (changed || last_hash != Some(files_hash))
                && policy_model::load::content_hash(policies) == files_hash
            {
                match stored_policy_digest(&client).await {
                    Ok(digest) => {
                        let tmp = paths::api_policies_hash().with_extension("tmp");
                        std::fs::write(&tmp, format!("{files_hash:016x} {digest:016x}\n"))?;
                        std::fs::rename(&tmp, paths::api_policies_hash())?;
                        last_hash = Some(files_hash);
                    }
                    Err(e) => tracing::warn!(error = %e, "listing the stored policies failed"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// [`k8s_watch::policy_digest`] of every policy object the API server
/// stores, listed through its own API (what an agent that applied them all
/// records as its `applied.hash`).
async fn stored_policy_digest(client: &kube::Client) -> Result<u64> {
    use kube::api::{Api, ApiResource, DynamicObject};
    let mut items = Vec::new();
    for (group, version, kind, plural) in [
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        (
            "cilium.io",
            "v2",
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
        ),
        (
            "cilium.io",
            "v2",
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
        ),
    ] {
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        for o in api.list(&Default::default()).await?.items {
            items.push((
                kind,
                o.metadata.namespace,
                o.metadata.name.unwrap_or_default(),
                o.metadata.resource_version.unwrap_or_default(),
            ));
        }
    }
    Ok(k8s_watch::policy_digest(items.iter().map(
        |(k, ns, n, rv)| (*k, ns.as_deref(), n.as_str(), rv.as_str()),
    )))
}

#[cfg(test)]
mod tests;
