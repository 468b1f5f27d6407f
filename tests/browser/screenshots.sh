#!/bin/bash
# tests/browser/screenshots.sh BUILD_DIR [OUT_DIR]: regenerates the README's
# dashboard screenshots (overview.png, traffic.png, rollouts.png; default OUT_DIR
# deploy/screenshots) from a live system under load in headless chromium.
# Takes about two minutes: the traffic page needs some history.
set -euo pipefail
BUILD=${1:?usage: tests/browser/screenshots.sh BUILD_DIR [OUT_DIR]}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${2:-$SRC/deploy/screenshots}
exec /usr/bin/python3 "$SRC/tests/browser/test_dashboard.py" "$BUILD" --screenshots "$OUT" \
    --warmup "${LB_SCREENSHOT_WARMUP:-100}"
