#!/usr/bin/python3
"""Crash consistency of the whole server: SIGKILL `altmoe serve` under write load, restart it
and check that no acknowledged write was lost and that nothing unacknowledged half-exists.

Each cycle starts the server on the same data directory, runs writer threads (PUT points,
DELETE points and streamed NDJSON admin ingests) and an admin thread (snapshots and model
reloads), kills the server with SIGKILL at a random moment (in some cycles exactly while a
snapshot or a reload is in flight), restarts it and verifies:

- every id whose last write was acknowledged has exactly that state (payload and every
  embedding, compared bit for bit through GET), or is absent after an acknowledged delete;
- every id with a write in flight at the kill is either wholly before or wholly after that
  write (never a payload without its embedding, never one of two embeddings of a PUT);
- the collection's point count equals the number of ids GET finds;
- searches agree with a brute-force scan that this script computes from the GET results and
  /v1/project (Flat index, so the scan is the exact answer).

What "acknowledged" means. A PUT or DELETE is acknowledged when its 200 response has been read.
A streamed ingest is acknowledged only when its final 200 response has been read: then every
accepted line is durable. An ingest killed mid-stream has no response, so none of its lines
is acknowledged, although the server may already have committed some of its batches; each of
its lines is "in flight" and may be present or absent, but each line is all or nothing. A
request whose response was lost to the kill counts as in flight, never as lost.

Run standalone: `ALTMOE_BIN=build/altmoe /usr/bin/python3 tests/e2e/crash_server.py --cycles 100`
(`make test-crash`); tests/e2e/test_crash_server.py runs 20 cycles in `make test`.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("ALTMOE_BIN", os.path.join(os.path.dirname(__file__), "../../build/altmoe"))
TOKEN = "crash-admin-token-51c2"
TEXT_DIM = 8
IMAGE_DIM = 6
DIMS = {"text": TEXT_DIM, "image": IMAGE_DIM}
CONNECTOR = {
    "modalities": [{"name": "text", "dim": TEXT_DIM}, {"name": "image", "dim": IMAGE_DIM}],
    "hidden": 16, "latent": 16, "experts": 4, "top_k": 2,
}
COLLECTION = "crash"
WRITERS = 3
IDS_PER_WRITER = 400        # bounded id space: the store stays small, verification fast
SEARCH_K = 10
ABSENT = None               # the state of an id that does not exist


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exact_vector(rng, dim):
    """Values k/1024 are exact in float32 and print exactly in JSON, so GET must return them
    unchanged."""
    return [rng.randint(-1024, 1024) / 1024.0 for _ in range(dim)]


class Server:
    """One `altmoe serve` process on a free loopback port."""

    def __init__(self, workdir, data_dir, model, extra_args=(), binary=None, env_extra=None,
                 log_name="serve.log", wait_ready=True):
        self.port = free_port()
        self.log_path = os.path.join(workdir, log_name)
        self.log = open(self.log_path, "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALTMOE_")}
        env.update(env_extra or {})
        self.proc = subprocess.Popen(
            [binary or BIN, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
             "--data-dir", data_dir, "--model", model, "--admin-token", TOKEN,
             "--threads", "4", "--ingest-batch", "40", "--snapshot-interval", "0",
             "--connection-timeout", "5", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if not wait_ready:
            return
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %d; see %s" % (self.proc.returncode,
                                                                     self.log_path))
            try:
                if self.request("GET", "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("server not ready after 30 s; see " + self.log_path)

    def request(self, method, path, body=None, admin=False, timeout=30, conn=None,
                headers=None):
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = dict(headers or {})
        if admin:
            headers["Authorization"] = "Bearer " + TOKEN
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        if own:
            conn.close()
        return resp.status, doc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        self.check_log()

    def check_log(self):
        """Raises when a sanitizer (a `make tsan` or ASan build) reported anything."""
        with open(self.log_path) as f:
            log = f.read()
        if "Sanitizer" in log:
            raise AssertionError("sanitizer report in %s:\n%s" % (self.log_path, log[-6000:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()
        self.check_log()
        return self.proc.returncode


class Ledger:
    """What the clients know: per id, the last acknowledged state and the in-flight writes.

    A state is ABSENT or {"payload": dict or None, "text": list or None, "image": list or
    None}. Ids are partitioned among writers, so the writes of one id are sequential."""

    def __init__(self):
        self.acked = {}          # id -> state after its last acknowledged write
        self.pending = {}        # id -> list of candidate states of unacknowledged writes
        self.n_acked = 0
        self.errors = []         # unexpected responses while the server was up
        self.lock = threading.Lock()

    def state(self, ident):
        """The state the next write builds on: the newest candidate when one is pending."""
        if ident in self.pending:
            return self.pending[ident][-1]
        return self.acked.get(ident, ABSENT)

    def begin(self, ident, new_state):
        with self.lock:
            self.pending.setdefault(ident, []).append(new_state)

    def ack(self, ident, new_state):
        with self.lock:
            self.acked[ident] = new_state
            self.pending.pop(ident, None)
            self.n_acked += 1

    def error(self, text):
        with self.lock:
            self.errors.append(text)


def apply_upsert(state, modality, vector, payload):
    new = dict(state) if state is not ABSENT else {"payload": None, "text": None, "image": None}
    new[modality] = vector
    if payload is not None:
        new["payload"] = payload
    return new


class Writer(threading.Thread):
    """Writes to its own ids until the server dies or `stop` is set."""

    def __init__(self, server, ledger, index, seed, stop):
        super().__init__(daemon=True)
        self.server, self.ledger, self.stop = server, ledger, stop
        self.rng = random.Random(seed)
        self.ids = ["w%d-%d" % (index, i) for i in range(IDS_PER_WRITER)]
        self.version = 0

    def run(self):
        try:
            while not self.stop.is_set():
                r = self.rng.random()
                if r < 0.45:
                    self.put()
                elif r < 0.55:
                    self.delete()
                else:
                    self.ingest()
        except (OSError, http.client.HTTPException):
            pass  # the server was killed; the request in flight stays pending

    def next_payload(self, ident):
        self.version += 1
        return {"id": ident, "v": self.version, "tag": self.rng.choice(["a", "b", "c"])}

    def put(self):
        """One PUT of 1-8 ids; some ids get both modalities in the same request."""
        ids = self.rng.sample(self.ids, self.rng.randint(1, 8))
        points, after = [], {}
        for ident in ids:
            state = self.ledger.state(ident)
            payload = self.next_payload(ident) if self.rng.random() < 0.8 else None
            for modality in (["text", "image"] if self.rng.random() < 0.4
                             else [self.rng.choice(["text", "image"])]):
                vector = exact_vector(self.rng, DIMS[modality])
                points.append({"id": ident, "modality": modality, "embedding": vector,
                               "payload": payload})
                state = apply_upsert(state, modality, vector, payload)
            after[ident] = state
        for ident, state in after.items():
            self.ledger.begin(ident, state)
        status, doc = self.server.request("PUT", "/v1/collections/%s/points" % COLLECTION,
                                          {"points": points})
        if status != 200:
            self.ledger.error("PUT %d %s" % (status, doc))
            return
        for ident, state in after.items():
            self.ledger.ack(ident, state)

    def delete(self):
        ident = self.rng.choice(self.ids)
        self.ledger.begin(ident, ABSENT)
        status, doc = self.server.request("DELETE", "/v1/collections/%s/points/%s"
                                          % (COLLECTION, ident))
        if status == 200 or (status == 404 and doc["error"]["code"] == "point_not_found"):
            self.ledger.ack(ident, ABSENT)
        else:
            self.ledger.error("DELETE %d %s" % (status, doc))

    def ingest(self):
        """A streamed NDJSON ingest of 20-200 distinct ids, sent in small chunks with pauses so
        that a kill often lands mid-stream, after some batches have committed."""
        ids = self.rng.sample(self.ids, self.rng.randint(20, 200))
        lines, after = [], {}
        for ident in ids:
            modality = self.rng.choice(["text", "image"])
            vector = exact_vector(self.rng, DIMS[modality])
            payload = self.next_payload(ident)
            lines.append(json.dumps({"id": ident, "modality": modality, "embedding": vector,
                                     "payload": payload}) + "\n")
            after[ident] = apply_upsert(self.ledger.state(ident), modality, vector, payload)
        for ident, state in after.items():
            self.ledger.begin(ident, state)

        def chunks():
            for i in range(0, len(lines), 10):
                yield "".join(lines[i:i + 10]).encode()
                time.sleep(0.002)

        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.request("POST", "/admin/v1/collections/%s/ingest" % COLLECTION, body=chunks(),
                     headers={"Authorization": "Bearer " + TOKEN,
                              "Content-Type": "application/x-ndjson"}, encode_chunked=True)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        conn.close()
        if resp.status != 200 or doc["result"]["accepted"] != len(lines):
            self.ledger.error("ingest %d %s" % (resp.status, doc))
            return
        for ident, state in after.items():
            self.ledger.ack(ident, state)


class Admin(threading.Thread):
    """Takes snapshots and reloads the model now and then; records which call it is in."""

    def __init__(self, server, seed, stop, ledger):
        super().__init__(daemon=True)
        self.server, self.stop, self.ledger = server, stop, ledger
        self.rng = random.Random(seed)
        self.in_flight = None
        self.calls = {"snapshot": 0, "reload": 0}

    def call(self, what):
        path = "/admin/v1/snapshot" if what == "snapshot" else "/admin/v1/model/reload"
        self.in_flight = what
        status, doc = self.server.request("POST", path, admin=True)
        self.in_flight = None
        if status != 200:
            self.ledger.error("%s %d %s" % (what, status, doc))
        self.calls[what] += 1

    def run(self):
        try:
            while not self.stop.is_set():
                time.sleep(self.rng.uniform(0.02, 0.15))
                self.call(self.rng.choice(["snapshot", "reload"]))
        except (OSError, http.client.HTTPException):
            pass


def read_state(server, conn, ident, collection=COLLECTION):
    """Returns the state GET finds for one id; raises on a malformed point."""
    status, doc = server.request("GET", "/v1/collections/%s/points/%s" % (collection, ident),
                                 conn=conn)
    if status == 404:
        return ABSENT
    if status != 200:
        raise AssertionError("GET %s: %d %s" % (ident, status, doc))
    point = doc["result"]
    embeddings = point["embeddings"]
    if not embeddings:
        raise AssertionError("point %s exists without any embedding: %s" % (ident, point))
    return {"payload": point.get("payload"), "text": embeddings.get("text"),
            "image": embeddings.get("image")}


def verify(server, ledger, all_ids, rng, report, collection=COLLECTION):
    """Checks the restarted server against the ledger; folds in-flight writes into the acked
    state they turned out to have. Returns the number of lost acknowledged writes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    lost = 0
    actual = {}
    for ident in all_ids:
        got = read_state(server, conn, ident, collection)
        actual[ident] = got
        acked = ledger.acked.get(ident, ABSENT)
        candidates = [acked] + ledger.pending.get(ident, [])
        if got not in candidates:
            if ident in ledger.pending:
                raise AssertionError("id %s is in no state a client wrote: %s; candidates %s"
                                     % (ident, got, candidates))
            lost += 1
            print("LOST %s: acked %s, found %s" % (ident, acked, got), file=sys.stderr)
            continue
        if ident in ledger.pending:
            report["in_flight"] += 1
            if got != acked:
                report["in_flight_applied"] += 1
        ledger.acked[ident] = got
    ledger.pending.clear()
    conn.close()

    present = [i for i in all_ids if actual[i] is not ABSENT]
    status, doc = server.request("GET", "/v1/collections/" + collection)
    assert status == 200, doc
    assert doc["result"]["points"] == len(present), (doc["result"], len(present))
    check_search(server, actual, rng, collection)
    return lost


def project(server, modality, vectors, target=None):
    body = {"modality": modality, "embeddings": vectors}
    if target is not None:
        body["target"] = target
    status, doc = server.request("POST", "/v1/project", body)
    assert status == 200, doc
    return doc["result"]["vectors"]


def check_search(server, actual, rng, collection=COLLECTION):
    """Compares search hits with an exact scan over the points GET returned."""
    for target in ("text", "image"):
        ids = [i for i, s in actual.items() if s is not ABSENT and s[target] is not None]
        if not ids:
            continue
        stored = project(server, target, [actual[i][target] for i in ids])
        for source in ("text", "image"):
            query = exact_vector(rng, DIMS[source])
            qvec = project(server, source, [query],
                           target=None if source == target else target)[0]
            scores = sorted(((sum(a * b for a, b in zip(qvec, v)), i)
                             for i, v in zip(ids, stored)), reverse=True)
            status, doc = server.request("POST", "/v1/collections/%s/search" % collection,
                                         {"modality": source, "embedding": query,
                                          "target": target, "k": SEARCH_K})
            assert status == 200, doc
            hits = doc["result"]["hits"]
            assert len(hits) == min(SEARCH_K, len(ids)), (len(hits), len(ids))
            exact = dict((i, s) for s, i in scores)
            for rank, hit in enumerate(hits):
                # Each hit is a live point with its exact score, in the exact rank order
                # (ties within float rounding may swap places).
                assert hit["id"] in exact, "search returned %s, which GET does not find" % hit
                assert abs(hit["score"] - exact[hit["id"]]) < 1e-4, (hit, exact[hit["id"]])
                assert abs(hit["score"] - scores[rank][0]) < 1e-4, (rank, hit, scores[:SEARCH_K])


def run(cycles, seed, workdir, quiet=False):
    rng = random.Random(seed)
    model = os.path.join(workdir, "model.safetensors")
    cfg = os.path.join(workdir, "connector.json")
    with open(cfg, "w") as f:
        json.dump(CONNECTOR, f)
    subprocess.run([BIN, "init", "--config", cfg, "--out", model, "--seed", "11"],
                   check=True, capture_output=True)
    data_dir = os.path.join(workdir, "data")
    all_ids = ["w%d-%d" % (w, i) for w in range(WRITERS) for i in range(IDS_PER_WRITER)]
    ledger = Ledger()
    report = {"cycles": 0, "acknowledged": 0, "lost": 0, "in_flight": 0,
              "in_flight_applied": 0, "killed_in_snapshot": 0, "killed_in_reload": 0}

    servers = [Server(workdir, data_dir, model)]
    try:
        return run_cycles(servers, cycles, rng, workdir, data_dir, model, all_ids, ledger,
                          report, quiet)
    finally:
        for server in servers:   # left running only when a check raised
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


def run_cycles(servers, cycles, rng, workdir, data_dir, model, all_ids, ledger, report, quiet):
    """Runs the kill cycles, starting with servers[0] and appending each restarted server to
    servers; returns the report."""
    server = servers[0]
    status, doc = server.request("POST", "/v1/collections",
                                 {"name": COLLECTION, "modalities": ["text", "image"],
                                  "index": "Flat"})
    assert status == 201, doc
    for cycle in range(cycles):
        stop = threading.Event()
        writers = [Writer(server, ledger, w, rng.getrandbits(32), stop) for w in range(WRITERS)]
        admin = Admin(server, rng.getrandbits(32), stop, ledger)
        for t in writers + [admin]:
            t.start()
        mode = rng.choice(["random", "random", "snapshot", "reload"])
        time.sleep(rng.uniform(0.1, 0.8))
        if mode != "random":
            # Wait for the admin thread to be inside that call, then kill within it.
            deadline = time.time() + 5
            while admin.in_flight != mode and time.time() < deadline:
                time.sleep(0.0005)
        inside = mode != "random" and admin.in_flight == mode
        server.kill()
        # Counted only when the call had not returned by the kill either.
        if inside and admin.in_flight == mode:
            report["killed_in_" + mode] += 1
        stop.set()
        for t in writers + [admin]:
            t.join(timeout=60)
        if ledger.errors:
            raise AssertionError("unexpected responses before the kill: %s" % ledger.errors[:5])

        server = Server(workdir, data_dir, model)
        servers.append(server)
        lost = verify(server, ledger, all_ids, rng, report)
        report["lost"] += lost
        report["cycles"] = cycle + 1
        report["acknowledged"] = ledger.n_acked
        if not quiet:
            print("cycle %d (%s): acknowledged %d, lost %d, in flight %d (applied %d)"
                  % (cycle + 1, mode, ledger.n_acked, report["lost"], report["in_flight"],
                     report["in_flight_applied"]), flush=True)
        if lost:
            break
    assert server.stop() == 0, "the last server did not stop cleanly; see " + server.log_path
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="altmoe-crash-")
    print("crash test: seed %d, work directory %s" % (args.seed, workdir), flush=True)
    report = run(args.cycles, args.seed, workdir)
    print("cycles %(cycles)d, acknowledged %(acknowledged)d, lost %(lost)d, "
          "in flight %(in_flight)d (applied %(in_flight_applied)d), killed in snapshot "
          "%(killed_in_snapshot)d, killed in reload %(killed_in_reload)d" % report)
    if not args.keep and report["lost"] == 0:
        subprocess.run(["rm", "-rf", workdir], check=False)
    return 1 if report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
