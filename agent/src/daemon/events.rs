//! The daemon's one channel of events: input files changed, a new
//! Kubernetes snapshot, DNS answers to learn, a wake-up from the DNS
//! thread. The loop blocks on it (with a deadline for its timers) instead
//! of polling.

use super::known_names::LearnRequest;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Instant;

/// One event for the daemon's loop.
pub(super) enum DaemonEvent {
    /// Input files changed (a debounced batch of file events).
    Files(FileBatch),
    /// The Kubernetes watcher has a newer snapshot; `at`: when it was seen.
    Kubernetes { at: Instant },
    /// A DNS answer the DNS thread could not learn in place.
    Learn(LearnRequest),
    /// The DNS thread changed what the loop keeps timers for (learned in
    /// place: state files due, names to expire): the loop recomputes its
    /// deadline.
    Wake,
}

/// A debounced batch of file events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileBatch {
    /// When the batch's first event arrived (realization is timed from it).
    pub(super) first: Instant,
    /// The paths the events named; `None`: look at everything (the
    /// watcher lost events, or it is the fallback re-check).
    pub(super) paths: Option<BTreeSet<PathBuf>>,
}

impl FileBatch {
    /// Adds a later batch to this one.
    pub(super) fn merge(&mut self, later: FileBatch) {
        self.first = self.first.min(later.first);
        match (&mut self.paths, later.paths) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (paths, _) => *paths = None,
        }
    }
}

pub(super) type EventSender = Sender<DaemonEvent>;

/// Forwards every change of the Kubernetes watcher's snapshot into the
/// loop's channel, on `rt`.
pub(super) fn forward_kubernetes(
    rt: &tokio::runtime::Runtime,
    mut rx: tokio::sync::watch::Receiver<Option<std::sync::Arc<k8s_watch::Snapshot>>>,
    tx: EventSender,
) {
    rt.spawn(async move {
        while rx.changed().await.is_ok() {
            if tx
                .send(DaemonEvent::Kubernetes { at: Instant::now() })
                .is_err()
            {
                return;
            }
        }
    });
}
