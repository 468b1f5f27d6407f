# tests/bench/lib.sh: what the benchmark scripts share. Source it after
# `set -euo pipefail`; bench_init NAME first.
#   TMP         the run's scratch directory (removed at exit)
#   PIDS        processes to stop at exit (append with PIDS+=($!))
#   free_port   a free TCP port on 127.0.0.1
#   wait_port P waits up to 10 s for 127.0.0.1:P to accept
#   bench_need NAME TOOL...   fails unless every TOOL is installed
#   bench_cert  an ECDSA P-256 certificate for bench.example.com in
#               $TMP/cert.pem, key.pem and both in combined.pem
#   bench_origin BUILD THREADS   starts lb-backend, its port in ORIGIN

bench_init() {
    TMP=$(mktemp -d "/tmp/lb-bench-$1-XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}

bench_need() {
    local name=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            { echo "$name bench: $tool is not installed (make bench installs it)" >&2; exit 1; }
    done
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

bench_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench.example.com -addext subjectAltName=DNS:bench.example.com \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
    cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"
}

bench_origin() {
    "$1/lb-backend" --port 0 --name origin --threads "$2" >"$TMP/origin.log" 2>&1 &
    PIDS+=($!)
    ORIGIN=
    for _ in $(seq 1 200); do
        ORIGIN=$(grep -o '"port":[0-9]*' "$TMP/origin.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [ -n "$ORIGIN" ] && return 0
        sleep 0.05
    done
    echo "bench: lb-backend did not start" >&2
    exit 1
}
