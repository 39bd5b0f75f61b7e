use super::*;

fn args(argv: &[&str]) -> ObserveArgs {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: ObserveArgs,
    }
    let mut all = vec!["observe"];
    all.extend_from_slice(argv);
    <Wrap as clap::Parser>::try_parse_from(all)
        .expect("flags")
        .a
}

#[test]
fn either_flags_make_a_source_and_a_destination_filter() {
    let f = filters(&args(&[
        "--pod",
        "web",
        "-n",
        "t1",
        "--verdict",
        "dropped",
        "--port",
        "80",
    ]))
    .expect("filters");
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].source_pod, ["t1/web"]);
    assert_eq!(f[0].source_port, ["80"]);
    assert!(f[0].destination_pod.is_empty());
    assert_eq!(f[1].destination_pod, ["t1/web"]);
    assert_eq!(f[1].destination_port, ["80"]);
    for side in &f {
        assert_eq!(side.verdict, [flow::Verdict::Dropped as i32]);
    }
}

#[test]
fn sided_flags_make_one_filter() {
    let f = filters(&args(&[
        "--from-namespace",
        "t1",
        "--to-pod",
        "t2/db",
        "--http-path",
        "^/api",
        "-t",
        "l7",
    ]))
    .expect("filters");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].source_pod, ["t1/"]);
    assert_eq!(f[0].destination_pod, ["t2/db"]);
    assert_eq!(f[0].http_path, ["^/api"]);
    assert_eq!(f[0].event_type[0].r#type, 129);
    assert!(filters(&args(&[])).expect("none").is_empty());
}

#[test]
fn bad_flag_values_are_errors() {
    assert!(filters(&args(&["--verdict", "maybe"])).is_err());
    assert!(filters(&args(&["--type", "nonsense"])).is_err());
    assert!(filters(&args(&["--traffic-direction", "up"])).is_err());
}

#[test]
fn last_twenty_unless_told() {
    assert_eq!(request(&args(&[])).unwrap().number, 20);
    assert_eq!(request(&args(&["--last", "3"])).unwrap().number, 3);
    assert_eq!(request(&args(&["--all"])).unwrap().number, u64::MAX);
    let r = request(&args(&["--first", "2"])).unwrap();
    assert!(r.first && r.number == 2);
    let r = request(&args(&["-f"])).unwrap();
    assert!(r.follow && r.number == 0);
}

#[test]
fn compact_line_names_both_sides_the_verdict_and_the_policy() {
    let f = Flow {
        time: Some(pbjson_types::Timestamp {
            seconds: 1_796_600_000,
            nanos: 5_000_000,
        }),
        verdict: flow::Verdict::Dropped as i32,
        drop_reason_desc: flow::DropReason::PolicyDenied as i32,
        ip: Some(flow::Ip {
            source: "10.200.0.2".into(),
            destination: "10.200.0.3".into(),
            ..Default::default()
        }),
        l4: Some(flow::Layer4 {
            protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                source_port: 4000,
                destination_port: 80,
                flags: None,
            })),
        }),
        source: Some(flow::Endpoint {
            namespace: "t1".into(),
            pod_name: "a".into(),
            identity: 300,
            ..Default::default()
        }),
        destination: Some(flow::Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        }),
        event_type: Some(flow::CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        traffic_direction: flow::TrafficDirection::Egress as i32,
        egress_denied_by: vec![flow::Policy {
            name: "deny-all".into(),
            namespace: "t1".into(),
            kind: "CiliumNetworkPolicy".into(),
            ..Default::default()
        }],
        summary: "TCP DropNoPolicy".into(),
        ..Flow::default()
    };
    let r = GetFlowsResponse {
        node_name: "node-1".into(),
        response_types: Some(get_flows_response::ResponseTypes::Flow(f)),
        ..Default::default()
    };
    let line = compact(&r);
    assert!(line.starts_with("Dec  6 23:33:20.005 "), "{line}");
    assert!(
        line.ends_with("[node-1]: t1/a:4000 (ID:300) -> 10.200.0.3:80 (world) policy-denied EGRESS DROPPED (TCP DropNoPolicy) by CiliumNetworkPolicy t1/deny-all"),
        "{line}"
    );
}

#[test]
fn json_lines_keep_hubbles_field_order_and_write_utc_as_z() {
    let r = GetFlowsResponse {
        node_name: "n".into(),
        time: Some(pbjson_types::Timestamp {
            seconds: 1_796_600_000,
            nanos: 5,
        }),
        response_types: Some(get_flows_response::ResponseTypes::Flow(Flow {
            time: Some(pbjson_types::Timestamp {
                seconds: 1_796_600_000,
                nanos: 5,
            }),
            l7: Some(flow::Layer7 {
                record: Some(flow::layer7::Record::Http(flow::Http {
                    url: r#"/x?,"time":"1+00:00""#.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Flow::default()
        })),
    };
    let line = json_line(&r).expect("json");
    // Hubble's order: the flow first, then node_name and time.
    assert!(
        line.starts_with(r#"{"flow":{"time":"2026-12-06T23:33:20.000000005Z","l7""#),
        "{line}"
    );
    assert!(
        line.ends_with(r#""node_name":"n","time":"2026-12-06T23:33:20.000000005Z"}"#),
        "{line}"
    );
    // The same members and values as the generated serializer writes.
    let direct = serde_json::to_value(&r).expect("json");
    let ours: serde_json::Value =
        serde_json::from_str(&line.replace("5Z\"", "5+00:00\"")).expect("json");
    assert_eq!(direct, ours);
    // A time-like text inside a value is left alone.
    assert!(line.contains(r#"1+00:00"#), "{line}");
}

#[test]
fn since_and_until_ask_for_a_window() {
    let r = request(&args(&["--since", "5m"])).unwrap();
    assert_eq!(r.number, 0, "a window, not the last 20");
    let since = r.since.expect("since").seconds;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!((now - 300 - since).abs() <= 2, "{since} vs {now}");
    assert!(ObserveArgsParse::fails(&["--since", "5x"]));
    assert!(!ObserveArgsParse::fails(&[
        "--since", "90s", "--until", "1m"
    ]));
}

struct ObserveArgsParse;
impl ObserveArgsParse {
    fn fails(argv: &[&str]) -> bool {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: ObserveArgs,
        }
        let mut all = vec!["observe"];
        all.extend_from_slice(argv);
        <Wrap as clap::Parser>::try_parse_from(all).is_err()
    }
}
