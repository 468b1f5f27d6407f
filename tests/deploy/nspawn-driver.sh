#!/bin/bash
# tests/deploy/nspawn-driver.sh: the cases of tests/deploy/nspawn.sh, run
# inside the booted container as lb-test-driver.service (root). The units from
# deploy/ run the build's binaries from /opt/lb/bin; /opt/lb/test/env gives
# the ports and timings; every finding goes to /out (bound to the host):
# result (one "ok: ..." or "FAIL: ..." line per check, then "done N"),
# figures (measurements), driver.log, journal.txt. Powers the container off
# at the end, whatever happened. Every wait is bounded.
set -u
exec >/out/driver.log 2>&1
# shellcheck source=/dev/null
. /opt/lb/test/env # FE_PORT BE_PORT DRAIN_S WATCHDOG_S
B=/opt/lb/bin
BASE=http://127.0.0.1:$FE_PORT
DP=lb-dataplane
CP=lb-controlplane
fails=0
backend_pid=
touch /out/started

ok() {
    echo "ok: $*"
    echo "ok: $*" >>/out/result
}
bad() {
    echo "FAIL: $*"
    echo "FAIL: $*" >>/out/result
    fails=$((fails + 1))
}
figure() {
    echo "figure: $*"
    echo "$*" >>/out/figures
}
finish() {
    journalctl --no-pager -o short-precise -u $DP -u $CP >/out/journal.txt 2>&1
    systemctl status --no-pager $DP $CP >/out/status.txt 2>&1
    [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null
    echo "done $fails" >>/out/result
    systemctl poweroff --no-block
}
trap finish EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
prop() { systemctl show -P "$2" "$1"; }
# wait_for SECONDS COMMAND...: polls every 0.1 s; 1 when time is up.
wait_for() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -ge $deadline ] && return 1
        sleep 0.1
    done
}
is_running() { [ "$(prop "$1" ActiveState)/$(prop "$1" SubState)" = active/running ]; }
main_pid_not() { [ "$(prop $DP MainPID)" != "$1" ] && [ "$(prop $DP MainPID)" != 0 ] && is_running $DP; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
serves() { curl -fsS -m 2 -o /dev/null "$BASE/"; }
# json_field FILE KEY: an integer field of lb-faultload's JSON line.
json_field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"; }
# load_check NAME FILE: the load in FILE lost nothing.
load_check() {
    local total failed
    total=$(json_field "$2" total)
    failed=$(json_field "$2" failed)
    if [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$failed" = 0 ]; then
        ok "$1: $total requests, 0 failed"
    else
        bad "$1: load lost requests: $(cat "$2")"
    fi
    figure "$1 load: $(sed 's/,"failed_ids".*//' "$2")}"
}

# ---- the backend and both units up -----------------------------------------------
$B/lb-backend --port "$BE_PORT" --name b1 >/out/backend.log 2>&1 &
backend_pid=$!
wait_for 10 curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$BE_PORT/health" ||
    bad "lb-backend did not start"

t0=$(now_ms)
if systemctl start $CP $DP; then
    figure "start of both units (Type=notify, until READY=1): $(($(now_ms) - t0)) ms"
else
    bad "systemctl start $CP $DP failed"
fi
for u in $CP $DP; do
    if is_running $u && [ "$(prop $u Type)" = notify ]; then
        ok "$u active (running) as Type=notify, main pid $(prop $u MainPID)"
    else
        bad "$u is $(prop $u ActiveState)/$(prop $u SubState), Type=$(prop $u Type)"
    fi
done
if wait_for 20 serves; then
    ok "traffic flows through the data plane"
else
    bad "no 200 from $BASE/"
fi

# ---- reload: in place, same process ------------------------------------------------------
pid0=$(prop $DP MainPID)
$B/lb-faultload --port "$FE_PORT" --clients 8 --seconds 4 >/out/load-reload.json &
lp=$!
sleep 1
t0=$(now_ms)
systemctl reload $DP || bad "systemctl reload $DP failed"
figure "systemctl reload: $(($(now_ms) - t0)) ms"
wait $lp
load_check "reload under load" /out/load-reload.json
[ "$(prop $DP MainPID)" = "$pid0" ] && is_running $DP &&
    ok "reload kept main pid $pid0" || bad "reload: main pid $(prop $DP MainPID), was $pid0"

# ---- upgrade: two hand-overs under load -------------------------------------------------
upgrade() { # $1: the main pid now; sets new_pid
    local t0
    t0=$(now_ms)
    systemctl kill --kill-whom=main --signal=SIGUSR2 $DP || bad "systemctl kill -s USR2 failed"
    if wait_for 30 main_pid_not "$1"; then
        new_pid=$(prop $DP MainPID)
        figure "upgrade $1 -> $new_pid: main pid switched after $(($(now_ms) - t0)) ms"
        ok "upgrade: the successor $new_pid is the unit's main process, unit active (running)"
    else
        new_pid=$1
        bad "upgrade: main pid still $(prop $DP MainPID) ($(prop $DP ActiveState)/$(prop $DP SubState))"
    fi
    if wait_for $((DRAIN_S + 10)) pid_gone "$1"; then
        ok "upgrade: the old process $1 exited"
    else
        bad "upgrade: the old process $1 is still there"
    fi
}
$B/lb-faultload --port "$FE_PORT" --clients 8 --seconds 10 >/out/load-upgrade.json &
lp=$!
sleep 1
upgrade "$pid0"
pid1=$new_pid
upgrade "$pid1"
pid2=$new_pid
wait $lp
load_check "two upgrades under load" /out/load-upgrade.json
[ "$(prop $DP NRestarts)" = 0 ] && ok "upgrades: systemd restarted nothing (NRestarts=0)" ||
    bad "upgrades: NRestarts=$(prop $DP NRestarts)"
# the successor's own watchdog pings must count: outlive WatchdogSec
sleep $((WATCHDOG_S + 2))
if [ "$(prop $DP MainPID)" = "$pid2" ] && is_running $DP && [ "$(prop $DP NRestarts)" = 0 ]; then
    ok "watchdog: the second successor $pid2 kept the unit alive for WatchdogSec+2 s"
else
    bad "watchdog after upgrades: main pid $(prop $DP MainPID), NRestarts=$(prop $DP NRestarts)"
fi
# lbctl dataplanes: the version and pid of the process serving now
ver=$($B/lb-dataplane --version | sed 's/^lb-dataplane //')
reports_successor() {
    local j
    j=$($B/lbctl --json dataplanes | tr -d ' \n')
    case "$j" in *"\"pid\":$pid2,"*) ;; *) return 1 ;; esac
    case "$j" in *"\"binary_version\":\"$ver\""*) ;; *) return 1 ;; esac
    case "$j" in *"\"started_unix_ms\":1"*) return 0 ;; *) return 1 ;; esac
}
if wait_for 20 reports_successor; then
    ok "lbctl dataplanes shows the successor: pid $pid2, binary $ver, its start time"
else
    bad "lbctl dataplanes does not show pid $pid2 and version $ver: $($B/lbctl --json dataplanes)"
fi
$B/lbctl dataplanes >/out/dataplanes.txt 2>&1
n=$(journalctl --no-pager -u $DP | grep -c 'reception only permitted for main PID')
[ "$n" = 0 ] && ok "no notification refused by systemd" ||
    bad "systemd refused $n notifications (journal: reception only permitted for main PID)"

# ---- watchdog: the successor, frozen, is killed and restarted ---------------------------------
# the main process is the second successor: its watchdog is the one it took
# over, so freezing it must fire it
pid=$(prop $DP MainPID)
[ "$pid" = "$pid2" ] || bad "watchdog: main pid $pid, not the successor $pid2"
r0=$(prop $DP NRestarts)
kill -STOP "$pid"
t0=$(now_ms)
if wait_for $((WATCHDOG_S + 20)) main_pid_not "$pid"; then
    dt=$(($(now_ms) - t0))
    figure "frozen (SIGSTOP) successor: serving again from a new process after $dt ms (WatchdogSec=${WATCHDOG_S}s, RestartSec=1s)"
    if [ $dt -le $(((WATCHDOG_S + 1 + 5) * 1000)) ] && [ "$(prop $DP NRestarts)" -gt "$r0" ]; then
        ok "watchdog: the frozen successor $pid killed and the unit restarted in $dt ms"
    else
        bad "watchdog: restart took $dt ms, NRestarts $(prop $DP NRestarts)"
    fi
else
    bad "watchdog: frozen pid $pid not replaced (main pid $(prop $DP MainPID))"
    kill -CONT "$pid" 2>/dev/null
fi
journalctl --no-pager -u $DP | grep -q 'Watchdog timeout' && ok "journal: Watchdog timeout logged" ||
    bad "no 'Watchdog timeout' in the journal"
wait_for 10 serves || bad "after the watchdog restart: not serving"

# ---- restart: drains what is in flight ----------------------------------------------------
curl -sS -m 20 -o /dev/null -w '%{http_code}' "$BASE/slow/1500" >/out/restart-slow.txt 2>&1 &
cp_=$!
sleep 0.3
t0=$(now_ms)
systemctl restart $DP || bad "systemctl restart $DP failed"
figure "systemctl restart with a 1.5 s request in flight: $(($(now_ms) - t0)) ms"
wait $cp_
[ "$(cat /out/restart-slow.txt)" = 200 ] && ok "restart: the request in flight finished (200)" ||
    bad "restart: the request in flight got '$(cat /out/restart-slow.txt)'"
wait_for 10 serves && ok "restart: serving again" || bad "restart: not serving"

# ---- control plane restart under load -------------------------------------------------------
$B/lb-faultload --port "$FE_PORT" --clients 8 --seconds 4 >/out/load-cp-restart.json &
lp=$!
sleep 1
systemctl stop $CP || bad "systemctl stop $CP failed"
out=$($B/lbctl status 2>&1)
rc=$?
case "$rc:$out" in
"3:lbctl: cannot reach the control plane at /run/lb/admin.sock: it is not running or is restarting"*)
    ok "lbctl with the control plane stopped: exit 3, '$out'" ;;
*) bad "lbctl with the control plane stopped: exit $rc, '$out'" ;;
esac
systemctl start $CP || bad "systemctl start $CP failed"
wait $lp
load_check "control plane restart under load" /out/load-cp-restart.json
wait_for 10 $B/lbctl status && ok "lbctl answers after the control plane restart" ||
    bad "lbctl status after the control plane restart: $($B/lbctl status 2>&1)"

# ---- systemd-analyze security and what the sandbox holds ------------------------------------
for u in $CP $DP; do
    systemd-analyze security --no-pager $u >/out/security-$u.txt 2>&1
    lvl=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]* [A-Z]*\).*/\1/p' /out/security-$u.txt)
    figure "systemd-analyze security $u: ${lvl:-unknown}"
    [ -n "$lvl" ] || bad "systemd-analyze security $u gave no figure"
    pid=$(prop $u MainPID)
    st=$(grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd|CapAmb):' /proc/$pid/status | tr -s '\t ' ' ' | tr '\n' ' ')
    figure "$u pid $pid: $st"
    user=$(stat -c %U /proc/$pid)
    mnt_own=$([ "$(readlink /proc/$pid/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] && echo yes || echo no)
    if [ "$user" = lb ] && echo "$st" | grep -q 'NoNewPrivs: 1' && echo "$st" | grep -q 'Seccomp: 2' &&
        [ "$mnt_own" = yes ]; then
        ok "$u runs as lb, no_new_privs, seccomp filter, own mount namespace"
    else
        bad "$u sandbox: user $user, $st, own mount namespace: $mnt_own"
    fi
    # what a container may not enforce: the device ACL (PrivateDevices=,
    # ProtectClock=) lives in the devices cgroup controller (v1) or a BPF
    # program (v2); ProtectHostname= needs a UTS namespace
    cg=$(sed -n 's/^[0-9]*:devices:\(.*\)/\1/p' /proc/$pid/cgroup)
    if [ -n "$cg" ] && [ -r "/sys/fs/cgroup/devices$cg/devices.list" ]; then
        acl=$(tr '\n' ' ' <"/sys/fs/cgroup/devices$cg/devices.list")
        case "$acl" in
        "a *:* rwm ") figure "$u: device ACL NOT in force (devices cgroup $cg allows all)" ;;
        *) figure "$u: device ACL in force: $acl" ;;
        esac
    else
        figure "$u: device ACL not visible here (no devices cgroup v1 for the unit)"
    fi
    if [ "$(readlink /proc/$pid/ns/uts)" != "$(readlink /proc/1/ns/uts)" ]; then
        figure "$u: ProtectHostname= in force (own UTS namespace)"
    else
        figure "$u: ProtectHostname= NOT in force (the container's UTS namespace)"
    fi
    sed -n 's/^\([0-9]* [0-9]* [^ ]* [^ ]* \/proc .* - proc proc \)\(.*\)/\2/p' /proc/$pid/mountinfo |
        grep -q 'hidepid=invisible' && figure "$u: ProtectProc=invisible in force (/proc hidepid=invisible)" ||
        figure "$u: ProtectProc=invisible NOT in force"
    # ProtectSystem=strict: the process cannot write /usr or /etc
    # (no awk: it is an alternatives link, and /etc starts empty here)
    ro=$(sed -n 's#^[0-9]* [0-9]* [^ ]* [^ ]* \(/\|/usr\|/etc\) \([^ ]*\) .*#\1:\2#p' \
        /proc/$pid/mountinfo | tr '\n' ' ')
    figure "$u: mounts seen by the service: $ro"
    cp /proc/$pid/mountinfo /out/mountinfo-$u.txt
    case "$ro" in
    *rw*) bad "$u: ProtectSystem=strict not in force: $ro" ;;
    *ro*) ok "$u: / and /usr read-only for the service (ProtectSystem=strict)" ;;
    *) bad "$u: no /usr or /etc mount found: '$ro'" ;;
    esac
done

# ---- stop: exits within the drain time ------------------------------------------------------
curl -sS -m 20 -o /dev/null -w '%{http_code}' "$BASE/slow/1000" >/out/stop-short.txt 2>&1 &
c1=$!
curl -sS -m 30 -o /dev/null -w '%{http_code}' "$BASE/slow/20000" >/out/stop-long.txt 2>&1 &
c2=$!
sleep 0.3
t0=$(now_ms)
systemctl stop $DP || bad "systemctl stop $DP failed"
dt=$(($(now_ms) - t0))
figure "systemctl stop with 1 s and 20 s requests in flight: $dt ms (drain timeout ${DRAIN_S}s)"
wait $c1 $c2
[ "$(cat /out/stop-short.txt)" = 200 ] && ok "stop: the 1 s request finished (200)" ||
    bad "stop: the 1 s request got '$(cat /out/stop-short.txt)'"
if [ $dt -le $(((DRAIN_S + 3) * 1000)) ] && [ "$(prop $DP ActiveState)" = inactive ]; then
    ok "stop: exited within the drain timeout ($dt ms; the 20 s request was cut: $(cat /out/stop-long.txt))"
else
    bad "stop: took $dt ms, unit $(prop $DP ActiveState) ($(prop $DP Result))"
fi
[ "$(prop $DP Result)" = success ] && ok "stop: result success" ||
    bad "stop: result $(prop $DP Result)"
systemctl stop $CP
