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
#   bench_start NAME CMD...   runs CMD in the background, its output in
#               $TMP/NAME.log; its pid in LAST_PID (and PIDS)
#   bench_stop PID...   TERM, up to 10 s in all, then KILL; reaps them and
#               drops them from PIDS (so no pid is signalled after its reuse)
#   wait_port P PID   the same as wait_port P, but fails at once when PID died
#   bench_built NAME BUILD BIN...   fails unless every BIN is built in BUILD
#   bench_backend BUILD NAME ARGS...   starts lb-backend --port 0 --name NAME
#               ARGS (log $TMP/NAME.log); its port in BACKEND_PORT, its pid
#               in LAST_PID
#   bench_encode TXT PB   the text lb.v1.Snapshot in TXT, binary in PB

bench_init() {
    TMP=$(mktemp -d "/tmp/lb-bench-$1-XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    [ ${#PIDS[@]} -eq 0 ] || bench_stop "${PIDS[@]}"
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
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
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
    bench_backend "$1" origin --threads "$2"
    ORIGIN=$BACKEND_PORT
}

bench_start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=($!)
}

bench_stop() {
    local pid p keep=() left
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 200); do # 10 s for them all
        left=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1 && break; done
        [ "$left" -eq 1 ] || break
        sleep 0.05
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for pid in "$@"; do [ "$p" = "$pid" ] && continue 2; done
        keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

bench_built() {
    local name=$1 build=$2 bin
    shift 2
    for bin in "$@"; do
        [ -x "$build/$bin" ] || { echo "$name bench: $build/$bin is not built" >&2; exit 1; }
    done
}

bench_backend() {
    local build=$1 name=$2
    shift 2
    bench_start "$name" "$build/lb-backend" --port 0 --name "$name" "$@"
    BACKEND_PORT=
    for _ in $(seq 1 200); do
        BACKEND_PORT=$(grep -o '"port":[0-9]*' "$TMP/$name.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [ -n "$BACKEND_PORT" ] && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: lb-backend $name did not start" >&2
    tail -5 "$TMP/$name.log" >&2
    exit 1
}

bench_encode() {
    protoc --encode=lb.v1.Snapshot -I "$SRC/proto" "$SRC/proto/lb.proto" <"$1" >"$2"
}
