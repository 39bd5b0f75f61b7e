//! Real peers run inside lab namespaces: haproxy (HTTP/1.1 and h2c), nginx
//! (HTTPS, certificates made with the openssl CLI), knot (authoritative
//! DNS), tansu (a Kafka-API broker) and the lab's own TCP/UDP responders
//! (`portcullis lab serve`). Each runs with its own configuration (never
//! the system service), in a process group of its own, held by a
//! [`Processes`] that kills it on drop.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Processes started for a run, killed (and reaped) on drop.
#[derive(Default)]
pub struct Processes(Vec<Child>);

impl Processes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `cmd` detached (no terminal, its own process group, output
    /// discarded) and holds it; `what` names it in the error, with how to
    /// install it.
    pub fn spawn(&mut self, cmd: &mut Command, what: &str) -> Result<()> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        self.0.push(child);
        Ok(())
    }

    /// Takes over what `other` holds.
    pub fn append(&mut self, mut other: Processes) {
        self.0.append(&mut other.0);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ip netns exec NS PROGRAM`: add the program's arguments.
pub fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The lab's responders (`BINARY lab serve`) in `ns`: TCP echo on `tcp`,
/// UDP on `udp` (bound to `udp_bind`, or the wildcard addresses).
pub fn start_responders(
    procs: &mut Processes,
    binary: &Path,
    ns: &str,
    tcp: &BTreeSet<u16>,
    udp: &BTreeSet<u16>,
    udp_bind: &[IpAddr],
) -> Result<()> {
    let mut cmd = in_ns(ns, binary);
    cmd.args(["lab", "serve"]);
    if !tcp.is_empty() {
        cmd.args(["--tcp", &join(tcp)]);
    }
    if !udp.is_empty() {
        cmd.args(["--udp", &join(udp)]);
        if !udp_bind.is_empty() {
            let b: Vec<String> = udp_bind.iter().map(|a| a.to_string()).collect();
            cmd.args(["--udp-bind", &b.join(",")]);
        }
    }
    procs.spawn(&mut cmd, "responders")
}

/// The lab's raw-protocol responders (`BINARY lab serve --raw`) in `ns`:
/// they answer probes of each IP protocol in `protocols` (see
/// [`crate::probe::raw`]), bound to `bind` (or the wildcard addresses).
pub fn start_raw_responders(
    procs: &mut Processes,
    binary: &Path,
    ns: &str,
    protocols: &BTreeSet<u8>,
    bind: &[IpAddr],
) -> Result<()> {
    let mut cmd = in_ns(ns, binary);
    let list: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
    cmd.args(["lab", "serve", "--raw", &list.join(",")]);
    if !bind.is_empty() {
        let b: Vec<String> = bind.iter().map(|a| a.to_string()).collect();
        cmd.args(["--raw-bind", &b.join(",")]);
    }
    procs.spawn(&mut cmd, "raw responders")
}

/// haproxy as a pod's HTTP server: 200 `ok` for any request, HTTP/1.1 and
/// HTTP/2 prior knowledge on every port of `ports`, both families.
pub fn haproxy_config(ports: &BTreeSet<u16>) -> String {
    let mut c = String::from(
        "global\n  maxconn 2048\ndefaults\n  mode http\n  timeout client 10s\n  timeout server 10s\n  timeout connect 2s\nfrontend pod\n",
    );
    for p in ports {
        c.push_str(&format!("  bind :::{p} v4v6\n"));
    }
    c.push_str("  http-request return status 200 content-type text/plain string \"ok\"\n");
    c
}

/// Starts haproxy in `ns` on `ports` (configuration in `dir`).
pub fn start_haproxy(
    procs: &mut Processes,
    dir: &Path,
    ns: &str,
    ports: &BTreeSet<u16>,
) -> Result<()> {
    let cfg = dir.join(format!("haproxy-{ns}.cfg"));
    std::fs::write(&cfg, haproxy_config(ports))?;
    procs.spawn(
        in_ns(ns, "haproxy").arg("-db").arg("-f").arg(&cfg),
        "haproxy (apt-get install haproxy)",
    )
}

/// knot serving `dir/root.zone` as the root zone on port 53, both families.
pub fn knot_config(dir: &Path, ns: &str) -> String {
    format!(
        "server:\n    rundir: \"{d}/knot-{ns}\"\n    listen: [ \"0.0.0.0@53\", \"::@53\" ]\ndatabase:\n    storage: \"{d}/knot-{ns}\"\nzone:\n  - domain: \".\"\n    file: \"{d}/root.zone\"\n",
        d = dir.display()
    )
}

/// Starts knot in `ns`, serving `dir/root.zone` (the caller writes it).
pub fn start_knot(procs: &mut Processes, dir: &Path, ns: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join(format!("knot-{ns}")))?;
    let cfg = dir.join(format!("knot-{ns}.conf"));
    std::fs::write(&cfg, knot_config(dir, ns))?;
    procs.spawn(
        in_ns(ns, "knotd").arg("-c").arg(&cfg),
        "knotd (apt-get install knot)",
    )?;
    // Probes start right after: wait until knot listens on TCP 53 (it
    // binds UDP at the same time), or the first DNS probes of a busy
    // machine meet no server and read as drops.
    let start = std::time::Instant::now();
    loop {
        let listening = in_ns(ns, "ss")
            .args(["-Hltn", "sport = :53"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if listening {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            bail!("knotd does not listen on port 53 in {ns} after 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The tansu binary: on PATH or in `~/.cargo/bin` (deploy/tansu.sh).
pub fn tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = Path::new(&std::env::var_os("HOME")?).join(".cargo/bin/tansu");
    p.is_file().then_some(p)
}

/// Starts tansu (memory storage) in `ns` on `port` (all addresses, both
/// families), advertising `advertised:port`, and creates `topics` there;
/// returns once they exist (the broker is up when the first one can be
/// created).
pub fn start_tansu(
    procs: &mut Processes,
    tansu: &Path,
    ns: &str,
    port: u16,
    advertised: IpAddr,
    topics: &BTreeSet<String>,
) -> Result<()> {
    procs.spawn(
        in_ns(ns, tansu)
            .arg("broker")
            .args(["--listener-url", &format!("tcp://[::]:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://{advertised}:{port}"),
            ])
            .args(["--storage-engine", "memory://tansu/"]),
        "tansu",
    )?;
    for topic in topics {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = in_ns(ns, tansu)
                .args(["topic", "create", topic, "--partitions", "1"])
                .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
                .output()
                .context("tansu topic create")?;
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu in {ns}: topic {topic} not created: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// nginx serving HTTPS (HTTP/1.1 and h2) on `ports` with certificate
/// `dir/<cert>.crt`: 200 `ok`.
pub fn nginx_config(dir: &Path, ns: &str, ports: &BTreeSet<u16>, cert: &str) -> String {
    let d = dir.display();
    let mut listen = String::new();
    for p in ports {
        listen.push_str(&format!(
            "    listen 0.0.0.0:{p} ssl http2;\n    listen [::]:{p} ssl http2 ipv6only=on;\n"
        ));
    }
    format!(
        "master_process off;\ndaemon off;\npid {d}/nginx-{ns}.pid;\nerror_log {d}/nginx-{ns}.err warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-{ns}-tmp;\n  proxy_temp_path {d}/nginx-{ns}-tmp;\n\
         \x20 fastcgi_temp_path {d}/nginx-{ns}-tmp;\n  uwsgi_temp_path {d}/nginx-{ns}-tmp;\n  scgi_temp_path {d}/nginx-{ns}-tmp;\n\
         \x20 server {{\n{listen}    ssl_certificate {d}/{cert}.crt;\n    ssl_certificate_key {d}/{cert}.key;\n\
         \x20   location / {{ default_type text/plain; return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// Starts nginx in `ns` with its own configuration in `dir`.
pub fn start_nginx(
    procs: &mut Processes,
    dir: &Path,
    ns: &str,
    ports: &BTreeSet<u16>,
    cert: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir.join(format!("nginx-{ns}-tmp")))?;
    let conf = dir.join(format!("nginx-{ns}.conf"));
    std::fs::write(&conf, nginx_config(dir, ns, ports, cert))?;
    procs.spawn(
        in_ns(ns, "nginx")
            .arg("-e")
            .arg(dir.join(format!("nginx-{ns}.err")))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf),
        "nginx (apt-get install nginx-light)",
    )
}

fn openssl(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: running openssl"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) -> Result<()> {
    openssl(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt")))
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "making a CA",
    )
}

/// A server certificate `<name>.crt`/`<name>.key` for `names` signed by CA
/// `ca` (both in `dir`).
pub fn make_leaf(dir: &Path, ca: &str, name: &str, names: &[String]) -> Result<()> {
    let san: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect();
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            san.join(",")
        ),
    )?;
    let csr = dir.join(format!("{name}.csr"));
    openssl(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&csr)
            .args(["-subj", &format!("/CN={}", names[0])]),
        "making a key and CSR",
    )?;
    openssl(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(dir.join(format!("{ca}.crt")))
            .arg("-CAkey")
            .arg(dir.join(format!("{ca}.key")))
            .args([
                "-set_serial",
                &format!("{}", std::process::id() as u64 * 1000 + names.len() as u64),
            ])
            .arg("-out")
            .arg(dir.join(format!("{name}.crt")))
            .arg("-extfile")
            .arg(&ext),
        "signing a certificate",
    )
}

/// Writes secret `ns/name` under `root` with `items` (item name, source
/// file), each file replaced by a rename (`root/<ns>/<name>/<item>`, the
/// layout `--tls-secrets-dir` reads).
pub fn write_secret(root: &Path, ns: &str, name: &str, items: &[(&str, PathBuf)]) -> Result<()> {
    let d = root.join(ns).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    for (item, src) in items {
        let tmp = d.join(format!(".{item}.tmp"));
        std::fs::copy(src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::rename(&tmp, d.join(item))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
