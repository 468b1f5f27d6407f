#!/bin/bash
# tests/bench/deadbackend.sh BUILD_DIR: what a dying or drowning backend
# costs clients, lb-dataplane and HAProxy 2.6 side by side (issue 18).
#
# 1. The dead-backend matrix: three lb-backend processes (weight 1, round
#    robin), keep-alive GET load from lb-faultload (tests/bench/lb-faultload.c)
#    for DURATION seconds; at FAULT_AT_MS one backend dies, either closing its
#    listener and every connection without exiting (lb-backend's SIGUSR1,
#    "close") or killed (SIGKILL, "kill"). Cells: CLIENTS x WORKERS x both
#    ways of dying, REPS repetitions each, every run with fresh backends and a
#    fresh proxy; lb and HAProxy (nbthread = workers, retries 3, option
#    redispatch, no health checks on either side) run back to back in each
#    cell, their order alternating, so both meet the same machine state.
#    Prints failed/total per cell and proxy, summed over the repetitions, and
#    in how many runs anything failed.
# 2. The cold burst: BURST new client connections at once (one GET each) to
#    one backend with --threads 1 --backlog 16; lb with maxConnections
#    BURST_LIMIT (queue large enough, 10 s queue timeout), lb without a
#    limit, and HAProxy with maxconn BURST_LIMIT on the server line; 2
#    workers/threads each, BURST_REPS interleaved rounds. Prints ok/total,
#    median p99 and the TcpExt ListenOverflows delta (host-wide counter).
#
# Environment: REPS (20), DURATION seconds (6), FAULT_AT_MS (DURATION/3),
# CLIENTS ("4 16 64"), WORKERS ("1 2"), BURST (5000), BURST_LIMIT (12),
# BURST_REPS (5). Smoke check: REPS=1 DURATION=2 tests/bench/deadbackend.sh build
# Everything listens on free 127.0.0.1 ports and is stopped by pid.
set -euo pipefail

BUILD=${1:?usage: tests/bench/deadbackend.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
REPS=${REPS:-20}
DURATION=${DURATION:-6}
FAULT_AT_MS=${FAULT_AT_MS:-$((DURATION * 1000 / 3))}
CLIENTS=${CLIENTS:-4 16 64}
WORKERS=${WORKERS:-1 2}
BURST=${BURST:-5000}
BURST_LIMIT=${BURST_LIMIT:-12}
BURST_REPS=${BURST_REPS:-5}

. "$SRC/tests/bench/lib.sh"
bench_init dead
bench_need deadbackend protoc python3 curl
bench_built deadbackend "$BUILD" lb-dataplane lb-backend lb-faultload
HAPROXY=
if command -v haproxy >/dev/null; then
    HAPROXY=haproxy
else
    echo "deadbackend: haproxy is not installed (deploy/packages-bench.txt): lb alone" >&2
fi

# A burst holds a descriptor per connection in the generator and the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# HAProxy wants two descriptors per connection and refuses to start otherwise.
HAPROXY_MAXCONN=$((($(ulimit -n) - 200) / 2))
[ "$HAPROXY_MAXCONN" -le 40000 ] || HAPROXY_MAXCONN=40000
[ "$BURST" -lt "$HAPROXY_MAXCONN" ] || echo "deadbackend: BURST $BURST is over HAProxy's maxconn $HAPROXY_MAXCONN (ulimit -n)" >&2

listen_overflows() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[i] = $i; h = 1 }
                      else { for (i = 1; i <= NF; i++) if (n[i] == "ListenOverflows") print $i } }' \
        /proc/net/netstat
}
# jnum FIELD: the number of "FIELD" in the JSON line on stdin
jnum() { grep -o "\"$1\":[-0-9.]*" | head -1 | cut -d: -f2; }

# start_backends N ARGS...: N lb-backend processes; sets BPID[] and BPORT[].
start_backends() {
    local n=$1 i
    shift
    BPID=()
    BPORT=()
    for i in $(seq 0 $((n - 1))); do
        bench_backend "$BUILD" "b$i" "$@"
        BPID[i]=$LAST_PID
        BPORT[i]=$BACKEND_PORT
    done
}

# start_proxy NAME WORKERS LIMIT: lb or haproxy in front of the started
# backends (LIMIT: per-backend connection limit, 0 none); sets PPID_ PPORT.
start_proxy() {
    local name=$1 workers=$2 limit=$3 i
    PPORT=$(free_port)
    if [ "$name" = lb ]; then
        {
            echo "config_version: 1 generation: 1"
            echo "frontends { name: \"web\" bind_address: \"127.0.0.1\" port: $PPORT }"
            for i in "${!BPORT[@]}"; do
                echo "backends { id: \"b$i\" host: \"127.0.0.1\" port: ${BPORT[$i]} max_connections: $limit max_queue: 65536 }"
            done
            echo "timeouts { queue_ms: 10000 }"
            echo "logging { level: LOG_WARN access_log_off: true }"
        } >"$TMP/lb.txt"
        bench_encode "$TMP/lb.txt" "$TMP/lb.pb"
        "$BUILD/lb-dataplane" --snapshot "$TMP/lb.pb" --workers "$workers" --log-level warn \
            --metrics-listen off >>"$TMP/lb.log" 2>&1 &
    else
        {
            echo "global"
            echo "    nbthread $workers"
            echo "    maxconn $HAPROXY_MAXCONN"
            echo "defaults"
            echo "    mode http"
            echo "    timeout connect 3s"
            echo "    timeout client 60s"
            echo "    timeout server 60s"
            echo "    timeout queue 10s"
            echo "    retries 3"
            echo "    option redispatch"
            echo "frontend fe"
            echo "    bind 127.0.0.1:$PPORT backlog 8192"
            echo "    default_backend be"
            echo "backend be"
            echo "    balance roundrobin"
            for i in "${!BPORT[@]}"; do
                if [ "$limit" -gt 0 ]; then
                    echo "    server b$i 127.0.0.1:${BPORT[$i]} maxconn $limit"
                else
                    echo "    server b$i 127.0.0.1:${BPORT[$i]}"
                fi
            done
        } >"$TMP/haproxy.cfg"
        haproxy -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    fi
    PPID_=$!
    PIDS+=($!)
    if ! wait_port "$PPORT" "$PPID_"; then
        echo "deadbackend: $name did not start:" >&2
        tail -5 "$TMP/$name.log" >&2
        exit 1
    fi
    curl -sf -o /dev/null "http://127.0.0.1:$PPORT/" || { echo "deadbackend: $name answers no GET /" >&2; exit 1; }
}

PROXIES=(lb)
[ -n "$HAPROXY" ] && PROXIES+=(haproxy)

# ---- 1. the dead-backend matrix ---------------------------------------------
declare -A FAILED TOTAL BADRUNS
echo "deadbackend: $REPS repetitions x clients {$CLIENTS} x workers {$WORKERS} x {close, kill}, ${DURATION} s each, fault at ${FAULT_AT_MS} ms" >&2
run=0
for rep in $(seq 1 "$REPS"); do
    for w in $WORKERS; do
        for c in $CLIENTS; do
            for death in close kill; do
                sig=USR1
                [ "$death" = kill ] && sig=KILL
                order=("${PROXIES[@]}")
                if [ $((run % 2)) -eq 1 ] && [ ${#PROXIES[@]} -eq 2 ]; then order=(haproxy lb); fi
                run=$((run + 1))
                line="deadbackend: rep $rep workers $w clients $c $death:"
                for px in "${order[@]}"; do
                    start_backends 3
                    start_proxy "$px" "$w" 0
                    out=$("$BUILD/lb-faultload" --port "$PPORT" --clients "$c" --seconds "$DURATION" \
                        --kill-pid "${BPID[1]}" --kill-signal "$sig" --kill-at-ms "$FAULT_AT_MS")
                    bench_stop "$PPID_" "${BPID[@]}"
                    f=$(echo "$out" | jnum failed)
                    t=$(echo "$out" | jnum total)
                    k="$px,$w,$c,$death"
                    FAILED[$k]=$((${FAILED[$k]:-0} + f))
                    TOTAL[$k]=$((${TOTAL[$k]:-0} + t))
                    BADRUNS[$k]=$((${BADRUNS[$k]:-0} + (f > 0 ? 1 : 0)))
                    line="$line $px $f/$t"
                    [ "$f" -eq 0 ] || line="$line $(echo "$out" | grep -o '"conn_errors":[0-9]*,"timeouts":[0-9]*,"status":{[^}]*}')"
                done
                echo "$line" >&2
            done
        done
    done
done
printf '\nfailed/total over %s runs per cell (runs with any failure)\n' "$REPS"
printf '%-8s %-8s %-6s' workers clients death
for px in "${PROXIES[@]}"; do printf ' %28s' "$px"; done
printf '\n'
for w in $WORKERS; do
    for c in $CLIENTS; do
        for death in close kill; do
            printf '%-8s %-8s %-6s' "$w" "$c" "$death"
            for px in "${PROXIES[@]}"; do
                k="$px,$w,$c,$death"
                printf ' %28s' "${FAILED[$k]}/${TOTAL[$k]} (${BADRUNS[$k]})"
            done
            printf '\n'
        done
    done
done

# ---- 2. the cold burst ---------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
BURST_SETUPS=("lb:$BURST_LIMIT" "lb:0")
[ -n "$HAPROXY" ] && BURST_SETUPS+=("haproxy:$BURST_LIMIT")
declare -A BOK BTOTAL BP99 BOVER
echo "deadbackend: cold burst of $BURST connections, backend --threads 1 --backlog 16, $BURST_REPS rounds" >&2
for round in $(seq 1 "$BURST_REPS"); do
    n=${#BURST_SETUPS[@]}
    line="deadbackend: burst round $round:"
    for i in $(seq 0 $((n - 1))); do
        setup=${BURST_SETUPS[$(((i + round) % n))]}
        px=${setup%%:*}
        limit=${setup##*:}
        start_backends 1 --threads 1 --backlog 16
        start_proxy "$px" 2 "$limit"
        o0=$(listen_overflows)
        out=$("$BUILD/lb-faultload" --port "$PPORT" --clients "$BURST" --burst --timeout-ms 15000)
        o1=$(listen_overflows)
        bench_stop "$PPID_" "${BPID[@]}"
        ok=$(echo "$out" | jnum ok)
        t=$(echo "$out" | jnum total)
        p99=$(echo "$out" | jnum p99_ms)
        BOK[$setup]=$((${BOK[$setup]:-0} + ok))
        BTOTAL[$setup]=$((${BTOTAL[$setup]:-0} + t))
        BP99[$setup]="${BP99[$setup]:-} $p99"
        BOVER[$setup]=$((${BOVER[$setup]:-0} + o1 - o0))
        line="$line $setup ok $ok/$t p99 ${p99}ms overflows +$((o1 - o0))"
    done
    echo "$line" >&2
done
printf '\ncold burst of %s (backend --threads 1 --backlog 16), %s rounds; ListenOverflows is\n' "$BURST" "$BURST_REPS"
printf 'host-wide: it also counts the proxy'"'"'s own listener (HAProxy 2.6: one socket, backlog\n'
printf 'capped at net.core.somaxconn %s; lb: one per worker)\n' "$(cat /proc/sys/net/core/somaxconn)"
printf '%-28s %16s %14s %18s\n' setup ok/total "median p99 ms" "ListenOverflows"
for setup in "${BURST_SETUPS[@]}"; do
    px=${setup%%:*}
    limit=${setup##*:}
    case $px:$limit in
    lb:0) name="lb, no limit" ;;
    lb:*) name="lb, maxConnections $limit" ;;
    *) name="haproxy, maxconn $limit" ;;
    esac
    printf '%-28s %16s %14s %18s\n' "$name" "${BOK[$setup]}/${BTOTAL[$setup]}" \
        "$(echo "${BP99[$setup]}" | median)" "+${BOVER[$setup]}"
done
