#!/usr/bin/env bash
# The tansu Kafka-API broker for the Kafka lab tests, built once and cached.
#
#   deploy/tansu.sh start   # install-deps: nothing if $TANSU_ROOT/bin/tansu is
#                           # version $TANSU_VERSION, else start
#                           # `cargo install --locked tansu` in the background
#                           # (own CARGO_TARGET_DIR, so it neither waits for nor
#                           # blocks the workspace build's lock)
#   deploy/tansu.sh wait    # test.sh, after the workspace build: wait for that
#                           # build; exit 0 when tansu is installed, 1 (with the
#                           # log's tail and "SKIP") when it is not
#
# A cold build measured 1284 s (21 min) wall, nice'd, on 2 cores shared with a fuzz run and
# other builds (registry sources already downloaded); started before the workspace
# build, most of it overlaps it. The build's log, exit status and duration are
# in $TANSU_STATE.
set -uo pipefail
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
TANSU_ROOT=${TANSU_ROOT:-$HOME/.cargo}
TANSU_STATE=${TANSU_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/tansu}
bin="$TANSU_ROOT/bin/tansu"

installed() {
  [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "tansu $TANSU_VERSION" ]
}

case "${1:-}" in
start)
  if installed; then
    echo "tansu $TANSU_VERSION: already installed ($bin)"
    exit 0
  fi
  mkdir -p "$TANSU_STATE"
  if [ -f "$TANSU_STATE/pid" ] && kill -0 "$(cat "$TANSU_STATE/pid")" 2>/dev/null; then
    echo "tansu $TANSU_VERSION: build already running (pid $(cat "$TANSU_STATE/pid"))"
    exit 0
  fi
  if ! command -v cargo >/dev/null; then
    echo "note: no cargo; the Kafka lab tests will SKIP" >&2
    exit 0
  fi
  rm -f "$TANSU_STATE/rc" "$TANSU_STATE/seconds"
  # setsid: the build outlives this script; nice: the workspace build and
  # tests come first.
  setsid nohup bash -c '
    start=$(date +%s)
    CARGO_TARGET_DIR="$1/target" nice cargo install --locked tansu \
      --version "$2" --features dynostore --root "$3" >"$1/log" 2>&1
    rc=$?
    echo $(( $(date +%s) - start )) >"$1/seconds"
    echo $rc >"$1/rc"
  ' _ "$TANSU_STATE" "$TANSU_VERSION" "$TANSU_ROOT" </dev/null >/dev/null 2>&1 &
  echo $! >"$TANSU_STATE/pid"
  echo "tansu $TANSU_VERSION: building in the background (log: $TANSU_STATE/log)"
  ;;
wait)
  if ! installed && [ -f "$TANSU_STATE/pid" ]; then
    pid=$(cat "$TANSU_STATE/pid")
    if kill -0 "$pid" 2>/dev/null; then
      echo "waiting for the tansu build (pid $pid, log $TANSU_STATE/log) ..."
      while kill -0 "$pid" 2>/dev/null; do sleep 5; done
    fi
    if [ -f "$TANSU_STATE/seconds" ]; then
      echo "tansu build: exit $(cat "$TANSU_STATE/rc" 2>/dev/null || echo '?') after $(cat "$TANSU_STATE/seconds") s"
    fi
  fi
  if installed; then
    echo "tansu $TANSU_VERSION: $bin"
    exit 0
  fi
  echo "SKIP: tansu $TANSU_VERSION is not installed at $bin; the Kafka lab tests will skip" >&2
  [ -f "$TANSU_STATE/log" ] && tail -20 "$TANSU_STATE/log" >&2
  exit 1
  ;;
*)
  echo "usage: $0 start|wait" >&2
  exit 2
  ;;
esac
