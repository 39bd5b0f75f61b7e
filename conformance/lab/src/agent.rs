//! The processes a lab runs in its node namespace: the agent (started
//! from the binary path the caller gives, as `lab up` does with its own
//! binary) and, in Kubernetes mode, the fake API server. Both are detached
//! in process groups of their own and found again through pid files.

use crate::net::{NODE_NS, UPLINK_IF};
use crate::paths::{self, LAB_NODE, PIN_DIR, STATE_DIR};
use crate::state::LabState;
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The agent's command line in the lab: in the node namespace, with the
/// lab's pin and state directories, uplink and pod ranges, and its inputs
/// (files, or the fake API server in Kubernetes mode).
pub fn agent_command(state: &LabState, binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("agent").arg("--netns").arg(NODE_NS);
    if state.kubernetes {
        cmd.arg("--kubernetes")
            .arg("--kubeconfig")
            .arg(paths::kubeconfig())
            .arg("--node-name")
            .arg(LAB_NODE);
    } else {
        cmd.arg("--topology").arg(&state.topology);
        for p in &state.policies {
            cmd.arg("--policy").arg(p);
        }
        // Kubernetes mode reads them as Secrets from the (fake) API server,
        // which serves this directory's files.
        cmd.arg("--tls-secrets-dir").arg(paths::secrets_dir());
    }
    // The lab's pod ranges: never learned from DNS answers.
    cmd.args(["--pod-cidr", "10.200.0.0/16", "--pod-cidr", "fd00:200::/64"]);
    cmd.arg("--pin-dir")
        .arg(PIN_DIR)
        .arg("--state-dir")
        .arg(STATE_DIR)
        .arg("--uplink")
        .arg(UPLINK_IF)
        .args(&state.agent_args);
    cmd
}

/// The agent executable the lab runs: `binary` (the `portcullis` that
/// runs `lab up`), or `PORTCULLIS_LAB_AGENT` when set, so a bench can run
/// another build of the agent (e.g. a baseline) in a lab made by this one.
pub fn agent_binary(binary: &Path) -> std::path::PathBuf {
    agent_binary_from(binary, std::env::var_os("PORTCULLIS_LAB_AGENT"))
}

fn agent_binary_from(binary: &Path, env: Option<std::ffi::OsString>) -> std::path::PathBuf {
    env.filter(|s| !s.is_empty())
        .map_or_else(|| binary.to_path_buf(), std::path::PathBuf::from)
}

/// How long [`start_agent`] waits for the agent's first enforcement: 20 s,
/// or `PORTCULLIS_LAB_READY_SECS` (benches with large clusters).
pub fn ready_timeout() -> Duration {
    std::env::var("PORTCULLIS_LAB_READY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_secs)
}

/// Starts `portcullis agent` in the node namespace, detached, and waits
/// until it reports its maps filled.
pub fn start_agent(state: &LabState, binary: &Path) -> Result<u32> {
    let ready = paths::state_file("agent.ready");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths::agent_log())?;
    let mut cmd = agent_command(state, &agent_binary(binary));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd.spawn().context("starting the agent")?;
    let pid = child.id();
    std::fs::write(paths::state_file("agent.pid"), pid.to_string())?;
    let start = Instant::now();
    let limit = ready_timeout();
    while !ready.exists() {
        if start.elapsed() > limit {
            let tail = std::fs::read_to_string(paths::agent_log()).unwrap_or_default();
            bail!(
                "the agent did not become ready in {} s (PORTCULLIS_LAB_READY_SECS); its log:\n{}",
                limit.as_secs(),
                tail.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("the agent exited; see {STATE_DIR}/agent.log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// Starts the fake API server in the node namespace and waits for the
/// kubeconfig it writes.
pub(crate) fn start_fake_apiserver(state: &LabState, binary: &Path) -> Result<()> {
    let kubeconfig = paths::kubeconfig();
    let _ = std::fs::remove_file(&kubeconfig);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths::state_file("apiserver.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NODE_NS])
        .arg(binary)
        .args(["lab", "fake-apiserver", "--topology"])
        .arg(&state.topology)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig);
    for p in &state.policies {
        cmd.arg("--policy").arg(p);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the fake API server")?;
    std::fs::write(paths::state_file("apiserver.pid"), child.id().to_string())?;
    let start = Instant::now();
    while !kubeconfig.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the fake API server did not start; see {STATE_DIR}/apiserver.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Kills the process group whose leader's pid is in the state file `name`.
pub(crate) fn kill_pidfile(name: &str) {
    let pidfile = paths::state_file(name);
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // The fake API server runs under `ip netns exec` in its own
        // process group: signal the group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Stops the lab's agent process, if running.
pub fn stop_agent() {
    let pidfile = paths::state_file("agent.pid");
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists()
            && start.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Stops the agent and removes the pinned program links, which detaches
/// the programs from every interface. The maps stay pinned.
pub fn detach() -> Result<()> {
    stop_agent();
    let links = Path::new(PIN_DIR).join("links");
    if links.exists() {
        std::fs::remove_dir_all(&links).with_context(|| format!("removing {}", links.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
