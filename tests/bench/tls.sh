#!/bin/bash
# tests/bench/tls.sh BUILD_DIR: TLS side by side — lb-dataplane, HAProxy and
# NGINX terminating TLS with the same ECDSA P-256 certificate in front of the
# same origin (2 threads/workers each, TLS 1.2 and 1.3 offered, tickets on).
# Prints, medians of ROUNDS interleaved rounds of DURATION seconds:
#   ka         wrk keep-alive requests/s over TLS (2 threads, CONNS connections)
#   resumed    lb-tlsload --resume: a new connection per request, each resuming
#              the session of the one before (a TLS 1.3 ticket is used once,
#              so this needs the server to hand out fresh ones)
#   full       lb-tlsload: a full handshake (no session offered) per request
# lb-tlsload (tests/bench/lb-tlsload.c) is one epoll thread with LOAD_CONNS
# connections in flight, lean enough that on a 2-core machine the server gets
# half the CPU; openssl s_time costs the client several times more per
# handshake. lb's own counters of full and resumed handshakes are printed, so
# the figures are known to measure what their names say, and so is each
# proxy's CPU time per request or connection. BASELINE=DIR: another build
# directory whose lb-dataplane runs as "lbbase" (its own port, the same
# certificate and origin) in the same interleaved rounds, for a before/after
# comparison (medians of per-round lb/lbbase ratios are printed).
# Everything listens on free 127.0.0.1 ports and is stopped by pid on exit.
set -euo pipefail

BUILD=${1:?usage: tests/bench/tls.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-64}
LOAD_CONNS=${LOAD_CONNS:-32}
. "$SRC/tests/bench/lib.sh"
bench_init tls
[ -x "$BUILD/lb-tlsload" ] || { echo "tls bench: $BUILD/lb-tlsload is missing (build the project)" >&2; exit 1; }
bench_need tls wrk openssl
bench_cert
bench_origin "$BUILD" 2

declare -A PORT
declare -A PID
PROXIES=()

# lb: the snapshot in protobuf text format, PEM bytes escaped
p=$(free_port)
LBM=$(free_port)
python3 - "$TMP" "$p" "$ORIGIN" >"$TMP/lb.txt" <<'PY'
import sys
tmp, port, origin = sys.argv[1], sys.argv[2], sys.argv[3]
def esc(path):
    return ''.join('\\n' if ch == '\n' else ('\\"' if ch == '"' else ch) for ch in open(path).read())
print('config_version: 1 generation: 1')
print('frontends { name: "tls" bind_address: "127.0.0.1" port: %s tls { certificates { name: "bench" cert_pem: "%s" key_pem: "%s" } } }'
      % (port, esc(tmp + '/cert.pem'), esc(tmp + '/key.pem')))
print('backends { id: "origin" host: "127.0.0.1" port: %s }' % origin)
print('logging { level: LOG_WARN access_log_off: true }')
PY
protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$TMP/lb.txt" >"$TMP/lb.pb"
"$BUILD/lb-dataplane" --snapshot "$TMP/lb.pb" --workers 2 --log-level warn \
    --metrics-listen "127.0.0.1:$LBM" >"$TMP/lb.log" 2>&1 &
PIDS+=($!)
if wait_port "$p"; then PROXIES+=(lb); PORT[lb]=$p; PID[lb]=$!; else echo "tls bench: lb did not start" >&2; cat "$TMP/lb.log" >&2; fi

if [ -n "${BASELINE:-}" ] && [ -x "$BASELINE/lb-dataplane" ]; then
    p=$(free_port)
    sed "s/port: ${PORT[lb]:-0} tls/port: $p tls/" "$TMP/lb.txt" >"$TMP/lbbase.txt"
    protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$TMP/lbbase.txt" >"$TMP/lbbase.pb"
    "$BASELINE/lb-dataplane" --snapshot "$TMP/lbbase.pb" --workers 2 --log-level warn >"$TMP/lbbase.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(lbbase); PORT[lbbase]=$p; PID[lbbase]=$!; else echo "tls bench: the baseline lb did not start" >&2; cat "$TMP/lbbase.log" >&2; fi
fi

if command -v haproxy >/dev/null; then
    p=$(free_port)
    cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$p ssl crt $TMP/combined.pem alpn http/1.1
    default_backend be
backend be
    server origin 127.0.0.1:$ORIGIN
CFG
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(haproxy); PORT[haproxy]=$p; PID[haproxy]=$!; fi
fi

if command -v nginx >/dev/null; then
    p=$(free_port)
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<CFG
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    keepalive_requests 1000000;
    # NGINX 1.22 offers only up to TLS 1.2 unless told
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$p ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
    nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log" >"$TMP/nginx.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(nginx); PORT[nginx]=$p; PID[nginx]=$!; fi
fi

# lb's handshakes so far, "full resumed"
lb_sessions() {
    curl -s "http://127.0.0.1:$LBM/metrics" | awk '
        /^lb_tls_sessions_total/ && /kind="full"/ { f += $NF }
        /^lb_tls_sessions_total/ && /kind="resumed"/ { r += $NF }
        END { printf "%d %d\n", f, r }'
}
# lb-tlsload against port $1 (more arguments passed on): connections/s
tlsload() {
    local port=$1
    shift
    "$BUILD/lb-tlsload" --port "$port" --conns "$LOAD_CONNS" --seconds "$DURATION" "$@" |
        sed -n 's|.*: \([0-9.]*\)/s;.*|\1|p'
}
# CPU time of a proxy (its process and children: NGINX's workers), in ticks
cpu_ticks() {
    local pid sum=0
    for pid in "$1" $(pgrep -P "$1" || true); do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
HZ=$(getconf CLK_TCK)
# microseconds of proxy CPU per request: ticks, rate/s
cpu_per() {
    awk -v t="$1" -v r="$2" -v hz="$HZ" -v d="$DURATION" 'BEGIN { printf "%.0f", (r > 0 ? t * 1e6 / hz / (r * d) : 0) }'
}
# one run of scenario $2 against proxy $1: prints its rate
run_one() {
    case $2 in
    ka) wrk -t2 -c"$CONNS" -d"${DURATION}s" "https://127.0.0.1:${PORT[$1]}/" | awk '/Requests\/sec/{print $2}' ;;
    res) tlsload "${PORT[$1]}" --resume ;;
    full) tlsload "${PORT[$1]}" ;;
    esac
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# Scenario by scenario, the proxies run back to back, their order rotating
# each round: on a shared VM the speed drifts by tens of percent over a
# minute, so a ratio is taken between neighbouring runs and the median of
# those per-round ratios is reported.
declare -A RUNS
declare -A LBCOUNT
SCENARIOS=(ka res full)
for r in $(seq 1 "$ROUNDS"); do
    n=${#PROXIES[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${PROXIES[$(((i + r) % n))]}"); done
    for sc in "${SCENARIOS[@]}"; do
        line="tls bench: round $r $sc:"
        for px in "${order[@]}"; do
            [ "$px" = lb ] && c0=$(lb_sessions)
            t0=$(cpu_ticks "${PID[$px]}")
            rate=$(run_one "$px" "$sc")
            rate=${rate:-0}
            t1=$(cpu_ticks "${PID[$px]}")
            if [ "$px" = lb ]; then
                LBCOUNT[$sc]=$(echo "$c0 $(lb_sessions)" | awk -v prev="${LBCOUNT[$sc]:-0 0}" '
                    { split(prev, p, " "); printf "%d %d", p[1] + $3 - $1, p[2] + $4 - $2 }')
            fi
            RUNS[$px,$sc]="${RUNS[$px,$sc]:-} $rate"
            RUNS[$px,${sc}_cpu]="${RUNS[$px,${sc}_cpu]:-} $(cpu_per $((t1 - t0)) "$rate")"
            line="$line $px $rate"
            eval "R_$px=$rate"
        done
        echo "$line" >&2
        for px in haproxy nginx lbbase; do
            v=R_$px
            [ -n "${!v:-}" ] && [ -n "${R_lb:-}" ] &&
                RUNS[ratio_$px,$sc]="${RUNS[ratio_$px,$sc]:-} $(awk -v a="$R_lb" -v b="${!v}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
        done
    done
done
printf '\n%-8s %14s %18s %16s\n' proxy "ka req/s" "resumed conn/s" "full conn/s"
declare -A MED
for px in "${PROXIES[@]}"; do
    for k in ka res full; do MED[$px,$k]=$(echo "${RUNS[$px,$k]}" | median); done
    printf '%-8s %14s %18s %16s\n' "$px" "${MED[$px,ka]}" "${MED[$px,res]}" "${MED[$px,full]}"
done
printf '\nproxy CPU per request or connection, microseconds (process and its children)\n'
printf '%-8s %14s %18s %16s\n' proxy ka resumed full
for px in "${PROXIES[@]}"; do
    for k in ka_cpu res_cpu full_cpu; do MED[$px,$k]=$(echo "${RUNS[$px,$k]}" | median); done
    printf '%-8s %14s %18s %16s\n' "$px" "${MED[$px,ka_cpu]}" "${MED[$px,res_cpu]}" "${MED[$px,full_cpu]}"
done
if [ -n "${LBCOUNT[ka]:-}" ]; then
    printf '\nlb handshakes counted (full resumed): ka %s; resumed %s; full %s\n' \
        "${LBCOUNT[ka]}" "${LBCOUNT[res]}" "${LBCOUNT[full]}"
fi
printf '\nmedian of per-round ratios\n'
for px in haproxy nginx lbbase; do
    [ -n "${RUNS[ratio_$px,ka]:-}" ] || continue
    printf 'lb/%-8s ka %s  resumed %s  full %s\n' "$px" "$(echo "${RUNS[ratio_$px,ka]}" | median)" \
        "$(echo "${RUNS[ratio_$px,res]}" | median)" "$(echo "${RUNS[ratio_$px,full]}" | median)"
done
