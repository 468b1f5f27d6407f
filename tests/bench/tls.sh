#!/bin/bash
# tests/bench/tls.sh BUILD_DIR: TLS side by side — lb-dataplane, HAProxy and
# NGINX terminating TLS with the same ECDSA P-256 certificate in front of the
# same origin (2 threads/workers each, TLS 1.3, tickets on). Prints, medians of
# ROUNDS interleaved rounds of DURATION seconds:
#   ka         wrk keep-alive requests/s over TLS (2 threads, CONNS connections)
#   full       wrk with "Connection: close": a full handshake per request
#   resumed    openssl s_time -reuse: resumed handshakes per second (1 client)
# Everything listens on free 127.0.0.1 ports and is stopped by pid on exit.
set -euo pipefail

BUILD=${1:?usage: tests/bench/tls.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
TMP=$(mktemp -d /tmp/lb-bench-tls-XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for tool in wrk openssl; do
    command -v $tool >/dev/null || { echo "tls bench: $tool is not installed (make bench installs it)" >&2; exit 1; }
done
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.example.com -addext subjectAltName=DNS:bench.example.com \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

"$BUILD/lb-backend" --port 0 --name origin --threads 2 >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
ORIGIN=
for _ in $(seq 1 200); do
    ORIGIN=$(grep -o '"port":[0-9]*' "$TMP/origin.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
    [ -n "$ORIGIN" ] && break
    sleep 0.05
done
[ -n "$ORIGIN" ] || { echo "tls bench: lb-backend did not start" >&2; exit 1; }

declare -A PORT
PROXIES=()

# lb: the snapshot in protobuf text format, PEM bytes escaped
p=$(free_port)
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
"$BUILD/lb-dataplane" --snapshot "$TMP/lb.pb" --workers 2 --log-level warn >"$TMP/lb.log" 2>&1 &
PIDS+=($!)
if wait_port "$p"; then PROXIES+=(lb); PORT[lb]=$p; else echo "tls bench: lb did not start" >&2; cat "$TMP/lb.log" >&2; fi

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
    if wait_port "$p"; then PROXIES+=(haproxy); PORT[haproxy]=$p; fi
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
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$p ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
    nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log" >"$TMP/nginx.log" 2>&1 &
    PIDS+=($!)
    if wait_port "$p"; then PROXIES+=(nginx); PORT[nginx]=$p; fi
fi

declare -A RUNS
for r in $(seq 1 "$ROUNDS"); do
    for px in "${PROXIES[@]}"; do
        url="https://127.0.0.1:${PORT[$px]}/"
        ka=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "$url" | awk '/Requests\/sec/{print $2}')
        full=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "$url" | awk '/Requests\/sec/{print $2}')
        res=$(openssl s_time -connect "127.0.0.1:${PORT[$px]}" -reuse -time "$DURATION" 2>/dev/null |
            awk '/connections in/ && /real/ {print $1 / $4}' | tail -1)
        echo "tls bench: round $r $px: ka $ka full $full resumed ${res:-?}" >&2
        RUNS[$px,ka]="${RUNS[$px,ka]:-} $ka"
        RUNS[$px,full]="${RUNS[$px,full]:-} $full"
        RUNS[$px,res]="${RUNS[$px,res]:-} ${res:-0}"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
printf '\n%-8s %14s %16s %18s\n' proxy "ka req/s" "full conn/s" "resumed conn/s"
declare -A MED
for px in "${PROXIES[@]}"; do
    for k in ka full res; do MED[$px,$k]=$(echo "${RUNS[$px,$k]}" | median); done
    printf '%-8s %14s %16s %18s\n' "$px" "${MED[$px,ka]}" "${MED[$px,full]}" "${MED[$px,res]}"
done
if [ -n "${MED[lb,ka]:-}" ] && [ -n "${MED[haproxy,ka]:-}" ]; then
    awk -v a="${MED[lb,ka]}" -v b="${MED[haproxy,ka]}" -v c="${MED[lb,full]}" -v d="${MED[haproxy,full]}" \
        -v e="${MED[lb,res]}" -v f="${MED[haproxy,res]}" \
        'BEGIN { printf "\nlb/haproxy  ka %.2f  full %.2f  resumed %.2f\n", a/b, c/d, (f > 0 ? e/f : 0) }'
fi
