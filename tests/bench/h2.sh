#!/bin/bash
# tests/bench/h2.sh BUILD_DIR: HTTP/2 side by side — lb-dataplane, HAProxy
# (alpn h2) and NGINX (http2) terminating HTTP/2 over TLS with the same ECDSA
# P-256 certificate in front of the same HTTP/1.1 origin (2 threads/workers
# each, upstream keep-alive, logs off). Prints, medians of ROUNDS interleaved
# rounds of DURATION seconds of h2load (2 threads):
#   m10      -c 64 -m 10: 64 connections, 10 streams in flight on each
#   m100     -c 16 -m 100: 16 connections, 100 streams in flight on each
# requests/s and p99 latency (from h2load's per-request log), and what one
# idle connection costs each proxy in resident memory: the growth of its RSS
# while IDLE connections are held, divided by IDLE, measured
#   h2 fresh     HTTP/2 (TLS handshake, preface, SETTINGS exchanged, no
#                stream) on the freshly started process, before any load:
#                the headline figure, as no pool holds memory yet
#   h2 loaded    the same after the load rounds (pools and free lists then
#                hold memory from the load, which idle connections reuse)
#   tls h1 fresh TLS HTTP/1.1 keep-alive (ALPN http/1.1, one request
#                answered), opened on the fresh process while its idle
#                HTTP/2 connections are still held: the TLS share
# ROUNDS=0 skips the load (and the loaded column); SCENARIOS="m10" runs one.
# Per-round ratios of lb to each other proxy (rate and p99) are printed as
# medians: this VM drifts by tens of percent within minutes, so the ratio of
# runs next to each other says more than either median alone. RSS does not depend on CPU
# load, so the memory columns hold on a busy machine; the rates do not.
# Everything listens on free 127.0.0.1 ports and is stopped by pid on exit.
# BASELINE=DIR also runs DIR/lb-dataplane (as "lb-base", same configuration)
# interleaved with this build's; ONLY="lb lb-base" skips HAProxy and NGINX.
set -euo pipefail

BUILD=${1:?usage: tests/bench/h2.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-1000}
BASELINE=${BASELINE:-}
ONLY=${ONLY:-}
. "$SRC/tests/bench/lib.sh"
bench_init h2
bench_need h2 h2load openssl protoc
bench_cert
bench_origin "$BUILD" 2

declare -A PORT
declare -A PID
PROXIES=()

p=$(free_port)
/usr/bin/python3 - "$TMP" "$p" "$ORIGIN" >"$TMP/lb.txt" <<'PY'
import sys
tmp, port, origin = sys.argv[1], sys.argv[2], sys.argv[3]
def esc(path):
    return ''.join('\\n' if ch == '\n' else ('\\"' if ch == '"' else ch) for ch in open(path).read())
print('config_version: 1 generation: 1')
print('frontends { name: "h2" bind_address: "127.0.0.1" port: %s http2: true tls { certificates { name: "bench" cert_pem: "%s" key_pem: "%s" } } }'
      % (port, esc(tmp + '/cert.pem'), esc(tmp + '/key.pem')))
print('backends { id: "origin" host: "127.0.0.1" port: %s }' % origin)
print('logging { level: LOG_WARN access_log_off: true }')
# upstream connections kept idle: as many as streams in flight (HAProxy keeps them all)
print('limits { pool_max_idle: 2048 }')
PY
protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$TMP/lb.txt" >"$TMP/lb.pb"
"$BUILD/lb-dataplane" --snapshot "$TMP/lb.pb" --workers 2 --log-level warn >"$TMP/lb.log" 2>&1 &
PIDS+=($!)
if wait_port "$p"; then PROXIES+=(lb); PORT[lb]=$p; PID[lb]=$!; else echo "h2 bench: lb did not start" >&2; cat "$TMP/lb.log" >&2; exit 1; fi

if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE/lb-dataplane" ] || { echo "h2 bench: no $BASELINE/lb-dataplane" >&2; exit 1; }
    p=$(free_port)
    sed "s/port: ${PORT[lb]} http2/port: $p http2/" "$TMP/lb.txt" >"$TMP/lb-base.txt"
    protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$TMP/lb-base.txt" >"$TMP/lb-base.pb"
    "$BASELINE/lb-dataplane" --snapshot "$TMP/lb-base.pb" --workers 2 --log-level warn >"$TMP/lb-base.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(lb-base); PORT[lb-base]=$p; PID[lb-base]=$!; else echo "h2 bench: baseline lb did not start" >&2; cat "$TMP/lb-base.log" >&2; exit 1; fi
fi

if [ -z "$ONLY" ] || [[ " $ONLY " == *" haproxy "* ]] && command -v haproxy >/dev/null; then
    p=$(free_port)
    cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$p ssl crt $TMP/combined.pem alpn h2,http/1.1
    default_backend be
backend be
    server origin 127.0.0.1:$ORIGIN
CFG
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(haproxy); PORT[haproxy]=$p; PID[haproxy]=$!; fi
fi

if [ -z "$ONLY" ] || [[ " $ONLY " == *" nginx "* ]] && command -v nginx >/dev/null; then
    p=$(free_port)
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<CFG
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$p ssl http2;
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

# resident memory of a proxy (its process and children: NGINX's workers), KiB
rss_kib() {
    local pid sum=0
    for pid in "$1" $(pgrep -P "$1" || true); do
        sum=$((sum + $(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}

# idle clients: MODE h2 (handshake, preface, SETTINGS both ways, then
# nothing) or h1 (ALPN http/1.1, one keep-alive request answered, then
# nothing); they hold their connections until killed, their parent (this
# script) is gone, or 600 s passed
cat >"$TMP/idle.py" <<'PY'
import os, socket, ssl, sys, time
port, n, mode, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
parent = os.getppid()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2" if mode == "h2" else "http/1.1"])
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="bench.example.com")
    if mode == "h2":
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    else:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench.example.com\r\n\r\n")
    conns.append(s)
for s in conns:
    s.settimeout(10)
    got = s.recv(65536)
    if mode == "h2":
        s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")  # SETTINGS ACK
    elif not got.startswith(b"HTTP/1.1 200"):
        sys.exit("idle client: no 200 on a keep-alive request: %r" % got[:80])
open(ready, "w").close()
deadline = time.monotonic() + 600
while time.monotonic() < deadline and os.getppid() == parent:
    time.sleep(0.2)
PY
IPIDS=()
# idle_open PROXY MODE: opens IDLE idle connections, waits until they are
# set up and the proxy settled; the client's pid is appended to IPIDS
idle_open() {
    rm -f "$TMP/idle.ready"
    /usr/bin/python3 "$TMP/idle.py" "${PORT[$1]}" "$IDLE" "$2" "$TMP/idle.ready" &
    local ipid=$!
    PIDS+=("$ipid")
    IPIDS+=("$ipid")
    for _ in $(seq 1 1200); do
        [ -e "$TMP/idle.ready" ] && break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    [ -e "$TMP/idle.ready" ] || { echo "h2 bench: $1: $IDLE idle $2 connections were not set up" >&2; exit 1; }
    sleep 1 # the proxy settles (no request is in flight)
}
# idle_close: the clients of idle_open go, the proxy closes their connections
idle_close() {
    local ipid
    for ipid in "${IPIDS[@]}"; do kill "$ipid" 2>/dev/null || true; done
    for ipid in "${IPIDS[@]}"; do wait "$ipid" 2>/dev/null || true; done
    IPIDS=()
    sleep 1
}
# bytes per connection from RSS KiB before ($1) and after ($2)
per_conn() { awk -v a="$2" -v b="$1" -v n="$IDLE" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }'; }

# fresh processes first: no load has run, no pool holds memory yet
declare -A IDLE_H2 IDLE_TLS IDLE_LOADED RSS_NOTE
for px in "${PROXIES[@]}"; do
    a=$(rss_kib "${PID[$px]}")
    idle_open "$px" h2
    b=$(rss_kib "${PID[$px]}")
    idle_open "$px" h1
    c=$(rss_kib "${PID[$px]}")
    idle_close
    IDLE_H2[$px]=$(per_conn "$a" "$b")
    IDLE_TLS[$px]=$(per_conn "$b" "$c")
    RSS_NOTE[$px]="fresh $a -> $b -> $c KiB"
    echo "h2 bench: $px fresh: RSS $a KiB, $b with $IDLE idle h2, $c with $IDLE idle TLS h1 more" >&2
done

# one h2load run of scenario $2 against proxy $1: "req/s p99_ms"
run_one() {
    local c m
    case $2 in
    m10) c=64 m=10 ;;
    m100) c=16 m=100 ;;
    esac
    rm -f "$TMP/h2load.log"
    local rate
    rate=$(h2load -t2 -c"$c" -m"$m" -D "$DURATION" --warm-up-time=1 \
        --log-file="$TMP/h2load.log" "https://127.0.0.1:${PORT[$1]}/" 2>/dev/null |
        sed -n 's|^finished in .*, \([0-9.]*\) req/s.*|\1|p')
    local p99
    p99=$(awk -F'\t' '$2 == 200 { print $3 }' "$TMP/h2load.log" | sort -n |
        awk '{a[NR]=$1} END { if (NR) printf "%.2f", a[int(NR * 0.99)] / 1000; else print "-" }')
    echo "${rate:-0} $p99"
}
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{a[NR]=$1} END{print NR ? a[int((NR+1)/2)] : "-"}'; }

declare -A RUNS
read -r -a SCENARIOS <<<"${SCENARIOS:-m10 m100}"
for r in $(seq 1 "$ROUNDS"); do
    n=${#PROXIES[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${PROXIES[$(((i + r) % n))]}"); done
    for sc in "${SCENARIOS[@]}"; do
        line="h2 bench: round $r $sc:"
        for px in "${order[@]}"; do
            read -r rate p99 < <(run_one "$px" "$sc")
            RUNS[$px,$sc]="${RUNS[$px,$sc]:-} $rate"
            RUNS[$px,${sc}_p99]="${RUNS[$px,${sc}_p99]:-} $p99"
            line="$line $px $rate/s p99 ${p99}ms"
        done
        echo "$line" >&2
    done
done

for px in "${PROXIES[@]}"; do
    IDLE_LOADED[$px]=-
    [ "$ROUNDS" -gt 0 ] || continue
    a=$(rss_kib "${PID[$px]}")
    idle_open "$px" h2
    b=$(rss_kib "${PID[$px]}")
    idle_close
    IDLE_LOADED[$px]=$(per_conn "$a" "$b")
    RSS_NOTE[$px]="${RSS_NOTE[$px]}; loaded $a -> $b KiB"
done

printf '\n%-8s %11s %8s %11s %8s %9s %9s %9s\n' proxy "m10 req/s" "p99 ms" "m100 req/s" "p99 ms" \
    "h2 fresh" "h2 loaded" "tls h1"
for px in "${PROXIES[@]}"; do
    printf '%-8s %11s %8s %11s %8s %9s %9s %9s   (bytes per idle connection; RSS %s)\n' "$px" \
        "$(echo "${RUNS[$px,m10]:-}" | median)" "$(echo "${RUNS[$px,m10_p99]:-}" | median)" \
        "$(echo "${RUNS[$px,m100]:-}" | median)" "$(echo "${RUNS[$px,m100_p99]:-}" | median)" \
        "${IDLE_H2[$px]}" "${IDLE_LOADED[$px]}" "${IDLE_TLS[$px]}" "${RSS_NOTE[$px]}"
done

# the median of per-round ratios lb/$1 of the figures under key $2
ratio_median() {
    paste -d' ' <(echo "${RUNS[lb,$2]:-}" | tr ' ' '\n' | grep -v '^$') \
        <(echo "${RUNS[$1,$2]:-}" | tr ' ' '\n' | grep -v '^$') |
        awk '$2 > 0 { printf "%.3f ", $1 / $2 }' | median
}
ratio_medians() {
    local other=$1 sc line=""
    for sc in "${SCENARIOS[@]}"; do
        line="$line $sc $(ratio_median "$other" "$sc") (p99 $(ratio_median "$other" "${sc}_p99"))"
    done
    echo "lb/$other$line"
}
if [ "$ROUNDS" -gt 0 ] && [ ${#PROXIES[@]} -gt 1 ]; then
    printf '\nmedian of per-round ratios (rate; p99 in brackets, < 1 is lb faster)\n'
    for px in "${PROXIES[@]}"; do
        [ "$px" = lb ] || ratio_medians "$px"
    done
fi

