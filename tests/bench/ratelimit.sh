#!/bin/bash
# tests/bench/ratelimit.sh BUILD_DIR: what the rate limiter costs when it never
# limits. One lb-dataplane in front of the origin switches by SIGHUP between a
# snapshot with the limiter off and one with a per-client token bucket at a
# rate no load here can reach (the same process and sockets, so only the
# limiter differs); wrk runs ROUNDS rounds of DURATION seconds in each state
# (2 threads, CONNS connections, all from one client address: the worst case,
# every request takes the same key's lock) and the medians are compared.
# Everything listens on free 127.0.0.1 ports and is stopped by pid on exit.
set -euo pipefail

BUILD=${1:?usage: tests/bench/ratelimit.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
. "$SRC/tests/bench/lib.sh"
bench_init rl
bench_need ratelimit wrk protoc
bench_origin "$BUILD" 2

P=$(free_port)
M=$(free_port)
gen=0
for mode in off on; do
    rl=""
    [ "$mode" = on ] && rl='ratelimit { enabled: true rate: 100000000 burst: 100000000 per_client: true }'
    cat >"$TMP/$mode.txt" <<SNAP
frontends { name: "bench" bind_address: "127.0.0.1" port: $P }
backends { id: "origin" host: "127.0.0.1" port: $ORIGIN }
logging { level: LOG_WARN access_log_off: true }
metrics { enabled: true bind_address: "127.0.0.1" port: $M }
$rl
SNAP
done
# switch MODE: write its snapshot with the next generation and reload
switch() {
    gen=$((gen + 1))
    { echo "config_version: $gen generation: $gen"; cat "$TMP/$1.txt"; } >"$TMP/cur.txt"
    bench_encode "$TMP/cur.txt" "$TMP/cur.pb.tmp"
    mv "$TMP/cur.pb.tmp" "$TMP/cur.pb"
    [ -n "${LB_PID:-}" ] && kill -HUP "$LB_PID"
    sleep 0.5
}
switch off
bench_start lb "$BUILD/lb-dataplane" --snapshot "$TMP/cur.pb" --workers 2 --log-level warn
LB_PID=$LAST_PID
wait_port "$P" "$LB_PID" || { echo "ratelimit bench: lb-dataplane did not start" >&2; tail -5 "$TMP/lb.log" >&2; exit 1; }

declare -A RUNS
for r in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        switch "$mode"
        rps=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$P/" | awk '/Requests\/sec/{print $2}')
        echo "ratelimit bench: round $r limiter $mode: $rps req/s" >&2
        RUNS[$mode]="${RUNS[$mode]:-} $rps"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# proof that the limiter was on: it counted the last "on" round's requests
seen=$(python3 -c "import urllib.request as u; print(sum(float(l.split()[-1]) for l in u.urlopen('http://127.0.0.1:$M/metrics').read().decode().splitlines() if l.startswith('lb_ratelimit_requests_total')))" 2>/dev/null || echo 0)
off=$(echo "${RUNS[off]}" | median)
on=$(echo "${RUNS[on]}" | median)
printf '\nlimiter  req/s (median of %s x %ss)\n' "$ROUNDS" "$DURATION"
printf 'off      %s\non       %s\n' "$off" "$on"
awk -v a="$off" -v b="$on" 'BEGIN { printf "cost     %.1f %%\n", (a - b) / a * 100 }'
printf 'requests the limiter counted in its last "on" round: %.0f\n' "$seen"
