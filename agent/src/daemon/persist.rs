//! The daemon's state files (`applied.json`, `fqdn.json`, `applied.hash`),
//! written off its loop.

use super::fqdn::FqdnStore;
use super::kernel::KernelState;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long learned addresses may wait to be written to the state files
/// (the DNS answers that taught them are released before either way).
/// Writing copies the store under the enforcer's lock, which the DNS thread
/// then cannot take to learn in place: a few times a second at most.
pub(super) const PERSIST_DELAY: Duration = Duration::from_millis(500);

/// Writes the state files (`applied.json`, `fqdn.json`) on a thread of
/// its own, in the order asked, the newest of each kind winning: the DNS
/// learn path hands a copy over instead of serialising on the agent's
/// loop. [`Persister::flush`] waits until everything asked is written.
pub(super) struct Persister {
    tx: std::sync::mpsc::Sender<Persist>,
}

enum Persist {
    Applied(Arc<KernelState>, PathBuf),
    Fqdn(Box<FqdnStore>),
    /// `applied.hash`, written after the `applied.json` asked before it.
    Hash(u64, PathBuf),
    Flush(std::sync::mpsc::Sender<()>),
}

impl Persister {
    pub(super) fn start() -> Result<Persister> {
        let (tx, rx) = std::sync::mpsc::channel::<Persist>();
        std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let (mut applied, mut fqdn, mut hash, mut flushed) =
                        (None, None, None, Vec::new());
                    for job in std::iter::once(first).chain(rx.try_iter()) {
                        match job {
                            Persist::Applied(a, dir) => applied = Some((a, dir)),
                            Persist::Fqdn(f) => fqdn = Some(f),
                            Persist::Hash(h, dir) => hash = Some((h, dir)),
                            Persist::Flush(done) => flushed.push(done),
                        }
                    }
                    if let Some((a, dir)) = applied
                        && let Err(e) = a.save(&dir)
                    {
                        tracing::warn!(error = %e, "persisting the applied policy failed");
                    }
                    // After the applied state it describes.
                    if let Some((h, dir)) = hash
                        && let Err(e) = mark_applied(&dir, h)
                    {
                        tracing::warn!(error = %e, "writing applied.hash failed");
                    }
                    if let Some(f) = fqdn
                        && let Err(e) = f.save()
                    {
                        tracing::warn!(error = %e, "persisting learned names failed");
                    }
                    for done in flushed {
                        let _ = done.send(());
                    }
                }
            })
            .context("starting the state-file writer")?;
        Ok(Persister { tx })
    }

    /// Queues `applied.json` (the writer holds the state until written;
    /// the enforcer's next write copies it only if still held).
    pub(super) fn applied(&self, applied: &Arc<KernelState>, dir: &Path) {
        let _ = self
            .tx
            .send(Persist::Applied(applied.clone(), dir.to_path_buf()));
    }

    /// Queues `applied.hash` after what was queued before it.
    pub(super) fn hash(&self, hash: u64, dir: &Path) {
        let _ = self.tx.send(Persist::Hash(hash, dir.to_path_buf()));
    }

    pub(super) fn fqdn(&self, fqdn: &FqdnStore) {
        let _ = self.tx.send(Persist::Fqdn(Box::new(fqdn.for_saving())));
    }

    /// Waits until everything asked so far is on disk.
    pub(super) fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Persist::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// Records the content hash of the policy files in force (`applied.hash`).
pub(super) fn mark_applied(state_dir: &Path, hash: u64) -> Result<()> {
    let tmp = state_dir.join("applied.hash.tmp");
    std::fs::write(&tmp, format!("{hash:016x}\n"))?;
    std::fs::rename(tmp, state_dir.join("applied.hash"))?;
    Ok(())
}

impl KernelState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("applied.json")
    }

    /// What a previous agent recorded (nothing if unreadable).
    pub(super) fn load(dir: &Path) -> Self {
        std::fs::read_to_string(Self::path(dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("applied.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, Self::path(dir))?;
        Ok(())
    }
}
