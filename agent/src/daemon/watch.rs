//! Watching the input files with inotify (the `notify` crate): the
//! parent directories of the topology and of each policy input (so an
//! editor's rename-over and a file created later are seen) and policy
//! directories recursively. Events are debounced briefly and sent to the
//! daemon's loop as one [`FileBatch`].

use super::events::{DaemonEvent, EventSender, FileBatch};
use anyhow::{Context, Result};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Collects events until they have been quiet for `quiet` (or the first
/// is `max` old): one batch for an editor's several writes. An event that
/// completes a file (closed after writing, or renamed into place, as
/// config syncers and editors replace files) makes the batch due at once,
/// with whatever else is already queued.
#[derive(Debug)]
pub(super) struct Debouncer {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The last event completed a file.
    complete: bool,
    paths: Option<BTreeSet<PathBuf>>,
}

impl Debouncer {
    pub(super) fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            // A steady stream of writes still gets through.
            max: (quiet * 10).max(Duration::from_millis(1)),
            first: None,
            last: None,
            complete: false,
            paths: Some(BTreeSet::new()),
        }
    }

    /// An event at `now` naming `paths` (`None`: everything); `complete`:
    /// it completed a file.
    pub(super) fn note(&mut self, now: Instant, paths: Option<Vec<PathBuf>>, complete: bool) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.complete = complete;
        match (&mut self.paths, paths) {
            (Some(mine), Some(new)) => mine.extend(new),
            (mine, _) => *mine = None,
        }
    }

    /// When the pending batch is due, if one is pending.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.complete {
            return Some(last);
        }
        Some((last + self.quiet).min(first + self.max))
    }

    /// The batch, if it is due at `now`.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<FileBatch> {
        if self.deadline()? > now {
            return None;
        }
        let first = self.first.take()?;
        self.last = None;
        self.complete = false;
        let paths = self.paths.replace(BTreeSet::new());
        Some(FileBatch { first, paths })
    }
}

/// What the watcher looks for: the inputs' paths.
#[derive(Debug, Clone)]
pub(super) struct WatchedInputs {
    pub(super) topology: PathBuf,
    pub(super) policies: Vec<PathBuf>,
}

impl WatchedInputs {
    /// Whether a change of `path` may change an input: it is one, or lies
    /// under a policy directory (the loader decides which files count).
    pub(super) fn concerns(&self, path: &Path) -> bool {
        path == self.topology || self.policies.iter().any(|p| path.starts_with(p))
    }
}

/// Whether an event kind can change a file's content or presence (not a
/// read: the agent's own reads must not wake it).
fn changes_content(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        // inotify's rename pair, sent after the `From` and `To` events that
        // name the same paths: counted again it made a second batch when it
        // came after a renamed-in file's batch had gone.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => false,
        _ => true,
    }
}

/// The running watcher; dropping it stops the watches.
pub(super) struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `inputs`; debounced batches go to `tx`.
pub(super) fn start(
    inputs: WatchedInputs,
    debounce: Duration,
    tx: EventSender,
) -> Result<FileWatcher> {
    let (raw_tx, raw_rx) = std::sync::mpsc::channel::<RawEvent>();
    let filter = inputs.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        let now = Instant::now();
        let complete = ev.as_ref().is_ok_and(|e| completes_file(&e.kind));
        let paths = match ev {
            Ok(ev) if ev.need_rescan() => None,
            Ok(ev) if !changes_content(&ev.kind) => return,
            Ok(ev) => {
                let ours: Vec<PathBuf> = ev
                    .paths
                    .into_iter()
                    .filter(|p| filter.concerns(p))
                    .collect();
                if ours.is_empty() {
                    return;
                }
                Some(ours)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; looking at every input");
                None
            }
        };
        let _ = raw_tx.send((now, paths, complete));
    })
    .context("starting the file watcher (inotify)")?;
    for (dir, mode) in watch_list(&inputs) {
        watcher
            .watch(&dir, mode)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    std::thread::Builder::new()
        .name("watch-debounce".into())
        .spawn(move || debounce_loop(raw_rx, debounce, tx))
        .context("starting the watch debouncer")?;
    Ok(FileWatcher { _watcher: watcher })
}

/// The directories to watch: each input's parent, and policy directories
/// recursively.
fn watch_list(inputs: &WatchedInputs) -> Vec<(PathBuf, RecursiveMode)> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    let mut add = |d: PathBuf, m: RecursiveMode| {
        if !out.iter().any(|(o, om)| *o == d && *om == m) {
            out.push((d, m));
        }
    };
    add(parent(&inputs.topology), RecursiveMode::NonRecursive);
    for p in &inputs.policies {
        add(parent(p), RecursiveMode::NonRecursive);
        if p.is_dir() {
            add(p.clone(), RecursiveMode::Recursive);
        }
    }
    out
}

/// One watch event: when, which paths (`None`: everything), whether it
/// completed a file.
type RawEvent = (Instant, Option<Vec<PathBuf>>, bool);

/// Whether an event kind means a file is complete: closed after writing,
/// or renamed into place.
fn completes_file(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
    )
}

fn debounce_loop(raw: Receiver<RawEvent>, quiet: Duration, tx: EventSender) {
    let mut d = Debouncer::new(quiet);
    loop {
        let got = match d.deadline() {
            Some(due) => raw.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => raw.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((at, paths, complete)) => {
                d.note(at, paths, complete);
                // What is queued already joins this batch.
                for (at, paths, complete) in raw.try_iter() {
                    d.note(at, paths, complete);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(batch) = d.take_due(Instant::now())
            && tx.send(DaemonEvent::Files(batch)).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
