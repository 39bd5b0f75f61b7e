//! Kubernetes mode: the agent's inputs come from the API server (through
//! `k8s-watch`): the client, and the TLS secrets as a list+watch of Secrets.
//! The lab's fake API server is `portcullis_lab::fake_api`.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A kube client from a kubeconfig file, or in-cluster / `KUBECONFIG`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .context("kubeconfig")?;
            kube::Client::try_from(cfg).context("building the kube client")
        }
        None => k8s_watch::watch::client_from_env()
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// Kubernetes mode without `--tls-secrets-dir`: the proxy's TLS secrets
/// come from the API (list+watch of Secrets, in the calling tokio
/// runtime). Until the first list arrives, TLS contexts fail (deny).
pub fn watch_tls_secrets(kubeconfig: Option<PathBuf>) -> proxy::TlsSecrets {
    let secrets = proxy::TlsSecrets::in_memory();
    let sink = secrets.clone();
    tokio::spawn(async move {
        let client = match client(kubeconfig.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes client for Secrets; TLS contexts deny");
                return;
            }
        };
        let task = k8s_watch::secrets::watch_secrets(client, move |change| match change {
            k8s_watch::secrets::SecretChange::Set {
                namespace,
                name,
                data,
            } => sink.set(&namespace, &name, Some(data)),
            k8s_watch::secrets::SecretChange::Remove { namespace, name } => {
                sink.set(&namespace, &name, None)
            }
        });
        let _ = task.await;
    });
    secrets
}
