#!/usr/bin/env bash
# HTTP benchmark of `altmoe serve` on loopback with wrk: saturated requests/s and latency
# percentiles of GET /healthz and of a text -> image search (with and without micro-batching),
# beside a libmicrohttpd hello-world with the same daemon setup. Everything binds 127.0.0.1
# and stops when the script exits. Needs wrk (Debian package wrk).
#
# Tunables: BENCH_HTTP_SECONDS (wrk duration per case, default 10), BENCH_POINTS (stored
# images, default 10000), BENCH_THREADS (server threads, default 2), BENCH_CONNS (wrk
# connections, default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    echo "bench/http.sh: wrk is not installed (apt-get install wrk); skipping"
    exit 0
fi
SECONDS_PER_CASE=${BENCH_HTTP_SECONDS:-10}
POINTS=${BENCH_POINTS:-10000}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-16}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/altmoe-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done; return 1; }

# wrk prints "Requests/sec:" and, with --latency, the 50% and 99% lines.
run_wrk() {
    local name=$1 url=$2; shift 2
    local out
    out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER_CASE}s" --latency "$@" "$url")
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf "| %-34s | %10s | %8s | %8s | %s |\n" "$name" "$rps" "$p50" "$p99" "${errs:-0}"
}

# A model of realistic encoder sizes: MiniLM-like text (384-d), DINOv2-small-like image (384-d
# would also do; 512-d here), H = D = 256, E = 12, k = 4.
cat >"$WORK/connector.json" <<JSON
{"modalities": [{"name": "text", "dim": 384}, {"name": "image", "dim": 512}],
 "hidden": 256, "latent": 256, "experts": 12, "top_k": 4}
JSON
build/altmoe init --config "$WORK/connector.json" --out "$WORK/model.safetensors" --seed 1 >/dev/null
$PY - "$WORK" "$POINTS" <<'PY'
import json, random, struct, sys
work, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
with open(work + "/images.f32", "wb") as f:
    for i in range(n):
        ident = ("img%d" % i).encode()
        f.write(struct.pack("<H", len(ident)) + ident)
        f.write(struct.pack("<512f", *[rng.gauss(0, 1) for _ in range(512)]))
with open(work + "/search.json", "w") as f:
    json.dump({"modality": "text", "embedding": [rng.gauss(0, 1) for _ in range(384)],
               "target": "image", "k": 10}, f)
PY

echo "== HTTP on loopback: $(nproc) cores shared by wrk and the server, ${THREADS} server threads,"
echo "   ${CONNS} connections, ${SECONDS_PER_CASE} s per case, ${POINTS} stored 512-d images (Flat)"
echo
echo "| case                               |  req/s     |  p50     |  p99     | non-2xx |"
echo "|---|---|---|---|---|"

HELLO_PORT=$(free_port)
build/bench/mhd_hello_bench "$HELLO_PORT" "$THREADS" &
PIDS+=($!)
sleep 0.3
run_wrk "libmicrohttpd hello-world" "http://127.0.0.1:$HELLO_PORT/"

for window in 0 200; do
    port=$(free_port)
    build/altmoe serve --port "$port" --data-dir "$WORK/data" --model "$WORK/model.safetensors" \
        --threads "$THREADS" --batch-window "$window" --admin-token bench --log-level warn \
        --max-body 268435456 --snapshot-interval 0 2>"$WORK/serve-$window.log" &
    PIDS+=($!)
    wait_up "$port"
    if [ "$window" = 0 ]; then
        curl -sf -X POST "http://127.0.0.1:$port/v1/collections" -H 'Content-Type: application/json' \
            -d '{"name": "bench", "modalities": ["image"], "index": "Flat"}' >/dev/null
        curl -sf -X POST "http://127.0.0.1:$port/admin/v1/collections/bench/ingest?modality=image" \
            -H 'Authorization: Bearer bench' -H 'Content-Type: application/octet-stream' \
            --data-binary @"$WORK/images.f32" >/dev/null
        run_wrk "altmoe GET /healthz" "http://127.0.0.1:$port/healthz"
    fi
    BODY="$WORK/search.json" run_wrk "altmoe search k=10, window ${window} us" \
        "http://127.0.0.1:$port/v1/collections/bench/search" -s bench/post.lua
    kill -TERM "${PIDS[-1]}"
    wait "${PIDS[-1]}" || true
    unset 'PIDS[-1]'
done
