#!/bin/bash
# tests/bench/tls.sh BUILD_DIR: TLS side by side — lb-dataplane, HAProxy and
# NGINX terminating TLS with the same ECDSA P-256 certificate in front of the
# same origin (2 threads/workers each, TLS 1.2 and 1.3 offered, tickets on).
# Prints, medians of ROUNDS interleaved rounds of DURATION seconds:
#   ka         wrk keep-alive requests/s over TLS (2 threads, CONNS connections)
#   close      wrk with "Connection: close": a new connection per request,
#              each resuming the session wrk kept
#   resumed    lb-tlsload --resume: a new connection per request, each resuming
#              the session of the one before (a TLS 1.3 ticket is used once,
#              so this needs the server to hand out fresh ones)
#   full       lb-tlsload: a full handshake (no session offered) per request
# lb-tlsload (tests/bench/lb-tlsload.c) is one epoll thread with LOAD_CONNS
# connections in flight, lean enough that on a 2-core machine the server gets
# half the CPU; openssl s_time costs the client several times more per
# handshake. Each figure comes with the p50 and p99 latency (wrk's, or
# lb-tlsload's connect-to-answer time) and the proxy's peak RSS during that
# run; the RSS before any load and SETTLE (5) seconds after the last run
# close the table. lb's own counters of full and resumed handshakes are
# printed, so the figures are known to measure what their names say, and so
# is each proxy's CPU time per request or connection. BASELINE=DIR: another build
# directory whose lb-dataplane runs as "lbbase" (its own port, the same
# certificate and origin) in the same interleaved rounds, for a before/after
# comparison (medians of per-round lb/lbbase ratios are printed);
# ONLY="haproxy" (or "nginx", or "") limits the other proxies run.
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

if { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" haproxy "* ]]; } && command -v haproxy >/dev/null; then
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

if { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" nginx "* ]]; } && command -v nginx >/dev/null; then
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
# "rate p50 p99" (ms) of one lb-tlsload run
tlsload() {
    local port=$1
    shift
    "$BUILD/lb-tlsload" --port "$port" --conns "$LOAD_CONNS" --seconds "$DURATION" "$@" |
        sed -n 's|.*: \([0-9.]*\)/s;.*p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms|\1 \2 \3|p'
}
# "rate p50 p99" (ms) of one wrk run (its latency distribution)
wrkrun() {
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Requests\/sec/ { r = $2 }
        END { printf "%s %.2f %.2f\n", r, p50, p99 }'
}
procs() { echo "$1" $(pgrep -P "$1" || true); }
cpu_ticks() {
    local pid sum=0
    for pid in $(procs "$1"); do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
# resident memory in KiB summed over the process and its children: now
# (VmRSS) or the peak since peak_reset (VmHWM; NGINX's workers share pages
# with their master, so its sum overstates a little)
mem_kib() {
    local pid sum=0
    for pid in $(procs "$1"); do
        sum=$((sum + $(awk -v k="$2:" '$1 == k {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
peak_reset() {
    local pid
    for pid in $(procs "$1"); do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}
HZ=$(getconf CLK_TCK)
cpu_per() {
    awk -v t="$1" -v r="$2" -v hz="$HZ" -v d="$DURATION" 'BEGIN { printf "%.0f", (r > 0 ? t * 1e6 / hz / (r * d) : 0) }'
}
run_one() {
    case $2 in
    ka) wrkrun "https://127.0.0.1:${PORT[$1]}/" ;;
    close) wrkrun -H "Connection: close" "https://127.0.0.1:${PORT[$1]}/" ;;
    res) tlsload "${PORT[$1]}" --resume ;;
    full) tlsload "${PORT[$1]}" ;;
    esac
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A RUNS
declare -A LBCOUNT
declare -A IDLE
declare -A IDLE_ANON
for px in "${PROXIES[@]}"; do
    IDLE[$px]=$(mem_kib "${PID[$px]}" VmRSS)
    IDLE_ANON[$px]=$(mem_kib "${PID[$px]}" RssAnon)
done
SCENARIOS=(ka close res full)
for r in $(seq 1 "$ROUNDS"); do
    n=${#PROXIES[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${PROXIES[$(((i + r) % n))]}"); done
    for sc in "${SCENARIOS[@]}"; do
        line="tls bench: round $r $sc:"
        for px in "${order[@]}"; do
            [ "$px" = lb ] && c0=$(lb_sessions)
            peak_reset "${PID[$px]}"
            t0=$(cpu_ticks "${PID[$px]}")
            read -r rate p50 p99 < <(run_one "$px" "$sc") || true
            rate=${rate:-0}
            t1=$(cpu_ticks "${PID[$px]}")
            hwm=$(mem_kib "${PID[$px]}" VmHWM)
            if [ "$px" = lb ]; then
                LBCOUNT[$sc]=$(echo "$c0 $(lb_sessions)" | awk -v prev="${LBCOUNT[$sc]:-0 0}" '
                    { split(prev, p, " "); printf "%d %d", p[1] + $3 - $1, p[2] + $4 - $2 }')
            fi
            RUNS[$px,$sc]="${RUNS[$px,$sc]:-} $rate"
            RUNS[$px,${sc}_p50]="${RUNS[$px,${sc}_p50]:-} ${p50:-0}"
            RUNS[$px,${sc}_p99]="${RUNS[$px,${sc}_p99]:-} ${p99:-0}"
            RUNS[$px,${sc}_hwm]="${RUNS[$px,${sc}_hwm]:-} $hwm"
            RUNS[$px,${sc}_cpu]="${RUNS[$px,${sc}_cpu]:-} $(cpu_per $((t1 - t0)) "$rate")"
            line="$line $px $rate (p99 ${p99:-?} ms)"
            eval "R_$px=$rate"
            eval "P_$px=${p99:-0}"
        done
        echo "$line" >&2
        for px in haproxy nginx lbbase; do
            v=R_$px
            q=P_$px
            [ -n "${!v:-}" ] && [ -n "${R_lb:-}" ] || continue
            RUNS[ratio_$px,$sc]="${RUNS[ratio_$px,$sc]:-} $(awk -v a="$R_lb" -v b="${!v}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
            RUNS[p99ratio_$px,$sc]="${RUNS[p99ratio_$px,$sc]:-} $(awk -v a="$P_lb" -v b="${!q}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
        done
    done
done
sleep "${SETTLE:-5}" # then the memory each proxy kept after the load
declare -A MED
printf '\nmedians of %s rounds of %s s: rate (requests or connections/s), p50 / p99 ms, peak RSS MiB\n' "$ROUNDS" "$DURATION"
printf '%-8s' proxy
for sc in "${SCENARIOS[@]}"; do printf ' %30s' "$sc"; done
printf ' %9s %9s %10s %10s\n' "idle MiB" "after MiB" "idle anon" "after anon"
for px in "${PROXIES[@]}"; do
    printf '%-8s' "$px"
    for sc in "${SCENARIOS[@]}"; do
        for k in "" _p50 _p99 _hwm _cpu; do MED[$px,$sc$k]=$(echo "${RUNS[$px,$sc$k]}" | median); done
        printf ' %30s' "$(awk -v r="${MED[$px,$sc]}" -v a="${MED[$px,${sc}_p50]}" -v b="${MED[$px,${sc}_p99]}" \
            -v m="${MED[$px,${sc}_hwm]}" 'BEGIN { printf "%.0f %.1f/%.1f %.1f", r, a, b, m / 1024 }')"
    done
    awk -v i="${IDLE[$px]}" -v a="$(mem_kib "${PID[$px]}" VmRSS)" -v ia="${IDLE_ANON[$px]}" \
        -v aa="$(mem_kib "${PID[$px]}" RssAnon)" 'BEGIN { printf " %9.1f %9.1f %10.1f %10.1f\n", i / 1024, a / 1024, ia / 1024, aa / 1024 }'
done
printf '\nproxy CPU per request or connection, microseconds (process and its children)\n'
printf '%-8s' proxy
for sc in "${SCENARIOS[@]}"; do printf ' %10s' "$sc"; done
printf '\n'
for px in "${PROXIES[@]}"; do
    printf '%-8s' "$px"
    for sc in "${SCENARIOS[@]}"; do printf ' %10s' "${MED[$px,${sc}_cpu]}"; done
    printf '\n'
done
if [ -n "${LBCOUNT[ka]:-}" ]; then
    printf '\nlb handshakes counted (full resumed): ka %s; close %s; resumed %s; full %s\n' \
        "${LBCOUNT[ka]}" "${LBCOUNT[close]}" "${LBCOUNT[res]}" "${LBCOUNT[full]}"
fi
printf '\nmedian of per-round ratios (rate; p99 in brackets, < 1 is lb faster)\n'
for px in haproxy nginx lbbase; do
    [ -n "${RUNS[ratio_$px,ka]:-}" ] || continue
    printf 'lb/%-8s' "$px"
    for sc in "${SCENARIOS[@]}"; do
        printf ' %s %s (%s)' "$sc" "$(echo "${RUNS[ratio_$px,$sc]}" | median)" "$(echo "${RUNS[p99ratio_$px,$sc]}" | median)"
    done
    printf '\n'
done
