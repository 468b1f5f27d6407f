#!/usr/bin/env bash
# tests/fuzz/run.sh FUZZER_BINARY SECONDS [CORPUS]
# Replays every input kept in tests/fuzz/regressions/, then fuzzes for SECONDS
# from a temporary copy of tests/fuzz/CORPUS/ (default: corpus; an absolute
# path is taken as is). The repository is not modified unless a crash is
# found: its input is then saved into regressions/.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 FUZZER_BINARY SECONDS [CORPUS]" >&2
    exit 2
fi
fuzzer=$(realpath "$1")
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$fuzzer")
corpus=${3:-corpus}
[[ $corpus == /* ]] || corpus=$here/$corpus
[ -x "$fuzzer" ] || { echo "$0: $fuzzer is not executable" >&2; exit 2; }
[ -d "$corpus" ] || { echo "$0: $corpus is not a directory" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

shopt -s nullglob
regressions=("$here"/regressions/*)
if [ ${#regressions[@]} -gt 0 ]; then
    if ! "$fuzzer" -timeout=10 -rss_limit_mb=2048 "${regressions[@]}" >"$work/replay.log" 2>&1; then
        tail -n 40 "$work/replay.log" >&2
        echo "$name: a regression input crashes (see above)" >&2
        exit 1
    fi
fi
echo "$name: ${#regressions[@]} regression inputs pass"

mkdir -p "$work/corpus" "$work/artifacts"
cp "$corpus"/* "$work/corpus/" 2>/dev/null || true
rc=0
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" \
    >"$work/fuzz.log" 2>&1 || rc=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$work/fuzz.log" | tail -n 1 || true)
crashes=("$work"/artifacts/*)
if [ $rc -ne 0 ] || [ ${#crashes[@]} -gt 0 ]; then
    tail -n 60 "$work/fuzz.log" >&2
    for f in "${crashes[@]}"; do
        mkdir -p "$here/regressions"
        dest="$here/regressions/$name-$(basename "$f")"
        cp "$f" "$dest"
        echo "$name: crash input saved as $dest; fix the bug and commit that file" >&2
    done
    echo "$name: FAILED after ${runs:-?} runs in ${seconds}s (exit $rc)" >&2
    exit 1
fi
echo "$name: OK, ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "$work/corpus" | wc -l) inputs, no crash"
