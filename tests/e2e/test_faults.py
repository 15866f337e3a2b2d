"""Fault injection: every failed allocation, write, fsync or LMDB commit is reported as an error
and leaves the store consistent.

`make faults` builds altmoe with -DAMC_FAULT_INJECTION (and ASan + UBSan) and runs this file
with ALTMOE_FAULT_BIN set; without it the tests are skipped. For each fault kind and for
N = 1, 2, ... (every FAULTS_STRIDE-th N, default 1) the Nth call of that kind fails, in a
server that starts on a prepared store (recovery runs under the fault too) and then runs a
fixed workload: PUT, DELETE, a streamed NDJSON ingest, a snapshot and a model reload. The loop
ends at the first N that the run never reaches. Each run checks:

- the server never dies from a signal; a fault at start makes it exit non-zero with a
  `start_failed` log line;
- every response is 2xx, or 5xx with a JSON error envelope and a `request_failed` log line
  carrying its request id;
- no sanitizer report;
- the live server, and the store reopened without faults, hold every acknowledged write
  exactly; a failed request's writes are wholly present or wholly absent; counts and
  searches agree with what GET returns (crash_server.verify).
"""
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import crash_server as cs  # noqa: E402

FAULT_BIN = os.environ.get("ALTMOE_FAULT_BIN")
STRIDE = int(os.environ.get("FAULTS_STRIDE", "1"))
MAX_N = 2000
COLL = "faults"
ARGS = ("--ingest-batch", "10")

pytestmark = pytest.mark.skipif(not FAULT_BIN, reason="needs ALTMOE_FAULT_BIN (make faults)")


class Run:
    """One server run under a fault, with the ledger of the responses the client received."""

    def __init__(self, server, ledger):
        self.server, self.ledger = server, ledger
        self.n_req = 0
        self.failed = []          # ids of the requests that got a 5xx

    def call(self, method, path, body=None, admin=False, writes=None, raw=None, ctype=None):
        """Sends one request; writes maps id -> state after success. A 5xx leaves those ids
        pending (the request may or may not have reached the store, but all or nothing)."""
        self.n_req += 1
        req_id = "fault-req-%d" % self.n_req
        writes = writes or {}
        self.before = {ident: self.ledger.state(ident) for ident in writes}
        for ident, state in writes.items():
            self.ledger.begin(ident, state)
        headers = {"X-Request-Id": req_id}
        if raw is not None:
            conn = cs.http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            headers["Authorization"] = "Bearer " + cs.TOKEN
            headers["Content-Type"] = ctype
            conn.request(method, path, body=raw, headers=headers)
            resp = conn.getresponse()
            status, doc = resp.status, json.loads(resp.read())
            conn.close()
        else:
            status, doc = self.server.request(method, path, body, admin=admin, headers=headers)
        if 200 <= status < 300 or (status == 404 and method == "DELETE"):
            for ident, state in writes.items():
                self.ledger.ack(ident, state)
            return status, doc
        assert status >= 500, (method, path, status, doc)
        assert doc["status"] == "error", doc
        assert doc["error"]["code"] in ("internal", "out_of_memory", "storage_full", "busy"), doc
        self.failed.append(req_id)
        return status, doc


    def ingest(self, lines):
        """Streams lines (distinct ids) as one NDJSON ingest. On 200 every line not listed as
        rejected is acknowledged and every rejected one must be unchanged. On a 5xx the
        message gives K, the points committed before the failure: lines commit in order, so
        the first K are acknowledged and the rest may or may not be stored."""
        writes = point_writes(self.ledger, lines)
        body = "".join(json.dumps(p) + "\n" for p in lines).encode()
        status, doc = self.call("POST", "/admin/v1/collections/%s/ingest" % COLL, raw=body,
                                ctype="application/x-ndjson", writes=writes)
        if status == 200:
            for err in doc["result"]["errors"]:
                ident = lines[err["line"] - 1]["id"]
                self.ledger.acked[ident] = self.before[ident]
                self.ledger.pending.pop(ident, None)
            return
        found = re.search(r"\((\d+) points were committed", doc["error"]["message"])
        for p in lines[:int(found.group(1)) if found else 0]:
            self.ledger.ack(p["id"], writes[p["id"]])


def point_writes(ledger, points):
    after = {}
    for p in points:
        base = after.get(p["id"], ledger.state(p["id"]))
        after[p["id"]] = cs.apply_upsert(base, p["modality"], p["embedding"], p.get("payload"))
    return after


def make_points(rng, prefix, n):
    pts = []
    for i in range(n):
        ident = "%s%d" % (prefix, i)
        for modality in (["text", "image"] if i % 2 == 0 else ["text"]):
            pts.append({"id": ident, "modality": modality, "payload": {"id": ident, "i": i},
                        "embedding": cs.exact_vector(rng, cs.DIMS[modality])})
    return pts


def workload(run, rng):
    ledger = run.ledger
    points_path = "/v1/collections/%s/points" % COLL
    for prefix in ("pa", "pb"):
        pts = make_points(rng, prefix, 3)
        run.call("PUT", points_path, {"points": pts}, writes=point_writes(ledger, pts))
    run.call("DELETE", points_path + "/base0", writes={"base0": cs.ABSENT})

    lines = make_points(rng, "ing", 25)
    lines = [p for p in lines if p["modality"] == "text"]
    run.ingest(lines)
    run.call("POST", "/admin/v1/snapshot", admin=True)
    pts = make_points(rng, "pc", 2) + [{"id": "base1", "modality": "image",
                                        "embedding": cs.exact_vector(rng, cs.IMAGE_DIM)}]
    run.call("PUT", points_path, {"points": pts}, writes=point_writes(ledger, pts))
    run.call("POST", "/admin/v1/model/reload", admin=True)
    run.call("DELETE", points_path + "/pa1", writes={"pa1": cs.ABSENT})


def all_ids():
    ids = ["base%d" % i for i in range(10)]
    for prefix, n in (("pa", 3), ("pb", 3), ("ing", 25), ("pc", 2)):
        ids += ["%s%d" % (prefix, i) for i in range(n)]
    return ids


def read_log(server):
    with open(server.log_path) as f:
        return f.read()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store with one collection of 10 points and a snapshot, built without faults."""
    work = str(tmp_path_factory.mktemp("faults-base"))
    model = os.path.join(work, "model.safetensors")
    cfg = os.path.join(work, "connector.json")
    with open(cfg, "w") as f:
        json.dump(cs.CONNECTOR, f)
    subprocess_run = cs.subprocess.run
    subprocess_run([FAULT_BIN, "init", "--config", cfg, "--out", model, "--seed", "3"],
                   check=True, capture_output=True)
    data = os.path.join(work, "data")
    srv = cs.Server(work, data, model, ARGS, binary=FAULT_BIN)
    ledger = cs.Ledger()
    run = Run(srv, ledger)
    status, doc = srv.request("POST", "/v1/collections",
                              {"name": COLL, "modalities": ["text", "image"], "index": "Flat"})
    assert status == 201, doc
    pts = make_points(random.Random(1), "base", 10)
    run.call("PUT", "/v1/collections/%s/points" % COLL, {"points": pts},
             writes=point_writes(ledger, pts))
    assert run.failed == []
    run.call("POST", "/admin/v1/snapshot", admin=True)
    assert srv.stop() == 0
    return work, model, data, dict(ledger.acked)


def run_once(base, kind, n):
    """One run with the Nth call of kind failing; returns True when the fault fired."""
    work, model, base_data, acked = base
    tmp = tempfile.mkdtemp(prefix="altmoe-fault-")
    srv = again = None
    try:
        data = os.path.join(tmp, "data")
        shutil.copytree(base_data, data)
        ledger = cs.Ledger()
        ledger.acked.update(acked)
        env = {"ALTMOE_FAULT_KIND": kind, "ALTMOE_FAULT_AT": str(n)}
        srv = cs.Server(tmp, data, model, ARGS, binary=FAULT_BIN, env_extra=env,
                        log_name="fault.log", wait_ready=False)
        started = wait_started(srv)
        run = Run(srv, ledger)
        if started:
            workload(run, random.Random(n))
            log = read_log(srv)
            for req_id in run.failed:
                assert "event=request_failed req_id=%s " % req_id in log, (req_id, log[-3000:])
            if "fault_injected" in log:
                # The fault has fired, so nothing else fails: the live state must be right.
                live_lost = cs.verify(srv, ledger, all_ids(), random.Random(n), stats(), COLL)
                assert live_lost == 0, "kind %s at %d: the live server lost writes" % (kind, n)
            srv.proc.send_signal(signal.SIGTERM)
            code = srv.proc.wait(timeout=60)
        else:
            code = srv.proc.returncode
        srv.log.close()
        srv.check_log()
        log = read_log(srv)
        fired = "fault_injected" in log
        assert code >= 0, "killed by signal %d; log:\n%s" % (-code, log[-4000:])
        if not started:
            assert code != 0, log[-4000:]
            assert fired, log[-4000:]
            assert "event=start_failed" in log, log[-4000:]
        elif code != 0:
            assert fired, log[-4000:]
            assert "lvl=error" in log, log[-4000:]

        again = cs.Server(tmp, data, model, ARGS, binary=FAULT_BIN, log_name="reopen.log")
        try:
            lost = cs.verify(again, ledger, all_ids(), random.Random(n + 1), stats(), COLL)
        finally:
            status = again.stop()
            assert status == 0, "kind %s at %d: the reopened server exited with %d; log:\n%s" % (
                kind, n, status, read_log(again)[-4000:])
        assert lost == 0, "kind %s at %d lost acknowledged writes" % (kind, n)
        return fired
    finally:
        for server in (srv, again):
            if server is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def stats():
    return {"in_flight": 0, "in_flight_applied": 0}


def wait_started(srv):
    """Returns True once /readyz returns 200, False when the process exited first."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if srv.proc.poll() is not None:
            return False
        try:
            if srv.request("GET", "/readyz", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("fault server neither ready nor exited after 30 s")


@pytest.mark.parametrize("kind", ["commit", "fsync", "write", "alloc"])
def test_every_fault_is_reported_and_consistent(base, kind):
    n = 1
    fired_runs = 0
    while n <= MAX_N:
        if not run_once(base, kind, n):
            break
        fired_runs += 1
        n += STRIDE
    print("kind %s: %d runs with the fault injected, none lost a write" % (kind, fired_runs))
    assert n <= MAX_N, "kind %s still fires at call %d; raise MAX_N" % (kind, MAX_N)
    assert fired_runs > 0, "kind %s never fired: its hooks are not on the tested paths" % kind
