"""A real gRPC peer for the lab tests (grpcio): `server PORT` serves the
standard health service; `client ADDR METHOD` calls Check or Watch once and
prints the gRPC status code name (OK / PERMISSION_DENIED / ...)."""
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    server.wait_for_termination()


def call(addr, method):
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            if method == "Check":
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
                print("OK", health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
            else:
                for resp in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=3):
                    print("OK", health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
                    break
        except grpc.RpcError as e:
            print(e.code().name)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        call(sys.argv[2], sys.argv[3])
