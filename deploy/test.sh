#!/usr/bin/env bash
# The whole test suite (unit, model conformance, and root-only lab/datapath
# tests that build their own namespaces), then one summary line over every
# test binary: "N passed, M failed, K skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Build first so the background tansu build (deploy/tansu.sh, started by
# install-deps) overlaps it, then wait for tansu before the lab tests run.
cargo test --workspace --release --no-run "$@" 2>&1 | tail -3
if ! bash deploy/tansu.sh wait; then
  # Counted as a skip in the summary, not a silent pass.
  echo "test result: ok. 0 passed; 0 failed; 1 ignored (Kafka lab: tansu missing, SKIP)" >> "$log"
fi
# Debian's kubectl 1.20 for the kubectl tests (k8s-watch/tests/kubectl.rs)
# beside the machine's own; they SKIP it when it cannot be fetched.
if kubectl120=$(bash deploy/debian-kubectl.sh); then
  export PORTCULLIS_KUBECTL_120=$kubectl120
fi
# One lab per machine: the suite holds the lock developers (and their
# helpers) take for labs by hand, so neither tears the other's lab down.
lock=()
if [ "$(id -u)" = 0 ] && command -v flock >/dev/null; then
  lock=(flock -o /run/portcullis-lab.lock)
fi
"${lock[@]}" cargo test --workspace --release --no-fail-fast "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
# The Kubernetes manifests, checked with kubernetes-validate (PyPI); counted
# as one test. The script skips (exit 0, "SKIP") if the tool can't install.
if out=$(bash deploy/kubernetes/validate.sh 2>&1); then
  echo "$out" | tail -1
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (deploy/kubernetes/validate.sh)" >> "$log"
else
  echo "$out"
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (deploy/kubernetes/validate.sh)" >> "$log"
  status=1
fi
# No two source files import each other, directly or in a circle (issue
# 14); counted as one test.
if out=$(python3 deploy/import-cycles.py 2>&1); then
  echo "$out" | tail -1
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (deploy/import-cycles.py)" >> "$log"
else
  echo "$out"
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (deploy/import-cycles.py)" >> "$log"
  status=1
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
