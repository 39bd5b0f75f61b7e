//! The agent reads its policy files when they change (inotify), not on a
//! timer: with `--poll-ms` at ten minutes, an edit still reaches the
//! kernel, and a file whose new version is invalid keeps its previous
//! version in force while another file's edit applies. Root only (a lab);
//! one lab at a time:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test watch`.

#[path = "support/lab.rs"]
mod lab;

use lab::{TestLab, lab_guard, wait_until};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {namespace: x, name: a, labels: {pod: a}, ips: [10.200.1.10]}
  - {namespace: x, name: b, labels: {pod: b}, ips: [10.200.1.11]}
  - {namespace: x, name: c, labels: {pod: c}, ips: [10.200.1.12]}
"#;

const C_IP: &str = "10.200.1.12";

/// x/c admits `from` on `port`.
fn c_admits(name: &str, from: &str, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{pod: c}}}}\n  ingress:\n  \
         - fromEndpoints: [{{matchLabels: {{pod: {from}}}}}]\n    \
         toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n"
    )
}

const INVALID: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: broken, namespace: x}\nspec: {endpointSelector: {}, nodeSelector: {}}\n";

/// Whether `pod` connects to x/c on `port` and gets the responder's `ok`.
fn reaches_c(lab: &TestLab, pod: &str, port: u16) -> bool {
    let path = format!("/run/netns/{}", lab.netns(pod));
    let dst: SocketAddr = format!("{C_IP}:{port}").parse().expect("literal");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let timeout = Duration::from_millis(300);
        let mut s = TcpStream::connect_timeout(&dst, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).ok()?;
        (&buf == b"ok\n").then_some(())
    })
    .join()
    .expect("probe thread")
    .is_some()
}

/// Writes `text` to `path` as editors do: a temporary file renamed over it.
fn write_over(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The second policy file, in a directory of its own.
struct SecondFile(PathBuf);

impl Drop for SecondFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn edits_are_applied_without_polling_and_an_invalid_file_keeps_its_previous_version() {
    let Some(_guard) = lab_guard() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("portcullis-watch-second-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let second = SecondFile(dir.join("b.yaml"));
    std::fs::write(&second.0, c_admits("c-from-b", "b", 81)).expect("write");
    let mut lab = TestLab::up(
        "watch",
        TOPOLOGY,
        "",
        &[
            "--policy",
            second.0.to_str().expect("utf-8 path"),
            // Ten minutes: only the watcher can make the edits below seen.
            "--agent-arg=--poll-ms=600000",
        ],
    );
    lab.serve_tcp("x/c", "80,81");
    assert!(
        reaches_c(&lab, "x/b", 81),
        "x/b -> x/c:81 (the second file)"
    );
    assert!(!reaches_c(&lab, "x/a", 80), "x/c admits only x/b at first");

    // An edit of the first file is seen.
    lab.write_policy(&c_admits("c-from-a", "a", 80));
    assert!(
        wait_until(Duration::from_secs(10), || reaches_c(&lab, "x/a", 80)),
        "the edit of the first policy file was not applied within 10 s"
    );

    // The second file turns invalid, then the first moves x/a to port 81:
    // the first file's edit applies, the second keeps its previous version.
    write_over(&second.0, INVALID);
    lab.write_policy(&c_admits("c-from-a", "a", 81));
    assert!(
        wait_until(Duration::from_secs(10), || reaches_c(&lab, "x/a", 81)),
        "the first file's edit was held back by the second file's rejection"
    );
    assert!(
        !reaches_c(&lab, "x/a", 80),
        "the first file's old version is gone"
    );
    assert!(
        reaches_c(&lab, "x/b", 81),
        "the rejected file's previous version is no longer in force"
    );
    let status = lab.status_json();
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("b.yaml"),
        "status names the rejected file: {status}"
    );
    let kept = status["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["name"] == "c-from-b")
        .unwrap_or_else(|| panic!("c-from-b is still listed: {status}"));
    assert!(
        kept["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rejected"))
    );
    let metrics = lab.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_policy_rejected_total ") && !l.ends_with(" 0")),
        "policy_rejected counts the rejection: {metrics}"
    );

    // Fixed: the second file's new version applies.
    write_over(&second.0, &c_admits("c-from-b", "b", 80));
    assert!(
        wait_until(Duration::from_secs(10), || !reaches_c(&lab, "x/b", 81)),
        "the fixed second file was not applied within 10 s"
    );
    assert!(reaches_c(&lab, "x/b", 80));
    assert!(
        wait_until(Duration::from_secs(5), || lab.status_json()["last_error"]
            .is_null()),
        "status still names a rejection after the fix"
    );
}
