#!/usr/bin/env bash
# Pod-to-pod TCP request/response rate with the portcullis programs attached
# (alone, and with a Hubble `observe --follow -o json` client streaming every
# flow) vs. detached, in one run, in the lab (root): alternating rounds,
# medians. Writes benches/results/pod_to_pod.md.
#   usage: sudo bash benches/pod_to_pod.sh [seconds-per-run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-4}
CONNS=${2:-4}
ROUNDS=${3:-5}
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
# Alternate attached and detached runs; report medians of each, so noise
# from other work on a shared machine hits both sides alike.
ATT=(); FOL=(); DET=()
for round in $(seq "$ROUNDS"); do
  ATT+=("$(run)")
  "$BIN" observe --follow -o json >/dev/null 2>&1 &
  FOLLOWER=$!
  sleep 0.3
  FOL+=("$(run)")
  kill "$FOLLOWER" 2>/dev/null || true
  wait "$FOLLOWER" 2>/dev/null || true
  "$BIN" lab detach >/dev/null
  DET+=("$(run)")
  "$BIN" lab restart-agent >/dev/null
done

python3 - "$SECS" "$CONNS" "${#ATT[@]}" "${ATT[@]}" "${FOL[@]}" "${DET[@]}" <<'PY'
import json, sys, platform, datetime, os, statistics
secs, conns, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.loads(x) for x in sys.argv[4:]]
att, fol, det = runs[:n], runs[n:2 * n], runs[2 * n:]
med = lambda rs, k: statistics.median(r[k] for r in rs)
out = ["# Pod-to-pod TCP request/response: programs attached vs detached", "",
       f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU ({platform.machine()}, shared), "
       f"{conns} connections, 64-byte request/echo, {n} alternating rounds of {secs} s each, one invocation, "
       "policy: the multi-tenant CiliumNetworkPolicy (tenant-a/web -> tenant-a/db allowed).", "",
       "| datapath | median transactions/s | median p50 µs | median p99 µs | runs (transactions/s) |",
       "|---|---:|---:|---:|---|"]
for name, rs in (("programs attached", att),
                 ("programs attached, `observe --follow -o json` streaming", fol),
                 ("programs detached", det)):
    out.append(f"| {name} | {med(rs, 'rate'):.0f} | {med(rs, 'p50_us'):.1f} | {med(rs, 'p99_us'):.1f} | "
               + ", ".join(f"{r['rate']:.0f}" for r in rs) + " |")
out += ["", f"attached/detached ratio of median rates: **{med(att, 'rate') / med(det, 'rate'):.3f}**; "
        f"of median p50 latency: {med(att, 'p50_us') / med(det, 'p50_us'):.3f}",
        "",
        f"attached with a following Hubble client / detached, median rates: "
        f"**{med(fol, 'rate') / med(det, 'rate'):.3f}** (goal >= 0.95)"]
text = "\n".join(out) + "\n"
open("benches/results/pod_to_pod.md", "w").write(text)
print(text)
PY
