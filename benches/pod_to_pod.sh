#!/usr/bin/env bash
# Pod-to-pod TCP request/response rate with the portcullis programs attached
# vs. detached, in one run, in the lab (root). Order A-B-A (attached,
# detached, attached again) so machine drift shows up instead of biasing the
# ratio. Writes benches/results/pod_to_pod.md.
#   usage: sudo bash benches/pod_to_pod.sh [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-4}
cargo build --release -q -p portcullis
BIN=target/release/portcullis
WORK=$(mktemp -d)
cleanup() { "$BIN" lab down >/dev/null 2>&1 || true; kill "${SERVER:-0}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cp conformance/topologies/multi-tenant.yaml "$WORK/topology.yaml"
# The multi-tenant CNP: every packet of a new flow goes through policy.
python3 - "$WORK/policy.yaml" <<'PY'
import sys, re
text = open("conformance/cases/multi-tenant/cnp.yaml").read()
m = re.search(r"^policies: \|\n((?:  .*\n|\n)*)", text, re.M)
open(sys.argv[1], "w").write("".join(l[2:] if l.startswith("  ") else l for l in m.group(1).splitlines(True)))
PY
"$BIN" lab up --topology "$WORK/topology.yaml" --policy "$WORK/policy.yaml" >/dev/null
# tenant-a/db is endpoint 2 in topology order.
ip netns exec pc-pod2 "$BIN" lab serve --tcp 7000 >/dev/null 2>&1 &
SERVER=$!
sleep 0.5

run() { "$BIN" lab rr --from tenant-a/web --to 10.200.21.11:7000 --connections "$CONNS" --seconds "$SECS"; }
A1=$(run)
"$BIN" lab detach >/dev/null
B=$(run)
"$BIN" lab restart-agent >/dev/null
A2=$(run)

python3 - "$A1" "$B" "$A2" "$SECS" "$CONNS" <<'PY'
import json, sys, platform, datetime, os
a1, b, a2 = (json.loads(x) for x in sys.argv[1:4])
secs, conns = sys.argv[4], sys.argv[5]
att = (a1["rate"] + a2["rate"]) / 2
rows = [("attached (1st)", a1), ("detached", b), ("attached (2nd)", a2)]
out = ["# Pod-to-pod TCP request/response: programs attached vs detached", "",
       f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU ({platform.machine()}), "
       f"{conns} connections, 64-byte request/echo, {secs} s per run, same lab, one invocation.", "",
       "| run | transactions/s | p50 µs | p99 µs |", "|---|---:|---:|---:|"]
for name, r in rows:
    out.append(f"| {name} | {r['rate']:.0f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} |")
out += ["", f"attached/detached rate ratio (mean of both attached runs): **{att / b['rate']:.3f}**; "
        f"p50 latency ratio: {((a1['p50_us'] + a2['p50_us']) / 2) / b['p50_us']:.3f}"]
text = "\n".join(out) + "\n"
open("benches/results/pod_to_pod.md", "w").write(text)
print(text)
PY
