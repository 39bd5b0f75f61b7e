//! Puts the proxy's access log into the agent's flow stream: a tracing
//! layer picks the proxy's access events and queues them as JSON lines
//! next to the kernel's flow events, so `portcullis observe` shows both.
//!
//! A line is written once, on the proxy's thread, straight into a
//! string (the DNS proxy logs tens of thousands of queries a second):
//! the event's fields in order, then `type`, the pod names of `src` and
//! `dst` (from [`set_pod_names`]) and the wall-clock `time`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Target of the proxy's access-log events.
pub const ACCESS_TARGET: &str = proxy::access_log::TARGET;

static QUEUE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Woken when a line is queued into an empty queue: the flow stream waits
/// on it instead of looking at the queue on a timer.
pub static QUEUED: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Bound on queued lines when nobody drains them.
const MAX_QUEUED: usize = 10_000;

/// Pod names by address, for the `src_pod`/`dst_pod` fields.
pub type PodNames = Arc<BTreeMap<IpAddr, String>>;
static POD_NAMES: RwLock<Option<PodNames>> = RwLock::new(None);

/// Sets the pod names lines are written with from now on.
pub fn set_pod_names(names: PodNames) {
    if let Ok(mut n) = POD_NAMES.write() {
        *n = Some(names);
    }
}

/// The layer.
pub struct AccessLogLayer;

/// Writes the fields as JSON members; keeps the addresses of `src`/`dst`.
struct Line {
    out: String,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
}

impl Line {
    fn key(&mut self, name: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_json_str(&mut self.out, name);
        self.out.push(':');
    }

    fn note_address(&mut self, name: &str, value: &str) {
        let slot = match name {
            "src" => &mut self.src,
            "dst" => &mut self.dst,
            _ => return,
        };
        *slot = value.parse::<SocketAddr>().ok().map(|a| a.ip());
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            return;
        }
        let text = format!("{value:?}");
        self.note_address(field.name(), &text);
        self.key(field.name());
        push_json_str(&mut self.out, &text);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return;
        }
        self.note_address(field.name(), value);
        self.key(field.name());
        push_json_str(&mut self.out, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field.name());
        let _ = write!(self.out, "{value}");
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field.name());
        let _ = write!(self.out, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field.name());
        self.out.push_str(if value { "true" } else { "false" });
    }
}

/// Appends `s` as a JSON string (quotes, escapes).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON line of one access event.
fn render(event: &tracing::Event<'_>) -> String {
    let mut line = Line {
        out: String::with_capacity(384),
        src: None,
        dst: None,
    };
    line.out.push('{');
    event.record(&mut line);
    line.key("type");
    line.out.push_str("\"l7\"");
    let names = POD_NAMES.read().ok().and_then(|n| n.clone());
    if let Some(names) = names {
        for (key, ip) in [("src_pod", line.src), ("dst_pod", line.dst)] {
            if let Some(pod) = ip.and_then(|ip| names.get(&ip.to_canonical())) {
                line.key(key);
                push_json_str(&mut line.out, pod);
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    line.key("time");
    let _ = write!(line.out, "\"{}\"", crate::time::Rfc3339(now));
    line.out.push('}');
    line.out
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != ACCESS_TARGET {
            return;
        }
        // Nobody drains a full queue soon: don't build a line to drop it.
        if QUEUE.lock().map(|q| q.len() >= MAX_QUEUED).unwrap_or(true) {
            return;
        }
        let line = render(event);
        if let Ok(mut q) = QUEUE.lock()
            && q.len() < MAX_QUEUED
        {
            q.push(line);
            if q.len() == 1 {
                QUEUED.notify_one();
            }
        }
    }
}

/// Takes the queued access-log lines.
pub fn drain() -> Vec<String> {
    QUEUE
        .lock()
        .map(|mut q| std::mem::take(&mut *q))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
