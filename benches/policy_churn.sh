#!/usr/bin/env bash
# Policy churn at cluster scale, in the lab (root), in one invocation: a
# deterministic cluster (POLICIES policies over PODS pods in NAMESPACES
# namespaces, LOCAL of them on the lab's node with real namespaces, the rest
# on other nodes), then for the agent under test and for the baseline, one
# after the other: cold start, EDITS flip-policy edits timed by probes and by
# the realization metric, REMOTE remote pod changes, agent RSS and
# `policy check` time. Writes benches/results/policy_churn.md.
#
#   usage: sudo bash benches/policy_churn.sh
#   env:   AGENT=path      agent under test (default target/release/portcullis)
#          BASELINE=path   baseline agent (default /work/baseline-bin/portcullis
#                          if present; BASELINE= skips it; skipped too when it is
#                          the same file as AGENT)
#          POLICIES=10000 PODS=5000 NAMESPACES=100 LOCAL=100 NODES=49 SEED=15
#          EDITS=200 REMOTE=200 COLD=3 CHECKS=3
#          BASE_EDITS, BASE_REMOTE, BASE_COLD   counts for the baseline (default:
#                          the same; lower them when one change takes seconds)
#          READY_SECS=600  how long `lab up` waits for the agent's first enforcement
#          OUT=benches/results/policy_churn.md
#          NOTE=text       a paragraph added to the report's preamble
#          RAW=/tmp/policy-churn-raw   where the raw figures of the run are kept
#   smoke: EDITS=4 REMOTE=6 COLD=1 CHECKS=1 POLICIES=300 PODS=200 NAMESPACES=10 LOCAL=10 \
#          OUT=/tmp/churn.md sudo -E bash benches/policy_churn.sh
#
# Every lab is serialised with flock on /run/portcullis-lab.lock; a trap
# removes the lab and stops what the script started, also on failure.
# Traffic stays inside the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ -z "${PC_CHURN_LOCKED:-}" ]; then
  # Build before taking the lab lock (another lab may be waiting on it).
  cargo build --release -q -p portcullis -p portcullis-benches --bin portcullis --bin policy_churn
  exec env PC_CHURN_LOCKED=1 flock -o /run/portcullis-lab.lock bash "$0" "$@"
fi

LAB=$ROOT/target/release/portcullis      # the lab CLI (placement-aware lab)
TOOL=$ROOT/target/release/policy_churn
AGENT=$(realpath "${AGENT:-$LAB}")
if [ -z "${BASELINE+x}" ] && [ -x /work/baseline-bin/portcullis ]; then BASELINE=/work/baseline-bin/portcullis; fi
BASELINE=${BASELINE:-}
POLICIES=${POLICIES:-10000}; PODS=${PODS:-5000}; NAMESPACES=${NAMESPACES:-100}; LOCAL=${LOCAL:-100}
NODES=${NODES:-49}; SEED=${SEED:-15}
EDITS=${EDITS:-200}; REMOTE=${REMOTE:-200}; COLD=${COLD:-3}; CHECKS=${CHECKS:-3}
BASE_EDITS=${BASE_EDITS:-$EDITS}; BASE_REMOTE=${BASE_REMOTE:-$REMOTE}; BASE_COLD=${BASE_COLD:-$COLD}
READY_SECS=${READY_SECS:-600}
OUT=${OUT:-benches/results/policy_churn.md}
STATE=/run/portcullis/lab
PIN=/run/portcullis/bpffs/lab
GEN=(--policies "$POLICIES" --pods "$PODS" --namespaces "$NAMESPACES" --local "$LOCAL" --nodes "$NODES" --seed "$SEED")

WORK=$(mktemp -d /tmp/policy-churn.XXXXXX)
SERVER=
RAW=${RAW:-/tmp/policy-churn-raw}
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  "$LAB" lab down >/dev/null 2>&1 || true
  # Keep the raw figures (JSON lines, agent logs, status) of the last run.
  rm -rf "$RAW" && mkdir -p "$RAW"
  cp -r "$WORK"/under-test "$WORK"/baseline "$WORK"/preamble.md "$WORK"/cluster/cluster.json "$RAW"/ 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
"$TOOL" gen --out "$WORK/cluster" "${GEN[@]}"
CLIENT_EP=$(jq -r .client.endpoint "$WORK/cluster/cluster.json")
SERVER_EP=$(jq -r .server.endpoint "$WORK/cluster/cluster.json")
SERVER_IP=$(jq -r .server.ip "$WORK/cluster/cluster.json")
FLIP_PORT=$(jq -r .flip_port "$WORK/cluster/cluster.json")
FLIP_FILE=$(jq -r .flip_file "$WORK/cluster/cluster.json")
CLIENT_NS=pc-pod$CLIENT_EP
SERVER_NS=pc-pod$SERVER_EP
now_ms() { date +%s%N | awk '{printf "%.3f\n", $1 / 1e6}'; }

# run_agent NAME BINARY EDITS REMOTE COLD: every measure for one agent, into $WORK/NAME.
run_agent() {
  local name=$1 bin=$2 edits=$3 remote=$4 cold=$5
  local out=$WORK/$name run=$WORK/run-$name
  mkdir -p "$out"
  cp -r "$WORK/cluster" "$run"
  echo "$bin ($(sha256sum "$bin" | cut -c1-12))" >"$out/label.txt"
  local notes=$out/notes.md
  echo "== $name: $bin" >&2
  export PORTCULLIS_LAB_AGENT=$bin PORTCULLIS_LAB_READY_SECS=$READY_SECS
  : >"$STATE/agent.log" 2>/dev/null || true
  local t0 t1
  t0=$(now_ms)
  # Only the lab's node is built: the other nodes' pods are addresses (a
  # cluster lab would build a namespace per pod of every node).
  if ! "$LAB" lab up --node lab-node --topology "$run/topology.yaml" --policy "$run/policies" >"$out/up.txt" 2>&1; then
    { echo "- \`lab up\` failed:"; echo '```'; tail -n 30 "$out/up.txt"; echo '```'; } >>"$notes"
    "$LAB" lab down >/dev/null 2>&1 || true
    return 0
  fi
  t1=$(now_ms)
  echo "- \`lab up\` (namespaces for $(ls /run/netns | grep -c '^pc-pod') local pods, then the agent until ready): $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", b-a}') ms." >>"$notes"
  ip netns exec "$SERVER_NS" "$LAB" lab serve --tcp "$FLIP_PORT" >/dev/null 2>&1 &
  SERVER=$!
  if ! "$TOOL" probe --netns "$CLIENT_NS" --dst "$SERVER_IP:$FLIP_PORT" --verdict allow --max-wait-s 10 >/dev/null; then
    echo "- the flip probe never connected after \`lab up\`; nothing measured." >>"$notes"
  else
    # Cold start: agent stopped, maps and program links unpinned (nothing
    # enforces), the flip policy in its deny version: the first probe that is
    # dropped shows the server's endpoint enforced; the agent's readiness
    # file (written after its first full enforcement) is awaited first.
    local i
    for i in $(seq "$cold"); do
      "$LAB" lab stop-agent >/dev/null
      find "$PIN" -mindepth 1 -delete 2>/dev/null || true
      cp "$run/flip-deny.yaml" "$run/policies/$FLIP_FILE"
      t0=$(now_ms)
      if ! "$LAB" lab restart-agent >/dev/null 2>"$out/cold.err"; then
        { echo "- cold start $i failed:"; echo '```'; tail -n 20 "$out/cold.err"; echo '```'; } >>"$notes"
        break
      fi
      "$TOOL" probe --netns "$CLIENT_NS" --dst "$SERVER_IP:$FLIP_PORT" --verdict deny --max-wait-s 60 >/dev/null
      t1=$(now_ms)
      awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", b-a}' >>"$out/cold_ms.txt"
    done
    cp "$run/flip-allow.yaml" "$run/policies/$FLIP_FILE"
    "$TOOL" probe --netns "$CLIENT_NS" --dst "$SERVER_IP:$FLIP_PORT" --verdict allow --max-wait-s 600 >/dev/null

    if [ "$edits" -gt 0 ]; then
      "$TOOL" edits --netns "$CLIENT_NS" --dst "$SERVER_IP:$FLIP_PORT" \
        --file "$run/policies/$FLIP_FILE" --allow "$run/flip-allow.yaml" --deny "$run/flip-deny.yaml" \
        --count "$edits" --max-wait-s 600 >"$out/edits.jsonl" 2>"$out/edits.err" \
        || { echo "- edits stopped early: $(tail -n 1 "$out/edits.err")" >>"$notes"; }
    fi
    if [ "$remote" -gt 0 ]; then
      local hash_before log_before
      # The last edit's state files may still be on their way.
      sleep 2
      hash_before=$(cat "$STATE/applied.hash" 2>/dev/null || echo none)
      log_before=$(wc -l <"$STATE/agent.log")
      "$TOOL" remote --topology "$run/topology.yaml" --count "$remote" "${GEN[@]}" \
        >"$out/remote.jsonl" 2>"$out/remote.err" \
        || { echo "- remote changes stopped early: $(tail -n 1 "$out/remote.err")" >>"$notes"; }
      if [ "$(jq -s 'map(select(.metric)) | length' "$out/remote.jsonl")" = 0 ]; then
        sleep 2
        echo "- remote pod changes: the agent exports no \`portcullis_policy_realization_seconds\`, so nothing times them. After $remote topology rewrites (and 2 s more): applied.hash $( [ "$(cat "$STATE/applied.hash" 2>/dev/null || echo none)" = "$hash_before" ] && echo unchanged || echo changed), $(( $(wc -l <"$STATE/agent.log") - log_before )) new agent log lines." >>"$notes"
      fi
    fi
  fi
  local pid
  pid=$(cat "$STATE/agent.pid" 2>/dev/null || echo 0)
  if [ -r "/proc/$pid/status" ]; then
    awk '/^VmRSS/ {printf "%.1f\n", $2 / 1024}' "/proc/$pid/status" >>"$out/rss_mib.txt"
    echo "- agent memory after the churn: $(awk '/^VmRSS|^VmHWM/ {printf "%s %.1f MiB; ", $1, $2 / 1024}' "/proc/$pid/status")" >>"$notes"
  fi
  if "$bin" status --output json --state-dir "$STATE" >"$out/status.json" 2>/dev/null; then
    echo "- \`status\`: $(jq -r '"endpoints \(.endpoints), endpoint failures \(.endpoint_failures | length), apply errors \(.apply_errors | length), ipcache entries left out \(.ipcache_left_out)"' "$out/status.json")." >>"$notes"
  fi
  local log=$out/agent.log
  sed 's/\x1b\[[0-9;]*m//g' "$STATE/agent.log" >"$log" 2>/dev/null || true
  echo "- agent log: $(wc -l <"$log") lines, $(grep -c ' WARN ' "$log" || true) warnings; most frequent messages: $(grep -E ' (WARN|ERROR) ' "$log" | sed -E 's/^.*(WARN|ERROR) [^ ]+: ([^=]*[^ =])( [a-z_]+=.*)?$/\1 \2/' | sort | uniq -c | sort -rn | head -n 3 | sed -E 's/^ *([0-9]+) (.*)$/\2 (\1x)/' | paste -sd ';' -)." >>"$notes"
  kill "$SERVER" 2>/dev/null || true; SERVER=
  "$LAB" lab down >/dev/null
  # `policy check` of the whole set (no lab needed).
  for i in $(seq "$CHECKS"); do
    t0=$(now_ms)
    "$bin" policy check "$WORK/cluster/policies" >/dev/null 2>"$out/check.err" \
      || echo "- \`policy check\` failed: $(tail -n 1 "$out/check.err")" >>"$notes"
    t1=$(now_ms)
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", b-a}' >>"$out/check_ms.txt"
  done
  unset PORTCULLIS_LAB_AGENT PORTCULLIS_LAB_READY_SECS
}

run_agent under-test "$AGENT" "$EDITS" "$REMOTE" "$COLD"
BASE_DIR=
if [ -n "$BASELINE" ]; then
  BASELINE=$(realpath "$BASELINE")
  if cmp -s "$BASELINE" "$AGENT"; then
    echo "baseline $BASELINE is the agent under test: run once" >&2
  else
    run_agent baseline "$BASELINE" "$BASE_EDITS" "$BASE_REMOTE" "$BASE_COLD"
    BASE_DIR=$WORK/baseline
  fi
fi

cat >"$WORK/preamble.md" <<EOF
$(date -u '+%Y-%m-%d %H:%M') UTC, one invocation of \`benches/policy_churn.sh\` (root, in the lab).
Machine: $(nproc) vCPU ($(uname -m)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r).
Load average (1/5/15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other sessions' builds and tests share the machine).

Cluster (\`policy_churn gen\`, seed $SEED): $POLICIES policies (NetworkPolicy and CiliumNetworkPolicy: L3 selectors, some across
namespaces, L4 ports and ranges, HTTP rules, CIDR sets with \`except\`, deny rules; one file per policy), $PODS pods in $NAMESPACES
namespaces, $LOCAL on the lab's node (real pod namespaces), the rest on $NODES other nodes (\`node:\`, \`nodes:\`).
Counts: under test $EDITS edits, $REMOTE remote changes, $COLD cold starts; baseline $BASE_EDITS / $BASE_REMOTE / $BASE_COLD; $CHECKS \`policy check\` runs each.

- **Cold start**: agent stopped, its pinned maps and links removed, the flip policy in its deny version; from
  \`lab restart-agent\` (which waits for the agent's readiness file, polled every 50 ms) to the first TCP probe from the client
  pod that is dropped.
- **Policy edit**: the flip policy (the server pod's ingress from the client pod on 8080, or on 8081 only) is replaced
  (write + rename), alternately allowing and dropping the probe. Write-to-probe: from the rename to the start of the first
  probe (TCP connect, 20 ms timeout, back to back, from the client pod's namespace) that sees the new verdict (a connect:
  the earliest of 4 probers started 5 ms apart; a drop: the first of 3 dropped probes in a row). Realization:
  the agent's \`portcullis_policy_realization_seconds\` (sum and count deltas around each edit).
- **Remote pod change**: the topology file is replaced with one remote pod added (labels no other pod has), removed, or a
  remote pod relabelled to a new label value; timed by the same histogram (an agent without it: not timed).
- **RSS**: VmRSS of the agent after the churn. **policy check**: wall time of \`portcullis policy check DIR\`.
${NOTE:+
$NOTE}
EOF
mkdir -p "$(dirname "$OUT")"
"$TOOL" report --under-test "$WORK/under-test" ${BASE_DIR:+--baseline "$BASE_DIR"} --preamble "$WORK/preamble.md" --out "$OUT"
