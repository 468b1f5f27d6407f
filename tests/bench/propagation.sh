#!/bin/bash
# tests/bench/propagation.sh BUILD_DIR: how fast a config change reaches the
# data planes, and what a 10,000-backend config costs. Prints figures; it is a
# benchmark, not a test (it exits non-zero only when something fails to run).
#
#  1. Propagation: CHANGES `lbctl backends update ID --weight 2|3` in a row;
#     for each, the time from lbctl returning until
#       a. one data plane's /metrics serves the new lb_config_version, and the
#          admin API (GET /api/v1/dataplanes) shows it applied;
#       b. two data planes both show it applied in the admin API. Both data
#          planes would need the one metrics port of the config, so this part
#          runs with metrics disabled.
#     Target: p99 < 50 ms.
#  2. Scale: while wrk sends steady traffic, `lbctl config apply` of a config
#     with SCALE_BACKENDS backends (3 real lb-backend origins, the rest
#     distinct 127.0.0.1:20000+ URLs with state disabled). Reports lbctl's wall
#     time (the control plane's apply), the time until the data plane serves
#     it, and wrk's p99 in runs of DURATION seconds: no change (3 backends),
#     3 -> 10k mid-run, no change (10k), 10k -> 3 mid-run. During each apply
#     a sequential probe on one keep-alive connection places the slowest
#     request against the control plane's "published" log line, and the
#     daemons' logs split the apply into control plane / data plane time.
#     Targets: applied < 20 ms after publish; p99 moves by < 1 ms.
#
# Everything listens on free 127.0.0.1 ports, lives in a temp dir, and every
# process started here is stopped by pid on exit and on Ctrl-C.
# Environment: CHANGES (100), DURATION seconds per wrk run (10), CONNS wrk
# connections (16), WRK_DELAY_MS pause between a connection's requests (5;
# 0 = as fast as possible), SCALE_BACKENDS (10000).
# Smoke run: CHANGES=20 DURATION=3 tests/bench/propagation.sh build
set -euo pipefail

BUILD=${1:?usage: tests/bench/propagation.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
CHANGES=${CHANGES:-100}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
WRK_DELAY_MS=${WRK_DELAY_MS:-5}
SCALE_BACKENDS=${SCALE_BACKENDS:-10000}

. "$SRC/tests/bench/lib.sh"
bench_init propagation
bench_need propagation wrk python3 curl
# the interpreter itself: a version manager's shim costs seconds per call on a busy machine
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
PY="$PYTHON $HERE/propagation.py"
bench_built propagation "$BUILD" lb-backend lb-controlplane lb-dataplane lbctl
if [ "$SCALE_BACKENDS" -lt 3 ] || [ "$SCALE_BACKENDS" -gt 10003 ]; then
    echo "propagation: SCALE_BACKENDS must be 3..10003" >&2
    exit 1
fi

ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# run CMD...: CMD in the background and wait for it, so that INT and TERM
# reach the trap at once instead of after CMD ends.
run() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

die() {
    echo "propagation: $1" >&2
    shift
    local log
    for log in "$@"; do
        echo "--- $log (last lines)" >&2
        tail -5 "$TMP/$log.log" >&2 || true
    done
    exit 1
}

rss_kb() {
    awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# ---- origins ----------------------------------------------------------------
REAL=()
for i in 0 1 2; do
    bench_backend "$BUILD" "origin$i"
    REAL+=("$BACKEND_PORT")
done
REAL_CSV=$(IFS=,; echo "${REAL[*]}")

FE=$(free_port)
MET=$(free_port)
RUN=$TMP/run
ADMIN=$RUN/admin.sock
$PY gen-config --out "$TMP/small.yaml" --frontend "$FE" --real "$REAL_CSV" --metrics "$MET"
$PY gen-config --out "$TMP/small-nometrics.yaml" --frontend "$FE" --real "$REAL_CSV"
$PY gen-config --out "$TMP/large.yaml" --frontend "$FE" --real "$REAL_CSV" \
    --disabled $((SCALE_BACKENDS - 3)) --metrics "$MET"

# ---- control plane and the first data plane ---------------------------------
bench_start cp "$BUILD/lb-controlplane" --db "$TMP/lb.db" --bootstrap "$TMP/small.yaml" \
    --runtime-dir "$RUN"
CP_PID=$LAST_PID
for _ in $(seq 1 200); do
    [ -S "$ADMIN" ] && break
    kill -0 "$CP_PID" 2>/dev/null || break
    sleep 0.05
done
[ -S "$ADMIN" ] || die "lb-controlplane did not start" cp

bench_start dp1 "$BUILD/lb-dataplane" --control "ipc://$RUN" --node-id dp1 --workers 2
DP1_PID=$LAST_PID
run $PY wait-sync --admin "$ADMIN" --nodes dp1 --metrics "127.0.0.1:$MET" ||
    die "dp1 did not apply the bootstrap config" cp dp1
body=$(curl -s --max-time 5 "http://127.0.0.1:$FE/" || true)
[ -n "$body" ] || die "the frontend 127.0.0.1:$FE does not answer" dp1

echo "lb propagation benchmark: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "build $BUILD ($(grep -o 'CMAKE_BUILD_TYPE:STRING=.*' "$BUILD/CMakeCache.txt" | cut -d= -f2))"
echo

# ---- 1a. one data plane: /metrics and the admin API ---------------------------
echo "1a. propagation to one data plane (dp1)"
run $PY changes --admin "$ADMIN" --lbctl "$BUILD/lbctl" --backend real-0 --nodes dp1 \
    --metrics "127.0.0.1:$MET" --count "$CHANGES"
echo

# ---- 1b. two data planes: the admin API ---------------------------------------
echo "1b. propagation to two data planes (dp1, dp2; metrics disabled)"
"$BUILD/lbctl" --socket "$ADMIN" config apply "$TMP/small-nometrics.yaml" \
    --comment "two data planes" >/dev/null || die "lbctl config apply failed" cp
bench_start dp2 "$BUILD/lb-dataplane" --control "ipc://$RUN" --node-id dp2 --workers 2
DP2_PID=$LAST_PID
run $PY wait-sync --admin "$ADMIN" --nodes dp1,dp2 || die "dp1 and dp2 are not in sync" cp dp1 dp2
run $PY changes --admin "$ADMIN" --lbctl "$BUILD/lbctl" --backend real-0 --nodes dp1,dp2 \
    --count "$CHANGES"
bench_stop "$DP2_PID"
echo

# ---- 2. scale: 10,000 backends under traffic --------------------------------
echo "2. scale: $SCALE_BACKENDS backends (3 active, $((SCALE_BACKENDS - 3)) disabled), wrk -t2" \
    "-c$CONNS -d${DURATION}s, ${WRK_DELAY_MS} ms between a connection's requests"
"$BUILD/lbctl" --socket "$ADMIN" config apply "$TMP/small.yaml" --comment "scale baseline" \
    >/dev/null || die "lbctl config apply failed" cp
run $PY wait-sync --admin "$ADMIN" --nodes dp1 --metrics "127.0.0.1:$MET" ||
    die "dp1 did not apply the baseline" cp dp1
echo "   config sizes: $(wc -c <"$TMP/small.yaml") bytes (3 backends)," \
    "$(wc -c <"$TMP/large.yaml") bytes ($SCALE_BACKENDS backends)"

WRK_ARGS=()
if [ "$WRK_DELAY_MS" -gt 0 ]; then
    printf 'function delay()\n    return %d\nend\n' "$WRK_DELAY_MS" >"$TMP/delay.lua"
    WRK_ARGS=(-s "$TMP/delay.lua")
fi

# run_wrk NAME [CONFIG]: one wrk run; with CONFIG, applies it halfway through.
run_wrk() {
    local name=$1 cfg=${2:-} wrk_pid probe_pid
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${WRK_ARGS[@]}" "http://127.0.0.1:$FE/" \
        >"$TMP/wrk-$name.txt" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    if [ -n "$cfg" ]; then
        sleep "$("$PYTHON" -c "print(max(0, $DURATION / 2 - 1))")"
        $PY probe --target "127.0.0.1:$FE" --seconds 120 --stop-file "$TMP/stop-$name" \
            >"$TMP/probe-$name.json" &
        probe_pid=$!
        PIDS+=("$probe_pid")
        sleep 1
        run $PY apply --admin "$ADMIN" --lbctl "$BUILD/lbctl" --file "$cfg" --nodes dp1 \
            --metrics "127.0.0.1:$MET" --comment "scale $name" --cp-log "$TMP/cp.log" \
            --dp-log "$TMP/dp1.log" >"$TMP/apply-$name.json" ||
            die "the apply during run $name failed" cp dp1
        sleep 1
        touch "$TMP/stop-$name"
        wait "$probe_pid" || die "the probe during run $name failed"
    fi
    wait "$wrk_pid" || die "wrk failed in run $name: $(cat "$TMP/wrk-$name.txt")"
    $PY wrk-p99 <"$TMP/wrk-$name.txt" >"$TMP/p99-$name.json" || exit 1
}

run_wrk small
RSS_SMALL_DP=$(rss_kb "$DP1_PID")
RSS_SMALL_CP=$(rss_kb "$CP_PID")
run_wrk grow "$TMP/large.yaml"
run_wrk large
RSS_LARGE_DP=$(rss_kb "$DP1_PID")
RSS_LARGE_CP=$(rss_kb "$CP_PID")
run_wrk shrink "$TMP/small.yaml"

run $PY report-scale --dir "$TMP" --backends "$SCALE_BACKENDS" --cp-log "$TMP/cp.log"
echo "   RSS: dp1 $RSS_SMALL_DP -> $RSS_LARGE_DP KiB, control plane $RSS_SMALL_CP ->" \
    "$RSS_LARGE_CP KiB (3 -> $SCALE_BACKENDS backends)"
