//! Open-file descriptors for the agent's own control work (issue 13,
//! finding 1c).
//!
//! The proxies share the agent's process: a flood of idle connections can
//! take every descriptor, and then the agent cannot open a policy file, run
//! `ip`, or write its state. So:
//!
//! - the limit is raised at start (`--max-open-files`, capped by the
//!   kernel's `fs.nr_open`);
//! - a reserve of descriptors (opened on `/dev/null`) is held and let go
//!   just before the agent reads its inputs and applies them, then taken
//!   back;
//! - a read that fails for lack of descriptors (or memory) is retried, not
//!   reported as an invalid policy, and changes nothing in force.

use std::fs::File;

/// Raises RLIMIT_NOFILE (soft and hard) to `want`, or as far as the kernel
/// allows. Returns the soft limit in force afterwards.
pub fn raise_open_files(want: u64) -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(want);
    let target = want.min(nr_open);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if setrlimit(Resource::RLIMIT_NOFILE, target, target.max(hard)).is_err() {
        // Without CAP_SYS_RESOURCE: as far as the hard limit goes.
        let soft = target.min(hard);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
        return Ok(soft);
    }
    Ok(target)
}

/// Descriptors held back for the agent's control work.
pub struct FdReserve {
    held: Vec<File>,
    size: usize,
}

impl FdReserve {
    /// Opens up to `size` descriptors on `/dev/null`.
    pub fn new(size: usize) -> Self {
        let mut r = FdReserve {
            held: Vec::with_capacity(size),
            size,
        };
        r.refill();
        r
    }

    /// Takes back what was let go, as far as descriptors are free.
    pub fn refill(&mut self) {
        while self.held.len() < self.size {
            match File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
    }

    /// Descriptors held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Runs `f` with the reserve let go, then takes it back.
    pub fn released<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.held.clear();
        let out = f();
        self.refill();
        out
    }
}

/// Whether an input read failed for lack of resources (descriptors,
/// memory), not because of what the input says: such a read is retried.
pub fn is_resource_error(text: &str) -> bool {
    const SIGNS: [&str; 4] = [
        "Too many open files",
        "os error 24",
        "os error 23",
        "Cannot allocate memory",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

#[cfg(test)]
mod tests;
