#!/bin/sh
# tests/deploy/verify-units.sh [DEPLOY_DIR]: checks the systemd files in deploy/
# without touching the host: the units with `systemd-analyze verify` and an
# offline security review (exposure at most LB_UNIT_MAX_EXPOSURE, default 2.5),
# lb.sysusers and lb.tmpfiles by applying them to a scratch root.
# Everything happens under a temporary --root, so the units are checked as they
# are; their ExecStart binaries are stood in for by stub scripts there.
# Exit: 0 pass, 1 fail, 77 skip (systemd-analyze missing or unusable here).
set -u

deploy=${1:-$(dirname "$0")/../../deploy}
# Absolute: the systemd tools resolve relative paths under --root.
deploy=$(cd "$deploy" 2>/dev/null && pwd) || { echo "FAIL: no directory ${1:-deploy}"; exit 1; }
max_exposure=${LB_UNIT_MAX_EXPOSURE:-2.5}
units="lb-controlplane.service lb-dataplane.service"

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

command -v systemd-analyze >/dev/null 2>&1 || skip "systemd-analyze is not installed"
unitdir=
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -f "$d/sysinit.target" ]; then
        unitdir=$d
        break
    fi
done
[ -n "$unitdir" ] || skip "no systemd unit directory with sysinit.target on this host"

root=$(mktemp -d "${TMPDIR:-/tmp}/lb-verify-units.XXXXXX") || fail "mktemp"
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib/systemd" "$root/etc/systemd/system" \
    "$root/run" "$root/var/lib" || fail "scratch root"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
cp -R "$unitdir" "$root/usr/lib/systemd/system" || fail "copying $unitdir"

stub() {
    printf '#!/bin/sh\nexit 0\n' >"$root$1" && chmod 755 "$root$1"
}

# systemd-analyze must work at all here (a sandbox may deny what it needs).
printf '[Service]\nExecStart=/usr/bin/true\n' >"$root/etc/systemd/system/lb-probe.service"
stub /usr/bin/true
if ! out=$(systemd-analyze verify --man=no --generators=no --root="$root" \
    "$root/etc/systemd/system/lb-probe.service" 2>&1); then
    skip "systemd-analyze verify does not work in this environment: $out"
fi
rm -f "$root/etc/systemd/system/lb-probe.service"

for u in $units; do
    [ -f "$deploy/$u" ] || fail "$deploy/$u is missing"
    cp "$deploy/$u" "$root/etc/systemd/system/$u" || fail "copying $u"
    # Exec*= commands: ours get stubs; anything else must exist on this host.
    for cmd in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$deploy/$u"); do
        case "$cmd" in
        /usr/bin/lb-*) stub "$cmd" ;;
        /*)
            [ -x "$cmd" ] || fail "$u runs $cmd, which is not on this host"
            stub "$cmd"
            ;;
        *) fail "$u: command $cmd is not an absolute path" ;;
        esac
    done
done

status=0
for u in $units; do
    # verify exits 0 on unknown keys and unparsable values, so any output fails too.
    out=$(systemd-analyze verify --man=no --generators=no --root="$root" \
        "$root/etc/systemd/system/$u" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then
        echo "FAIL: systemd-analyze verify $u (exit $rc):"
        echo "$out"
        status=1
    else
        echo "ok: verify $u"
    fi
    out=$(systemd-analyze security --offline=yes --root="$root" \
        --threshold="$(echo "$max_exposure" | awk '{ printf "%d", $1 * 10 }')" "$u" 2>&1)
    rc=$?
    level=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ $rc -ne 0 ] || [ -z "$level" ]; then
        echo "FAIL: $u exposure ${level:-unknown} (at most $max_exposure allowed):"
        echo "$out" | grep '✗'
        status=1
    else
        echo "ok: $u exposure $level"
    fi
done

# Both units must share /run/lb without removing it when one of them stops.
for u in $units; do
    for want in "User=lb" "Group=lb" "RuntimeDirectory=lb" "RuntimeDirectoryPreserve=yes" \
        "Type=notify" "WatchdogSec=30s"; do
        grep -qx "$want" "$deploy/$u" || {
            echo "FAIL: $u lacks $want"
            status=1
        }
    done
done

# sysusers and tmpfiles applied to the scratch root (chown needs root).
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: applying lb.sysusers and lb.tmpfiles needs root"
else
    out=$(systemd-sysusers --root="$root" "$deploy/lb.sysusers" 2>&1) ||
        fail "systemd-sysusers lb.sysusers: $out"
    entry=$(grep '^lb:' "$root/etc/passwd") || fail "lb.sysusers made no lb user"
    uid=$(echo "$entry" | cut -d: -f3)
    gid=$(echo "$entry" | cut -d: -f4)
    home=$(echo "$entry" | cut -d: -f6)
    [ "$home" = /var/lib/lb ] || fail "lb's home is $home, not /var/lib/lb"
    out=$(systemd-tmpfiles --root="$root" --create "$deploy/lb.tmpfiles" 2>&1) ||
        fail "systemd-tmpfiles lb.tmpfiles: $out"
    [ -z "$out" ] || fail "systemd-tmpfiles lb.tmpfiles: $out"
    for d in /run/lb /var/lib/lb; do
        got=$(stat -c '%a %u %g' "$root$d" 2>/dev/null) || fail "lb.tmpfiles did not create $d"
        [ "$got" = "750 $uid $gid" ] || fail "$d is '$got', want '750 $uid $gid'"
    done
    echo "ok: lb.sysusers and lb.tmpfiles"
fi

exit $status
