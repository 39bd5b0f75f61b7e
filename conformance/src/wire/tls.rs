//! TLS probes of the conformance cases on the wire (`tls:` probes): nginx
//! serving HTTPS on every TLS-probed port in every namespace, certificates
//! made at run time with the openssl CLI, the secrets the cases' policies
//! reference written where the lab's agent reads them
//! (`--tls-secrets-dir`), and curl over HTTPS with the probe's SNI.
//!
//! Two CAs: the "world CA" signs nginx's certificate (originatingTLS
//! secrets carry it as `ca.crt`); the "portcullis CA" signs the
//! certificate terminatingTLS secrets hold (with `ca.crt` too, as
//! cert-manager writes them). curl trusts both, so a spliced connection
//! (nginx's certificate) and a terminated one (the proxy's) both verify.
//! A secret whose name starts with `missing-` is never written.

use crate::case::{Case, Probe};
use anyhow::Result;
use policy_model::Direction;
use portcullis_lab::paths::{self, secrets_dir};
use portcullis_lab::probe;
use portcullis_lab::servers::{Processes, make_ca, make_leaf, start_nginx, write_secret};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the certificates, nginx's configuration and curl's CA bundle are.
fn work_dir() -> PathBuf {
    paths::work_dir("conformance").join("tls")
}

/// A TLS probe as sent with curl.
#[derive(Clone, Debug)]
pub struct TlsCall {
    pub sni: Option<String>,
    /// Only the handshake counts (the probe has no `http:`): any HTTP
    /// answer means the connection was admitted.
    pub handshake_only: bool,
    pub method: String,
    pub path: String,
    pub headers: Vec<String>,
    /// HTTP/2 by ALPN instead of HTTP/1.1.
    pub h2: bool,
}

/// The calls for one TLS probe: HTTP/1.1 and HTTP/2 (ALPN).
pub fn calls(p: &Probe) -> Vec<TlsCall> {
    let Some(t) = &p.tls else { return Vec::new() };
    [false, true]
        .into_iter()
        .map(|h2| TlsCall {
            sni: t.sni.clone(),
            handshake_only: p.http.is_none(),
            method: p
                .http
                .as_ref()
                .and_then(|h| h.method.clone())
                .unwrap_or_else(|| "GET".into()),
            path: p
                .http
                .as_ref()
                .and_then(|h| h.path.clone())
                .unwrap_or_else(|| "/".into()),
            headers: p
                .http
                .as_ref()
                .map(|h| h.headers.clone())
                .unwrap_or_default(),
            h2,
        })
        .collect()
}

/// What the wire must show for a TLS probe: `closed` when the model
/// denies the connection itself (the handshake), else the HTTP status.
pub fn want(call: &TlsCall, allowed: bool, handshake_allowed: bool) -> probe::Outcome {
    match (call.handshake_only, handshake_allowed, allowed) {
        (_, false, _) => probe::Outcome::Blocked,
        (true, true, _) => probe::Outcome::Connected,
        (false, true, true) => probe::Outcome::Http(200),
        (false, true, false) => probe::Outcome::Http(403),
    }
}

/// The TCP ports TLS probes go to (served by nginx, not haproxy).
pub fn ports(cases: &[Case]) -> BTreeSet<u16> {
    cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter(|p| p.tls.is_some() && p.e2e != Some(false))
        .map(|p| p.port)
        .collect()
}

/// Certificates for a topology group and the secrets its cases reference;
/// nginx in every namespace of `namespaces` on the TLS-probed ports.
pub fn start_servers(procs: &mut Processes, cases: &[Case], namespaces: &[String]) -> Result<()> {
    let ports = ports(cases);
    if ports.is_empty() {
        return Ok(());
    }
    let dir = work_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut names: BTreeSet<String> = cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter_map(|p| p.tls.as_ref().and_then(|t| t.sni.clone()))
        .collect();
    names.insert("localhost".into());
    let names: Vec<String> = names.into_iter().collect();
    make_ca(&dir, "world-ca", "lab world CA")?;
    make_ca(&dir, "portcullis-ca", "portcullis lab CA")?;
    make_leaf(&dir, "world-ca", "nginx", &names)?;
    make_leaf(&dir, "portcullis-ca", "proxy", &names)?;
    let bundle = [
        std::fs::read_to_string(dir.join("world-ca.crt"))?,
        std::fs::read_to_string(dir.join("portcullis-ca.crt"))?,
    ]
    .concat();
    std::fs::write(dir.join("bundle.crt"), bundle)?;
    let root = secrets_dir();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    for case in cases {
        let Ok(set) = crate::model::case_policies(case) else {
            continue;
        };
        for rule in set.rules() {
            for d in [Direction::Ingress, Direction::Egress] {
                for entry in &rule.direction(d).entries {
                    for pm in entry.ports.iter().flatten() {
                        let Some(tls) = &pm.tls else { continue };
                        if let Some(t) = &tls.terminating {
                            let t = t.resolve(&rule.origin);
                            if !t.name.starts_with("missing-") {
                                write_secret(
                                    &root,
                                    &t.namespace,
                                    &t.name,
                                    &[
                                        ("tls.crt", dir.join("proxy.crt")),
                                        ("tls.key", dir.join("proxy.key")),
                                        ("ca.crt", dir.join("portcullis-ca.crt")),
                                    ],
                                )?;
                            }
                        }
                        if let Some(o) = &tls.originating {
                            let o = o.resolve(&rule.origin);
                            if !o.name.starts_with("missing-") {
                                write_secret(
                                    &root,
                                    &o.namespace,
                                    &o.name,
                                    &[("ca.crt", dir.join("world-ca.crt"))],
                                )?;
                            }
                        }
                    }
                }
            }
        }
    }
    for ns in namespaces {
        start_nginx(procs, &dir, ns, &ports, "nginx")?;
    }
    Ok(())
}

/// One TLS probe with curl from `ns`: `Blocked` when the connection was
/// closed (no HTTP answer), else the status (any status is `Connected`
/// for a handshake-only probe).
pub fn probe(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    call: &TlsCall,
    timeout: Duration,
) -> Result<probe::Outcome> {
    let dir = work_dir();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-sS", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--path-as-is"])
        .args(["--max-time", &format!("{:.1}", timeout.as_secs_f64())])
        .arg("--cacert")
        .arg(dir.join("bundle.crt"))
        .args(["-X", &call.method])
        .arg(if call.h2 { "--http2" } else { "--http1.1" });
    if let Some(s) = src {
        cmd.args(["--interface", &s.to_string()]);
    }
    for h in &call.headers {
        cmd.args(["-H", h]);
    }
    let url = match &call.sni {
        Some(sni) => {
            let at = match dst {
                IpAddr::V4(_) => dst.to_string(),
                IpAddr::V6(_) => format!("[{dst}]"),
            };
            cmd.args(["--resolve", &format!("{sni}:{port}:{at}")]);
            format!("https://{sni}:{port}{}", call.path)
        }
        None => {
            // An address in the URL: curl sends no SNI; nothing to verify
            // the address against, so the certificate is not checked.
            cmd.arg("-k");
            match dst {
                IpAddr::V4(_) => format!("https://{dst}:{port}{}", call.path),
                IpAddr::V6(_) => format!("https://[{dst}]:{port}{}", call.path),
            }
        }
    };
    let out = cmd.arg(url).stderr(Stdio::null()).output()?;
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(match (code, call.handshake_only) {
        (0, _) => probe::Outcome::Blocked,
        (_, true) => probe::Outcome::Connected,
        (c, false) => probe::Outcome::Http(c),
    })
}
