//! Root-only lab test of TLS policy (issue 8): curl in a pod, nginx with
//! HTTPS in the world namespace, the real kernel programs redirecting to
//! the agent's proxy. serverNames allow/deny without termination;
//! terminatingTLS + originatingTLS with HTTP path rules, the client
//! trusting the CA of the certificate portcullis presents; a rotated
//! certificate picked up by new connections; a missing secret denying
//! with a clear error in the agent's log. Certificates are made at test
//! time with the openssl CLI. Without root it skips with a message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// The lab has fixed names: the tests of this file run one at a time.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Where the lab's agent reads TLS secrets (`lab up` passes it).
const SECRETS: &str = "/run/portcullis/lab/tls-secrets";
const CLIENT_NS: &str = "pc-pod1";
const WORLD_NS: &str = "pc-world";

const TOPOLOGY: &str = r#"
namespaces:
  - {name: shop, labels: {team: shop}}
pods:
  - {namespace: shop, name: client, labels: {app: client}, ips: [10.200.21.10, "fd00:200::21:10"]}
world: {ips: [10.201.7.7]}
"#;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-tls, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.201.7.7/32]
    toPorts:
    - ports: [{port: "8443", protocol: TCP}]
      serverNames: [sni.lab.test]
  - toCIDR: [10.201.7.7/32]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
      serverNames: [api.lab.test]
      terminatingTLS: {secret: {name: term}}
      originatingTLS: {secret: {name: orig, namespace: shop}}
      rules:
        http:
        - {method: GET, path: "/public/.*"}
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn must(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str], what: &str) {
    must(Command::new("openssl").current_dir(dir).args(args), what);
}

/// CA `<name>.crt`/`<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        "make a CA",
    );
}

/// Leaf `<name>.crt`/`<name>.key` for `dns` names, signed by `ca`.
fn make_leaf(dir: &Path, ca: &str, name: &str, dns: &[&str]) {
    let san: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            san.join(",")
        ),
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={}", dns[0]),
        ],
        "make a CSR",
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
        "sign a certificate",
    );
}

/// Writes secret `shop/<name>` with `(item, file in dir)` pairs; each
/// item replaced by a rename.
fn write_secret(dir: &Path, name: &str, items: &[(&str, &str)]) {
    let d = Path::new(SECRETS).join("shop").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("secret dir");
    for (item, file) in items {
        let tmp = d.join(format!(".{item}.tmp"));
        std::fs::copy(dir.join(file), &tmp).expect("copy item");
        std::fs::rename(&tmp, d.join(item)).expect("rename item");
    }
}

/// The lab, nginx and the test's files; all removed on drop.
struct TlsLab {
    dir: PathBuf,
    nginx: Option<Child>,
}

impl Drop for TlsLab {
    fn drop(&mut self) {
        if let Some(mut n) = self.nginx.take() {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = Command::new(BIN).args(["lab", "down"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(SECRETS);
    }
}

/// curl from the client pod: (exit code, HTTP status, body).
fn curl(url: &str, resolve: &str, cacert: &Path, h2: bool) -> (i32, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "curl", "-sS", "--max-time", "3"])
        .args(["--resolve", resolve, "--cacert"])
        .arg(cacert)
        .arg(if h2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        out.status.code().unwrap_or(-1),
        code.to_string(),
        body.to_string(),
    )
}

fn agent_log() -> String {
    std::fs::read_to_string("/run/portcullis/lab/agent.log").unwrap_or_default()
}

/// Retries `probe` until it returns `want` (secrets reach the agent by a
/// file poll, or through the API server in Kubernetes mode).
fn eventually<T: PartialEq + std::fmt::Debug>(what: &str, want: T, probe: impl Fn() -> T) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_in_the_lab_with_secret_files() {
    run(false);
}

/// The same, the agent watching a (fake) API server that serves the
/// secret files as Secret objects.
#[test]
fn tls_in_the_lab_with_kubernetes_secrets() {
    run(true);
}

fn run(kubernetes: bool) {
    if !is_root() {
        eprintln!("skipping: the lab needs root");
        return;
    }
    let _one_lab = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for tool in ["nginx", "openssl", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: run deploy/install-deps.sh");
    }
    let dir = std::env::temp_dir().join(format!("portcullis-lab-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut lab = TlsLab { dir, nginx: None };
    let dir = lab.dir.clone();

    make_ca(&dir, "world-ca");
    make_ca(&dir, "proxy-ca");
    make_ca(&dir, "rotated-ca");
    let names = ["api.lab.test", "sni.lab.test", "bad.lab.test"];
    make_leaf(&dir, "world-ca", "nginx", &names);
    make_leaf(&dir, "proxy-ca", "proxy", &names);
    make_leaf(&dir, "rotated-ca", "rotated", &names);
    // terminatingTLS without ca.crt; originatingTLS with only ca.crt.
    write_secret(
        &dir,
        "term",
        &[("tls.crt", "proxy.crt"), ("tls.key", "proxy.key")],
    );
    write_secret(&dir, "orig", &[("ca.crt", "world-ca.crt")]);

    std::fs::write(dir.join("topology.yaml"), TOPOLOGY).expect("topology");
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy");
    let mut up = Command::new(BIN);
    up.args(["lab", "up", "--topology"])
        .arg(dir.join("topology.yaml"))
        .arg("--policy")
        .arg(dir.join("policy.yaml"));
    if kubernetes {
        up.arg("--kubernetes");
    }
    must(&mut up, "lab up");
    // nginx in the world namespace with its own config (never the system
    // service): HTTPS on 443 and 8443, answering with the path.
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx temp");
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n\
             events {{ worker_connections 256; }}\nhttp {{\n access_log off;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{\n  listen 443 ssl http2; listen 8443 ssl http2;\n\
             ssl_certificate {d}/nginx.crt; ssl_certificate_key {d}/nginx.key;\n\
             location / {{ default_type text/plain; return 200 \"nginx $uri\"; }}\n }}\n}}\n"
        ),
    )
    .expect("nginx config");
    lab.nginx = Some(
        Command::new("ip")
            .args(["netns", "exec", WORLD_NS, "nginx", "-e"])
            .arg(dir.join("nginx.err"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    std::thread::sleep(Duration::from_millis(500));

    let world_ca = dir.join("world-ca.crt");
    let proxy_ca = dir.join("proxy-ca.crt");
    // The secrets are in the agent's view (at once in file mode; after
    // the API server's next poll and the watch in Kubernetes mode).
    eventually("first terminated request", (0, "200".to_string()), || {
        let (rc, code, _) = curl(
            "https://api.lab.test/public/0",
            "api.lab.test:443:10.201.7.7",
            &proxy_ca,
            false,
        );
        (rc, code)
    });
    for h2 in [false, true] {
        // serverNames without termination: nginx's own certificate.
        let (rc, code, body) = curl(
            "https://sni.lab.test:8443/x",
            "sni.lab.test:8443:10.201.7.7",
            &world_ca,
            h2,
        );
        assert_eq!((rc, code.as_str()), (0, "200"), "allowed SNI, h2 {h2}");
        assert_eq!(body, "nginx /x");
        let (rc, code, _) = curl(
            "https://bad.lab.test:8443/x",
            "bad.lab.test:8443:10.201.7.7",
            &world_ca,
            h2,
        );
        assert_ne!(rc, 0, "denied SNI must be closed (h2 {h2}), got {code}");
        assert_eq!(code, "000");

        // Terminated with portcullis' certificate, HTTP judged, TLS
        // re-originated to nginx verified with the world CA.
        let (rc, code, body) = curl(
            "https://api.lab.test/public/a",
            "api.lab.test:443:10.201.7.7",
            &proxy_ca,
            h2,
        );
        assert_eq!((rc, code.as_str()), (0, "200"), "allowed path, h2 {h2}");
        assert_eq!(body, "nginx /public/a");
        let (rc, code, body) = curl(
            "https://api.lab.test/admin",
            "api.lab.test:443:10.201.7.7",
            &proxy_ca,
            h2,
        );
        assert_eq!((rc, code.as_str()), (0, "403"), "denied path, h2 {h2}");
        assert_eq!(body, "Access denied\r\n");
        // The certificate is the proxy's: the world CA does not verify it.
        let (rc, _, _) = curl(
            "https://api.lab.test/public/a",
            "api.lab.test:443:10.201.7.7",
            &world_ca,
            h2,
        );
        assert_eq!(
            rc, 60,
            "curl must reject the proxy's certificate with the world CA"
        );
    }

    // A secret with ca.crt (as cert-manager writes it) still terminates
    // for clients without a certificate.
    write_secret(
        &dir,
        "term",
        &[
            ("tls.crt", "proxy.crt"),
            ("tls.key", "proxy.key"),
            ("ca.crt", "proxy-ca.crt"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (rc, code, _) = curl(
        "https://api.lab.test/public/b",
        "api.lab.test:443:10.201.7.7",
        &proxy_ca,
        false,
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "secret with ca.crt");

    // Rotation: new connections get the new certificate, no restart.
    let rotated_at = Instant::now();
    write_secret(
        &dir,
        "term",
        &[("tls.crt", "rotated.crt"), ("tls.key", "rotated.key")],
    );
    eventually("rotated certificate", (0, "200".to_string()), || {
        let (rc, code, _) = curl(
            "https://api.lab.test/public/c",
            "api.lab.test:443:10.201.7.7",
            &dir.join("rotated-ca.crt"),
            false,
        );
        (rc, code)
    });
    let (rc, _, _) = curl(
        "https://api.lab.test/public/c",
        "api.lab.test:443:10.201.7.7",
        &proxy_ca,
        false,
    );
    assert_eq!(rc, 60, "the old CA must no longer verify");
    eprintln!(
        "rotation picked up by the next connection ({:?})",
        rotated_at.elapsed()
    );

    // A missing secret: the port denies, the log names the secret.
    std::fs::remove_dir_all(Path::new(SECRETS).join("shop").join("term")).expect("remove");
    eventually(
        "missing secret denies (the handshake is closed)",
        true,
        || {
            let (rc, code, _) = curl(
                "https://api.lab.test/public/d",
                "api.lab.test:443:10.201.7.7",
                &dir.join("rotated-ca.crt"),
                false,
            );
            rc != 0 && code == "000"
        },
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = agent_log();
        if log.contains("secret shop/term")
            && (log.contains("cannot read the secret directory")
                || log.contains("the secret does not exist"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent log does not name the missing secret:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back: the next connection works again.
    write_secret(
        &dir,
        "term",
        &[("tls.crt", "proxy.crt"), ("tls.key", "proxy.key")],
    );
    eventually("secret restored", (0, "200".to_string()), || {
        let (rc, code, _) = curl(
            "https://api.lab.test/public/e",
            "api.lab.test:443:10.201.7.7",
            &proxy_ca,
            false,
        );
        (rc, code)
    });
}
