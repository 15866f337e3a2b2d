#!/usr/bin/env bash
# altmoe against a clip-back-style peer (Flask + faiss IndexFlatIP, bench/peer_flask_faiss.py)
# on loopback: the same connector, the same stored vectors (the openclipart sample's 1,000 test
# images in the shared space), the same text -> image search body. wrk measures saturated
# requests/s and p50/p99 of each server in turn. The script prints both and their ratio, and
# counts how many top-10 ids the two servers have in common for the query. Everything binds 127.0.0.1 and stops when
# the script exits. Needs wrk, python3-flask, python3-faiss and python3-scipy (Debian).
#
# Tunables: BENCH_PEER_SECONDS (wrk duration per server, default 10), BENCH_THREADS (altmoe
# server threads, default 2), BENCH_CONNS (wrk connections, default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
if ! command -v wrk >/dev/null || ! $PY -c 'import flask, faiss, scipy' 2>/dev/null; then
    echo "bench/peers.sh: needs wrk python3-flask python3-faiss python3-scipy (apt-get install); skipping"
    exit 0
fi
SECONDS_PER_CASE=${BENCH_PEER_SECONDS:-10}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-16}
WORK=$(mktemp -d /tmp/altmoe-peers.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done; return 1; }

# The demo's connector shape (text 100-d, image 480-d, H = D = 256, E = 12, k = 4) with seeded
# random weights, because the work per request does not depend on the weights' values.
cat >"$WORK/connector.json" <<JSON
{"modalities": [{"name": "text", "dim": 100}, {"name": "image", "dim": 480}],
 "hidden": 256, "latent": 256, "experts": 12, "top_k": 4}
JSON
build/altmoe init --config "$WORK/connector.json" --out "$WORK/model.safetensors" --seed 1 >/dev/null

# The test split's images: raw 480-d vectors for altmoe's ingest, the ids for the peer, and the
# first test caption's 100-d text vector as the query.
$PY - "$WORK" <<'PY'
import json, struct, sys
import numpy as np
work = sys.argv[1]
sample = "data/openclipart"
with open(sample + "/items.jsonl", encoding="utf-8") as f:
    items = [json.loads(line) for line in f if line.strip()]
rows = json.load(open(sample + "/split.json"))["test"]
image = np.load(sample + "/image.npy").astype(np.float32)[rows]
text = np.load(sample + "/text.npy").astype(np.float32)[rows]
np.save(work + "/images.npy", image)
with open(work + "/images.f32", "wb") as f, open(work + "/ids.txt", "w", encoding="utf-8") as g:
    for r, v in zip(rows, image):
        ident = items[r]["id"].encode()
        f.write(struct.pack("<H", len(ident)) + ident + v.astype("<f4").tobytes())
        g.write(items[r]["id"] + "\n")
with open(work + "/search.json", "w") as f:
    json.dump({"modality": "text", "embedding": text[0].tolist(), "target": "image", "k": 10}, f)
PY
build/altmoe project --model "$WORK/model.safetensors" --from image --space target \
    --in "$WORK/images.npy" --out "$WORK/stored.npy" >/dev/null

run_wrk() {
    local name=$1 url=$2
    local out
    out=$(BODY="$WORK/search.json" wrk -t2 -c"$CONNS" -d"${SECONDS_PER_CASE}s" --timeout 5s --latency \
        -s bench/post.lua "$url")
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {sub(/^ +/, ""); printf "%s; ", $0}' <<<"$out")
    printf "| %-44s | %10s | %8s | %8s | %s |\n" "$name" "$rps" "$p50" "$p99" "${errs:-none}"
    echo "$rps" >"$WORK/rps-$3"
}

top_ids() {
    curl -sf -X POST "http://127.0.0.1:$1/v1/collections/peers/search" \
        -H 'Content-Type: application/json' --data-binary @"$WORK/search.json" |
        $PY -c 'import json, sys; print(" ".join(h["id"] for h in json.load(sys.stdin)["result"]["hits"]))'
}

A_PORT=$(free_port)
build/altmoe serve --port "$A_PORT" --data-dir "$WORK/data" --model "$WORK/model.safetensors" \
    --threads "$THREADS" --batch-window 0 --admin-token bench --log-level warn \
    --snapshot-interval 0 2>"$WORK/serve.log" &
PIDS+=($!)
wait_up "$A_PORT"
curl -sf -X POST "http://127.0.0.1:$A_PORT/v1/collections" -H 'Content-Type: application/json' \
    -d '{"name": "peers", "modalities": ["image"], "index": "Flat"}' >/dev/null
curl -sf -X POST "http://127.0.0.1:$A_PORT/admin/v1/collections/peers/ingest?modality=image" \
    -H 'Authorization: Bearer bench' -H 'Content-Type: application/octet-stream' \
    --data-binary @"$WORK/images.f32" >/dev/null

# One OpenMP thread for faiss, since with 1,000 vectors and one query per call a team of
# threads per search would only add overhead on a 2-core machine (the servers share 2 cores).
F_PORT=$(free_port)
OMP_NUM_THREADS=1 $PY bench/peer_flask_faiss.py "$WORK/model.safetensors" "$WORK/stored.npy" \
    "$WORK/ids.txt" "$F_PORT" 2>"$WORK/flask.log" &
PIDS+=($!)
wait_up "$F_PORT"

a_ids=$(top_ids "$A_PORT")
f_ids=$(top_ids "$F_PORT")
same=$(comm -12 <(tr ' ' '\n' <<<"$a_ids" | sort) <(tr ' ' '\n' <<<"$f_ids" | sort) | wc -l)
echo "== peers on loopback: $(nproc) cores shared by wrk and the servers, ${CONNS} connections,"
echo "   ${SECONDS_PER_CASE} s per server, 1000 stored openclipart test images (256-d, Flat), k = 10;"
echo "   top-10 ids in common for the benchmark query: ${same}/10; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server                                       |  req/s     |  p50     |  p99     | errors |"
echo "|---|---|---|---|---|"
run_wrk "altmoe serve ($THREADS threads, no batching)" "http://127.0.0.1:$A_PORT/v1/collections/peers/search" altmoe
run_wrk "Flask + faiss IndexFlatIP + NumPy connector" "http://127.0.0.1:$F_PORT/v1/collections/peers/search" flask
echo
awk -v a="$(cat "$WORK/rps-altmoe")" -v f="$(cat "$WORK/rps-flask")" \
    'BEGIN { printf "altmoe / Flask peer req/s: %.1fx (target >= 20x)\n", a / f }'
