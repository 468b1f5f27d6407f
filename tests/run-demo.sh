#!/bin/bash
# tests/run-demo.sh BUILD_DIR: what `make run` calls. Starts three demo
# backends on 127.0.0.1:9001-9003 and lb-dataplane on 127.0.0.1:8080 (weights
# 5/3/1, metrics on 127.0.0.1:9090) from a snapshot written to ./.state/,
# then waits; Ctrl-C stops everything it started, by pid.
set -euo pipefail

BUILD=${1:?usage: tests/run-demo.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
STATE=$PWD/.state
FRONT_PORT=8080
METRICS_PORT=9090
NAMES=(demo-a demo-b demo-c)
PORTS=(9001 9002 9003)
WEIGHTS=(5 3 1)

for bin in lb-backend lb-dataplane; do
    [ -x "$BUILD/$bin" ] || { echo "run-demo: $BUILD/$bin is not built (run make build)" >&2; exit 1; }
done
command -v protoc >/dev/null || { echo "run-demo: protoc is not installed" >&2; exit 1; }

port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "${PORTS[@]}" "$FRONT_PORT" "$METRICS_PORT"; do
    if port_taken "$p"; then
        echo "run-demo: 127.0.0.1:$p is already in use; stop whatever listens there" \
            "(ss -ltnp 'sport = :$p') and retry" >&2
        exit 1
    fi
done

PIDS=()
stop_all() {
    local pid
    trap - INT TERM EXIT
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "run-demo: stopped"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 1 200); do
        port_taken "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

mkdir -p "$STATE"
for i in 0 1 2; do
    "$BUILD/lb-backend" --port "${PORTS[$i]}" --name "${NAMES[$i]}" >"$STATE/${NAMES[$i]}.log" 2>&1 &
    PIDS+=($!)
    wait_port "${PORTS[$i]}" $! || { echo "run-demo: ${NAMES[$i]} did not start:" >&2; cat "$STATE/${NAMES[$i]}.log" >&2; exit 1; }
done

{
    echo 'config_version: 1'
    echo 'generation: 1'
    echo "frontends { name: \"demo\" bind_address: \"127.0.0.1\" port: $FRONT_PORT }"
    for i in 0 1 2; do
        echo "backends { id: \"${NAMES[$i]}\" host: \"127.0.0.1\" port: ${PORTS[$i]}" \
            "weight: ${WEIGHTS[$i]} url: \"http://127.0.0.1:${PORTS[$i]}\" }"
    done
    echo "metrics { enabled: true bind_address: \"127.0.0.1\" port: $METRICS_PORT }"
    echo 'balancing { algorithm: WEIGHTED_ROUND_ROBIN }'
} >"$STATE/demo-snapshot.txt"
protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" \
    <"$STATE/demo-snapshot.txt" >"$STATE/demo-snapshot.pb"

"$BUILD/lb-dataplane" --snapshot "$STATE/demo-snapshot.pb" --workers 2 >"$STATE/lb-dataplane.log" 2>&1 &
LB_PID=$!
PIDS+=($LB_PID)
wait_port "$FRONT_PORT" "$LB_PID" || { echo "run-demo: lb-dataplane did not start:" >&2; tail -20 "$STATE/lb-dataplane.log" >&2; exit 1; }

cat <<MSG

  lb demo is running (Ctrl-C stops it)

    curl http://127.0.0.1:$FRONT_PORT/           answered by demo-a, demo-b, demo-c (weights 5/3/1)
    curl http://127.0.0.1:$METRICS_PORT/metrics    Prometheus metrics

  backends: ${NAMES[0]} :${PORTS[0]}  ${NAMES[1]} :${PORTS[1]}  ${NAMES[2]} :${PORTS[2]}
  snapshot: $STATE/demo-snapshot.txt (encoded in demo-snapshot.pb)
  logs:     $STATE/lb-dataplane.log, $STATE/demo-*.log

MSG
# Returns when lb-dataplane exits (or at once on Ctrl-C through the trap).
set +e
wait "$LB_PID"
status=$?
set -e
echo "run-demo: lb-dataplane exited with status $status; its log is $STATE/lb-dataplane.log" >&2
exit "$status"
