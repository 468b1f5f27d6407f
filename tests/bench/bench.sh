#!/bin/bash
# tests/bench/bench.sh BUILD_DIR: side-by-side benchmark of lb-dataplane,
# HAProxy and NGINX in front of the same lb-backend origin, plus the origin
# alone. Everything listens on free 127.0.0.1 ports; configs live in a temp
# dir; every process started here is stopped by pid on exit and on Ctrl-C.
#
# Environment: DURATION seconds per wrk run (10), ROUNDS interleaved rounds
# (3; medians are reported), CONNS wrk connections (64), IDLE_CONNS idle
# keep-alive connections for the memory probe (1000), BASELINE another build
# directory whose lb-dataplane runs as "lbbase" in the same interleaved rounds
# (a before/after comparison: medians of per-round ratios are printed).
# Smoke check: DURATION=2 ROUNDS=1 tests/bench/bench.sh build
set -euo pipefail

BUILD=${1:?usage: tests/bench/bench.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-1000}

. "$SRC/tests/bench/lib.sh"
bench_init h1
bench_need bench wrk protoc python3
bench_built bench "$BUILD" lb-backend

ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# VmRSS in KiB summed over the process tree rooted at PID.
tree_rss_kb() {
    local pid=$1 total=0 kid rss
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${rss:-0}))
    for kid in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        total=$((total + $(tree_rss_kb "$kid")))
    done
    echo "$total"
}

# ---- origin ---------------------------------------------------------------
NAME100=$(printf 'o%.0s' $(seq 1 100))
bench_backend "$BUILD" "$NAME100" --threads 2
ORIGIN_PID=$LAST_PID
ORIGIN_PORT=$BACKEND_PORT

declare -A PORT ROOT
PROXIES=(none)

# add_target NAME WHAT PORT: NAME, started last (WHAT in messages), is a
# target once PORT accepts; if it died first, its log's end is shown.
add_target() {
    if wait_port "$3" "$LAST_PID"; then
        PROXIES+=("$1")
        PORT[$1]=$3
        ROOT[$1]=$LAST_PID
    else
        echo "bench: $2 did not start:" >&2
        tail -5 "$TMP/$1.log" >&2
    fi
}
PORT[none]=$ORIGIN_PORT
ROOT[none]=$ORIGIN_PID

# ---- lb-dataplane ---------------------------------------------------------
if [ -x "$BUILD/lb-dataplane" ]; then
    p=$(free_port)
    m=$(free_port)
    cat >"$TMP/lb.txt" <<SNAP
config_version: 1
generation: 1
frontends { name: "bench" bind_address: "127.0.0.1" port: $p }
backends { id: "origin" host: "127.0.0.1" port: $ORIGIN_PORT weight: 1 url: "http://127.0.0.1:$ORIGIN_PORT" }
logging { level: LOG_WARN access_log_off: true }
metrics { enabled: true bind_address: "127.0.0.1" port: $m }
balancing { algorithm: ROUND_ROBIN }
SNAP
    bench_encode "$TMP/lb.txt" "$TMP/lb.pb"
    bench_start lb "$BUILD/lb-dataplane" --snapshot "$TMP/lb.pb" --workers 2 --log-level warn
    add_target lb "lb-dataplane" "$p"
else
    echo "bench: $BUILD/lb-dataplane is not built: skipped" >&2
fi

# ---- the baseline lb-dataplane (BASELINE=DIR), same snapshot but its port ----
if [ -n "${BASELINE:-}" ] && [ -x "$BASELINE/lb-dataplane" ]; then
    p=$(free_port)
    m=$(free_port)
    sed -e "s/port: ${PORT[lb]:-0} }/port: $p }/" -e "s/metrics { enabled: true bind_address: \"127.0.0.1\" port: [0-9]*/metrics { enabled: true bind_address: \"127.0.0.1\" port: $m/" \
        "$TMP/lb.txt" >"$TMP/lbbase.txt"
    bench_encode "$TMP/lbbase.txt" "$TMP/lbbase.pb"
    bench_start lbbase "$BASELINE/lb-dataplane" --snapshot "$TMP/lbbase.pb" --workers 2 --log-level warn
    add_target lbbase "the baseline lb-dataplane" "$p"
fi

# ---- HAProxy --------------------------------------------------------------
if command -v haproxy >/dev/null; then
    p=$(free_port)
    cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 3000
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$p
    default_backend be
backend be
    server origin 127.0.0.1:$ORIGIN_PORT
CFG
    bench_start haproxy haproxy -db -f "$TMP/haproxy.cfg"
    add_target haproxy "haproxy" "$p"
else
    echo "bench: haproxy is not installed: skipped" >&2
fi

# ---- NGINX ----------------------------------------------------------------
if command -v nginx >/dev/null; then
    p=$(free_port)
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<CFG
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    keepalive_requests 1000000;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$p;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CFG
    bench_start nginx nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log"
    add_target nginx "nginx" "$p"
else
    echo "bench: nginx is not installed: skipped" >&2
fi

# ---- idle connection memory, measured first on fresh processes ------------
declare -A IDLE
for px in lb haproxy nginx; do
    [ -n "${PORT[$px]:-}" ] || continue
    if per=$(python3 "$SRC/tests/bench/idle_conns.py" "${PORT[$px]}" "$IDLE_CONNS" "${ROOT[$px]}"); then
        IDLE[$px]=$per
    else
        IDLE[$px]="$per (some connections failed)"
    fi
done

# ---- runs -----------------------------------------------------------------
SCENARIOS=(ka-100B ka-16KiB new-conn)
declare -A PATHOF ARGS
PATHOF[ka-100B]=/
PATHOF[ka-16KiB]=/bytes/16384
PATHOF[new-conn]=/
ARGS[ka-100B]=""
ARGS[ka-16KiB]=""
ARGS[new-conn]="-H Connection:close"

# wrk's latency in ms from "1.23ms", "456.00us", "1.20s".
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

RESULTS=$TMP/results.txt
: >"$RESULTS"
echo "bench: ${#PROXIES[@]} targets (${PROXIES[*]}), ${ROUNDS} round(s) of ${DURATION}s, $CONNS connections" >&2
for round in $(seq 1 "$ROUNDS"); do
    for sc in "${SCENARIOS[@]}"; do
        for px in "${PROXIES[@]}"; do
            # shellcheck disable=SC2086
            out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency ${ARGS[$sc]} \
                "http://127.0.0.1:${PORT[$px]}${PATHOF[$sc]}" 2>&1) || true
            rps=$(echo "$out" | awk '/^Requests\/sec:/{print $2}')
            p50=$(echo "$out" | awk '$1=="50%"{print $2}')
            p99=$(echo "$out" | awk '$1=="99%"{print $2}')
            errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
            rss=$(tree_rss_kb "${ROOT[$px]}")
            if [ -z "$rps" ]; then
                echo "bench: wrk failed for $px/$sc: $out" >&2
                continue
            fi
            [ -n "$errs" ] && echo "bench: $px/$sc round $round: $errs" >&2
            echo "$px $sc $rps $(to_ms "$p50") $(to_ms "$p99") $rss $round" >>"$RESULTS"
            echo "bench: round $round $sc $px: $rps req/s" >&2
        done
    done
done

median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '\n%-8s %-9s %12s %10s %10s %10s\n' proxy scenario req/s p50_ms p99_ms rss_MiB
declare -A MED
for sc in "${SCENARIOS[@]}"; do
    for px in "${PROXIES[@]}"; do
        rps=$(awk -v p="$px" -v s="$sc" '$1==p && $2==s {print $3}' "$RESULTS" | median)
        p50=$(awk -v p="$px" -v s="$sc" '$1==p && $2==s {print $4}' "$RESULTS" | median)
        p99=$(awk -v p="$px" -v s="$sc" '$1==p && $2==s {print $5}' "$RESULTS" | median)
        rss=$(awk -v p="$px" -v s="$sc" '$1==p && $2==s {print $6}' "$RESULTS" | median)
        MED[$px.$sc]=$rps
        MED[$px.$sc.p99]=$p99
        rss_mib=$(awk -v k="$rss" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }')
        printf '%-8s %-9s %12s %10s %10s %10s\n' "$px" "$sc" "$rps" "$p50" "$p99" "$rss_mib"
    done
done

if [ -n "${PORT[lb]:-}" ] && [ -n "${PORT[haproxy]:-}" ]; then
    printf '\n%-9s %16s %16s\n' scenario "lb/haproxy req/s" "lb/haproxy p99"
    for sc in "${SCENARIOS[@]}"; do
        awk -v a="${MED[lb.$sc]}" -v b="${MED[haproxy.$sc]}" -v c="${MED[lb.$sc.p99]}" \
            -v d="${MED[haproxy.$sc.p99]}" -v s="$sc" 'BEGIN {
            r1 = (b + 0 > 0) ? sprintf("%.2f", a / b) : "-"
            r2 = (d + 0 > 0) ? sprintf("%.2f", c / d) : "-"
            printf "%-9s %16s %16s\n", s, r1, r2 }'
    done
fi

# ratio_median A B SCENARIO: the median over rounds of A's req/s / B's.
ratio_median() {
    awk -v a="$1" -v b="$2" -v s="$3" '$2==s && $1==a {x[$7]=$3} $2==s && $1==b {y[$7]=$3}
        END { for (r in x) if (y[r] + 0 > 0) print x[r] / y[r] }' "$RESULTS" | median
}
if [ -n "${PORT[lbbase]:-}" ]; then
    printf '\nbefore/after (medians of per-round ratios of req/s):\n%-9s %14s %18s %18s\n' \
        scenario "lb/lbbase" "lb/haproxy" "lbbase/haproxy"
    for sc in "${SCENARIOS[@]}"; do
        printf '%-9s %14s %18s %18s\n' "$sc" "$(ratio_median lb lbbase "$sc")" \
            "$(ratio_median lb haproxy "$sc")" "$(ratio_median lbbase haproxy "$sc")"
    done
fi


printf '\nidle keep-alive client connection (%d open, RSS delta / %d, fresh processes):\n' \
    "$IDLE_CONNS" "$IDLE_CONNS"
for px in lb haproxy nginx; do
    if [ -n "${IDLE[$px]:-}" ]; then
        printf '%-8s %s bytes per connection\n' "$px" "${IDLE[$px]}"
    fi
done
