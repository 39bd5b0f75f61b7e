//! `--netns`: the daemon runs in a named network namespace (the lab's node).

use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsFd;

/// Moves the calling thread, before it starts any other, into the network
/// namespace `name` (as `ip netns add` made it: `/run/netns/NAME`).
pub(super) fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {name}"))
}
