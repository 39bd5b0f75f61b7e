//! Each record's event is byte for byte the event its proxy wrote by hand
//! before the record existed (the macros below are those calls, with the
//! values they logged), in tracing's text format (which tells a plain
//! string from a Display value by its quotes) and in JSON.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::*;

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

/// What `log` writes, in the text format and in JSON.
fn written(log: impl Fn()) -> (String, String) {
    let text = Buffer::default();
    let w = text.clone();
    let subscriber = tracing_subscriber::fmt()
        .without_time()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, &log);
    let json = Buffer::default();
    let w = json.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .without_time()
        .with_writer(move || w.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, &log);
    let read =
        |b: Buffer| String::from_utf8(b.0.lock().expect("log buffer").clone()).expect("utf-8");
    (read(text), read(json))
}

fn assert_same(record: AccessRecord<'_>, by_hand: impl Fn()) {
    let want = written(by_hand);
    assert!(want.0.contains("portcullis::proxy::access"), "{want:?}");
    assert_eq!(written(|| record.emit()), want);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

/// A connection's addresses; the upstream is never logged.
fn addrs(src: SocketAddr, dst: SocketAddr) -> ConnAddrs {
    ConnAddrs {
        client: src,
        original_dst: dst,
        upstream: addr("192.0.2.1:1"),
    }
}

#[test]
fn http_records_are_todays_events() {
    let (src, dst) = (addr("10.0.1.2:40000"), addr("[fd00::1]:80"));
    let record = AccessRecord::Http {
        method: "GET",
        path: "/a?b=1",
        authority: "svc",
        status: 403,
        verdict: VerdictLabel::Denied,
        protocol: ProtocolLabel::Http2,
        addrs: addrs(src, dst),
        src_identity: "1000",
        dst_identity: "",
        latency: Duration::from_micros(1234),
        reason: "ns1/a ingress: no HTTP rule matches",
    };
    assert_same(record, || {
        let (method, target) = (String::from("GET"), String::from("/a?b=1"));
        let authority_for_log = Some(String::from("svc"));
        let (src_identity, dst_identity) = (String::from("1000"), String::new());
        tracing::info!(
            target: "portcullis::proxy::access",
            method = %method,
            path = %target,
            authority = authority_for_log.as_deref().unwrap_or(""),
            status = http::StatusCode::FORBIDDEN.as_u16(),
            verdict = ?VerdictLabel::Denied,
            protocol = ?ProtocolLabel::Http2,
            src = %src,
            dst = %dst,
            src_identity = %src_identity,
            dst_identity = %dst_identity,
            latency_us = Duration::from_micros(1234).as_micros() as u64,
            reason = %"ns1/a ingress: no HTTP rule matches",
            "request"
        );
    });
    let why = "the client is not a local endpoint";
    assert_same(
        AccessRecord::HttpRevoked {
            addrs: addrs(src, dst),
            reason: why,
        },
        || {
            tracing::info!(
                target: "portcullis::proxy::access",
                verdict = "Denied",
                src = %src,
                dst = %dst,
                reason = %why,
                "connection closed: the policy no longer allows its flow"
            );
        },
    );
    let record = AccessRecord::HeaderMismatch {
        addrs: addrs(src, dst),
        header: "x-token",
        expected: "[redacted]",
        action: MismatchAction::Replace,
    };
    assert_same(record, || {
        tracing::info!(
            target: "portcullis::proxy::access",
            client = %src,
            dst = %dst,
            header = %String::from("x-token"),
            expected = "[redacted]",
            action = ?MismatchAction::Replace,
            "headerMatches mismatch"
        );
    });
}

#[test]
fn tls_records_are_todays_events() {
    let (src, dst) = (addr("10.0.1.2:40000"), addr("10.0.1.1:443"));
    for sni in [Some("a.test"), None] {
        let record = |outcome| AccessRecord::Tls {
            sni: sni.unwrap_or(""),
            addrs: addrs(src, dst),
            outcome,
        };
        assert_same(record(TlsOutcome::Closed("no serverNames match")), || {
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "tls",
                sni = sni.unwrap_or(""),
                verdict = "Denied",
                src = %src,
                dst = %dst,
                reason = %"no serverNames match",
                "tls connection closed"
            );
        });
        let e = std::io::Error::other("refused");
        let shown = e.to_string();
        assert_same(record(TlsOutcome::UpstreamUnreachable(&shown)), || {
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "tls",
                sni = sni.unwrap_or(""),
                verdict = "UpstreamError",
                src = %src,
                dst = %dst,
                reason = %e,
                "tls connection: upstream unreachable"
            );
        });
        assert_same(record(TlsOutcome::PassedThrough), || {
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "tls",
                sni = sni.unwrap_or(""),
                verdict = "Allowed",
                src = %src,
                dst = %dst,
                reason = "serverNames: passed through without termination",
                "tls connection"
            );
        });
        let why = "audit: ns1/a ingress: SNI b.test is not in serverNames [a.test]";
        assert_same(record(TlsOutcome::PassedThroughAudit(why)), || {
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "tls",
                sni = sni.unwrap_or(""),
                verdict = "Audit",
                src = %src,
                dst = %dst,
                reason = %why,
                "tls connection"
            );
        });
    }
}

#[test]
fn an_audited_http_request_is_logged_with_verdict_audit() {
    let (src, dst) = (addr("10.0.1.2:40000"), addr("10.0.1.1:80"));
    let reason = "ns1/a ingress: audit: no HTTP rule matches; \
                  CiliumNetworkPolicy ns1/a-in spec.ingress[0].rules.http[0]";
    let record = AccessRecord::Http {
        method: "GET",
        path: "/admin",
        authority: "svc",
        status: 200,
        verdict: VerdictLabel::Audit,
        protocol: ProtocolLabel::Http1,
        addrs: addrs(src, dst),
        src_identity: "1000",
        dst_identity: "1001",
        latency: Duration::from_micros(7),
        reason,
    };
    let (_, json) = written(|| record.emit());
    let line: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON line");
    assert_eq!(line["fields"]["verdict"], "Audit");
    assert_eq!(line["fields"]["reason"], reason);
    assert_eq!(line["fields"]["status"], 200);
}

#[test]
fn dns_records_are_todays_events() {
    let (src, dst) = (addr("10.0.1.2:5353"), addr("10.0.1.9:53"));
    for hold in [None, Some(Duration::from_micros(77))] {
        let record = AccessRecord::Dns {
            transport: "udp",
            addrs: addrs(src, dst),
            src_identity: NumericIdentity(1000),
            dst_identity: NumericIdentity(2),
            query: "a.test.,b.test.",
            qtype: "A,AAAA",
            rcode: "NOERROR",
            answers: "a.test. A 10.0.0.1",
            verdict: DnsVerdict::Allowed,
            latency: Duration::from_micros(90),
            hold,
            reason: "p spec.egress[0].toPorts[0].rules.dns[0]",
        };
        assert_same(record, || {
            let rcode: std::borrow::Cow<'static, str> = "NOERROR".into();
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "dns",
                transport = "udp",
                src = %src,
                dst = %dst,
                src_identity = %NumericIdentity(1000),
                dst_identity = %NumericIdentity(2),
                query = %String::from("a.test.,b.test."),
                qtype = %String::from("A,AAAA"),
                rcode = %rcode,
                answers = %String::from("a.test. A 10.0.0.1"),
                verdict = ?DnsVerdict::Allowed,
                latency_us = Duration::from_micros(90).as_micros() as u64,
                hold_us = hold.map_or(0, |h| h.as_micros() as u64),
                reason = %String::from("p spec.egress[0].toPorts[0].rules.dns[0]"),
                "dns"
            );
        });
    }
}

#[test]
fn kafka_records_are_todays_events() {
    let (src, dst) = (addr("10.0.1.2:40000"), addr("10.0.1.3:9092"));
    for error in [None, Some("the upstream did not answer in time")] {
        let record = AccessRecord::Kafka {
            addrs: addrs(src, dst),
            api_key: "Produce",
            api_version: 9,
            correlation_id: -7,
            client_id: "c1",
            topics: "orders,payments",
            verdict: "denied",
            latency: Duration::from_micros(5),
            reason: "ns1/a ingress: no Kafka rule allows topic orders",
            error: error.unwrap_or(""),
        };
        assert_same(record, || {
            let verdict = "denied";
            tracing::info!(
                target: "portcullis::proxy::access",
                protocol = "kafka",
                src = %src,
                dst = %dst,
                api_key = "Produce",
                api_version = 9i16,
                correlation_id = -7i32,
                client_id = %String::from("c1"),
                topics = %String::from("orders,payments"),
                verdict,
                latency_us = Duration::from_micros(5).as_micros() as u64,
                reason = %String::from("ns1/a ingress: no Kafka rule allows topic orders"),
                error = error.unwrap_or(""),
                "kafka request"
            );
        });
    }
    let record = AccessRecord::KafkaUnreadable {
        addrs: addrs(src, dst),
        api_key: "unknown",
        reason: "unknown API key 999",
    };
    assert_same(record, || {
        let name = "unknown";
        tracing::warn!(target: "portcullis::proxy::access", protocol = "kafka",
            src = %src, dst = %dst, api_key = name,
            verdict = "invalid", reason = %"unknown API key 999",
            "Kafka request cannot be read; closing the connection");
    });
}
