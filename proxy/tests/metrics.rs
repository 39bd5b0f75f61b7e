//! Every proxy registers into one registry handed in by the caller, so
//! the agent encodes one OpenMetrics document: one `# EOF`, at its end,
//! with the same families and samples each proxy renders alone.

use prometheus_client::registry::Registry;
use proxy::HttpMetrics;
use proxy::dns::{DnsLimit, DnsMetrics, DnsVerdict, TransportLabel};
use proxy::http::metrics::{ProtocolLabel, VerdictLabel};
use proxy::kafka::{KafkaMetrics, KafkaVerdictLabel};

/// The lines of `text` without its `# EOF`.
fn body(text: &str) -> Vec<&str> {
    text.lines().filter(|l| *l != "# EOF").collect()
}

#[test]
fn the_three_proxies_register_into_one_registry() {
    let http = HttpMetrics::new();
    http.request(ProtocolLabel::Http1, VerdictLabel::Denied, 0.002);
    let _open = http.connection();
    let dns = DnsMetrics::new();
    dns.query(TransportLabel::Udp, DnsVerdict::Allowed);
    dns.limit_refusal(DnsLimit::TcpIdleTimeout);
    let kafka = KafkaMetrics::new();
    kafka.request("Produce", KafkaVerdictLabel::Denied, Some(0.001));

    let mut registry = Registry::default();
    http.register(&mut registry);
    dns.register(&mut registry);
    kafka.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");

    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let lines = body(&text);
    for alone in [http.render(), dns.render(), kafka.render()] {
        for line in body(&alone) {
            assert!(lines.contains(&line), "{line:?} missing from\n{text}");
        }
    }
    for family in [
        "portcullis_proxy_http_requests_total{protocol=\"Http1\",verdict=\"Denied\"} 1",
        "portcullis_proxy_active_connections 1",
        "portcullis_proxy_dns_queries_total{transport=\"Udp\",verdict=\"Allowed\"} 1",
        "portcullis_proxy_kafka_requests_total{api=\"Produce\",verdict=\"Denied\"} 1",
    ] {
        assert!(lines.contains(&family), "{family:?} missing from\n{text}");
    }
    // Registered, not copied: the registry sees later counts.
    kafka.request("Produce", KafkaVerdictLabel::Denied, None);
    let mut again = String::new();
    prometheus_client::encoding::text::encode(&mut again, &registry).expect("encodes");
    assert!(
        again.contains(
            "portcullis_proxy_kafka_requests_total{api=\"Produce\",verdict=\"Denied\"} 2"
        ),
        "{again}"
    );
}
