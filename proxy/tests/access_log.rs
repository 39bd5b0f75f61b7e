//! The access log: one structured event per request.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: every proxy task runs on this thread, under the
// subscriber set here.
#[tokio::test]
async fn every_request_is_logged_with_its_verdict_addresses_and_identities() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    h1_send(&mut c, get("/public/x?q=1")).await;
    h1_send(&mut c, get("/admin")).await;

    let text = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("utf-8 log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "portcullis::proxy::access")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let allowed = &lines[0]["fields"];
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["path"], "/public/x?q=1");
    assert_eq!(allowed["authority"], "svc");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["verdict"], "Allowed");
    assert_eq!(allowed["src"], CLIENT);
    assert_eq!(allowed["dst"], SERVER);
    assert!(
        allowed["src_identity"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(allowed["latency_us"].is_u64());
    assert!(
        allowed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("server-in")),
        "names the allowing policy: {allowed}"
    );
    let denied = &lines[1]["fields"];
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["verdict"], "Denied");
    assert!(
        denied["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no HTTP rule matches")),
        "{denied}"
    );
}

#[tokio::test]
async fn a_request_passed_in_audit_mode_is_logged_as_audit_with_the_policies_that_would_deny() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut p = policy(&server_policy(RULES));
    p.set_audited(|name| name == "ns1/server");
    let h = harness_with(proxy::PolicyHandle::new(p), false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    h1_send(&mut c, get("/admin")).await;

    let text = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("utf-8 log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "portcullis::proxy::access")
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let audit = &lines[0]["fields"];
    assert_eq!(audit["status"], 200);
    assert_eq!(audit["verdict"], "Audit");
    let reason = audit["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("ns1/server ingress: audit: no HTTP rule matches; ")
            && reason.contains("; CiliumNetworkPolicy ns1/server-in spec.ingress[0].rules.http[0]"),
        "{reason}"
    );
}
