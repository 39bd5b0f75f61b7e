//! `portcullis observe`: the agent's flow stream, as text or JSON lines.

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// `portcullis observe`: prints the agent's flow events.
pub fn run(state_dir: &Path, json: bool, follow: bool) -> Result<()> {
    use std::io::BufRead;
    let path = state_dir.join("observe.sock");
    let s = UnixStream::connect(&path)
        .with_context(|| format!("connecting to {} (is the agent running?)", path.display()))?;
    if !follow {
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
    }
    let reader = std::io::BufReader::new(s);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if json {
            writeln!(out, "{line}")?;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        writeln!(out, "{}", text_line(&v))?;
    }
    Ok(())
}

/// One line of the flow stream as text.
fn text_line(v: &serde_json::Value) -> String {
    if v["type"] == "agent" {
        return format!(
            "{}  agent: {} {}{}",
            v["time"].as_str().unwrap_or(""),
            v["event"].as_str().unwrap_or(""),
            v["endpoint"].as_str().unwrap_or(""),
            v["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if v["type"] == "l7" {
        let who = |pod: &serde_json::Value, addr: &serde_json::Value| match pod.as_str() {
            Some(p) => format!("{p} ({})", addr.as_str().unwrap_or("?")),
            None => addr.as_str().unwrap_or("?").to_string(),
        };
        return format!(
            "{}  {} -> {}  {}  {} {} {}  http {}  [{}]",
            v["time"].as_str().unwrap_or(""),
            who(&v["src_pod"], &v["src"]),
            who(&v["dst_pod"], &v["dst"]),
            v["protocol"].as_str().unwrap_or("HTTP"),
            v["method"].as_str().unwrap_or(""),
            v["authority"].as_str().unwrap_or(""),
            v["path"].as_str().unwrap_or(""),
            v["status"],
            v["verdict"].as_str().unwrap_or("")
        );
    }
    let side = |x: &serde_json::Value| {
        let ip = x["ip"].as_str().unwrap_or("?");
        let port = x["port"].as_u64().unwrap_or(0);
        match x["pod"].as_str() {
            Some(p) => format!("{p} ({ip}:{port})"),
            None => format!("{ip}:{port}"),
        }
    };
    format!(
        "{}  {} -> {}  {}  {}  {}  [{}]",
        v["time"].as_str().unwrap_or(""),
        side(&v["source"]),
        side(&v["destination"]),
        v["protocol"].as_str().unwrap_or(""),
        v["verdict"].as_str().unwrap_or(""),
        v["reason"].as_str().unwrap_or(""),
        v["direction"].as_str().unwrap_or("")
    )
}
