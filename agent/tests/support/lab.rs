//! A lab for root-only tests: `portcullis lab up` with a topology and a
//! policy written to a temporary directory, torn down (`lab down`) on
//! `Drop`, also when the test fails. Targets are named as the CLI names
//! them: `ns/pod`, `world` or `node`.
//!
//! The lab has fixed namespace names: tests that use it run one at a time
//! (hold [`LAB`] inside a test binary; across binaries cargo runs them in
//! turn; developers running several at once serialise with
//! `flock -o /run/portcullis-lab.lock`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serialises the tests of one binary that bring up a lab.
pub static LAB: Mutex<()> = Mutex::new(());

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Holds [`LAB`] for the test, or `None` (with a SKIP line) without root.
pub fn lab_guard() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !is_root() {
        eprintln!("SKIP: needs root (network namespaces, eBPF)");
        return None;
    }
    Some(LAB.lock().unwrap_or_else(|e| e.into_inner()))
}

pub fn portcullis(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run portcullis")
}

/// Runs the binary and panics with its output unless it succeeds.
pub fn must(args: &[&str]) -> String {
    let out = portcullis(args);
    assert!(
        out.status.success(),
        "portcullis {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab that is torn down when dropped.
pub struct TestLab {
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl TestLab {
    /// `lab up` with these files; `extra` are more `lab up` arguments.
    pub fn up(name: &str, topology: &str, policy: &str, extra: &[&str]) -> TestLab {
        let dir =
            std::env::temp_dir().join(format!("portcullis-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("topology.yaml"), topology).expect("write topology");
        std::fs::write(dir.join("policy.yaml"), policy).expect("write policy");
        let lab = TestLab {
            dir,
            children: Vec::new(),
        };
        let t = lab.dir.join("topology.yaml");
        let p = lab.dir.join("policy.yaml");
        let mut args = vec![
            "lab",
            "up",
            "--topology",
            t.to_str().expect("utf-8 path"),
            "--policy",
            p.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        must(&args);
        lab
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Writes a new policy atomically.
    pub fn write_policy(&self, text: &str) {
        let tmp = self.dir.join("policy.tmp");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, self.policy_path()).expect("rename policy");
    }

    /// The network namespace name of `target`.
    pub fn netns(&self, target: &str) -> String {
        let out = self.exec(target, &["ip", "netns", "identify"]);
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!name.is_empty(), "no namespace for {target}");
        name
    }

    /// Runs `cmd` inside `target` and waits for it.
    pub fn exec(&self, target: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["lab", "exec", target, "--"];
        args.extend_from_slice(cmd);
        portcullis(&args)
    }

    /// Runs `cmd` inside `target`; its stdout, trimmed.
    pub fn sh(&self, target: &str, cmd: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(target, cmd).stdout)
            .trim()
            .to_string()
    }

    /// Starts `cmd` inside `target`; killed when the lab drops.
    pub fn spawn(&mut self, target: &str, cmd: &[&str]) -> &mut Child {
        let ns = self.netns(target);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in lab namespace");
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    /// Starts the lab's TCP responder (`ok\n`, then echo) on `ports`
    /// (e.g. "80,81") inside `target`.
    pub fn serve_tcp(&mut self, target: &str, ports: &str) {
        self.spawn(target, &[BIN, "lab", "serve", "--tcp", ports]);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Starts knot, authoritative for the root zone `zone` (zone-file
    /// text), listening on port 53 of `target`; killed when the lab drops.
    pub fn serve_dns_zone(&mut self, target: &str, zone: &str) {
        let zone_file = self.dir.join("root.zone");
        std::fs::write(&zone_file, zone).expect("zone");
        std::fs::create_dir_all(self.dir.join("knot")).expect("knot dir");
        let conf = self.dir.join("knot.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n    rundir: \"{d}/knot\"\n    listen: [ \"0.0.0.0@53\", \"::@53\" ]\ndatabase:\n    storage: \"{d}/knot\"\nzone:\n  - domain: \".\"\n    file: \"{z}\"\n",
                d = self.dir.display(),
                z = zone_file.display()
            ),
        )
        .expect("knot conf");
        self.spawn(target, &["knotd", "-c", conf.to_str().expect("utf-8")]);
        // The first query must find knot listening: a busy machine may
        // take seconds to start it.
        let listening = wait_until(Duration::from_secs(10), || {
            self.sh(target, &["ss", "-Hlun", "sport = :53"])
                .lines()
                .count()
                > 0
        });
        assert!(listening, "knot did not listen on port 53 in {target}");
    }

    /// The agent's `/metrics` text, as the node reaches its admin port
    /// (empty when it does not answer within 10 s).
    pub fn metrics(&self) -> String {
        self.sh(
            "node",
            &[
                "curl",
                "-s",
                "--max-time",
                "10",
                "http://127.0.0.1:9876/metrics",
            ],
        )
    }

    /// `portcullis status --output json`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&must(&["status", "--output", "json"])).expect("status json")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = portcullis(&["lab", "down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
