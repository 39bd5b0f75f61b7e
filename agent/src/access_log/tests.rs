use super::*;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn an_access_event_becomes_one_json_line_with_pod_names_and_time() {
    set_pod_names(Arc::new(
        [("10.200.0.7".parse().unwrap(), "ns/client".to_string())]
            .into_iter()
            .collect(),
    ));
    let subscriber = tracing_subscriber::registry().with(AccessLogLayer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            target: "portcullis::proxy::access",
            protocol = "dns",
            src = %"10.200.0.7:5353".parse::<SocketAddr>().unwrap(),
            dst = %"[fd00:201::1]:53".parse::<SocketAddr>().unwrap(),
            query = %"a \"quoted\"\nname.",
            latency_us = 12u64,
            ok = true,
            "dns"
        );
        tracing::info!(target: "other", "not an access event");
    });
    let lines: Vec<String> = drain()
        .into_iter()
        .filter(|l| l.contains("\"protocol\":\"dns\""))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("valid JSON");
    assert_eq!(v["src"], "10.200.0.7:5353");
    assert_eq!(v["dst"], "[fd00:201::1]:53");
    assert_eq!(v["query"], "a \"quoted\"\nname.");
    assert_eq!(v["latency_us"], 12);
    assert_eq!(v["ok"], true);
    assert_eq!(v["type"], "l7");
    assert_eq!(v["src_pod"], "ns/client");
    assert!(v.get("dst_pod").is_none());
    assert!(v.get("message").is_none());
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}
