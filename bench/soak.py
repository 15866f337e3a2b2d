#!/usr/bin/python3
"""Soak test of `altmoe serve` on loopback: mixed search, upsert, delete and ingest load for a
bounded time, with the error count, throughput over time and the server's RSS over time.

Searches come from wrk (bench/post.lua) in back-to-back windows of --window seconds; upserts,
deletes and streamed NDJSON ingests come from a Python loader thread over a fixed pool of ids,
so the stored data stays the same size and RSS should level off. After the first
--warmup-windows windows the anonymous RSS (the heap) must stay within 10% of its value at the
end of warm-up; the file-backed RSS (LMDB's map) is printed beside it.

Exit status 0 when there was no error (wrk non-2xx responses and socket errors, loader
failures) and RSS stayed flat; 1 otherwise. Everything binds 127.0.0.1 and stops by itself.

    /usr/bin/python3 bench/soak.py --seconds 600          (`make soak SOAK_SECONDS=600`)
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/e2e"))
import crash_server as cs  # noqa: E402

COLL = "soak"
TEXT_DIM, IMAGE_DIM = 64, 48
CONNECTOR = {"modalities": [{"name": "text", "dim": TEXT_DIM}, {"name": "image", "dim": IMAGE_DIM}],
             "hidden": 64, "latent": 64, "experts": 4, "top_k": 2}
DIMS = {"text": TEXT_DIM, "image": IMAGE_DIM}
POST_LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post.lua")


def rss_mib(pid):
    """Returns (total, anonymous, file-backed) resident memory in MiB. The file-backed part is
    mostly LMDB's memory map, pages of the database file that the kernel may drop at will; the
    anonymous part is the heap (FAISS indices, buffers), where a leak would show."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1]) / 1024.0
    return out["VmRSS"], out["RssAnon"], out["RssFile"] + out.get("RssShmem", 0.0)


def point(rng, ident, modality):
    return {"id": ident, "modality": modality,
            "embedding": [rng.uniform(-1, 1) for _ in range(DIMS[modality])],
            "payload": {"id": ident, "n": rng.randint(0, 9)}}


class Loader(threading.Thread):
    """Upserts, deletes and ingests over ids p0..p{pool-1} at about --write-rate ops/s."""

    def __init__(self, port, pool, rate, stop):
        super().__init__(daemon=True)
        self.port, self.pool, self.rate, self.stop = port, pool, rate, stop
        self.rng = random.Random(7)
        self.ops = 0
        self.errors = []
        self.conn = None

    def request(self, method, path, body, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            self.conn = None
            return 0, str(e).encode()
        return resp.status, data

    def one(self):
        r = self.rng.random()
        ident = "p%d" % self.rng.randrange(self.pool)
        if r < 0.6:
            pts = [point(self.rng, "p%d" % self.rng.randrange(self.pool),
                         self.rng.choice(["text", "image"])) for _ in range(4)]
            pts = list({p["id"] + p["modality"]: p for p in pts}.values())
            status, data = self.request("PUT", "/v1/collections/%s/points" % COLL,
                                        json.dumps({"points": pts}).encode())
            ok = status == 200
        elif r < 0.9:
            status, data = self.request("DELETE", "/v1/collections/%s/points/%s"
                                        % (COLL, ident), None)
            ok = status in (200, 404)
        else:
            lines = "".join(json.dumps(point(self.rng, "p%d" % self.rng.randrange(self.pool),
                                             "text")) + "\n" for _ in range(50))
            status, data = self.request("POST", "/admin/v1/collections/%s/ingest" % COLL,
                                        lines.encode(),
                                        {"Authorization": "Bearer " + cs.TOKEN,
                                         "Content-Type": "application/x-ndjson"})
            ok = status == 200 and json.loads(data)["result"]["rejected"] == 0
        if not ok:
            self.errors.append("%d %s" % (status, data[:200]))
        self.ops += 1

    def run(self):
        next_t = time.time()
        while not self.stop.is_set():
            self.one()
            next_t += 1.0 / self.rate
            delay = next_t - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.time()


def run_wrk(port, seconds, body_path, conns):
    env = dict(os.environ, BODY=body_path)
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "-s", POST_LUA,
                          "http://127.0.0.1:%d/v1/collections/%s/search" % (port, COLL)],
                         capture_output=True, text=True, env=env, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return rps, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--window", type=int, default=30, help="seconds per sample")
    ap.add_argument("--warmup-windows", type=int, default=2)
    ap.add_argument("--pool", type=int, default=20000, help="distinct point ids")
    ap.add_argument("--write-rate", type=float, default=100.0, help="loader ops per second")
    ap.add_argument("--conns", type=int, default=8, help="wrk connections")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("soak: wrk is not installed (apt-get install wrk)")

    work = tempfile.mkdtemp(prefix="altmoe-soak-")
    model = os.path.join(work, "model.safetensors")
    with open(os.path.join(work, "connector.json"), "w") as f:
        json.dump(CONNECTOR, f)
    subprocess.run([cs.BIN, "init", "--config", os.path.join(work, "connector.json"),
                    "--out", model, "--seed", "1"], check=True, capture_output=True)
    srv = cs.Server(work, os.path.join(work, "data"), model,
                    ("--threads", "2", "--ingest-batch", "1000", "--log-level", "warn",
                     "--snapshot-interval", "60"))
    failed = False
    try:
        status, doc = srv.request("POST", "/v1/collections",
                                  {"name": COLL, "modalities": ["text", "image"]})
        assert status == 201, doc
        rng = random.Random(1)
        for start in range(0, args.pool, 1000):
            pts = [point(rng, "p%d" % i, m) for i in range(start, min(start + 1000, args.pool))
                   for m in ("text", "image")]
            status, doc = srv.request("PUT", "/v1/collections/%s/points" % COLL, {"points": pts})
            assert status == 200, doc
        body_path = os.path.join(work, "search.json")
        with open(body_path, "w") as f:
            json.dump({"modality": "text", "embedding": [rng.uniform(-1, 1)
                                                         for _ in range(TEXT_DIM)],
                       "target": "image", "k": 10}, f)

        stop = threading.Event()
        loader = Loader(srv.port, args.pool, args.write_rate, stop)
        loader.start()
        print("%8s %12s %10s %9s %9s %9s %8s" % ("t_s", "search_rps", "writes/s", "rss_mib",
                                                  "anon_mib", "file_mib", "errors"), flush=True)
        t0 = time.time()
        samples, wrk_errors, last_ops = [], 0, 0
        while time.time() - t0 < args.seconds:
            window = int(min(args.window, max(1, args.seconds - (time.time() - t0))))
            rps, errs = run_wrk(srv.port, window, body_path, args.conns)
            wrk_errors += errs
            ops = loader.ops
            rss = rss_mib(srv.proc.pid)
            samples.append((time.time() - t0, rps, (ops - last_ops) / window) + rss
                           + (window,))
            last_ops = ops
            print("%8.0f %12.0f %10.1f %9.1f %9.1f %9.1f %8d"
                  % (samples[-1][:6] + (wrk_errors + len(loader.errors),)), flush=True)
        stop.set()
        loader.join(timeout=60)

        errors = wrk_errors + len(loader.errors)
        warm_i = min(args.warmup_windows, len(samples) - 1)
        warm, warm_total = samples[warm_i][4], samples[warm_i][3]
        peak = max(s[4] for s in samples[warm_i:])
        peak_total = max(s[3] for s in samples[warm_i:])
        growth = (peak - warm) / warm
        print("duration %.0f s, windows %d, search requests %.0f, loader ops %d, errors %d"
              % (time.time() - t0, len(samples), sum(s[1] * s[6] for s in samples),
                 loader.ops, errors))
        print("anonymous rss after warm-up %.1f MiB, peak %.1f MiB, growth %.1f%% (limit 10%%)"
              % (warm, peak, 100 * growth))
        print("total rss after warm-up %.1f MiB, peak %.1f MiB (includes LMDB map pages)"
              % (warm_total, peak_total))
        for e in loader.errors[:5]:
            print("loader error:", e)
        failed = errors > 0 or growth > 0.10
    finally:
        code = srv.stop()
        failed = failed or code != 0
        shutil.rmtree(work, ignore_errors=True)
    print("soak:", "FAILED" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
