//! List+watch of Secrets for the proxy's `terminatingTLS` /
//! `originatingTLS` contexts: every change is handed to a sink (the
//! proxy's in-memory secret store), so new connections use rotated
//! material at once. A relist replaces the whole set (secrets deleted
//! during a watch gap disappear).
//!
//! Pure part: [`SecretTable`] turns watcher events into the changes the
//! sink applies; the I/O is one kube-rs watcher ([`watch_secrets`]).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet};
use tokio::task::JoinHandle;

/// A secret's items (`data`), by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// What the sink must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Secret `namespace/name` now holds `data`.
    Set {
        namespace: String,
        name: String,
        data: SecretData,
    },
    /// Secret `namespace/name` is gone.
    Remove { namespace: String, name: String },
}

/// The (namespace, name) and data of a Secret object.
pub fn secret_data(s: &Secret) -> (String, String, SecretData) {
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let name = s.metadata.name.clone().unwrap_or_default();
    let data = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    (ns, name, data)
}

/// The secrets known so far, to turn a relist into removals.
#[derive(Debug, Default)]
pub struct SecretTable {
    known: BTreeSet<(String, String)>,
    relisting: Option<BTreeSet<(String, String)>>,
}

impl SecretTable {
    /// The changes one watcher event implies.
    pub fn on_event(&mut self, event: watcher::Event<Secret>) -> Vec<SecretChange> {
        match event {
            watcher::Event::Apply(s) => {
                let (namespace, name, data) = secret_data(&s);
                self.known.insert((namespace.clone(), name.clone()));
                vec![SecretChange::Set {
                    namespace,
                    name,
                    data,
                }]
            }
            watcher::Event::Delete(s) => {
                let (namespace, name, _) = secret_data(&s);
                self.known.remove(&(namespace.clone(), name.clone()));
                vec![SecretChange::Remove { namespace, name }]
            }
            watcher::Event::Init => {
                self.relisting = Some(BTreeSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(s) => {
                let (namespace, name, data) = secret_data(&s);
                if let Some(seen) = &mut self.relisting {
                    seen.insert((namespace.clone(), name.clone()));
                }
                self.known.insert((namespace.clone(), name.clone()));
                vec![SecretChange::Set {
                    namespace,
                    name,
                    data,
                }]
            }
            watcher::Event::InitDone => {
                let Some(seen) = self.relisting.take() else {
                    return Vec::new();
                };
                let gone: Vec<(String, String)> = self.known.difference(&seen).cloned().collect();
                self.known = seen;
                gone.into_iter()
                    .map(|(namespace, name)| SecretChange::Remove { namespace, name })
                    .collect()
            }
        }
    }
}

/// Watches every Secret (inside a tokio runtime) and hands each change to
/// `sink`. Errors are logged and retried with kube's default backoff; the
/// ClusterRole must grant list and watch on secrets.
pub fn watch_secrets(
    client: kube::Client,
    sink: impl Fn(SecretChange) + Send + 'static,
) -> JoinHandle<()> {
    let stream = watcher(Api::<Secret>::all(client), watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut table = SecretTable::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    for change in table.on_event(event) {
                        sink(change);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching Secrets failed, retrying; TLS contexts keep the secrets last seen (check the ClusterRole grants list and watch on secrets)");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
