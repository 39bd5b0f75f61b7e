"""A Hubble Observer client generated with grpcio-tools from agent/proto,
as a platform team would write one: the lab tests run it against the
agent's unix socket or the relay.

  hubble_client.py ADDRESS follow SECONDS FILTER_JSON   flows as JSON lines
  hubble_client.py ADDRESS status                       ServerStatus as JSON
  hubble_client.py ADDRESS bad-filter                   the error's code and text

ADDRESS: host:port or unix:///path. FILTER_JSON: one flow.FlowFilter in
proto3 JSON, used as the whitelist.
"""

import json
import os
import sys
import tempfile
import threading

from grpc_tools import protoc

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def stubs():
    out = tempfile.mkdtemp(prefix="hubble-stubs-")
    files = ["flow/flow.proto", "relay/relay.proto", "observer/observer.proto"]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        ["protoc", "-I" + PROTO, "-I" + include, "--python_out=" + out, "--grpc_python_out=" + out]
        + [os.path.join(PROTO, f) for f in files]
    )
    if rc != 0:
        sys.exit("protoc failed: %d" % rc)
    sys.path.insert(0, out)
    from observer import observer_pb2, observer_pb2_grpc  # noqa: E402
    from flow import flow_pb2  # noqa: E402

    return observer_pb2, observer_pb2_grpc, flow_pb2


def main():
    import grpc
    from google.protobuf import json_format

    observer_pb2, observer_pb2_grpc, flow_pb2 = stubs()
    address, what = sys.argv[1], sys.argv[2]
    # On a unix socket, gRPC's default authority is the socket's path,
    # which HTTP/2 servers refuse; Hubble's clients send "localhost".
    options = [("grpc.default_authority", "localhost")] if address.startswith("unix:") else []
    channel = grpc.insecure_channel(address, options=options)
    stub = observer_pb2_grpc.ObserverStub(channel)
    if what == "status":
        s = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=5)
        print(json_format.MessageToJson(s, preserving_proto_field_name=True, indent=None))
        return
    if what == "bad-filter":
        req = observer_pb2.GetFlowsRequest(
            number=1, whitelist=[flow_pb2.FlowFilter(http_path=["(unclosed"])]
        )
        try:
            for _ in stub.GetFlows(req, timeout=5):
                pass
            print("no error")
        except grpc.RpcError as e:
            print(e.code().name, e.details())
        return
    seconds = float(sys.argv[3])
    flt = json_format.Parse(sys.argv[4], flow_pb2.FlowFilter())
    req = observer_pb2.GetFlowsRequest(follow=True, whitelist=[flt])
    call = stub.GetFlows(req)
    threading.Timer(seconds, call.cancel).start()
    print("following", flush=True)
    try:
        for resp in call:
            print(json_format.MessageToJson(resp, preserving_proto_field_name=True, indent=None), flush=True)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise


if __name__ == "__main__":
    main()
