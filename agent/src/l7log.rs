//! Puts the proxy's access log into the agent's flow stream: a tracing
//! layer picks the proxy's `request` events and queues them as JSON lines
//! next to the kernel's flow events, so `portcullis observe` shows both.

use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Target of the proxy's access-log events.
pub const ACCESS_TARGET: &str = "portcullis::proxy::access";

static QUEUE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Bound on queued lines when nobody drains them.
const MAX_QUEUED: usize = 10_000;

/// The layer.
pub struct AccessLogLayer;

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
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
        let mut f = JsonFields(serde_json::Map::new());
        event.record(&mut f);
        f.0.remove("message");
        f.0.insert("type".into(), "l7".into());
        if let Ok(mut q) = QUEUE.lock()
            && q.len() < MAX_QUEUED
        {
            q.push(serde_json::Value::Object(f.0).to_string());
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
