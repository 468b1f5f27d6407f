#!/bin/bash
# tests/bench/ratelimit.sh BUILD_DIR: what the rate limiter costs when it never
# limits. Two lb-dataplane processes in front of the same origin, one with the
# limiter off and one with a per-client token bucket at a rate no load here can
# reach; wrk alternates between them (ROUNDS rounds of DURATION seconds, 2
# threads, CONNS connections) and the medians are compared. Everything listens
# on free 127.0.0.1 ports and is stopped by pid on exit and on Ctrl-C.
set -euo pipefail

BUILD=${1:?usage: tests/bench/ratelimit.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
TMP=$(mktemp -d /tmp/lb-bench-rl-XXXXXX)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v wrk >/dev/null || { echo "ratelimit bench: wrk is not installed (make bench installs it)" >&2; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "ratelimit bench: nothing listens on $1" >&2
    return 1
}

"$BUILD/lb-backend" --port 0 --name origin --threads 2 >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
ORIGIN=
for _ in $(seq 1 200); do
    ORIGIN=$(grep -o '"port":[0-9]*' "$TMP/origin.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
    [ -n "$ORIGIN" ] && break
    sleep 0.05
done
[ -n "$ORIGIN" ] || { echo "ratelimit bench: lb-backend did not start" >&2; exit 1; }

declare -A PORT
for mode in off on; do
    p=$(free_port)
    PORT[$mode]=$p
    rl=""
    [ "$mode" = on ] && rl='ratelimit { enabled: true rate: 100000000 burst: 100000000 per_client: true }'
    cat >"$TMP/$mode.txt" <<SNAP
config_version: 1
generation: 1
frontends { name: "bench" bind_address: "127.0.0.1" port: $p }
backends { id: "origin" host: "127.0.0.1" port: $ORIGIN }
logging { level: LOG_WARN access_log_off: true }
$rl
SNAP
    protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$TMP/$mode.txt" >"$TMP/$mode.pb"
    "$BUILD/lb-dataplane" --snapshot "$TMP/$mode.pb" --workers 2 --log-level warn >"$TMP/$mode.log" 2>&1 &
    PIDS+=($!)
    wait_port "$p"
done

declare -A RUNS
for r in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        rps=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:${PORT[$mode]}/" |
            awk '/Requests\/sec/{print $2}')
        echo "ratelimit bench: round $r limiter $mode: $rps req/s" >&2
        RUNS[$mode]="${RUNS[$mode]:-} $rps"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
off=$(echo "${RUNS[off]}" | median)
on=$(echo "${RUNS[on]}" | median)
printf '\nlimiter  req/s (median of %s x %ss)\n' "$ROUNDS" "$DURATION"
printf 'off      %s\non       %s\n' "$off" "$on"
awk -v a="$off" -v b="$on" 'BEGIN { printf "cost     %.1f %%\n", (a - b) / a * 100 }'
