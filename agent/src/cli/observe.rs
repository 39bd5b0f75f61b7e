//! `portcullis observe`: the agent's flow stream, as text or JSON lines.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `portcullis observe`: prints the agent's flow events.
pub fn run(state_dir: &Path, json: bool, follow: bool) -> Result<()> {
    run_nodes(&[(None, state_dir.to_path_buf())], json, follow)
}

/// `portcullis observe --node NAME|all`: the flow events of several
/// agents (a lab's nodes, each `(name, state dir)`), merged as they come;
/// each event names its node (`node` in JSON, a `[node]` prefix in text).
pub fn run_nodes(agents: &[(Option<String>, PathBuf)], json: bool, follow: bool) -> Result<()> {
    use std::io::BufRead;
    let mut streams = Vec::new();
    for (node, dir) in agents {
        let path = dir.join("observe.sock");
        let s = UnixStream::connect(&path).with_context(|| {
            format!(
                "connecting to {} (is the agent{} running?)",
                path.display(),
                node.as_deref()
                    .map(|n| format!(" of node {n}"))
                    .unwrap_or_default()
            )
        })?;
        if !follow {
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
        }
        streams.push((node.clone(), s));
    }
    let (tx, rx) = std::sync::mpsc::channel::<(Option<String>, String)>();
    for (node, s) in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if tx.send((node.clone(), line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (node, line) in rx {
        let mut v: Value = serde_json::from_str(&line).unwrap_or_default();
        if let (Some(n), Some(obj)) = (&node, v.as_object_mut()) {
            obj.insert("node".into(), Value::String(n.clone()));
        }
        if json {
            match &node {
                Some(_) => writeln!(out, "{v}")?,
                None => writeln!(out, "{line}")?,
            }
            continue;
        }
        match &node {
            Some(n) => writeln!(out, "[{n}] {}", text_line(&v))?,
            None => writeln!(out, "{}", text_line(&v))?,
        }
    }
    Ok(())
}

/// One line of the flow stream as text: agent events, the proxies' access
/// lines (each protocol in its own shape) and the kernel's flow events.
fn text_line(v: &Value) -> String {
    let time = str_of(&v["time"]);
    if v["type"] == "agent" {
        return format!(
            "{time}  agent: {} {}{}",
            str_of(&v["event"]),
            str_of(&v["endpoint"]),
            v["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if v["type"] == "l7" {
        let flow = format!(
            "{}  {} -> {}",
            time,
            who(&v["src_pod"], v.get("src").or(v.get("client"))),
            who(&v["dst_pod"], v.get("dst")),
        );
        let verdict = str_of(&v["verdict"]);
        return match v["protocol"].as_str() {
            Some("dns") => format!(
                "{flow}  DNS/{}  {} {}  {}{}  [{verdict}]",
                str_of(&v["transport"]),
                str_of(&v["qtype"]),
                str_of(&v["query"]),
                str_of(&v["rcode"]),
                space_before(str_of(&v["answers"])),
            ),
            Some("kafka") => format!(
                "{flow}  Kafka  {}{}{}{}{}  [{verdict}]",
                str_of(&v["api_key"]),
                v["api_version"]
                    .as_u64()
                    .map(|n| format!(" v{n}"))
                    .unwrap_or_default(),
                space_before(str_of(&v["topics"])),
                match str_of(&v["client_id"]) {
                    "" => String::new(),
                    id => format!(" (client {id})"),
                },
                match str_of(&v["error"]) {
                    "" => String::new(),
                    e => format!(" error {e}"),
                },
            ),
            Some("tls") => format!("{flow}  TLS  sni {}  [{verdict}]", str_of(&v["sni"])),
            _ if v.get("method").is_some() => format!(
                "{flow}  {}  {} {} {}  http {}  [{verdict}]",
                v["protocol"].as_str().unwrap_or("HTTP"),
                str_of(&v["method"]),
                str_of(&v["authority"]),
                str_of(&v["path"]),
                v["status"],
            ),
            // Other proxy events (a connection closed on a policy change,
            // a header mismatch): their fields as they are.
            _ => format!("{flow}  {}  [{verdict}]", other_fields(v)),
        };
    }
    let side = |x: &Value| {
        let ip = x["ip"].as_str().unwrap_or("?");
        let port = x["port"].as_u64().unwrap_or(0);
        match (x["pod"].as_str(), reserved_name(&x["identity"])) {
            (Some(p), _) => format!("{p} ({ip}:{port})"),
            (None, Some(name)) => format!("{name} ({ip}:{port})"),
            (None, None) => format!("{ip}:{port}"),
        }
    };
    format!(
        "{time}  {} -> {}  {}  {}  {}  [{}]",
        side(&v["source"]),
        side(&v["destination"]),
        str_of(&v["protocol"]),
        str_of(&v["verdict"]),
        str_of(&v["reason"]),
        str_of(&v["direction"])
    )
}

/// `reserved:NAME` for one of Cilium's reserved identities (`host`,
/// `remote-node`, `world`, ...).
fn reserved_name(identity: &Value) -> Option<String> {
    let id = u32::try_from(identity.as_u64()?).ok()?;
    policy_model::identity::RESERVED
        .iter()
        .find(|(n, _)| n.0 == id)
        .map(|(_, name)| format!("reserved:{name}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// ` text`, or nothing for an empty text.
fn space_before(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    }
}

/// `ns/pod (address)`, or the address of something that is no pod.
fn who(pod: &Value, addr: Option<&Value>) -> String {
    let addr = addr.and_then(Value::as_str).unwrap_or("?");
    match pod.as_str() {
        Some(p) => format!("{p} ({addr})"),
        None => addr.to_string(),
    }
}

/// `key=value` for the fields of an access event no shape above knows.
fn other_fields(v: &Value) -> String {
    const SHOWN: [&str; 8] = [
        "type", "time", "src", "dst", "client", "src_pod", "dst_pod", "verdict",
    ];
    v.as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
