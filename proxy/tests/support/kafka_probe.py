#!/usr/bin/env python3
"""One Kafka request of a conformance probe, sent with kafka-python's protocol classes.

  kafka_probe.py [--connect-timeout SECS] [--bind SRC_IP] HOST PORT API_KEY VERSION CLIENT_ID [TOPIC ...]

API_KEY is the numeric key; VERSION -1 picks the default below; an empty CLIENT_ID sends a
null client ID. Prints one line:
  ANSWERED        a response without an authorization error (the broker answered)
  DENIED <code>   a response carrying TOPIC/GROUP/CLUSTER/TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                  (29/30/31/53): the proxy's denial (the lab broker, tansu, has no ACLs)
  BLOCKED         no TCP connection (the datapath dropped it)
  CLOSED <why>    connected, but no well-formed response (the connection was closed)
Exit status 0 whenever one of these was observed, 2 on usage errors.
"""
import io
import socket
import struct
import sys

AUTH_ERRORS = {29, 30, 31, 53}
GROUP = "probe-group"

# Versions used when a probe names none: what the proxy reads and tansu 0.6
# answers, with topics by name.
DEFAULT_VERSION = {0: 9, 1: 12, 2: 7, 3: 12, 8: 8, 9: 8, 10: 3, 11: 7, 12: 4, 13: 4,
                   14: 5, 18: 3, 19: 7, 22: 4}


def request(api_key, version, topics):
    from kafka.protocol.consumer.fetch import FetchRequest
    from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest,
                                               LeaveGroupRequest, OffsetCommitRequest,
                                               OffsetFetchRequest, SyncGroupRequest)
    from kafka.protocol.consumer.offsets import ListOffsetsRequest
    from kafka.protocol.admin.topics import CreateTopicsRequest
    from kafka.protocol.metadata.api_versions import ApiVersionsRequest
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
    from kafka.protocol.metadata.metadata import MetadataRequest
    from kafka.protocol.producer.produce import ProduceRequest
    from kafka.protocol.producer.transaction import InitProducerIdRequest

    if api_key == 0:
        cls = ProduceRequest[version]
        data = [cls.TopicProduceData(name=t, partition_data=[
            cls.TopicProduceData.PartitionProduceData(index=0, records=record_batch())])
            for t in topics]
        return cls(transactional_id=None, acks=1, timeout_ms=5000, topic_data=data)
    if api_key == 1:
        cls = FetchRequest[version]
        return cls(replica_id=-1, max_wait_ms=10, min_bytes=0, max_bytes=1 << 20,
                   isolation_level=0, session_id=0, session_epoch=-1,
                   topics=[cls.FetchTopic(topic=t, partitions=[cls.FetchTopic.FetchPartition(
                       partition=0, current_leader_epoch=-1, fetch_offset=0,
                       last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1 << 16)])
                       for t in topics],
                   forgotten_topics_data=[], rack_id="")
    if api_key == 2:
        cls = ListOffsetsRequest[version]
        return cls(replica_id=-1, isolation_level=0, topics=[cls.ListOffsetsTopic(
            name=t, partitions=[cls.ListOffsetsTopic.ListOffsetsPartition(
                partition_index=0, current_leader_epoch=-1, timestamp=-1)]) for t in topics])
    if api_key == 3:
        cls = MetadataRequest[version]
        return cls(topics=[cls.MetadataRequestTopic(name=t) for t in topics],
                   allow_auto_topic_creation=False,
                   include_cluster_authorized_operations=False,
                   include_topic_authorized_operations=False)
    if api_key == 8:
        cls = OffsetCommitRequest[version]
        return cls(group_id=GROUP, generation_id_or_member_epoch=-1, member_id="",
                   group_instance_id=None, retention_time_ms=-1,
                   topics=[cls.OffsetCommitRequestTopic(name=t, partitions=[
                       cls.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                           partition_index=0, committed_offset=0, committed_leader_epoch=-1,
                           committed_metadata="")]) for t in topics])
    if api_key == 9:
        cls = OffsetFetchRequest[version]
        if version >= 8:
            g = cls.OffsetFetchRequestGroup
            return cls(groups=[g(group_id=GROUP, member_id=None, member_epoch=-1, topics=[
                g.OffsetFetchRequestTopics(name=t, partition_indexes=[0]) for t in topics])],
                require_stable=False)
        return cls(group_id=GROUP, topics=[cls.OffsetFetchRequestTopic(
            name=t, partition_indexes=[0]) for t in topics], require_stable=False)
    if api_key == 10:
        return FindCoordinatorRequest[version](key=GROUP, key_type=0, coordinator_keys=[GROUP])
    if api_key == 11:
        cls = JoinGroupRequest[version]
        return cls(group_id=GROUP, session_timeout_ms=10000, rebalance_timeout_ms=10000,
                   member_id="", group_instance_id=None, protocol_type="consumer",
                   protocols=[cls.JoinGroupRequestProtocol(name="range", metadata=b"")],
                   reason=None)
    if api_key == 12:
        return HeartbeatRequest[version](group_id=GROUP, generation_id=-1, member_id="m",
                                         group_instance_id=None)
    if api_key == 13:
        cls = LeaveGroupRequest[version]
        return cls(group_id=GROUP, member_id="m", members=[cls.MemberIdentity(
            member_id="m", group_instance_id=None, reason=None)])
    if api_key == 14:
        return SyncGroupRequest[version](group_id=GROUP, generation_id=-1, member_id="m",
                                         group_instance_id=None, protocol_type="consumer",
                                         protocol_name="range", assignments=[])
    if api_key == 18:
        return ApiVersionsRequest[version](client_software_name="portcullis-probe",
                                           client_software_version="1")
    if api_key == 19:
        cls = CreateTopicsRequest[version]
        return cls(topics=[cls.CreatableTopic(name=t, num_partitions=1, replication_factor=1,
                                              assignments=[], configs=[]) for t in topics],
                   timeout_ms=5000, validate_only=True)
    if api_key == 22:
        return InitProducerIdRequest[version](transactional_id=None, transaction_timeout_ms=-1,
                                              producer_id=-1, producer_epoch=-1)
    raise SystemExit(f"kafka_probe: API key {api_key} is not supported by this probe")


def record_batch():
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16)
    b.append(timestamp=None, key=None, value=b"probe", headers=[])
    b.close()
    return b.buffer()


def codes(obj, out):
    """Every error code anywhere in a decoded response."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("error_code") and isinstance(v, int):
                out.add(v)
            else:
                codes(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            codes(v, out)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def main(argv):
    connect_timeout, bind = 1.5, None
    while argv and argv[0] in ("--connect-timeout", "--bind") and len(argv) > 1:
        if argv[0] == "--bind":
            bind = argv[1]
        else:
            connect_timeout = float(argv[1])
        argv = argv[2:]
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, api_key, version, client_id = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    client_id = client_id or None
    topics = argv[5:]
    if version < 0:
        version = DEFAULT_VERSION.get(api_key, 0)
    req = request(api_key, version, topics)
    req.with_header(correlation_id=4242, client_id=client_id)
    payload = req.encode(version=version, header=True, framed=True)
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout,
                                        source_address=(bind, 0) if bind else None)
    except OSError:
        print("BLOCKED")
        return 0
    sock.settimeout(8)
    try:
        sock.sendall(payload)
        n = struct.unpack(">i", read_exact(sock, 4))[0]
        body = read_exact(sock, n)
    except (OSError, EOFError) as e:
        print(f"CLOSED {e}")
        return 0
    finally:
        sock.close()
    corr = struct.unpack(">i", body[:4])[0]
    if corr != 4242:
        print(f"CLOSED correlation id {corr}")
        return 0
    resp_cls = type(req).__name__.split("_v")[0].replace("Request", "Response")
    mod = sys.modules[type(req).__module__]
    try:
        resp = getattr(mod, resp_cls)[version].decode(io.BytesIO(body), version=version,
                                                     header=True)
    except Exception as e:  # a response that does not decode is not well-formed
        print(f"CLOSED undecodable {resp_cls} v{version}: {e}")
        return 0
    found = set()
    codes(resp.to_dict(), found)
    denied = sorted(found & AUTH_ERRORS)
    print(f"DENIED {denied[0]}" if denied else "ANSWERED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
