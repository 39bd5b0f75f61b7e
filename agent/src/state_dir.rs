//! The daemon's state directory (`status.json`, `hubble.sock`,
//! `applied.json`, ...) and how its clients, `status` and `observe`, find
//! it without `--state-dir`.
//!
//! The daemon writes to `--state-dir`: [`DEFAULT`] unless told otherwise
//! (the DaemonSet names the same directory; the lab names its own). At
//! start it records that directory in [`POINTER`], one well-known file per
//! host; a client without `--state-dir` reads it there, and falls back to
//! [`DEFAULT`] when nothing (or a directory that is gone) is recorded.

use std::io;
use std::path::{Path, PathBuf};

/// The daemon's state directory unless `--state-dir` says otherwise.
pub const DEFAULT: &str = "/run/portcullis/agent";

/// Where the daemon started last on this host records its state directory.
pub const POINTER: &str = "/run/portcullis/state-dir";

/// Records `dir` (made absolute) at `pointer`.
pub fn record(pointer: &Path, dir: &Path) -> io::Result<()> {
    let dir = std::path::absolute(dir)?;
    if let Some(parent) = pointer.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = pointer.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", dir.display()))?;
    std::fs::rename(tmp, pointer)
}

/// The state directory a client uses: `explicit` when given, else the one
/// recorded at `pointer` while it exists, else [`DEFAULT`].
pub fn locate(explicit: Option<PathBuf>, pointer: &Path) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    std::fs::read_to_string(pointer)
        .ok()
        .map(|text| PathBuf::from(text.trim_end_matches('\n')))
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT))
}

/// [`locate`] with this host's [`POINTER`].
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
    locate(explicit, Path::new(POINTER))
}

#[cfg(test)]
mod tests;
