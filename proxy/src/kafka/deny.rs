//! The one place a refusal becomes Kafka bytes: a well-formed response to
//! the denied request, at its API and version, with its correlation ID,
//! carrying an authorization error for every topic (or the group, or the
//! cluster) it named. Encoded with `kafka-protocol`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::parse::{KafkaFrame, TopicRef, Topics};

/// TOPIC_AUTHORIZATION_FAILED.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// GROUP_AUTHORIZATION_FAILED.
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
/// CLUSTER_AUTHORIZATION_FAILED.
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

const DENIED: &str = "denied by network policy";

/// Why no denial can be encoded: the connection is closed instead.
#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    #[error("no denial response is defined for {0:?}")]
    NoResponse(ApiKey),
    #[error("encoding the {api:?} v{version} denial: {error}")]
    Encode {
        api: ApiKey,
        version: i16,
        error: String,
    },
}

/// The full response frame (4-byte length included) denying `frame`.
pub fn denial(frame: &KafkaFrame) -> Result<Bytes, DenyError> {
    let v = frame.api_version;
    let api = frame.api_key;
    let body = response(frame).ok_or(DenyError::NoResponse(api))?;
    let header = ResponseHeader::default().with_correlation_id(frame.correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let err = |e: &dyn std::fmt::Display| DenyError::Encode {
        api,
        version: v,
        error: e.to_string(),
    };
    header
        .encode(&mut buf, api.response_header_version(v))
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, v).map_err(|e| err(&e))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

fn topics(frame: &KafkaFrame) -> &[TopicRef] {
    match &frame.topics {
        Topics::Listed(list) => list,
        _ => &[],
    }
}

fn name(t: &TopicRef) -> TopicName {
    TopicName(StrBytes::from_string(t.name.clone().unwrap_or_default()))
}

/// Whether this version of the API addresses topics by ID.
fn by_id(t: &TopicRef) -> bool {
    t.id.is_some_and(|id| id != [0; 16])
}

fn uuid(t: &TopicRef) -> uuid::Uuid {
    uuid::Uuid::from_bytes(t.id.unwrap_or_default())
}

fn response(frame: &KafkaFrame) -> Option<ResponseKind> {
    let v = frame.api_version;
    let e = TOPIC_AUTHORIZATION_FAILED;
    let list = topics(frame);
    Some(match frame.api_key {
        ApiKey::Produce => ResponseKind::Produce(
            ProduceResponse::default().with_responses(
                list.iter()
                    .map(|t| {
                        let mut r = TopicProduceResponse::default();
                        if v >= 13 {
                            r.topic_id = uuid(t);
                        } else {
                            r.name = name(t);
                        }
                        r.partition_responses = t
                            .partitions
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(*p)
                                    .with_error_code(e)
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                                    .with_error_message(msg(v >= 8))
                            })
                            .collect();
                        r
                    })
                    .collect(),
            ),
        ),
        ApiKey::Fetch => ResponseKind::Fetch(
            FetchResponse::default().with_responses(
                list.iter()
                    .map(|t| {
                        let mut r = FetchableTopicResponse::default();
                        if v >= 13 {
                            r.topic_id = uuid(t);
                        } else {
                            r.topic = name(t);
                        }
                        r.partitions = t
                            .partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(*p)
                                    .with_error_code(e)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                                    .with_records(Some(Bytes::new()))
                            })
                            .collect();
                        r
                    })
                    .collect(),
            ),
        ),
        ApiKey::ListOffsets => ResponseKind::ListOffsets(
            ListOffsetsResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(name(t))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(*p)
                                            .with_error_code(e)
                                            .with_timestamp(-1)
                                            .with_offset(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        ApiKey::Metadata => {
            ResponseKind::Metadata(MetadataResponse::default().with_topics(metadata_topics(frame)))
        }
        ApiKey::OffsetCommit => ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(name(t))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        ApiKey::OffsetFetch => {
            let fetch_partitions = |t: &TopicRef| -> Vec<OffsetFetchResponsePartitions> {
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(*p)
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(StrBytes::from_static_str("")))
                            .with_error_code(e)
                    })
                    .collect()
            };
            if v >= 8 {
                let groups = match &frame.topics {
                    Topics::Groups(groups) => groups
                        .iter()
                        .map(|(g, topics)| {
                            let topics = topics.as_deref().unwrap_or(&[]);
                            OffsetFetchResponseGroup::default()
                                .with_group_id(GroupId(StrBytes::from_string(g.clone())))
                                // Partition errors alone can read as "no
                                // offset"; the group error says why.
                                .with_error_code(if topics.is_empty() {
                                    GROUP_AUTHORIZATION_FAILED
                                } else {
                                    0
                                })
                                .with_topics(
                                    topics
                                        .iter()
                                        .map(|t| {
                                            OffsetFetchResponseTopics::default()
                                                .with_name(name(t))
                                                .with_partitions(fetch_partitions(t))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups))
            } else {
                let mut r = OffsetFetchResponse::default().with_topics(
                    list.iter()
                        .map(|t| {
                            OffsetFetchResponseTopic::default()
                                .with_name(name(t))
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            OffsetFetchResponsePartition::default()
                                                .with_partition_index(*p)
                                                .with_committed_offset(-1)
                                                .with_committed_leader_epoch(-1)
                                                .with_metadata(Some(StrBytes::from_static_str("")))
                                                .with_error_code(e)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                if v >= 2 && list.is_empty() {
                    r.error_code = GROUP_AUTHORIZATION_FAILED;
                }
                ResponseKind::OffsetFetch(r)
            }
        }
        ApiKey::CreateTopics => ResponseKind::CreateTopics(
            CreateTopicsResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        CreatableTopicResult::default()
                            .with_name(name(t))
                            .with_error_code(e)
                            .with_error_message(msg(v >= 1))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            ),
        ),
        ApiKey::DeleteTopics => ResponseKind::DeleteTopics(
            DeleteTopicsResponse::default().with_responses(
                list.iter()
                    .map(|t| {
                        let mut r = DeletableTopicResult::default()
                            .with_name(Some(name(t)))
                            .with_error_code(e)
                            .with_error_message(msg(v >= 5));
                        if v >= 6 {
                            r.name = t.name.as_ref().map(|_| name(t));
                            r.topic_id = uuid(t);
                        }
                        r
                    })
                    .collect(),
            ),
        ),
        ApiKey::DeleteRecords => ResponseKind::DeleteRecords(
            DeleteRecordsResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        DeleteRecordsTopicResult::default()
                            .with_name(name(t))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        DeleteRecordsPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_low_watermark(-1)
                                            .with_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        ApiKey::OffsetForLeaderEpoch => ResponseKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        OffsetForLeaderTopicResult::default()
                            .with_topic(name(t))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        EpochEndOffset::default()
                                            .with_partition(*p)
                                            .with_error_code(e)
                                            .with_leader_epoch(-1)
                                            .with_end_offset(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        ApiKey::TxnOffsetCommit => ResponseKind::TxnOffsetCommit(
            TxnOffsetCommitResponse::default().with_topics(
                list.iter()
                    .map(|t| {
                        TxnOffsetCommitResponseTopic::default()
                            .with_name(name(t))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        ApiKey::AddPartitionsToTxn => {
            let results = |list: &[TopicRef]| -> Vec<AddPartitionsToTxnTopicResult> {
                list.iter()
                    .map(|t| {
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(name(t))
                            .with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_partition_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect()
            };
            let r = match &frame.topics {
                Topics::Transactions(txns) if v >= 4 => AddPartitionsToTxnResponse::default()
                    .with_results_by_transaction(
                        txns.iter()
                            .map(|(id, list)| {
                                AddPartitionsToTxnResult::default()
                                    .with_transactional_id(TransactionalId(StrBytes::from_string(
                                        id.clone(),
                                    )))
                                    .with_topic_results(results(list))
                            })
                            .collect(),
                    ),
                _ => AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(results(list)),
            };
            ResponseKind::AddPartitionsToTxn(r)
        }
        ApiKey::DescribeProducers => {
            use kafka_protocol::messages::describe_producers_response::{
                PartitionResponse, TopicResponse,
            };
            ResponseKind::DescribeProducers(
                DescribeProducersResponse::default().with_topics(
                    list.iter()
                        .map(|t| {
                            TopicResponse::default().with_name(name(t)).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        PartitionResponse::default()
                                            .with_partition_index(*p)
                                            .with_error_code(e)
                                            .with_error_message(msg(true))
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            )
        }
        ApiKey::FindCoordinator => {
            let g = GROUP_AUTHORIZATION_FAILED;
            let mut r = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if v >= 4 {
                r.coordinators = frame
                    .groups
                    .iter()
                    .map(|k| {
                        Coordinator::default()
                            .with_key(StrBytes::from_string(k.clone()))
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(g)
                            .with_error_message(msg(true))
                    })
                    .collect();
            } else {
                r.error_code = g;
                r.error_message = msg(v >= 1);
            }
            ResponseKind::FindCoordinator(r)
        }
        ApiKey::JoinGroup => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(GROUP_AUTHORIZATION_FAILED)
                .with_generation_id(-1),
        ),
        ApiKey::Heartbeat => ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
        ),
        ApiKey::LeaveGroup => ResponseKind::LeaveGroup(
            LeaveGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
        ),
        ApiKey::SyncGroup => ResponseKind::SyncGroup(
            SyncGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
        ),
        ApiKey::InitProducerId => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        // KIP-714 client telemetry is in no Cilium role set; a cluster
        // error makes clients stop asking (and keeps the connection).
        ApiKey::GetTelemetrySubscriptions => ResponseKind::GetTelemetrySubscriptions(
            GetTelemetrySubscriptionsResponse::default()
                .with_error_code(CLUSTER_AUTHORIZATION_FAILED),
        ),
        ApiKey::PushTelemetry => ResponseKind::PushTelemetry(
            PushTelemetryResponse::default().with_error_code(CLUSTER_AUTHORIZATION_FAILED),
        ),
        ApiKey::AddOffsetsToTxn => ResponseKind::AddOffsetsToTxn(
            AddOffsetsToTxnResponse::default()
                .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        ),
        ApiKey::EndTxn => ResponseKind::EndTxn(
            EndTxnResponse::default().with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        ),
        ApiKey::ListGroups => ResponseKind::ListGroups(
            ListGroupsResponse::default().with_error_code(CLUSTER_AUTHORIZATION_FAILED),
        ),
        ApiKey::DescribeCluster => ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
                .with_error_message(msg(true)),
        ),
        ApiKey::ApiVersions => ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_error_code(CLUSTER_AUTHORIZATION_FAILED),
        ),
        _ => return None,
    })
}

/// The topic entries of a Metadata denial: every topic the request named,
/// with TOPIC_AUTHORIZATION_FAILED and no partitions.
fn metadata_topics(frame: &KafkaFrame) -> Vec<MetadataResponseTopic> {
    let v = frame.api_version;
    topics(frame)
        .iter()
        .map(|t| {
            let mut r = MetadataResponseTopic::default()
                .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                .with_name(t.name.as_ref().map(|_| name(t)));
            if v >= 10 && by_id(t) {
                r.topic_id = uuid(t);
            }
            if v < 12 && r.name.is_none() {
                r.name = Some(name(t));
            }
            r
        })
        .collect()
}

/// What is sent upstream in place of a denied Metadata request (`frame`,
/// the request's bytes without the length; `parsed`, what was read of
/// them): the same header, asking for no topic and creating none. A
/// client needs the brokers, controller and cluster ID of every Metadata
/// response; a denial without them makes librdkafka forget its brokers
/// (and its group coordinator) and retry until its timeout. The broker's
/// answer becomes the denial in [`metadata_denial_from`]. `None` for v0,
/// where an empty topic list means every topic, or a header that cannot
/// be read: the proxy's own [`denial`] is sent instead. The result
/// carries its 4-byte length.
pub fn brokers_only_request(frame: &[u8], parsed: &KafkaFrame) -> Option<Bytes> {
    let v = parsed.api_version;
    if parsed.api_key != ApiKey::Metadata || v < 1 {
        return None;
    }
    let header_version = ApiKey::Metadata.request_header_version(v);
    let mut read = frame;
    let header = RequestHeader::decode(&mut read, header_version).ok()?;
    let mut body = MetadataRequest::default().with_topics(Some(Vec::new()));
    // The field exists from v4 (a version without it cannot carry false).
    if v >= 4 {
        body.allow_auto_topic_creation = false;
    }
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).ok()?;
    body.encode(&mut buf, v).ok()?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Some(buf.freeze())
}

/// The denial of the Metadata request `parsed`, built from the broker's
/// answer (`answer`, the response frame without its length) to the
/// [`brokers_only_request`] sent in its place: the broker's throttle,
/// brokers, cluster ID and controller, and every named topic with
/// TOPIC_AUTHORIZATION_FAILED; whatever topics the broker listed are
/// dropped. Returned without the length, like `answer`.
pub fn metadata_denial_from(answer: &[u8], parsed: &KafkaFrame) -> Result<Vec<u8>, DenyError> {
    let v = parsed.api_version;
    let api = ApiKey::Metadata;
    let err = |e: &dyn std::fmt::Display| DenyError::Encode {
        api,
        version: v,
        error: e.to_string(),
    };
    let header_version = api.response_header_version(v);
    let mut read = answer;
    let header = ResponseHeader::decode(&mut read, header_version).map_err(|e| err(&e))?;
    let mut body = MetadataResponse::decode(&mut read, v).map_err(|e| err(&e))?;
    if !read.is_empty() {
        return Err(err(&"bytes after the broker's Metadata response"));
    }
    body.topics = metadata_topics(parsed);
    let mut buf = BytesMut::with_capacity(answer.len() + 64);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, v).map_err(|e| err(&e))?;
    Ok(buf.to_vec())
}

fn msg(present: bool) -> Option<StrBytes> {
    present.then(|| StrBytes::from_static_str(DENIED))
}
