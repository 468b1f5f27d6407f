#!/bin/bash
# tests/run-demo.sh BUILD_DIR: what `make run` calls. Starts the whole system
# on 127.0.0.1: three demo backends (demo-a/b/c on 9001-9003), lb-controlplane
# (SQLite db and runtime dir under ./.state/, bootstrap deploy/config.yaml;
# admin API and dashboard on 127.0.0.1:9180, tokens in ./.state/admin-tokens) and
# one lb-dataplane following it (frontend 8080, metrics 9090), then waits.
# Ctrl-C or SIGTERM stops everything it started, by pid. The db survives a
# re-run (config versions are kept); `rm -rf .state` starts afresh.
set -euo pipefail

BUILD=${1:?usage: tests/run-demo.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$SRC/deploy/config.yaml
STATE=$PWD/.state
RUN=$STATE/run
FRONT_PORT=8080
METRICS_PORT=9090
ADMIN_PORT=9180 # the admin API over TCP (plain HTTP, loopback only) and the dashboard
NAMES=(demo-a demo-b demo-c)
PORTS=(9001 9002 9003)

for bin in lb-backend lb-controlplane lb-dataplane lbctl; do
    [ -x "$BUILD/$bin" ] || { echo "run-demo: $BUILD/$bin is not built (run make build)" >&2; exit 1; }
done
[ -r "$CONFIG" ] || { echo "run-demo: $CONFIG is missing" >&2; exit 1; }

port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "${PORTS[@]}" "$FRONT_PORT" "$METRICS_PORT" "$ADMIN_PORT"; do
    if port_taken "$p"; then
        echo "run-demo: 127.0.0.1:$p is already in use; stop whatever listens there" \
            "(ss -ltnp 'sport = :$p') and retry" >&2
        exit 1
    fi
done
if [ -S "$RUN/admin.sock" ] && "$BUILD/lbctl" --socket "$RUN/admin.sock" --timeout 2 status >/dev/null 2>&1; then
    echo "run-demo: a control plane already serves $RUN/admin.sock; stop it first" >&2
    exit 1
fi

PIDS=()
stop_all() {
    local pid i
    trap - INT TERM EXIT
    # Data plane first, then the control plane, then the backends.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
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
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until <check> succeeds while <pid> lives, up to 10 s.
wait_for() {
    local pid=$1
    shift
    for _ in $(seq 1 200); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$FRONT_PORT" && printf 'GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' >&3 &&
        head -c 12 <&3 | grep -q '^HTTP/1.1 200') 2>/dev/null
}
cp_ready() {
    "$BUILD/lbctl" --socket "$RUN/admin.sock" --timeout 2 status >/dev/null 2>&1
}

mkdir -p "$STATE" "$STATE/dataplane"
# the control plane refuses a database or runtime directory others may read
# (a .state made before it checked gets the demo's own files tightened)
chmod o-rwx "$STATE" "$STATE/dataplane" "$STATE"/lb.db* "$STATE/run" 2>/dev/null || true
FRESH=yes
[ -e "$STATE/lb.db" ] && FRESH=no
for i in 0 1 2; do
    "$BUILD/lb-backend" --port "${PORTS[$i]}" --name "${NAMES[$i]}" >"$STATE/${NAMES[$i]}.log" 2>&1 &
    PIDS+=($!)
    wait_for $! port_taken "${PORTS[$i]}" ||
        { echo "run-demo: ${NAMES[$i]} did not start:" >&2; cat "$STATE/${NAMES[$i]}.log" >&2; exit 1; }
done

# Two tokens for the admin API over TCP (the dashboard's login), made once.
TOKENS=$STATE/admin-tokens
if [ ! -s "$TOKENS" ]; then
    (umask 077 && printf 'demo-ro %s ro\ndemo-rw %s rw\n' \
        "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
        "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$TOKENS")
fi
chmod 600 "$TOKENS"
"$BUILD/lb-controlplane" --db "$STATE/lb.db" --bootstrap "$CONFIG" --runtime-dir "$RUN" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --admin-tokens "$TOKENS" --admin-insecure-http \
    >>"$STATE/lb-controlplane.log" 2>&1 &
CP_PID=$!
PIDS+=($CP_PID)
wait_for "$CP_PID" cp_ready ||
    { echo "run-demo: lb-controlplane did not start:" >&2; tail -20 "$STATE/lb-controlplane.log" >&2; exit 1; }

"$BUILD/lb-dataplane" --control "ipc://$RUN" --state-dir "$STATE/dataplane" --node-id demo \
    >>"$STATE/lb-dataplane.log" 2>&1 &
DP_PID=$!
PIDS+=($DP_PID)
wait_for "$DP_PID" answers ||
    { echo "run-demo: lb-dataplane did not serve 127.0.0.1:$FRONT_PORT:" >&2; tail -20 "$STATE/lb-dataplane.log" >&2; exit 1; }

LBCTL=$BUILD/lbctl
case $LBCTL in "$PWD"/*) LBCTL=${LBCTL#"$PWD"/} ;; esac
if [ "$FRESH" = yes ]; then
    DB_NOTE="new db $STATE/lb.db: version 1 imported from deploy/config.yaml"
else
    DB_NOTE="kept db $STATE/lb.db: the config versions of earlier runs are still there (active: $("$BUILD/lbctl" --socket "$RUN/admin.sock" --json status 2>/dev/null | sed -n 's/.*"active_version": *\([0-9]*\).*/\1/p' | head -1))"
fi

cat <<MSG

lb is running: control plane + 1 data plane + 3 demo backends, all on 127.0.0.1
  curl http://127.0.0.1:$FRONT_PORT/                  # weighted round robin over demo-a/b/c (5/3/1 in deploy/config.yaml)
  curl http://127.0.0.1:$METRICS_PORT/metrics           # data plane metrics
  export LB_ADMIN_SOCKET=$RUN/admin.sock
  $LBCTL backends list
  $LBCTL backends update demo-c --weight 5
  $LBCTL config history
  $LBCTL rollback 1
  $LBCTL audit                                  # who changed what, newest first
  $LBCTL dataplanes
$DB_NOTE; rm -rf $STATE starts afresh.
Dashboard: http://127.0.0.1:$ADMIN_PORT/ui/  (log in with a token of $TOKENS:
  read-only  $(awk '$1 == "demo-ro" {print $2}' "$TOKENS")
  read-write $(awk '$1 == "demo-rw" {print $2}' "$TOKENS"))
Logs: $STATE/lb-controlplane.log, $STATE/lb-dataplane.log, $STATE/demo-*.log
Ctrl-C stops everything.

MSG
# Returns when a daemon exits (or at once on Ctrl-C through the trap).
set +e
wait -n "$CP_PID" "$DP_PID"
status=$?
set -e
for name in lb-controlplane:$CP_PID lb-dataplane:$DP_PID; do
    kill -0 "${name#*:}" 2>/dev/null ||
        echo "run-demo: ${name%%:*} exited (status $status); its log is $STATE/${name%%:*}.log" >&2
done
exit "$status"
