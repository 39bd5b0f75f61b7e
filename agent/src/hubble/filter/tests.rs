use super::*;
use crate::hubble::flow::{Endpoint, Ip, Layer4, Layer7, Tcp, layer4, layer7};

fn web_flow() -> Flow {
    Flow {
        uuid: "u-1".into(),
        verdict: flow::Verdict::Dropped as i32,
        node_name: "node-1".into(),
        ip: Some(Ip {
            source: "10.200.128.10".into(),
            destination: "10.200.129.20".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: None,
            })),
        }),
        source: Some(Endpoint {
            namespace: "t1".into(),
            pod_name: "client-7f".into(),
            identity: 1000,
            labels: vec!["k8s:app=client".into(), "k8s:tier=front".into()],
            ..Endpoint::default()
        }),
        destination: Some(Endpoint {
            namespace: "t2".into(),
            pod_name: "web".into(),
            identity: 2000,
            labels: vec!["k8s:app=web".into()],
            ..Endpoint::default()
        }),
        l7: Some(Layer7 {
            record: Some(layer7::Record::Http(flow::Http {
                code: 403,
                method: "GET".into(),
                url: "http://web/private/x?y=1".into(),
                ..flow::Http::default()
            })),
            ..Layer7::default()
        }),
        traffic_direction: flow::TrafficDirection::Egress as i32,
        ..Flow::default()
    }
}

fn one(f: FlowFilter) -> Filters {
    Filters::new(&[f], &[]).expect("filter compiles")
}

#[test]
fn every_field_of_a_filter_must_match() {
    let f = web_flow();
    let yes = [
        FlowFilter {
            source_pod: vec!["t1/client".into()],
            ..Default::default()
        },
        FlowFilter {
            source_pod: vec!["t1/".into()],
            ..Default::default()
        },
        FlowFilter {
            destination_pod: vec!["web".into()],
            ..Default::default()
        },
        FlowFilter {
            source_ip: vec!["10.200.128.0/24".into()],
            ..Default::default()
        },
        FlowFilter {
            destination_ip: vec!["10.200.129.20".into()],
            ..Default::default()
        },
        FlowFilter {
            source_label: vec!["app=client,k8s:tier in (front,back)".into()],
            ..Default::default()
        },
        FlowFilter {
            destination_label: vec!["!tier".into()],
            ..Default::default()
        },
        FlowFilter {
            source_identity: vec![1000],
            destination_identity: vec![2000],
            ..Default::default()
        },
        FlowFilter {
            destination_port: vec!["80".into()],
            protocol: vec!["TCP".into(), "http".into()],
            ..Default::default()
        },
        FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        },
        FlowFilter {
            http_status_code: vec!["4+".into()],
            http_method: vec!["get".into()],
            ..Default::default()
        },
        FlowFilter {
            http_path: vec!["^/private/".into()],
            ..Default::default()
        },
        FlowFilter {
            node_name: vec!["node-*".into()],
            ..Default::default()
        },
        FlowFilter {
            traffic_direction: vec![flow::TrafficDirection::Egress as i32],
            ..Default::default()
        },
        FlowFilter {
            ip_version: vec![flow::IpVersion::IPv4 as i32],
            ..Default::default()
        },
    ];
    for (i, filter) in yes.into_iter().enumerate() {
        assert!(one(filter).matches(&f), "filter {i} should match");
    }
    let no = [
        FlowFilter {
            source_pod: vec!["t2/".into()],
            ..Default::default()
        },
        FlowFilter {
            source_pod: vec!["t1/client".into()],
            destination_port: vec!["81".into()],
            ..Default::default()
        },
        FlowFilter {
            source_label: vec!["app=web".into()],
            ..Default::default()
        },
        FlowFilter {
            protocol: vec!["udp".into()],
            ..Default::default()
        },
        FlowFilter {
            http_status_code: vec!["200".into()],
            ..Default::default()
        },
        FlowFilter {
            dns_query: vec!["example".into()],
            ..Default::default()
        },
        FlowFilter {
            verdict: vec![flow::Verdict::Forwarded as i32],
            ..Default::default()
        },
        FlowFilter {
            node_name: vec!["node-2".into()],
            ..Default::default()
        },
    ];
    for (i, filter) in no.into_iter().enumerate() {
        assert!(!one(filter).matches(&f), "filter {i} should not match");
    }
}

#[test]
fn whitelist_then_blacklist() {
    let f = web_flow();
    let src = FlowFilter {
        source_pod: vec!["t1/".into()],
        ..Default::default()
    };
    let other = FlowFilter {
        source_pod: vec!["t9/".into()],
        ..Default::default()
    };
    assert!(
        Filters::new(&[other.clone(), src.clone()], &[])
            .unwrap()
            .matches(&f)
    );
    assert!(
        !Filters::new(std::slice::from_ref(&src), std::slice::from_ref(&src))
            .unwrap()
            .matches(&f)
    );
    assert!(!Filters::new(&[], &[src]).unwrap().matches(&f));
    assert!(Filters::new(&[], &[other]).unwrap().matches(&f));
}

#[test]
fn a_filter_it_cannot_read_is_an_error_naming_the_field() {
    let bad = [
        (
            FlowFilter {
                source_ip: vec!["10.0.0.300".into()],
                ..Default::default()
            },
            "source_ip",
        ),
        (
            FlowFilter {
                http_path: vec!["(".into()],
                ..Default::default()
            },
            "http_path",
        ),
        (
            FlowFilter {
                destination_port: vec!["http".into()],
                ..Default::default()
            },
            "destination_port",
        ),
        (
            FlowFilter {
                http_status_code: vec!["7+".into()],
                ..Default::default()
            },
            "http_status_code",
        ),
        (
            FlowFilter {
                protocol: vec!["quic".into()],
                ..Default::default()
            },
            "protocol",
        ),
        (
            FlowFilter {
                source_label: vec!["app in web".into()],
                ..Default::default()
            },
            "source_label",
        ),
        (
            FlowFilter {
                source_label: vec!["a b=c".into()],
                ..Default::default()
            },
            "source_label",
        ),
        (
            FlowFilter {
                trace_id: vec!["x".into()],
                ..Default::default()
            },
            "trace_id",
        ),
    ];
    for (filter, field) in bad {
        let err = Filters::new(&[], &[filter]).err().expect("an error");
        assert!(err.starts_with(&format!("blacklist[0].{field}")), "{err}");
    }
}

#[test]
fn a_request_with_too_many_filter_values_is_refused() {
    let many = FlowFilter {
        source_ip: vec!["10.0.0.1".into(); MAX_FILTER_VALUES + 1],
        ..Default::default()
    };
    let err = Filters::new(&[many], &[]).err().expect("refused");
    assert!(err.contains("at most"), "{err}");
}
