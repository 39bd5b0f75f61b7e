use super::text_line;
use serde_json::json;

#[test]
fn dns_lines_show_the_query_and_the_answer() {
    let dns = json!({
        "protocol": "dns", "transport": "udp",
        "src": "10.200.1.10:5353", "dst": "10.201.0.53:53",
        "src_identity": "256", "dst_identity": "2",
        "query": "a.example.", "qtype": "A", "rcode": "NOERROR",
        "answers": "10.201.0.1", "verdict": "Allowed", "latency_us": 12,
        "hold_us": 0, "reason": "policy spec.egress[0]", "type": "l7",
        "src_pod": "t1/a", "time": "2026-12-07T06:00:00.000Z",
    });
    assert_eq!(
        text_line(&dns),
        "2026-12-07T06:00:00.000Z  t1/a (10.200.1.10:5353) -> 10.201.0.53:53  DNS/udp  A a.example.  NOERROR 10.201.0.1  [Allowed]"
    );
}

#[test]
fn kafka_lines_show_the_request_and_its_topics() {
    let kafka = json!({
        "protocol": "kafka", "src": "10.200.1.10:40000", "dst": "10.201.0.9:9092",
        "api_key": "Produce", "api_version": 9, "correlation_id": 7,
        "client_id": "producer-1", "topics": "orders", "verdict": "Denied",
        "latency_us": 30, "reason": "no rule", "error": "", "type": "l7",
        "time": "2026-12-07T06:00:00.000Z",
    });
    assert_eq!(
        text_line(&kafka),
        "2026-12-07T06:00:00.000Z  10.200.1.10:40000 -> 10.201.0.9:9092  Kafka  Produce v9 orders (client producer-1)  [Denied]"
    );
}

#[test]
fn http_lines_keep_their_shape() {
    let http = json!({
        "method": "GET", "path": "/api", "authority": "svc:80", "status": 403,
        "verdict": "Denied", "protocol": "Http1", "src": "10.200.1.10:40000",
        "dst": "10.200.1.11:80", "type": "l7", "src_pod": "t1/a", "dst_pod": "t1/b",
        "time": "T",
    });
    assert_eq!(
        text_line(&http),
        "T  t1/a (10.200.1.10:40000) -> t1/b (10.200.1.11:80)  Http1  GET svc:80 /api  http 403  [Denied]"
    );
}

#[test]
fn tls_and_other_proxy_events_say_what_they_carry() {
    let tls = json!({
        "protocol": "tls", "sni": "api.example", "verdict": "Allowed",
        "src": "10.200.1.10:40000", "dst": "10.201.0.9:443", "type": "l7", "time": "T",
    });
    assert_eq!(
        text_line(&tls),
        "T  10.200.1.10:40000 -> 10.201.0.9:443  TLS  sni api.example  [Allowed]"
    );
    let revoked = json!({
        "verdict": "Denied", "src": "10.200.1.10:40000", "dst": "10.201.0.9:80",
        "reason": "policy changed", "type": "l7", "time": "T",
    });
    assert_eq!(
        text_line(&revoked),
        "T  10.200.1.10:40000 -> 10.201.0.9:80  reason=policy changed  [Denied]"
    );
}

#[test]
fn flow_events_and_agent_events_keep_their_shape() {
    let flow = json!({
        "time": "T",
        "source": {"ip": "10.200.1.10", "port": 40000, "pod": "t1/a"},
        "destination": {"ip": "10.201.0.9", "port": 80},
        "protocol": "TCP", "verdict": "DROPPED", "reason": "PolicyDenied",
        "direction": "egress",
    });
    assert_eq!(
        text_line(&flow),
        "T  t1/a (10.200.1.10:40000) -> 10.201.0.9:80  TCP  DROPPED  PolicyDenied  [egress]"
    );
    let agent = json!({
        "type": "agent", "time": "T", "event": "endpoint-failed-closed",
        "endpoint": "t1/a", "reason": "over budget",
    });
    assert_eq!(
        text_line(&agent),
        "T  agent: endpoint-failed-closed t1/a: over budget"
    );
}

#[test]
fn a_kernel_flow_names_reserved_identities_that_are_no_pod() {
    let v: serde_json::Value = serde_json::from_str(
        r#"{"destination":{"identity":257,"ip":"10.200.1.11","pod":"x/b","port":80},"direction":"ingress",
            "protocol":"TCP","reason":"DropNoPolicy","source":{"identity":6,"ip":"10.201.255.254","pod":null,"port":47650},
            "time":"t","verdict":"DROPPED"}"#,
    )
    .expect("json");
    let line = text_line(&v);
    assert!(
        line.contains("reserved:remote-node (10.201.255.254:47650) -> x/b (10.200.1.11:80)"),
        "{line}"
    );
}
