//! Root-only end-to-end tests of the lab: real namespaces, real programs,
//! real traffic. Each test builds its own lab and removes it on `Drop`,
//! also when it fails. They share the lab's fixed names, so they run one at
//! a time. Without root they skip with a message.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static LAB: Mutex<()> = Mutex::new(());

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn portcullis(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run portcullis")
}

fn must(args: &[&str]) -> String {
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
struct Lab {
    dir: PathBuf,
    servers: Vec<Child>,
}

impl Lab {
    fn up(name: &str, topology: &str, policy: &str) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("portcullis-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("topology.yaml"), topology).expect("write topology");
        std::fs::write(dir.join("policy.yaml"), policy).expect("write policy");
        let mut lab = Lab {
            dir,
            servers: Vec::new(),
        };
        let t = lab.dir.join("topology.yaml");
        let p = lab.dir.join("policy.yaml");
        must(&[
            "lab",
            "up",
            "--topology",
            t.to_str().expect("utf-8 path"),
            "--policy",
            p.to_str().expect("utf-8 path"),
        ]);
        for pod in ["x/a", "x/b", "x/c"] {
            let ns = pod_ns(pod);
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, BIN, "lab", "serve", "--tcp", "80,81"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start responder");
            lab.servers.push(child);
        }
        std::thread::sleep(Duration::from_millis(300));
        lab
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Writes a new policy atomically; returns when the write is done.
    fn write_policy(&self, text: &str) {
        let tmp = self.dir.join("policy.tmp");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, self.policy_path()).expect("rename policy");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = portcullis(&["lab", "down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: b, labels: {pod: b}, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: c, labels: {pod: c}, ips: [10.200.1.12, "fd00:200::1:12"]}
"#;

/// x/c accepts port 80 only from x/b; everything else is open.
const DENY_A_TO_C: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c-from-b, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

fn pod_ns(pod: &str) -> String {
    // Endpoint ids follow topology order: x/a=1, x/b=2, x/c=3.
    let id = match pod {
        "x/a" => 1,
        "x/b" => 2,
        "x/c" => 3,
        other => panic!("unknown pod {other}"),
    };
    format!("pc-pod{id}")
}

fn ip_of(pod: &str) -> IpAddr {
    match pod {
        "x/a" => "10.200.1.10",
        "x/b" => "10.200.1.11",
        "x/c" => "10.200.1.12",
        other => panic!("unknown pod {other}"),
    }
    .parse()
    .expect("literal")
}

/// Opens a TCP connection from inside a pod's namespace. The socket stays
/// usable from any thread afterwards.
fn connect_from(pod: &str, dst: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    let path = format!("/run/netns/{}", pod_ns(pod));
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut s = TcpStream::connect_timeout(&dst, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).ok()?;
        (&buf == b"ok\n").then_some(s)
    })
    .join()
    .expect("probe thread")
}

fn reachable(from: &str, to: &str, port: u16) -> bool {
    connect_from(
        from,
        SocketAddr::new(ip_of(to), port),
        Duration::from_millis(300),
    )
    .is_some()
}

fn echo(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

#[test]
fn policy_change_drops_new_flows_quickly_and_spares_established_ones() {
    if !is_root() {
        eprintln!("SKIP: needs root (network namespaces, eBPF)");
        return;
    }
    let _guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("change", TOPOLOGY, "");
    // Everything is open without policy.
    assert!(
        reachable("x/a", "x/c", 80),
        "x/a -> x/c:80 before the change"
    );
    // An established, allowed flow unrelated to the change.
    let mut established = connect_from(
        "x/a",
        SocketAddr::new(ip_of("x/b"), 81),
        Duration::from_secs(1),
    )
    .expect("x/a -> x/b:81 connects");
    assert!(echo(&mut established));

    lab.write_policy(DENY_A_TO_C);
    let written = Instant::now();
    let mut dropped_after = None;
    while written.elapsed() < Duration::from_secs(2) {
        if connect_from(
            "x/a",
            SocketAddr::new(ip_of("x/c"), 80),
            Duration::from_millis(20),
        )
        .is_none()
        {
            dropped_after = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let dropped_after = dropped_after.expect("x/a -> x/c:80 is never dropped after the change");
    println!("newly denied flow dropped {dropped_after:?} after the policy file was written");
    assert!(
        dropped_after < Duration::from_millis(100),
        "the issue's bound: dropped within 100 ms of the write, took {dropped_after:?}"
    );
    // Stays dropped, the allowed peer still gets in, the established flow
    // keeps working.
    assert!(!reachable("x/a", "x/c", 80));
    assert!(reachable("x/b", "x/c", 80));
    assert!(
        echo(&mut established),
        "established flow broken by an unrelated change"
    );

    // An invalid policy file keeps the previous policy in force.
    lab.write_policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: broken, namespace: x}\nspec: {endpointSelector: {}, nodeSelector: {}}\n");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !reachable("x/a", "x/c", 80),
        "invalid policy must not lift the deny"
    );
    assert!(reachable("x/b", "x/c", 80));
    let log = std::fs::read_to_string("/run/portcullis/lab/agent.log").unwrap_or_default();
    assert!(
        log.contains("previous policy stays in force"),
        "agent log: {log}"
    );
}

#[test]
fn enforcement_continues_while_the_agent_is_down() {
    if !is_root() {
        eprintln!("SKIP: needs root (network namespaces, eBPF)");
        return;
    }
    let _guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("restart", TOPOLOGY, DENY_A_TO_C);
    assert!(!reachable("x/a", "x/c", 80));
    assert!(reachable("x/b", "x/c", 80));

    let pid = std::fs::read_to_string("/run/portcullis/lab/agent.pid").expect("agent pid");
    let pid: i32 = pid.trim().parse().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill agent");
    let gone = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && gone.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The gap: no agent, pinned programs and maps keep deciding.
    for _ in 0..5 {
        assert!(
            !reachable("x/a", "x/c", 80),
            "denied flow passed while the agent was down"
        );
        assert!(
            reachable("x/b", "x/c", 80),
            "allowed flow dropped while the agent was down"
        );
    }
    // A policy change during the gap is picked up after the restart.
    lab.write_policy("");
    must(&["lab", "restart-agent"]);
    let start = Instant::now();
    while !reachable("x/a", "x/c", 80) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "restarted agent did not apply the new policy"
        );
    }
    assert!(reachable("x/b", "x/c", 80));
}

#[test]
fn conformance_l3_l4_end_to_end_matches_the_model() {
    if !is_root() {
        eprintln!("SKIP: needs root (network namespaces, eBPF)");
        return;
    }
    let _guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(BIN)
        .args(["lab", "conformance"])
        .output()
        .expect("run lab conformance");
    let _ = portcullis(&["lab", "down"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .expect("summary line");
    let passed: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("passed count");
    assert!(
        out.status.success(),
        "end-to-end mismatches:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(passed >= 200, "only {passed} end-to-end probes ran");
    let v6: usize = stdout
        .lines()
        .find_map(|l| l.split("IPv6 ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("family line");
    assert!(v6 >= 100, "only {v6} IPv6 probes ran");
}
