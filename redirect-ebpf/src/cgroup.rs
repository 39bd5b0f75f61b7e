//! The proof that a packet comes from the agent's proxy: its socket's
//! cgroup (v2).
//!
//! `to_pod` trusts the from-proxy mark only on packets whose socket belongs
//! to the cgroup whose id is in `DatapathConfig::proxy_cgroup_id`. A socket's
//! cgroup is the one its creating process was in when it was created, so the
//! agent moves itself into a cgroup of its own before the proxy opens any
//! socket ([`enter_dedicated`]) and hands the id to
//! [`crate::Datapath::set_proxy_cgroup`]. A node process that sets the mark
//! (SO_MARK or a raw socket, CAP_NET_RAW is enough) is then judged like any
//! other node traffic.
//!
//! Why not socket cookies of the proxy's sockets in a map: that is a map
//! write and delete per upstream connection, and a proxy socket opened
//! before its registration would be refused; the cgroup covers every socket
//! the agent opens, at no cost per connection.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Name of the cgroup the agent creates under its own and moves into.
pub const DEDICATED_CGROUP: &str = "portcullis-agent";

/// Where the cgroup v2 hierarchy is mounted (from `/proc/self/mountinfo`).
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        // "... mount-point ... - fstype source options"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mount) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mount));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no cgroup2 file system is mounted",
    ))
}

/// The calling process's cgroup v2 path, relative to the hierarchy's root
/// (the `0::` line of `/proc/self/cgroup`), e.g. `/` or `/system.slice/x`.
pub fn own_cgroup() -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 line"))
}

/// The id of the cgroup at `dir` (a directory of the cgroup2 file system):
/// its inode number, which is what `bpf_skb_cgroup_id()` returns.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Moves the whole calling process into `<own cgroup>/<name>` (created if
/// needed; a restarted agent reuses it) and returns that cgroup's id.
///
/// Call it before any socket the proxy uses is created. Every thread of the
/// process moves; children started later are born in it (and would be
/// trusted as the proxy: the agent starts none that open sockets).
pub fn enter_dedicated(name: &str) -> io::Result<u64> {
    let mount = cgroup2_mount()?;
    let own = own_cgroup()?;
    let own_dir = mount.join(own.trim_start_matches('/'));
    // Already inside it (e.g. a restarted agent whose parent kept it).
    if own_dir.file_name().and_then(|n| n.to_str()) == Some(name) {
        return cgroup_id(&own_dir);
    }
    let dir = own_dir.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::write(dir.join("cgroup.procs"), b"0\n")?;
    if own_cgroup()?.trim_end_matches('/').rsplit('/').next() != Some(name) {
        return Err(io::Error::other(format!(
            "moved into {} but /proc/self/cgroup does not show it",
            dir.display()
        )));
    }
    cgroup_id(&dir)
}
