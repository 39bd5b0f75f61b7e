use super::*;
use crate::hubble::observer::observer_client::ObserverClient;

fn flow(n: u32, pod: &str, verdict: flow::Verdict) -> Flow {
    Flow {
        time: Some(pbjson_types::Timestamp {
            seconds: 1_800_000_000 + i64::from(n),
            nanos: 0,
        }),
        uuid: format!("u{n}"),
        verdict: verdict as i32,
        source: Some(flow::Endpoint {
            namespace: "x".into(),
            pod_name: pod.into(),
            ..flow::Endpoint::default()
        }),
        ..Flow::default()
    }
}

fn serve(ring: Arc<Ring>) -> (tempdir::Dir, String) {
    serve_counting(ring, Default::default())
}

fn serve_counting(
    ring: Arc<Ring>,
    lost: prometheus_client::metrics::counter::Counter,
) -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    let sock = dir.0.join("hubble.sock");
    spawn(
        "hubble-test",
        Service {
            ring,
            node: "n1".into(),
            address: String::new(),
            lost,
            slots: stream_slots(),
        },
        Listen {
            unix: Some(sock.clone()),
            tcp: None,
        },
    )
    .expect("serve");
    (dir, format!("unix://{}", sock.display()))
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("pc-hubble-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn uuids(rs: &[GetFlowsResponse]) -> Vec<String> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(obs::get_flows_response::ResponseTypes::Flow(f)) => Some(f.uuid.clone()),
            _ => None,
        })
        .collect()
}

async fn all(
    client: &mut ObserverClient<tonic::transport::Channel>,
    req: GetFlowsRequest,
) -> Vec<GetFlowsResponse> {
    let mut s = client.get_flows(req).await.expect("get_flows").into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.expect("message") {
        out.push(r);
    }
    out
}

#[test]
fn last_first_filters_status_and_errors_over_the_socket() {
    let ring = Ring::new(8);
    for n in 1..=10 {
        let v = if n % 2 == 0 {
            flow::Verdict::Dropped
        } else {
            flow::Verdict::Forwarded
        };
        ring.push(flow(n, if n <= 5 { "a" } else { "b" }, v));
    }
    let (_dir, addr) = serve(ring.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = crate::cli::observe::connect(&addr).await.expect("connect");
        let mut c = ObserverClient::new(ch);
        // The ring holds 3..=10.
        let last = all(
            &mut c,
            GetFlowsRequest {
                number: 3,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(uuids(&last), ["u8", "u9", "u10"]);
        assert!(last.iter().all(|r| r.node_name == "n1" && r.time.is_some()));
        let first = all(
            &mut c,
            GetFlowsRequest {
                number: 2,
                first: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(uuids(&first), ["u3", "u4"]);
        let dropped_b = all(
            &mut c,
            GetFlowsRequest {
                number: 100,
                whitelist: vec![flow::FlowFilter {
                    source_pod: vec!["x/b".into()],
                    verdict: vec![flow::Verdict::Dropped as i32],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(uuids(&dropped_b), ["u6", "u8", "u10"]);
        let window = all(
            &mut c,
            GetFlowsRequest {
                since: Some(pbjson_types::Timestamp {
                    seconds: 1_800_000_004,
                    nanos: 0,
                }),
                until: Some(pbjson_types::Timestamp {
                    seconds: 1_800_000_006,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(uuids(&window), ["u4", "u5", "u6"]);
        let masked = all(
            &mut c,
            GetFlowsRequest {
                number: 1,
                field_mask: Some(pbjson_types::FieldMask {
                    paths: vec!["uuid".into()],
                }),
                ..Default::default()
            },
        )
        .await;
        let Some(obs::get_flows_response::ResponseTypes::Flow(f)) = &masked[0].response_types
        else {
            panic!("no flow")
        };
        assert_eq!(
            (f.uuid.as_str(), f.verdict, f.source.is_none()),
            ("u10", 0, true)
        );
        let status = c
            .server_status(obs::ServerStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status.num_flows, status.max_flows, status.seen_flows),
            (8, 8, 10)
        );
        let ns = c
            .get_namespaces(obs::GetNamespacesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ns.namespaces.len(), 1);
        let err = c
            .get_flows(GetFlowsRequest {
                whitelist: vec![flow::FlowFilter {
                    http_path: vec!["(".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect_err("an error");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("whitelist[0].http_path"),
            "{}",
            err.message()
        );
    });
}

#[test]
fn a_follower_gets_new_flows_and_is_told_what_it_lost() {
    let ring = Ring::new(4);
    ring.push(flow(1, "a", flow::Verdict::Forwarded));
    let counted = prometheus_client::metrics::counter::Counter::default();
    let (_dir, addr) = serve_counting(ring.clone(), counted.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = crate::cli::observe::connect(&addr).await.expect("connect");
        let mut c = ObserverClient::new(ch);
        let mut s = c
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Following from now: flow 1 is not sent again.
        ring.push(flow(2, "a", flow::Verdict::Forwarded));
        let r = s.message().await.unwrap().unwrap();
        assert_eq!(uuids(&[r]), ["u2"]);
        // The writer laps the reader's queue: the client queue holds 256,
        // the ring 4, so most of 2000 are lost and said to be.
        for n in 3..2003 {
            ring.push(flow(n, "a", flow::Verdict::Forwarded));
        }
        let (mut got, mut lost) = (0u64, 0u64);
        while got + lost < 2000 {
            match s.message().await.unwrap().unwrap().response_types {
                Some(obs::get_flows_response::ResponseTypes::Flow(_)) => got += 1,
                Some(obs::get_flows_response::ResponseTypes::LostEvents(l)) => {
                    assert_eq!(l.source, flow::LostEventSource::HubbleRingBuffer as i32);
                    lost += l.num_events_lost;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got + lost, 2000);
        assert!(lost > 0);
        assert_eq!(counted.get(), lost, "the metric counts what clients lost");
    });
}

#[test]
fn streams_beyond_the_limit_are_refused_not_served() {
    let ring = Ring::new(4);
    let (_dir, addr) = serve(ring);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = crate::cli::observe::connect(&addr).await.expect("connect");
        let mut c = ObserverClient::new(ch);
        let mut held = Vec::new();
        for _ in 0..MAX_STREAMS {
            let s = c
                .get_flows(GetFlowsRequest {
                    follow: true,
                    ..Default::default()
                })
                .await
                .expect("a stream within the limit");
            held.push(s);
        }
        let err = c
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await
            .expect_err("one too many");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // A stream that ends gives its slot back.
        drop(held.pop());
        let mut again = None;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if let Ok(s) = c
                .get_flows(GetFlowsRequest {
                    follow: true,
                    ..Default::default()
                })
                .await
            {
                again = Some(s);
                break;
            }
        }
        assert!(again.is_some(), "the slot came back");
    });
}

#[test]
fn a_follower_is_told_of_flow_events_the_datapath_lost() {
    let ring = Ring::new(16);
    let (_dir, addr) = serve(ring.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = crate::cli::observe::connect(&addr).await.expect("connect");
        let mut c = ObserverClient::new(ch);
        let mut s = c
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ring.push_kernel_lost(7);
        ring.push(flow(1, "a", flow::Verdict::Forwarded));
        let first = s.message().await.unwrap().unwrap();
        let Some(obs::get_flows_response::ResponseTypes::LostEvents(l)) = first.response_types
        else {
            panic!("{first:?}")
        };
        assert_eq!(l.source, flow::LostEventSource::PerfEventRingBuffer as i32);
        assert_eq!(l.num_events_lost, 7);
        assert_eq!(uuids(&[s.message().await.unwrap().unwrap()]), ["u1"]);
        // Stored flows never include the news.
        let stored = all(
            &mut c,
            GetFlowsRequest {
                number: 10,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(uuids(&stored), ["u1"]);
        assert_eq!(stored.len(), 1);
    });
}
