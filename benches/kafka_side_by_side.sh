#!/usr/bin/env bash
# Kafka produce on loopback, one invocation, side by side: a confluent-kafka (librdkafka)
# producer direct to a tansu broker, and through the portcullis Kafka proxy (the
# `kafka_proxy` bench binary: the proxy's listener, parser, judge and relay, with a
# CiliumNetworkPolicy `rules.kafka: [{role: produce, topic: bench}]`) to an identical
# tansu broker. Writes benches/results/kafka_side_by_side.md.
#   usage: bash benches/kafka_side_by_side.sh [rounds] [messages] [size] [sync-requests]
#   (defaults 7 rounds, 500000 messages of 100 bytes, 2000 synchronous produces: ~2 min)
#
# Two brokers, so that each advertises the address its clients must use: tansu A (direct)
# advertises itself; tansu B advertises the proxy, so every connection of the proxied
# producer (bootstrap and broker) goes through the proxy, as the datapath's redirect does.
# Per round, in alternating order, each mode runs twice, each time with a new producer:
#   throughput: MESSAGES messages of SIZE bytes as fast as the producer batches them
#               (linger.ms 5, acks 1): messages/s and MB/s from first produce to last delivery;
#   latency:    SYNC produces one at a time (produce + flush): p50/p99 of each round trip.
# Medians over rounds; ratios proxy/direct. The proxy's CPU (utime+stime from /proc) is read
# around each proxied throughput run. A produce to another topic through the proxy must be
# denied (TOPIC_AUTHORIZATION_FAILED), else the run is void.
# The datapath's own cost (TC programs, TPROXY redirect) is in benches/pod_to_pod.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
MESSAGES=${2:-500000}
SIZE=${3:-100}
SYNC=${4:-2000}
DIRECT_PORT=19095
BROKER_PORT=19094
PROXY_PORT=19093
OUT=benches/results/kafka_side_by_side.md

TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
[ -x "$TANSU" ] || { echo "needs tansu: bash deploy/tansu.sh start && bash deploy/tansu.sh wait" >&2; exit 1; }
python3 -c "import confluent_kafka" || { echo "needs confluent-kafka (pip)" >&2; exit 1; }
cargo build --release -q -p portcullis-benches --bin kafka_proxy
PROXY_BIN=$PWD/target/release/kafka_proxy
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

broker() {  # broker PORT ADVERTISED_PORT
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$1" --advertised-listener-url "tcp://127.0.0.1:$2" \
    --storage-engine memory://tansu/ >"$WORK/tansu-$1.log" 2>&1 &
  PIDS+=($!)
  for i in $(seq 75); do
    "$TANSU" topic create bench --broker "tcp://127.0.0.1:$1" --partitions 1 >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "tansu on $1 did not come up" >&2; exit 1
}
broker "$DIRECT_PORT" "$DIRECT_PORT"
broker "$BROKER_PORT" "$PROXY_PORT"
"$TANSU" topic create other --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions 1 >/dev/null
"$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$BROKER_PORT" --topic bench \
  2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
sleep 0.5

cat >"$WORK/produce.py" <<'PY'
import json, sys, time
from confluent_kafka import Producer
mode, bootstrap, topic, n, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "message.timeout.ms": 30000,
              "linger.ms": 5 if mode == "throughput" else 0,
              "queue.buffering.max.messages": 1000000})
errors = []
def done(err, _msg):
    if err is not None:
        errors.append(err.name())
payload = b"x" * size
# Warm: metadata, connections, the first batch.
p.produce(topic, payload, callback=done); p.flush(15)
if mode == "check":
    print(json.dumps({"errors": len(errors), "first_error": errors[0] if errors else None}))
elif mode == "throughput":
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, callback=done); break
            except BufferError:
                p.poll(0.001)
        p.poll(0)
    left = p.flush(60)
    dt = time.perf_counter() - t0
    print(json.dumps({"msgs_per_s": n / dt, "mb_per_s": n * size / dt / 1e6, "left": left,
                      "errors": len(errors), "first_error": errors[0] if errors else None}))
else:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.produce(topic, payload, callback=done); p.flush(15)
        lat.append((time.perf_counter() - t0) * 1e6)
    lat.sort()
    print(json.dumps({"p50_us": lat[len(lat) // 2], "p99_us": lat[max(0, int(len(lat) * 0.99) - 1)],
                      "errors": len(errors), "first_error": errors[0] if errors else None}))
PY
cpu() { awk '{ print $14 + $15 }' "/proc/$PROXY_PID/stat"; }
mkdir -p "$WORK/out"
bootstrap() { [ "$1" = direct ] && echo "127.0.0.1:$DIRECT_PORT" || echo "127.0.0.1:$PROXY_PORT"; }

# The proxy enforces: producing to another topic is denied.
python3 "$WORK/produce.py" check "$(bootstrap proxy)" other 1 "$SIZE" >"$WORK/out/denied.json"
python3 "$WORK/produce.py" check "$(bootstrap proxy)" bench 1 "$SIZE" >"$WORK/out/allowed.json"

for r in $(seq "$ROUNDS"); do
  order=(direct proxy); [ $((r % 2)) -eq 0 ] && order=(proxy direct)
  for mode in "${order[@]}"; do
    c0=$(cpu)
    python3 "$WORK/produce.py" throughput "$(bootstrap "$mode")" bench "$MESSAGES" "$SIZE" \
      >"$WORK/out/r$r-$mode-throughput.json"
    echo $(( $(cpu) - c0 )) >"$WORK/out/r$r-$mode-throughput.ticks"
    python3 "$WORK/produce.py" latency "$(bootstrap "$mode")" bench "$SYNC" "$SIZE" \
      >"$WORK/out/r$r-$mode-latency.json"
  done
  echo "round $r/$ROUNDS done" >&2
done
kill -INT "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
grep '^portcullis_proxy_kafka_requests_total' "$WORK/proxy.log" >"$WORK/out/requests.txt" || true

python3 - "$WORK/out" "$ROUNDS" "$MESSAGES" "$SIZE" "$SYNC" "$OUT" "$(getconf CLK_TCK)" <<'PY'
import json, statistics as st, sys, platform, os, datetime
out, rounds, n, size, sync, dest, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
load = lambda name: json.load(open(f"{out}/{name}.json"))
rows = {(m, k): [load(f"r{r}-{m}-{k}") for r in range(1, rounds + 1)] for m in ("direct", "proxy") for k in ("throughput", "latency")}
ticks = {m: [int(open(f"{out}/r{r}-{m}-throughput.ticks").read()) for r in range(1, rounds + 1)] for m in ("direct", "proxy")}
problems = []
denied, allowed = load("denied"), load("allowed")
if denied["first_error"] != "TOPIC_AUTHORIZATION_FAILED":
    problems.append(f"produce to 'other' through the proxy was not denied: {denied}")
if allowed["errors"]:
    problems.append(f"produce to 'bench' through the proxy failed: {allowed}")
for (m, k), ds in rows.items():
    for i, d in enumerate(ds, 1):
        if d["errors"] or d.get("left"):
            problems.append(f"round {i} {m} {k}: {d['errors']} delivery errors ({d['first_error']}), {d.get('left', 0)} undelivered")
if any(t > 0 for t in ticks["direct"]):
    problems.append(f"the proxy used CPU during direct runs: {ticks['direct']}")
requests = open(f"{out}/requests.txt").read().strip()
med = lambda m, k, f: st.median(d[f] for d in rows[(m, k)])
tp_d, tp_p = med("direct", "throughput", "msgs_per_s"), med("proxy", "throughput", "msgs_per_s")
mb_d, mb_p = med("direct", "throughput", "mb_per_s"), med("proxy", "throughput", "mb_per_s")
p50_d, p50_p = med("direct", "latency", "p50_us"), med("proxy", "latency", "p50_us")
p99_d, p99_p = med("direct", "latency", "p99_us"), med("proxy", "latency", "p99_us")
cpu_p = st.median(ticks["proxy"]) / hz
lines = [
    "# Kafka produce: direct vs through the portcullis Kafka proxy",
    "",
    f"`benches/kafka_side_by_side.sh {rounds} {n} {size} {sync}` on {platform.node()} ({os.cpu_count()} vCPU, shared with "
    f"other work), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Loopback: confluent-kafka "
    "(librdkafka) producer, acks=1, one partition, tansu 0.6 (memory storage); proxied: the `kafka_proxy` bench binary "
    "(2 tokio workers; rules.kafka role produce, topic bench) in front of an identical tansu that advertises the proxy. "
    "Each run is a new producer; rounds alternate the order; medians over rounds.",
    "",
    "| metric | direct | through portcullis | proxy / direct |",
    "|---|---:|---:|---:|",
    f"| throughput, messages/s ({n:,} x {size} B, linger 5 ms) | {tp_d:,.0f} | {tp_p:,.0f} | {tp_p / tp_d:.3f} |",
    f"| throughput, MB/s | {mb_d:.2f} | {mb_p:.2f} | {mb_p / mb_d:.3f} |",
    f"| sync produce round trip p50, us ({sync:,} one at a time) | {p50_d:,.0f} | {p50_p:,.0f} | {p50_p / p50_d:.3f} (+{p50_p - p50_d:,.0f} us) |",
    f"| sync produce round trip p99, us | {p99_d:,.0f} | {p99_p:,.0f} | {p99_p / p99_d:.3f} (+{p99_p - p99_d:,.0f} us) |",
    f"| proxy CPU per throughput run (median), s | - | {cpu_p:.2f} | - |",
    "",
    "Per round (throughput msgs/s direct / proxy; sync p50 us direct / proxy):",
    "",
]
for i in range(rounds):
    d, p = rows[("direct", "throughput")][i], rows[("proxy", "throughput")][i]
    dl, pl = rows[("direct", "latency")][i], rows[("proxy", "latency")][i]
    lines.append(f"- round {i + 1}: {d['msgs_per_s']:,.0f} / {p['msgs_per_s']:,.0f}; {dl['p50_us']:,.0f} / {pl['p50_us']:,.0f}")
lines += ["", "Reading: the throughput runs are bounded by the producer (one Python thread feeding librdkafka, which "
          "batches many messages per Produce request), not by the broker or the proxy, so a ratio near 1 says the proxy "
          "does not limit produce throughput at this rate; the per-round spread shows the noise of the shared machine. "
          "The sync round trip is the per-request cost: two more loopback hops, the frame parsed and judged, the "
          "response relayed.",
          "", "Proxy request counters at the end (every request judged):", "", "```", requests, "```", "",
          "Enforcement check: produce to `other` through the proxy -> " + str(denied["first_error"]) + "; to `bench` -> "
          + ("OK" if not allowed["errors"] else str(allowed["first_error"])) + ".", "",
          "Problems: " + ("; ".join(problems) if problems else "none.")]
open(dest, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if problems else 0)
PY
