//! The processes a lab runs: one agent in each node namespace (started
//! from the binary path the caller gives, as `lab up` does with its own
//! binary) and, in Kubernetes mode, the lab's API server (in the caller's
//! namespace, with a second listener where the agents reach it). All are
//! detached in process groups of their own and found again through pid
//! files.

use crate::net::UPLINK_IF;
use crate::paths::{self, STATE_DIR};
use crate::state::{LabNode, LabState};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The command line of `node`'s agent: in the node's namespace, with its
/// pin and state directories, the uplink and pod ranges, and its inputs
/// (files, or the lab's API server in Kubernetes mode).
pub fn agent_command(state: &LabState, node: &LabNode, binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("agent").arg("--netns").arg(&node.netns);
    if state.kubernetes {
        cmd.arg("--kubernetes")
            .arg("--kubeconfig")
            .arg(paths::kubeconfig())
            .arg("--node-name")
            .arg(&node.name);
    } else {
        // A cluster's agents read the topology as built (every pod placed
        // and addressed), each as its own node.
        if state.cluster {
            cmd.arg("--topology")
                .arg(paths::built_topology())
                .arg("--node-name")
                .arg(&node.name);
        } else {
            cmd.arg("--topology").arg(&state.topology);
        }
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
        .arg(&node.pin_dir)
        .arg("--state-dir")
        .arg(&node.state_dir)
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

/// Starts every node's agent, detached, then waits until each reports its
/// maps filled; records their pids in `state`.
pub fn start_agents(state: &mut LabState, binary: &Path) -> Result<()> {
    let mut started = Vec::new();
    for node in &state.nodes {
        started.push(spawn_agent(state, node, binary)?);
    }
    for (node, pid) in state.nodes.iter_mut().zip(started) {
        wait_ready(node, pid)?;
        node.agent_pid = Some(pid);
    }
    Ok(())
}

/// Stops every node's agent.
pub fn stop_agents(state: &mut LabState) {
    for node in &mut state.nodes {
        stop_node_agent(node);
        node.agent_pid = None;
    }
}

/// Starts the first node's agent (a one-node lab's only one), detached,
/// and waits until it reports its maps filled.
pub fn start_agent(state: &LabState, binary: &Path) -> Result<u32> {
    let node = state.nodes.first().context("the lab has no node")?;
    start_node_agent(state, node, binary)
}

/// Starts `node`'s agent in its namespace, detached, and waits until it
/// reports its maps filled.
pub fn start_node_agent(state: &LabState, node: &LabNode, binary: &Path) -> Result<u32> {
    let pid = spawn_agent(state, node, binary)?;
    wait_ready(node, pid)?;
    Ok(pid)
}

fn spawn_agent(state: &LabState, node: &LabNode, binary: &Path) -> Result<u32> {
    std::fs::create_dir_all(&node.state_dir)?;
    let _ = std::fs::remove_file(node.file("agent.ready"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.agent_log())?;
    let mut cmd = agent_command(state, node, &agent_binary(binary));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the agent of node {}", node.name))?;
    let pid = child.id();
    std::fs::write(node.file("agent.pid"), pid.to_string())?;
    Ok(pid)
}

fn wait_ready(node: &LabNode, pid: u32) -> Result<()> {
    let ready = node.file("agent.ready");
    let start = Instant::now();
    let limit = ready_timeout();
    while !ready.exists() {
        if start.elapsed() > limit {
            let tail = std::fs::read_to_string(node.agent_log()).unwrap_or_default();
            bail!(
                "the agent of node {} did not become ready in {} s (PORTCULLIS_LAB_READY_SECS); its log:\n{}",
                node.name,
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
            bail!(
                "the agent of node {} exited; see {}",
                node.name,
                node.agent_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts the lab's API server in the caller's namespace (kubectl's, on
/// 127.0.0.1) with a second listener at `agents_at` in namespace
/// `agents_netns`, and waits for the kubeconfigs it writes (the agents'
/// and the user's).
pub(crate) fn start_fake_apiserver(
    state: &LabState,
    binary: &Path,
    agents_netns: &str,
    agents_at: std::net::SocketAddr,
) -> Result<()> {
    let kubeconfig = paths::kubeconfig();
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_file(paths::user_kubeconfig());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths::state_file("apiserver.log"))?;
    let topology = if state.cluster {
        paths::built_topology()
    } else {
        state.topology.clone()
    };
    let mut cmd = Command::new(binary);
    cmd.args(["lab", "fake-apiserver", "--topology"])
        .arg(&topology)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--user-kubeconfig-out")
        .arg(paths::user_kubeconfig())
        .arg("--agents-netns")
        .arg(agents_netns)
        .arg("--agents-listen")
        .arg(agents_at.to_string());
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
    while !kubeconfig.exists() || !paths::user_kubeconfig().exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the fake API server did not start; see {STATE_DIR}/apiserver.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Where the lab's relay serves every node's flows (Hubble Relay's port).
pub const RELAY_ADDRESS: &str = "127.0.0.1:4245";

/// Starts `portcullis relay --lab` in the caller's namespace, serving every
/// node's observer on [`RELAY_ADDRESS`], and waits until it listens. A
/// relay that cannot start is reported, not fatal: enforcement and each
/// node's own observer do not need it.
pub(crate) fn start_relay(binary: &Path) {
    kill_pidfile("relay.pid");
    let started = (|| -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths::state_file("relay.log"))?;
        let child = Command::new(binary)
            .args(["relay", "--lab", "--listen", RELAY_ADDRESS])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the relay")?;
        std::fs::write(paths::state_file("relay.pid"), child.id().to_string())?;
        let start = Instant::now();
        while std::net::TcpStream::connect(RELAY_ADDRESS).is_err() {
            if start.elapsed() > Duration::from_secs(5)
                || !Path::new(&format!("/proc/{}", child.id())).exists()
            {
                bail!("it does not listen on {RELAY_ADDRESS}; see {STATE_DIR}/relay.log");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    if let Err(e) = started {
        eprintln!("warning: the lab's Hubble relay is not running: {e:#}");
    }
}

/// Kills the process group whose leader's pid is in the state file `name`.
pub(crate) fn kill_pidfile(name: &str) {
    let pidfile = paths::state_file(name);
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // Each lab process runs in its own process group: signal the
        // group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Stops the first node's agent (a one-node lab's only one), if running.
pub fn stop_agent() {
    stop_node_agent(
        &LabState::read()
            .ok()
            .and_then(|s| s.nodes.first().cloned())
            .unwrap_or_else(LabNode::single),
    );
}

/// Stops every agent a lab may have left running (its pid files), also
/// when the lab's state is gone.
pub(crate) fn stop_every_agent() {
    let mut dirs = vec![std::path::PathBuf::from(STATE_DIR)];
    if let Ok(rd) = std::fs::read_dir(paths::state_file("nodes")) {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    for dir in dirs {
        stop_pidfile(&dir.join("agent.pid"));
    }
}

/// Stops `node`'s agent process, if running.
pub fn stop_node_agent(node: &LabNode) {
    stop_pidfile(&node.file("agent.pid"));
}

fn stop_pidfile(pidfile: &Path) {
    if let Some(pid) = std::fs::read_to_string(pidfile)
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

/// Stops the agents and removes their pinned program links, which
/// detaches the programs from every interface. The maps stay pinned.
pub fn detach() -> Result<()> {
    let mut state = LabState::read()?;
    stop_agents(&mut state);
    for node in &state.nodes {
        let links = node.pin_dir.join("links");
        if links.exists() {
            std::fs::remove_dir_all(&links)
                .with_context(|| format!("removing {}", links.display()))?;
        }
    }
    state.write()
}

#[cfg(test)]
mod tests;
