//! Response rewrites (pure): the all-topics Metadata filter and the
//! ApiVersions cap, on responses encoded with `kafka-protocol`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::parse::{cap_api_versions, filter_metadata_response};

fn metadata_frame(version: i16, topics: usize) -> Vec<u8> {
    let resp = MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("10.200.1.92"))
                .with_port(9092),
        ])
        .with_topics(
            (0..topics)
                .map(|i| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(format!("t{i}")))))
                        .with_topic_id(uuid::Uuid::from_bytes([i as u8 + 1; 16]))
                })
                .collect(),
        );
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(7)
        .encode(&mut out, ApiKey::Metadata.response_header_version(version))
        .expect("header encodes");
    resp.encode(&mut out, version).expect("response encodes");
    out.to_vec()
}

fn decode_metadata(frame: Vec<u8>, version: i16) -> (i32, MetadataResponse) {
    let mut buf = Bytes::from(frame);
    let header =
        ResponseHeader::decode(&mut buf, ApiKey::Metadata.response_header_version(version))
            .expect("header decodes");
    let resp = MetadataResponse::decode(&mut buf, version).expect("body decodes");
    assert!(buf.is_empty(), "v{version}: trailing bytes");
    (header.correlation_id, resp)
}

#[test]
fn metadata_filter_keeps_allowed_topics_at_every_version() {
    // 200 topics: the compact count crosses the one-byte varint boundary.
    for version in [1i16, 4, 9, 12, 13] {
        let frame = metadata_frame(version, 200);
        let (filtered, removed) =
            filter_metadata_response(&frame, version, &mut |t| t.ends_with('0'))
                .expect("frame walks");
        assert_eq!(removed, 180, "v{version}");
        let (corr, resp) = decode_metadata(filtered, version);
        assert_eq!(corr, 7);
        let names: Vec<String> = resp
            .topics
            .iter()
            .map(|t| t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default())
            .collect();
        let want: Vec<String> = (0..200).step_by(10).map(|i| format!("t{i}")).collect();
        assert_eq!(names, want, "v{version}");
        assert_eq!(resp.brokers.len(), 1, "v{version}: brokers untouched");
    }
}

#[test]
fn metadata_filter_refuses_a_truncated_frame() {
    let frame = metadata_frame(12, 3);
    for cut in [5, frame.len() / 2, frame.len() - 1] {
        assert!(
            filter_metadata_response(&frame[..cut], 12, &mut |_| true).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn api_versions_cap_lowers_only_ranges_above_the_proxy() {
    for version in [0i16, 2, 3, 4] {
        let resp = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::OffsetCommit as i16)
                .with_min_version(2)
                .with_max_version(10),
            ApiVersion::default()
                .with_api_key(ApiKey::Heartbeat as i16)
                .with_min_version(0)
                .with_max_version(4),
        ]);
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(1)
            .encode(&mut out, 0)
            .expect("header encodes");
        resp.encode(&mut out, version).expect("response encodes");
        let mut frame = out.to_vec();
        assert_eq!(cap_api_versions(&mut frame, version), Ok(1), "v{version}");
        let mut buf = Bytes::from(frame);
        ResponseHeader::decode(&mut buf, 0).expect("header decodes");
        let capped = ApiVersionsResponse::decode(&mut buf, version).expect("body decodes");
        let maxes: Vec<i16> = capped.api_keys.iter().map(|k| k.max_version).collect();
        assert_eq!(maxes, vec![9, 4], "v{version}");
    }
}
