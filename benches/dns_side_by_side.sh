#!/usr/bin/env bash
# DNS through the portcullis DNS proxy vs direct to the server, in one run, in
# the lab (root): dnsperf from a client pod to knot in a dns pod, alternating
# rounds under two policies, medians; plus the answer-hold time of toFQDNs
# learning from the agent's /metrics. Writes benches/results/dns_side_by_side.md.
#   usage: sudo bash benches/dns_side_by_side.sh [seconds-per-run] [rounds] [fixed-qps] [low-qps] [fresh-names] [fresh-qps]
#   (defaults 10 s, 5 rounds, 50000, 5000, 500, 100: about 7 min; KEEP_WORK=1 keeps the raw outputs)
#
# direct:        CNP allows client -> dns pod on 53/UDP+TCP, no L7 rules (kernel only).
# through proxy: the same with rules.dns matchPattern "*.bench.example" (redirected to
#                the DNS proxy) plus toFQDNs matchPattern "*.bench.example" on 443/TCP,
#                so every answer is handed to the agent and held until learned.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-5}
FIXED_QPS=${3:-50000}
LOW_QPS=${4:-5000}
FRESH=${5:-500}
FRESH_QPS=${6:-100}
NAMES=1000
LAB=/run/portcullis/lab

for tool in knotd dnsperf curl; do
  command -v "$tool" >/dev/null || apt-get install -y -q knot dnsperf curl >/dev/null
done
if ip netns list | grep -q '^pc-'; then
  echo "a lab is up (pc- namespaces exist): wait for it to go down" >&2; exit 1
fi
cargo build --release -q -p portcullis
BIN=$PWD/target/release/portcullis
WORK=$(mktemp -d)
chmod 755 "$WORK"
cleanup() {
  [ -n "${PERF:-}" ] && kill "$PERF" 2>/dev/null || true
  [ -n "${PROF:-}" ] && kill "$PROF" 2>/dev/null || true
  [ -n "${KNOT:-}" ] && kill "$KNOT" 2>/dev/null || true
  "$BIN" lab down >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/topology.yaml" <<'EOF'
namespaces:
  - name: bench
pods:
  - {namespace: bench, name: client, labels: {app: client}, ips: [10.200.50.10]}
  - {namespace: bench, name: dns, labels: {k8s-app: kube-dns}, ips: [10.200.50.53],
     ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53, protocol: TCP}]}
EOF
POLICY_HEAD='apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench-dns, namespace: bench}
spec:
  endpointSelector:
    matchLabels: {app: client}
  egress:
  - toEndpoints:
    - matchLabels: {k8s-app: kube-dns}
    toPorts:
    - ports:
      - {port: "53", protocol: UDP}
      - {port: "53", protocol: TCP}'
printf '%s\n' "$POLICY_HEAD" >"$WORK/direct.yaml"
printf '%s\n' "$POLICY_HEAD" '      rules:
        dns:
        - matchPattern: "*.bench.example"
  - toFQDNs:
    - matchPattern: "*.bench.example"
    toPorts:
    - ports:
      - {port: "443", protocol: TCP}' >"$WORK/proxy.yaml"
cp "$WORK/direct.yaml" "$WORK/policy.yaml"

# Zone: NAMES hostN records (TTL 60, distinct world addresses), a wildcard,
# and per-round never-queried names for the fresh pass (maps change on each).
python3 - "$WORK" "$NAMES" "$ROUNDS" "$FRESH" <<'PY'
import sys
work, names, rounds, fresh = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
z = ["$TTL 60", "@ SOA ns.bench.example. hostmaster.bench.example. 1 3600 600 86400 60",
     "@ NS ns", "ns A 10.204.0.53", "* 60 A 10.204.0.1"]
z += [f"host{i} 60 A 10.202.{i // 256}.{i % 256}" for i in range(names)]
for r in range(rounds + 1):
    z += [f"r{r}-fresh{i} 60 A 10.{210 + r}.{i // 256}.{i % 256}" for i in range(fresh)]
open(f"{work}/bench.example.zone", "w").write("\n".join(z) + "\n")
open(f"{work}/hosts.q", "w").write("".join(f"host{i}.bench.example A\n" for i in range(names)))
for r in range(rounds + 1):
    open(f"{work}/fresh{r}.q", "w").write("".join(f"r{r}-fresh{i}.bench.example A\n" for i in range(fresh)))
PY
cat >"$WORK/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: [ "0.0.0.0@53" ]
    udp-workers: 1
    tcp-workers: 1
database:
    storage: "$WORK/knot"
zone:
  - domain: "bench.example."
    file: "$WORK/bench.example.zone"
EOF
mkdir -p "$WORK/knot"

# The bench sends tens of thousands of queries a second from one pod: lift
# the per-source UDP rate limit (default 5000/s) for it.
"$BIN" lab up --topology "$WORK/topology.yaml" --policy "$WORK/policy.yaml" --agent-arg=--dns-udp-qps-per-source --agent-arg=0 >/dev/null
ns_of() { python3 -c 'import json,sys; print(dict(json.load(open(sys.argv[1]))["pods"])[sys.argv[2]])' "$LAB/state.json" "$1"; }
CLIENT_NS=$(ns_of bench/client)
DNS_NS=$(ns_of bench/dns)
ip netns exec "$DNS_NS" knotd -c "$WORK/knot.conf" >"$WORK/knot.log" 2>&1 &
KNOT=$!
AGENT=$(cat "$LAB/agent.pid")

# Helpers: the agent's applied-policy hash (FNV-1a as policy_model::load::content_hash),
# /metrics snapshots, per-thread CPU of the agent.
cat >"$WORK/h.py" <<'PY'
import sys, os, json, re, time
cmd = sys.argv[1]
if cmd == "hash":
    M = (1 << 64) - 1
    def fnv(h, data):
        for b in data:
            h = ((h ^ b) * 0x100000001b3) & M
        return h
    f = fnv(0xcbf29ce484222325, open(sys.argv[2], "rb").read())
    print(f"{fnv(0xcbf29ce484222325, f.to_bytes(8, 'little') + bytes([0xff])):016x}")
elif cmd == "rcvbuf":  # SO_RCVBUFFORCE on every UDP socket of a process (via pidfd_getfd)
    import ctypes, socket
    pid, size = int(sys.argv[2]), int(sys.argv[3])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd, n = os.pidfd_open(pid), 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        local = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
        if local < 0:
            continue
        s = socket.socket(fileno=local)
        try:
            if s.type == socket.SOCK_DGRAM:
                s.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
                n += 1
        finally:
            s.close()
    print(n)
elif cmd == "drops":  # UDP receive-buffer drops (v4 + v6) per network namespace
    import subprocess
    out = {}
    for tag, ns in zip(("client", "server", "node"), sys.argv[2:]):
        snmp = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6"],
                              capture_output=True, text=True).stdout.splitlines()
        n = 0
        for a, b in zip(snmp, snmp[1:]):
            if a.startswith("Udp:") and b.startswith("Udp:"):
                n += int(dict(zip(a.split()[1:], b.split()[1:])).get("RcvbufErrors", 0))
        n += sum(int(l.split()[1]) for l in snmp if l.startswith("Udp6RcvbufErrors"))
        out[tag] = n
    print(json.dumps(out))
elif cmd == "cpu":  # per thread name: utime+stime ticks of the agent, and of knotd
    out = {}
    for pid, tag in ((sys.argv[2], "agent"), (sys.argv[3], "knotd")):
        for t in os.listdir(f"/proc/{pid}/task"):
            s = open(f"/proc/{pid}/task/{t}/stat").read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            f = s[s.rindex(")") + 2:].split()
            key = f"{tag}:{re.sub(r'[-_]?[0-9]+$', '', comm)}"
            out[key] = out.get(key, 0) + int(f[11]) + int(f[12])
    out["_t"] = time.time()
    print(json.dumps(out))
PY
apply() {
  cp "$WORK/$1.yaml" "$WORK/next.yaml" && mv "$WORK/next.yaml" "$WORK/policy.yaml"
  local want i; want=$(python3 "$WORK/h.py" hash "$WORK/policy.yaml")
  for i in $(seq 1000); do
    [ "$(cat "$LAB/applied.hash" 2>/dev/null)" = "$want" ] && { sleep 0.2; return; }
    sleep 0.01
  done
  echo "policy $1 not applied within 10 s" >&2; exit 1
}
metrics() { ip netns exec pc-node curl -s http://127.0.0.1:9876/metrics; }
cpu() { python3 "$WORK/h.py" cpu "$AGENT" "$KNOT"; }
drops() { python3 "$WORK/h.py" drops "$CLIENT_NS" "$DNS_NS" pc-node; }
# Every dnsperf run binds its own fresh client ports (-x, below the ephemeral
# range the proxy's upstream sockets use). A client tuple that is already in the
# datapath's conntrack keeps its old path: a direct run's entry is not
# redirected after the switch, and the proxy's transparent upstream sockets
# (client address, ephemeral port) leave PROXY_UPSTREAM entries that a new client
# flow from the same port matches as established, so it bypasses the proxy.
PORT=10000
load() {  # load NAME ARGS...: dnsperf from the client pod; keeps output + CPU + metrics before/after
  local name=$1; shift
  PORT=$((PORT + 16))
  metrics >"$WORK/out/$name.m0"; cpu >"$WORK/out/$name.c0"; drops >"$WORK/out/$name.d0"
  ip netns exec "$CLIENT_NS" dnsperf -s 10.200.50.53 -t 2 -x "$PORT" "$@" >"$WORK/out/$name.txt" 2>&1 &
  PERF=$!; wait "$PERF" || true; PERF=
  cpu >"$WORK/out/$name.c1"; metrics >"$WORK/out/$name.m1"; drops >"$WORK/out/$name.d1"
}
mkdir -p "$WORK/out"
# knot sets no receive buffer of its own: with the default (net.core.rmem_default,
# 208 KiB, about 270 queries) its socket overflows whenever knot is off the CPU
# for a few ms on this shared 2-vCPU machine, direct or through the proxy (0.2-0.8 %
# loss at 50k/s either way). A server meant for 50k qps gets a bigger one: 4 MiB.
for i in $(seq 50); do
  [ "$(python3 "$WORK/h.py" rcvbuf "$KNOT" 4194304)" -ge 1 ] 2>/dev/null && break
  sleep 0.1
done
for i in $(seq 50); do
  ip netns exec "$CLIENT_NS" dig +short +time=1 +tries=1 @10.200.50.53 host1.bench.example 2>/dev/null | grep -q 10.202 && break
  sleep 0.2
done

# Sanity: the proxy policy sends DNS through the proxy (its query counter moves),
# the direct one does not. Then the warm-up: first learn of the NAMES hostN names.
apply proxy
load warmup -d "$WORK/hosts.q" -n 1 -c 1 -Q 500
apply direct
load sanity_direct -d "$WORK/hosts.q" -n 1 -c 1 -Q 2000

max_args=(-d "$WORK/hosts.q" -l "$SECS" -c 4 -T 2 -q 1000)
# No -v at the target rate: printing a line per query costs dnsperf about as much
# CPU as the proxy has left on this machine (p50/p99 come from the -v runs at LOW_QPS).
fixed_args=(-d "$WORK/hosts.q" -l "$SECS" -c 4 -T 2 -q 1000 -Q "$FIXED_QPS")
low_args=(-d "$WORK/hosts.q" -l "$SECS" -c 4 -T 2 -q 1000 -Q "$LOW_QPS" -v)
for r in $(seq "$ROUNDS"); do
  order=(direct proxy); [ $((r % 2)) -eq 0 ] && order=(proxy direct)
  for mode in "${order[@]}"; do
    apply "$mode"
    load "r$r-$mode-max" "${max_args[@]}"
    load "r$r-$mode-fixed" "${fixed_args[@]}"
    load "r$r-$mode-low" "${low_args[@]}"
  done
  apply proxy
  load "r$r-fresh" -d "$WORK/fresh$r.q" -n 1 -c 1 -Q "$FRESH_QPS" -v
  echo "round $r/$ROUNDS done" >&2
done
# Where the agent spends its time: one extra through-proxy max run under perf (not in the table).
if command -v perf >/dev/null; then
  apply proxy
  perf record -q -g -p "$AGENT" -o "$WORK/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
  PROF=$!
  ip netns exec "$CLIENT_NS" dnsperf -s 10.200.50.53 -t 2 -x $((PORT + 16)) "${max_args[@]}" >/dev/null 2>&1 || true
  wait "$PROF" || true; PROF=
  perf report -i "$WORK/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -25 >"$WORK/out/profile.txt" || true
  perf report -i "$WORK/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -8 >"$WORK/out/profile_dso.txt" || true
fi

python3 - "$WORK/out" "$SECS" "$ROUNDS" "$FIXED_QPS" "$FRESH" "$FRESH_QPS" "$NAMES" "$LOW_QPS" <<'PY'
import sys, re, json, glob, os, statistics, datetime, platform
out, secs, rounds, fixed_qps, fresh, fresh_qps, names, low_qps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
KINDS = {"max": "max", "fixed": f"fixed {fixed_qps:,}/s", "low": f"fixed {low_qps:,}/s"}
HZ = os.sysconf("SC_CLK_TCK")

def perf(name):
    t = open(f"{out}/{name}.txt").read()
    g = lambda pat, d=0.0: float(m.group(1)) if (m := re.search(pat, t)) else d
    r = {"sent": g(r"Queries sent:\s+(\d+)"), "done": g(r"Queries completed:\s+(\d+)"),
         "lost": g(r"Queries lost:\s+(\d+)"), "qps": g(r"Queries per second:\s+([\d.]+)"),
         "avg_ms": g(r"Average Latency \(s\):\s+([\d.]+)") * 1e3,
         "max_ms": g(r"Average Latency \(s\):.*max ([\d.]+)") * 1e3}
    r["loss"] = 100.0 * r["lost"] / r["sent"] if r["sent"] else 0.0
    lat = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", t, re.M))
    if lat:
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
        r["p50_ms"], r["p99_ms"] = q(0.50), q(0.99)
    r["rcodes"] = re.search(r"Response codes:\s+(.*)", t).group(1) if "Response codes" in t else ""
    return r

def metrics(path):
    b, s = {}, {}
    for line in open(path):
        if m := re.match(r'portcullis_proxy_dns_learn_hold_seconds_bucket\{le="([^"]+)"\} (\S+)', line):
            b[float(m.group(1))] = float(m.group(2))
        elif m := re.match(r'(portcullis_proxy_dns_learn_timeouts_total|portcullis_proxy_dns_learn_hold_seconds_(?:count|sum)) (\S+)', line):
            s[m.group(1)] = float(m.group(2))
        elif m := re.match(r'portcullis_proxy_dns_queries_total\{(.*)\} (\S+)', line):
            s["q:" + m.group(1)] = float(m.group(2))
    return b, s

def mdelta(names_):
    buckets, scal = {}, {}
    for n in names_:
        (b0, s0), (b1, s1) = metrics(f"{out}/{n}.m0"), metrics(f"{out}/{n}.m1")
        for k in b1: buckets[k] = buckets.get(k, 0) + b1[k] - b0.get(k, 0)
        for k in s1: scal[k] = scal.get(k, 0) + s1[k] - s0.get(k, 0)
    return buckets, scal

def hist_q(buckets, p):
    """Quantile from cumulative buckets, linear interpolation inside the bucket (0 as the first lower bound)."""
    les = sorted(buckets); total = buckets[les[-1]] if les else 0
    if total <= 0: return None
    want, lo, clo = p * total, 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= want:
            if le == float("inf"): return lo  # beyond the last finite bound
            return lo + (le - lo) * ((want - clo) / (c - clo) if c > clo else 1.0)
        lo, clo = le, c
    return lo

def drops(name):
    try:
        d0, d1 = json.load(open(f"{out}/{name}.d0")), json.load(open(f"{out}/{name}.d1"))
    except (OSError, ValueError):
        return None
    return {k: d1[k] - d0.get(k, 0) for k in d1}

def cpu(name):
    c0, c1 = json.load(open(f"{out}/{name}.c0")), json.load(open(f"{out}/{name}.c1"))
    return {k: (c1[k] - c0.get(k, 0)) / HZ for k in c1 if k != "_t"}, c1["_t"] - c0["_t"]

med = statistics.median
rows = {}
for mode in ("direct", "proxy"):
    for kind in KINDS:
        rows[mode, kind] = [perf(f"r{r}-{mode}-{kind}") for r in range(1, rounds + 1)]
def m(mode, kind, k):
    v = [x[k] for x in rows[mode, kind] if k in x]
    return med(v) if v else float("nan")

def proxied_pct(mode, kind):
    v = []
    for r in range(1, rounds + 1):
        n = f"r{r}-{mode}-{kind}"
        (_, s0), (_, s1) = metrics(f"{out}/{n}.m0"), metrics(f"{out}/{n}.m1")
        q = sum(s1[k] - s0.get(k, 0) for k in s1 if k.startswith("q:"))
        sent = perf(n)["sent"]
        v.append(100.0 * q / sent if sent else 0.0)
    return med(v)

def agent_us_per_q(mode, kind):
    v = []
    for r in range(1, rounds + 1):
        c, _ = cpu(f"r{r}-{mode}-{kind}")
        done = perf(f"r{r}-{mode}-{kind}")["done"]
        v.append(sum(x for k, x in c.items() if k.startswith("agent:")) / done * 1e6 if done else 0)
    return med(v)

now = datetime.datetime.now(datetime.timezone.utc)
L = ["# DNS side by side: through the portcullis DNS proxy vs direct", "",
     f"{now:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU ({platform.machine()}, shared with other sessions), lab namespaces "
     f"on one machine: dnsperf 2.10 in `bench/client` (10.200.50.10) -> knot 3.2 (1 UDP worker) in `bench/dns` (10.200.50.53), "
     f"zone of {names} `hostN.bench.example` A records (TTL 60, distinct world addresses) plus `*.bench.example`. "
     f"{rounds} alternating rounds (order swapped every other round), medians. Every run: {secs} s, `-c 4 -T 2 -q 1000 -t 2`; "
     f"max = unlimited rate; fixed = `-Q {fixed_qps}` (the target rate) and `-Q {low_qps}`; the `-Q {low_qps}` runs with `-v` "
     "(per-query latency for p50/p99; not at the target rate, where printing a line per query would cost dnsperf much of the CPU the proxy needs). Latency is dnsperf's: send to answer, in the client pod. "
     "knot's socket gets a 4 MiB receive buffer (SO_RCVBUFFORCE): it sets none itself, and with the default (208 KiB) it "
     "drops queries whenever it is off the CPU for a few ms, direct or through the proxy. Drops: the kernel's UDP "
     "RcvbufErrors in the client pod, the server pod and the node (the proxy's sockets), summed over the rounds.", "",
     "- **direct**: CNP allows client -> dns pod on 53/UDP+TCP without L7 rules (kernel only).",
     "- **through proxy**: same plus `rules.dns: [{matchPattern: \"*.bench.example\"}]` and a `toFQDNs: [{matchPattern: \"*.bench.example\"}]` "
     "egress rule on 443/TCP: every answer goes to the agent's learner and is held until acknowledged.", "",
     "| run | policy | median qps | loss % | avg ms | p50 ms | p99 ms | max ms | agent CPU µs/query | % seen by the proxy | UDP receive-buffer drops client / server / node | qps per round |",
     "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
def drops_sum(mode, kind):
    ds = [drops(f"r{r}-{mode}-{kind}") for r in range(1, rounds + 1)]
    if any(d is None for d in ds): return "—"
    return " / ".join(f"{sum(d.get(k, 0) for d in ds):,}" for k in ("client", "server", "node"))
for kind in KINDS:
    for mode in ("direct", "proxy"):
        rs = rows[mode, kind]
        p = lambda k: f"{m(mode, kind, k):.3f}" if any(k in x for x in rs) else "—"
        L.append(f"| {KINDS[kind]} | {'through proxy' if mode == 'proxy' else 'direct'} | {m(mode, kind, 'qps'):,.0f} | "
                 f"{m(mode, kind, 'loss'):.3f} | {p('avg_ms')} | {p('p50_ms')} | {p('p99_ms')} | {p('max_ms')} | "
                 f"{agent_us_per_q(mode, kind):.1f} | {proxied_pct(mode, kind):.1f} | {drops_sum(mode, kind)} | " + ", ".join(f"{x['qps']:,.0f}" for x in rs) + " |")
ratio = lambda kind, k: m("proxy", kind, k) / m("direct", kind, k) if m("direct", kind, k) else float("nan")
L += ["", "Ratios through proxy / direct (medians): "
      f"max qps **{ratio('max', 'qps'):.3f}**, max-run avg latency {ratio('max', 'avg_ms'):.2f}; "
      f"fixed-rate qps {ratio('fixed', 'qps'):.3f}, avg latency {ratio('fixed', 'avg_ms'):.2f}; "
      f"at {low_qps:,}/s: qps {ratio('low', 'qps'):.3f}, avg latency {ratio('low', 'avg_ms'):.2f}, "
      f"p50 {ratio('low', 'p50_ms'):.2f}, p99 {ratio('low', 'p99_ms'):.2f}. "
      f"Loss: direct max {m('direct', 'max', 'loss'):.3f} %, proxy max {m('proxy', 'max', 'loss'):.3f} %, "
      f"direct fixed {m('direct', 'fixed', 'loss'):.3f} %, proxy fixed {m('proxy', 'fixed', 'loss'):.3f} %, "
      f"direct {low_qps:,}/s {m('direct', 'low', 'loss'):.3f} %, proxy {low_qps:,}/s {m('proxy', 'low', 'loss'):.3f} %."]

# Hold time from /metrics bucket deltas.
cats = [("repeated names, max runs (maps unchanged)", [f"r{r}-proxy-max" for r in range(1, rounds + 1)]),
        (f"repeated names, fixed {fixed_qps:,}/s runs", [f"r{r}-proxy-fixed" for r in range(1, rounds + 1)]),
        (f"repeated names, fixed {low_qps:,}/s runs", [f"r{r}-proxy-low" for r in range(1, rounds + 1)]),
        (f"first learn of the {names} hostN names (warm-up, 500 qps, once)", ["warmup"]),
        (f"all-new names ({fresh} per round, once each, {fresh_qps} qps)", [f"r{r}-fresh" for r in range(1, rounds + 1)])]
L += ["", "## Answer-hold time (toFQDNs learning)", "",
      "From `portcullis_proxy_dns_learn_hold_seconds` (buckets 50 µs x 2^k) and `portcullis_proxy_dns_learn_timeouts_total` "
      "on the agent's /metrics, before/after each run, deltas summed over the rounds. p50/p99 are interpolated linearly "
      "within a bucket (so they are estimates at bucket resolution: 50, 100, 200, 400, 800 µs, 1.6 ms, ...).", "",
      "| queries | proxied queries | answers held | p50 ms | p99 ms | mean ms | learn timeouts (100 ms) | fresh-pass p50 / p99 client latency ms |",
      "|---|---:|---:|---:|---:|---:|---:|---|"]
hold = {}
for label, ns in cats:
    b, s = mdelta(ns)
    cnt = s.get("portcullis_proxy_dns_learn_hold_seconds_count", 0)
    p50, p99 = hist_q(b, 0.5), hist_q(b, 0.99)
    hold[label] = (p50, p99)
    mean = s.get("portcullis_proxy_dns_learn_hold_seconds_sum", 0) / cnt * 1e3 if cnt else float("nan")
    lat = ""
    if "fresh" in ns[0]:
        ps = [perf(n) for n in ns]
        lat = f"{med(x.get('p50_ms', float('nan')) for x in ps):.3f} / {med(x.get('p99_ms', float('nan')) for x in ps):.3f}"
    f = lambda v: f"{v * 1e3:.3f}" if v is not None else "—"
    pq_ = sum(v for k, v in s.items() if k.startswith("q:"))
    L.append(f"| {label} | {pq_:,.0f} | {cnt:,.0f} | {f(p50)} | {f(p99)} | {mean:.3f} | {s.get('portcullis_proxy_dns_learn_timeouts_total', 0):,.0f} | {lat} |")

# Where the CPU goes during the proxied max runs: per thread name.
acc, tot = {}, 0.0
for r in range(1, rounds + 1):
    c, dt = cpu(f"r{r}-proxy-max"); tot += dt
    for k, v in c.items(): acc[k] = acc.get(k, 0) + v
L += ["", "CPU during the through-proxy max runs (% of one core, per thread name; `agent:` is the portcullis agent "
      "process: tokio workers run the DNS proxy, the main thread runs the agent loop that learns names and enforces): "
      + ", ".join(f"{k} {100 * v / tot:.0f}%" for k, v in sorted(acc.items(), key=lambda x: -x[1]) if v > 0)]

# Sanity: proxied runs went through the proxy, direct ones did not.
def qcount(ns):
    _, s = mdelta(ns)
    return sum(v for k, v in s.items() if k.startswith("q:"))
dq = qcount([f"r{r}-direct-{k}" for r in range(1, rounds + 1) for k in KINDS])
pq = qcount([f"r{r}-proxy-{k}" for r in range(1, rounds + 1) for k in KINDS])
pdone = sum(x["done"] for k in KINDS for x in rows["proxy", k])
L += ["", f"Sanity: the proxy's `dns_queries_total` grew by {dq:,.0f} during the direct runs and by {pq:,.0f} during the "
      f"through-proxy runs (dnsperf completed {pdone:,.0f} there). Response codes, one proxied max run: "
      f"{rows['proxy', 'max'][0]['rcodes']}"]

# Targets.
fq = m("proxy", "fixed", "qps"); fl = m("proxy", "fixed", "loss"); mq = m("proxy", "max", "qps")
worst_p99 = max((v[1] for v in hold.values() if v[1] is not None), default=None)
yes = lambda ok: "**met**" if ok else "**not met**"
L += ["", "## Targets", "", "| target | measured | |", "|---|---|---|",
      f"| >= 50k qps through the proxy with 0 loss | fixed {fixed_qps}: {fq:,.0f} qps, {fl:.3f} % loss; max: {mq:,.0f} qps, "
      f"{m('proxy', 'max', 'loss'):.3f} % loss | {yes(fq >= 50000 * 0.99 and fl == 0 and fixed_qps >= 50000)} |"]
for label, (p50, p99) in hold.items():
    L.append(f"| hold p99 <= 1 ms ({label}) | {p99 * 1e3:.3f} ms | {yes(p99 is not None and p99 <= 0.001)} |"
             if p99 is not None else f"| hold p99 <= 1 ms ({label}) | no samples | |")
if os.path.exists(f"{out}/profile.txt") and open(f"{out}/profile.txt").read().strip():
    L += ["", "## Profile", "", f"`perf record -g -p <agent>` during one extra through-proxy max run ({secs} s, not in the table); "
          "top entries of `perf report --no-children --sort comm,dso,sym` (self time, % of the agent's samples):", "", "```"]
    L += [l.rstrip() for l in open(f"{out}/profile.txt")] + ["```"]
    if os.path.exists(f"{out}/profile_dso.txt"):
        L += ["", "By thread and object (`--sort comm,dso`):", "", "```"] + [l.rstrip() for l in open(f"{out}/profile_dso.txt")] + ["```"]
text = "\n".join(L) + "\n"
open("benches/results/dns_side_by_side.md", "w").write(text)
print(text)
PY
