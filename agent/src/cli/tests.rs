//! The CLI's contracts across commands.

use crate::state_dir;
use crate::{Cli, Command};
use clap::Parser;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The state directory `portcullis status` (and `observe`, which takes the
/// same flag) reads with `argv`, given the daemon's record at `pointer`.
fn status_reads(argv: &[&str], pointer: &std::path::Path) -> PathBuf {
    let cli = Cli::try_parse_from(argv).expect("status options");
    let Command::Status { state_dir, .. } = cli.command else {
        panic!("not status")
    };
    state_dir::locate(state_dir, pointer)
}

#[test]
fn status_without_flags_reads_where_the_daemonsets_agent_writes() {
    let daemonset = include_str!("../../../deploy/kubernetes/daemonset.yaml");
    let flag = daemonset
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --state-dir="))
        .expect("the DaemonSet names its state directory");
    let agent = Cli::try_parse_from(["portcullis", "agent", "--kubernetes", "--state-dir", flag])
        .expect("agent options");
    let Command::Agent(args) = agent.command else {
        panic!("not agent")
    };
    // Nothing recorded (a client started before the agent, or the record
    // is gone): the daemon's default, which is the DaemonSet's directory.
    let run = scratch("daemonset");
    let pointer = run.join("state-dir");
    assert_eq!(
        status_reads(&["portcullis", "status"], &pointer),
        args.state_dir
    );
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn status_without_flags_reads_where_the_labs_agent_writes() {
    let run = scratch("lab");
    let lab = run.join("lab");
    std::fs::create_dir_all(&lab).expect("the lab's state directory");
    let pointer = run.join("state-dir");
    // What the lab's agent does at start (`--state-dir` is the lab's).
    state_dir::record(&pointer, &lab).expect("recorded");
    assert_eq!(status_reads(&["portcullis", "status"], &pointer), lab);
    assert_eq!(
        status_reads(
            &["portcullis", "status", "--state-dir", "/elsewhere"],
            &pointer
        ),
        PathBuf::from("/elsewhere")
    );
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn status_and_observe_take_the_same_state_directory_flag() {
    for argv in [
        ["portcullis", "status", "--state-dir", "/x"],
        ["portcullis", "observe", "--state-dir", "/x"],
    ] {
        let cli = Cli::try_parse_from(argv).expect("options");
        let dir = match cli.command {
            Command::Status { state_dir, .. } | Command::Observe { state_dir, .. } => state_dir,
            _ => panic!("not a client"),
        };
        assert_eq!(dir, Some(PathBuf::from("/x")));
    }
}
