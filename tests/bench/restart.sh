#!/bin/bash
# tests/bench/restart.sh BUILD_DIR: latency and failures through restarts,
# lb-dataplane's hand-over against HAProxy 2.6's master-worker reload, in the
# same run (issue 15).
#
# One lb-backend; a connection-per-request load at a fixed RATE (requests/s,
# open loop: tests/bench/restart_load.py) for DURATION seconds, during which the proxy
# is restarted RESTARTS times, evenly spread:
#   lb       lb-dataplane --snapshot ... --handover-socket S, each restart a
#            successor started with --takeover S (what SIGUSR2 or the systemd
#            upgrade command starts), 2 workers;
#   haproxy  haproxy -W (master-worker), each restart a SIGUSR2 to the master
#            (a reload: a new worker takes the listeners over the master's
#            socket pair, the old one finishes; what `-sf` does), nbthread 2.
# Requests scheduled within 1 s after a restart count as "during the
# hand-over", the rest as "steady". Prints per proxy: requests, failures
# (with their kinds), p50/p99/max latency steady and during hand-overs.
# Environment: RATE (400), DURATION seconds (33), RESTARTS (10), ROUNDS (1; the
# proxies alternate order each round).
# Everything listens on free 127.0.0.1 ports and is stopped by pid.
set -euo pipefail

BUILD=${1:?usage: tests/bench/restart.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
RATE=${RATE:-400}
DURATION=${DURATION:-33}
RESTARTS=${RESTARTS:-10}
ROUNDS=${ROUNDS:-1}
PY=/usr/bin/python3

. "$SRC/tests/bench/lib.sh"
bench_init restart
bench_need restart protoc curl $PY
bench_built restart "$BUILD" lb-dataplane lb-backend
HAPROXY=
if command -v haproxy >/dev/null; then
    HAPROXY=haproxy
else
    echo "restart: haproxy is not installed (deploy/packages-bench.txt): lb alone" >&2
fi
# lb's successors are not our children: their pids come from a file
restart_cleanup() {
    local extra=()
    [ -f "$TMP/lb.pids" ] && mapfile -t extra <"$TMP/lb.pids"
    [ ${#extra[@]} -eq 0 ] || bench_stop "${extra[@]}"
    bench_cleanup
}
trap restart_cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_backend "$BUILD" b0 --threads 2
BPORT=$BACKEND_PORT

# run_lb: one load through lb with RESTARTS hand-overs; prints the JSON line.
run_lb() {
    local port pid
    port=$(free_port)
    {
        echo "config_version: 1 generation: 1"
        echo "frontends { name: \"web\" bind_address: \"127.0.0.1\" port: $port }"
        echo "backends { id: \"b0\" host: \"127.0.0.1\" port: $BPORT }"
        echo "timeouts { drain_ms: 5000 }"
        echo "logging { level: LOG_WARN access_log_off: true }"
    } >"$TMP/lb.txt"
    bench_encode "$TMP/lb.txt" "$TMP/lb.pb"
    local args=(--snapshot "$TMP/lb.pb" --workers 2 --log-level warn --metrics-listen off
        --handover-socket "$TMP/ho.sock")
    "$BUILD/lb-dataplane" "${args[@]}" >>"$TMP/lb.log" 2>&1 &
    pid=$!
    echo "$pid" >"$TMP/lb.pids"
    wait_port "$port" "$pid" || { echo "restart: lb did not start" >&2; tail -5 "$TMP/lb.log" >&2; exit 1; }
    # a restart: the successor (the same binary) takes the sockets over
    printf '#!/bin/sh\n' >"$TMP/lb-restart.sh"
    printf '%q ' "$BUILD/lb-dataplane" "${args[@]}" --takeover "$TMP/ho.sock" >>"$TMP/lb-restart.sh"
    printf '>>%q 2>&1 &\necho $! >>%q\n' "$TMP/lb.log" "$TMP/lb.pids" >>"$TMP/lb-restart.sh"
    $PY "$SRC/tests/bench/restart_load.py" --port "$port" --rate "$RATE" --seconds "$DURATION" \
        --restarts "$RESTARTS" --restart-cmd "sh $TMP/lb-restart.sh"
    local all=()
    mapfile -t all <"$TMP/lb.pids"
    bench_stop "${all[@]}"
    rm -f "$TMP/lb.pids"
}

# run_haproxy: the same through haproxy -W with RESTARTS reloads.
run_haproxy() {
    local port pid
    port=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 4000
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$port backlog 8192
    default_backend be
backend be
    server b0 127.0.0.1:$BPORT
EOF
    haproxy -W -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" || { echo "restart: haproxy did not start" >&2; tail -5 "$TMP/haproxy.log" >&2; exit 1; }
    $PY "$SRC/tests/bench/restart_load.py" --port "$port" --rate "$RATE" --seconds "$DURATION" \
        --restarts "$RESTARTS" --restart-cmd "kill -USR2 $pid"
    bench_stop "$pid" # the master stops its workers
}

summary() { # NAME JSON
    $PY - "$1" "$2" <<'EOF'
import json, sys
name, r = sys.argv[1], json.loads(sys.argv[2])
s, h = r["steady"], r["handover"]
print(f"{name:8} {r['restarts']:3} restarts  steady: {s['n']:6} req {s['failed']:4} failed  "
      f"p50 {s['p50_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms   during hand-over: "
      f"{h['n']:5} req {h['failed']:4} failed  p50 {h['p50_ms']} p99 {h['p99_ms']} "
      f"max {h['max_ms']} ms   errors {r['errors'] or '-'}")
EOF
}

echo "restart: $RATE new connections/s for $DURATION s, $RESTARTS restarts, $ROUNDS round(s)" >&2
for round in $(seq 1 "$ROUNDS"); do
    order=(lb haproxy)
    [ $((round % 2)) -eq 0 ] && order=(haproxy lb)
    for p in "${order[@]}"; do
        [ "$p" = haproxy ] && [ -z "$HAPROXY" ] && continue
        out=$(run_$p)
        echo "$out" >>"$TMP/$p.json"
        summary "$p" "$out"
    done
done
