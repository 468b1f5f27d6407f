#!/bin/bash
# tests/deploy/nspawn.sh BUILD_DIR [SRC_DIR]: the units of deploy/ under a real
# systemd. Boots this machine's own systemd as PID 1 in a container
#   systemd-nspawn --directory=/ --volatile=yes --register=no --keep-unit -b
#     systemd.firstboot=off systemd.unit=lb-test.target
# with the units bound into /etc/systemd/system (ExecStart paths substituted
# to the build's binaries, bound read-only at /opt/lb/bin), lb.sysusers and
# lb.tmpfiles into /etc/sysusers.d and /etc/tmpfiles.d (applied at boot), a
# config with free loopback ports as /etc/lb/config.yaml, and a target of
# our own that starts only tests/deploy/nspawn-driver.sh, which runs the
# cases and writes its findings to a results folder bound from the host.
# The container shares the host's network: every port is a free one on
# 127.0.0.1. A test drop-in shortens WatchdogSec (WATCHDOG_S, default 5) so the
# frozen-process case stays short, and turns LeakSanitizer off (its ptrace is
# outside the units' system call filter); the snapshot's drain time is DRAIN_S
# (default 4) seconds.
# Exit: 0 pass, 1 fail, 77 skip (said loudly: no root, no systemd-nspawn, or
# the container cannot boot here).
set -u

build=$(cd "${1:?usage: nspawn.sh BUILD_DIR [SRC_DIR]}" && pwd) || exit 1
src=$(cd "${2:-$(dirname "$0")/../..}" && pwd) || exit 1
WATCHDOG_S=${WATCHDOG_S:-5}
DRAIN_S=${DRAIN_S:-4}
BOOT_TIMEOUT_S=${BOOT_TIMEOUT_S:-240}

# ctest lists a skipped test among those that "did not run" (exit 77); the
# banner says why, on both streams.
skip() {
    local b
    b=$(printf '%s\n' "################################################################" \
        "# SKIPPED: the systemd (nspawn) suite did NOT run: $*" \
        "# The units are then checked only by deploy_verify_units." \
        "################################################################")
    echo "$b"
    echo "$b" >&2
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || skip "it needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null 2>&1 || skip "systemd-nspawn is missing (Debian package systemd-container)"
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd to boot"
for b in lb-dataplane lb-controlplane lb-backend lb-faultload lbctl; do
    [ -x "$build/$b" ] || fail "$build/$b is not built"
done

work=$(mktemp -d /tmp/lb-nspawn.XXXXXX) || fail "mktemp"
nspawn_pid=
cleanup() {
    [ -n "$nspawn_pid" ] && kill "$nspawn_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir -p "$work/units" "$work/out" "$work/test" "$work/etc-lb"

# free_port: a TCP port nothing listens on, on 127.0.0.1 (not one we took).
taken=" "
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        case "$taken" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            taken="$taken$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}
FE_PORT=$(free_port) && BE_PORT=$(free_port) && MX_PORT=$(free_port) || fail "no free ports"

# The units as shipped, binaries substituted.
for u in lb-controlplane.service lb-dataplane.service; do
    sed 's#/usr/bin/lb-#/opt/lb/bin/lb-#g' "$src/deploy/$u" >"$work/units/$u" || fail "copying $u"
done
for u in lb-controlplane lb-dataplane; do
    mkdir -p "$work/units/$u.service.d"
    cat >"$work/units/$u.service.d/test.conf" <<EOF
[Service]
WatchdogSec=${WATCHDOG_S}s
Environment=ASAN_OPTIONS=detect_leaks=0
EOF
done
cat >"$work/units/lb-test.target" <<'EOF'
[Unit]
Description=lb systemd test: the driver and nothing else
Wants=lb-test-driver.service
EOF
cat >"$work/units/lb-test-driver.service" <<'EOF'
[Unit]
Description=lb systemd test driver
[Service]
Type=oneshot
ExecStart=/bin/bash /opt/lb/test/nspawn-driver.sh
EOF
cat >"$work/test/env" <<EOF
FE_PORT=$FE_PORT
BE_PORT=$BE_PORT
DRAIN_S=$DRAIN_S
WATCHDOG_S=$WATCHDOG_S
EOF
cp "$src/tests/deploy/nspawn-driver.sh" "$work/test/" || fail "copying the driver"
cat >"$work/etc-lb/config.yaml" <<EOF
frontends:
  - name: "web"
    address: "127.0.0.1"
    port: $FE_PORT
backends:
  - id: "b1"
    url: "http://127.0.0.1:$BE_PORT"
healthcheck:
  interval: "1s"
  timeout: "1s"
  path: "/health"
  rise: 1
  fall: 3
timeouts:
  drain: "${DRAIN_S}s"
logging:
  accessLog: false
metrics:
  enabled: true
  address: "127.0.0.1"
  port: $MX_PORT
EOF
chmod 755 "$work/etc-lb"
chmod 644 "$work/etc-lb/config.yaml"

binds=(--bind-ro="$build:/opt/lb/bin" --bind-ro="$work/test:/opt/lb/test"
    --bind="$work/out:/out" --bind-ro="$work/etc-lb:/etc/lb"
    --bind-ro="$src/deploy/lb.sysusers:/etc/sysusers.d/lb.conf"
    --bind-ro="$src/deploy/lb.tmpfiles:/etc/tmpfiles.d/lb.conf")
for f in "$work/units"/*; do
    binds+=(--bind-ro="$f:/etc/systemd/system/$(basename "$f")")
done

t0=$(date +%s)
timeout -k 10 "$BOOT_TIMEOUT_S" systemd-nspawn --directory=/ --volatile=yes --register=no \
    --keep-unit --machine="lbtest$$" --quiet "${binds[@]}" \
    -b systemd.firstboot=off systemd.unit=lb-test.target systemd.log_color=0 \
    >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!
wait $nspawn_pid
rc=$?
nspawn_pid=
echo "container ran $(($(date +%s) - t0)) s (systemd-nspawn exit $rc)"

if [ ! -e "$work/out/started" ]; then
    echo "--- console (last 40 lines)"
    tail -n 40 "$work/console.log"
    # systemd came up but our target did not run the driver: our fault
    grep -q 'running in system mode' "$work/console.log" &&
        fail "systemd booted in the container but lb-test-driver.service did not start"
    skip "the container did not boot here (systemd-nspawn exit $rc)"
fi
echo "--- driver log"
cat "$work/out/driver.log" 2>/dev/null
echo "--- figures"
cat "$work/out/figures" 2>/dev/null
echo "--- lbctl dataplanes (inside)"
cat "$work/out/dataplanes.txt" 2>/dev/null
if [ -n "${LB_NSPAWN_KEEP:-}" ]; then
    mkdir -p "$LB_NSPAWN_KEEP" && cp -a "$work/out/." "$LB_NSPAWN_KEEP/" && cp "$work/console.log" "$LB_NSPAWN_KEEP/"
fi
result=$(tail -n 1 "$work/out/result" 2>/dev/null)
if [ "$result" != "done 0" ]; then
    echo "--- journal of both units"
    tail -n 150 "$work/out/journal.txt" 2>/dev/null
    [ $rc -eq 124 ] && echo "the container was stopped after $BOOT_TIMEOUT_S s"
    fail "$(grep -c '^FAIL' "$work/out/result" 2>/dev/null) checks failed (result: ${result:-none})"
fi
echo "PASS: $(grep -c '^ok' "$work/out/result") checks"
