"""End-to-end tests of `altmoe serve`: the real binary on a free loopback port, a temporary data
directory and a small random model made with `altmoe init`, driven over HTTP with the standard
library only.

Run with `make e2e` (it sets ALTMOE_BIN) or
`ALTMOE_BIN=build/altmoe /usr/bin/python3 -m pytest -q tests/e2e/test_api.py`.
"""
import http.client
import json
import math
import os
import random
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import urllib.parse
import time

import pytest

BIN = os.environ.get("ALTMOE_BIN", os.path.join(os.path.dirname(__file__), "../../build/altmoe"))
TOKEN = "e2e-admin-token-7f3a"
TEXT_DIM = 8
IMAGE_DIM = 6
LATENT = 16
MAX_BODY = 65536
MAX_K = 50
CONNECTOR = {
    "modalities": [{"name": "text", "dim": TEXT_DIM}, {"name": "image", "dim": IMAGE_DIM}],
    "hidden": 16, "latent": LATENT, "experts": 4, "top_k": 2,
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vec(dim, seed):
    rng = random.Random(seed)
    return [round(rng.uniform(-1, 1), 4) for _ in range(dim)]


class Server:
    """One `altmoe serve` process and a tiny HTTP client for it."""

    def __init__(self, workdir, extra_args=(), data_dir=None):
        self.workdir = workdir
        self.model = os.path.join(workdir, "model.safetensors")
        if not os.path.exists(self.model):
            cfg = os.path.join(workdir, "connector.json")
            with open(cfg, "w") as f:
                json.dump(CONNECTOR, f)
            subprocess.run([BIN, "init", "--config", cfg, "--out", self.model, "--seed", "7"],
                           check=True, capture_output=True)

        self.data_dir = data_dir or os.path.join(workdir, "data")
        self.port = free_port()
        self.log_path = os.path.join(workdir, "server-%d.log" % self.port)
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALTMOE_")}
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
             "--data-dir", self.data_dir, "--model", self.model, "--admin-token", TOKEN,
             "--max-body", str(MAX_BODY), "--max-k", str(MAX_K), "--threads", "4",
             "--batch-window", "2000", "--ingest-batch", "100", "--log-level", "debug",
             "--connection-timeout", "2",
             *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start: " + self.read_log())

    def request(self, method, path, body=None, headers=None, raw=None, chunks=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if chunks is not None:
            conn.request(method, path, body=iter(chunks), headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        doc = json.loads(payload) if ctype.startswith("application/json") else payload.decode()
        return resp.status, resp, doc

    def admin(self, method, path, **kw):
        headers = dict(kw.pop("headers", {}))
        headers["Authorization"] = "Bearer " + TOKEN
        return self.request(method, path, headers=headers, **kw)

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp)
        yield srv
        code = srv.stop()
        with open(srv.log_path) as f:
            log = f.read()
        # A clean exit: no sanitizer report (when built with one) and the drain completed.
        assert "Sanitizer" not in log, log[-4000:]
        assert code == 0, log[-4000:]
        assert "event=stopped" in log


def ok(result):
    status, _, doc = result
    assert status in (200, 201), doc
    assert doc["status"] == "ok"
    assert isinstance(doc["time_ms"], (int, float))
    return doc["result"]


def create_docs(server, name="docs"):
    res = server.request("POST", "/v1/collections",
                         {"name": name, "modalities": ["text", "image"], "index": "Flat"})
    assert res[0] == 201, res[2]
    points = []
    for i in range(6):
        points.append({"id": "p%d" % i, "modality": "text", "embedding": vec(TEXT_DIM, i),
                       "payload": {"lang": "en" if i % 2 == 0 else "de", "n": i}})
        points.append({"id": "p%d" % i, "modality": "image", "embedding": vec(IMAGE_DIM, 100 + i)})
    ok(server.request("PUT", "/v1/collections/%s/points" % name, {"points": points}))


@pytest.fixture(scope="module")
def docs(server):
    create_docs(server)
    return "docs"


def state(server, name="docs"):
    """What a bad request must not change: the collection's counts and sequence number."""
    info = ok(server.request("GET", "/v1/collections/" + name))
    return (info["points"], info["seq"], [(m["name"], m["vectors"]) for m in info["modalities"]])


# ------------------------------------------------------------------------------------------
# Probes, metrics, model
# ------------------------------------------------------------------------------------------

def test_healthz_and_readyz(server):
    assert ok(server.request("GET", "/healthz")) == "alive"
    assert ok(server.request("GET", "/readyz")) == "ready"


def test_metrics_exposition(server, docs):
    ok(server.request("GET", "/v1/model"))
    status, resp, text = server.request("GET", "/metrics")
    assert status == 200
    assert resp.getheader("Content-Type").startswith("text/plain")
    assert "# TYPE altmoe_http_request_duration_seconds histogram" in text
    assert 'altmoe_http_requests_total{route="model",class="2xx"}' in text
    assert 'altmoe_vectors{collection="docs",modality="text"} 6' in text
    assert 'altmoe_index_vector_bytes{collection="docs",modality="image"} %d' % (6 * LATENT * 4) \
        in text
    assert "altmoe_build_info{" in text
    assert "process_resident_memory_bytes" in text


def test_model_describes_connector(server):
    model = ok(server.request("GET", "/v1/model"))
    assert model["modalities"] == [{"name": "text", "dim": TEXT_DIM},
                                   {"name": "image", "dim": IMAGE_DIM}]
    assert ["text", "image"] in model["directions"]
    assert model["latent"] == LATENT
    assert model["experts"] == 4
    assert model["top_k"] == 2
    assert len(model["fingerprint"]) == 16


def test_request_id_echoed_or_generated(server):
    _, resp, _ = server.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
    assert resp.getheader("X-Request-Id") == "abc-123"
    _, resp, _ = server.request("GET", "/healthz", headers={"X-Request-Id": "bad id\x7f"})
    generated = resp.getheader("X-Request-Id")
    assert generated
    assert generated != "bad id\x7f"
    assert len(generated) == 16
    assert "req_id=abc-123" in server.read_log()


# ------------------------------------------------------------------------------------------
# Collections and points
# ------------------------------------------------------------------------------------------

def test_collection_lifecycle(server):
    created = ok(server.request("POST", "/v1/collections",
                                {"name": "tmp", "modalities": ["image"]}))
    assert created["name"] == "tmp"
    assert created["points"] == 0
    names = [c["name"] for c in ok(server.request("GET", "/v1/collections"))["collections"]]
    assert "tmp" in names
    status, _, doc = server.request("POST", "/v1/collections", {"name": "tmp"})
    assert status == 409
    assert doc["error"]["code"] == "collection_exists"
    assert ok(server.request("DELETE", "/v1/collections/tmp"))["deleted"] == "tmp"
    status, _, doc = server.request("GET", "/v1/collections/tmp")
    assert status == 404
    assert doc["error"]["code"] == "collection_not_found"


def test_point_get_and_delete(server, docs):
    point = ok(server.request("GET", "/v1/collections/docs/points/p1"))
    assert point["id"] == "p1"
    assert point["payload"] == {"lang": "de", "n": 1}
    assert [round(x, 4) for x in point["embeddings"]["text"]] == vec(TEXT_DIM, 1)
    assert len(point["embeddings"]["image"]) == IMAGE_DIM

    ok(server.request("PUT", "/v1/collections/docs/points",
                      {"points": [{"id": "gone", "modality": "text",
                                   "tokens": [vec(TEXT_DIM, 9), vec(TEXT_DIM, 10)]}]}))
    tokens = ok(server.request("GET", "/v1/collections/docs/points/gone"))["embeddings"]["text"]
    assert len(tokens) == 2
    assert len(tokens[0]) == TEXT_DIM
    assert ok(server.request("DELETE", "/v1/collections/docs/points/gone"))["deleted"] == 1
    status, _, doc = server.request("GET", "/v1/collections/docs/points/gone")
    assert status == 404
    assert doc["error"]["code"] == "point_not_found"
    status, _, doc = server.request("DELETE", "/v1/collections/docs/points/gone")
    assert status == 404
    assert doc["error"]["code"] == "point_not_found"


# ------------------------------------------------------------------------------------------
# Search and projection
# ------------------------------------------------------------------------------------------

def test_search_finds_itself_same_modality(server, docs):
    res = ok(server.request("POST", "/v1/collections/docs/search",
                            {"modality": "image", "embedding": vec(IMAGE_DIM, 103),
                             "target": "image", "k": 3, "with_payload": True}))
    hits = res["hits"]
    assert len(hits) == 3
    assert hits[0]["id"] == "p3"
    assert abs(hits[0]["score"] - 1.0) < 1e-4
    assert hits[0]["payload"] == {"lang": "de", "n": 3}
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_search_cross_modal_and_filter(server, docs):
    res = ok(server.request("POST", "/v1/collections/docs/search",
                            {"modality": "text", "embedding": vec(TEXT_DIM, 0), "target": "image",
                             "k": 6}))
    assert sorted(h["id"] for h in res["hits"]) == ["p%d" % i for i in range(6)]
    res = ok(server.request("POST", "/v1/collections/docs/search",
                            {"modality": "text", "embedding": vec(TEXT_DIM, 0), "target": "text",
                             "k": 6, "filter": {"lang": "en"}, "with_payload": True}))
    assert {h["id"] for h in res["hits"]} == {"p0", "p2", "p4"}
    assert all(h["payload"]["lang"] == "en" for h in res["hits"])


def test_search_batch_matches_single(server, docs):
    queries = [{"modality": "image", "embedding": vec(IMAGE_DIM, 100 + i)} for i in range(4)]
    res = ok(server.request("POST", "/v1/collections/docs/search/batch",
                            {"queries": queries, "target": "image", "k": 1}))
    assert [r["hits"][0]["id"] for r in res["results"]] == ["p0", "p1", "p2", "p3"]


def test_concurrent_searches_are_batched(server, docs):
    results = {}

    def one(i):
        results[i] = server.request("POST", "/v1/collections/docs/search",
                                    {"modality": "image", "embedding": vec(IMAGE_DIM, 100 + i % 6),
                                     "target": "image", "k": 1})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in results.items():
        assert ok(res)["hits"][0]["id"] == "p%d" % (i % 6)
    text = server.request("GET", "/metrics")[2]
    # Some search call must have served more than one query (window 2 ms, 4 threads).
    counts = {}
    for line in text.splitlines():
        if line.startswith("altmoe_search_batch_queries_bucket{le="):
            counts[line.split('"')[1]] = float(line.split()[-1])
    assert counts["1"] < counts["+Inf"], text


def test_project_shapes_and_norm(server):
    res = ok(server.request("POST", "/v1/project",
                            {"modality": "text", "embeddings": [vec(TEXT_DIM, 1), vec(TEXT_DIM, 2)],
                             "target": "image"}))
    assert res["dim"] == LATENT
    assert len(res["vectors"]) == 2
    for v in res["vectors"]:
        assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4
    res = ok(server.request("POST", "/v1/project",
                            {"modality": "text", "embedding": vec(TEXT_DIM, 1), "target": "image",
                             "space": "predictive"}))
    assert res["dim"] == IMAGE_DIM


# ------------------------------------------------------------------------------------------
# Admin
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic " + TOKEN, "Bearer "])
def test_admin_needs_token(server, auth, docs):
    before = state(server)
    headers = {"Authorization": auth} if auth is not None else {}
    for path in ("/admin/v1/snapshot", "/admin/v1/model/reload"):
        status, resp, doc = server.request("POST", path, headers=headers)
        assert status == 401
        assert doc["error"]["code"] == "unauthorized"
        assert "Authorization" in doc["error"]["message"] or "token" in doc["error"]["message"]
        assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    status, _, doc = server.request("POST", "/admin/v1/collections/docs/ingest", headers=dict(
        headers, **{"Content-Type": "application/x-ndjson"}), raw=b'{"id":"x"}\n')
    assert status == 401
    assert state(server) == before
    assert TOKEN not in server.read_log()


def test_ingest_ndjson_reports_bad_lines(server):
    ok(server.request("POST", "/v1/collections", {"name": "bulk", "modalities": ["text", "image"]}))
    lines = []
    for i in range(25):
        lines.append(json.dumps({"id": "b%d" % i, "modality": "text", "embedding": vec(TEXT_DIM, i),
                                 "payload": {"i": i}}))
    lines[3] = '{"id": "bad3", "modality": "text", "embedding": [1, 2]}'
    lines[7] = "{not json"
    lines[11] = json.dumps({"id": "bad11", "modality": "audio", "embedding": [1]})
    lines.insert(15, "")  # blank lines are skipped but counted as lines
    body = ("\n".join(lines) + "\n").encode()
    # Stream in small uneven chunks so that lines straddle chunk boundaries.
    chunks = [body[i:i + 37] for i in range(0, len(body), 37)]
    res = ok(server.admin("POST", "/admin/v1/collections/bulk/ingest",
                          headers={"Content-Type": "application/x-ndjson"}, chunks=chunks))
    assert res["accepted"] == 22
    assert res["rejected"] == 3
    assert [e["line"] for e in res["errors"]] == [4, 8, 12]
    assert "embedding" in res["errors"][0]["reason"]
    assert "JSON" in res["errors"][1]["reason"]
    assert "modality" in res["errors"][2]["reason"]
    assert res["batches"] >= 1
    assert ok(server.request("GET", "/v1/collections/bulk"))["points"] == 22


def test_ingest_commits_in_batches(server):
    ok(server.request("POST", "/v1/collections", {"name": "batched", "modalities": ["text"]}))
    body = "".join(json.dumps({"id": "q%d" % i, "modality": "text",
                               "embedding": vec(TEXT_DIM, i)}) + "\n" for i in range(450))
    assert len(body) < MAX_BODY
    res = ok(server.admin("POST", "/admin/v1/collections/batched/ingest",
                          headers={"Content-Type": "application/x-ndjson"}, raw=body.encode()))
    # The server runs with --ingest-batch 100: four full commits and one of 50.
    assert res["accepted"] == 450
    assert res["rejected"] == 0
    assert res["batches"] == 5


def test_ingest_binary_float32(server):
    ok(server.request("POST", "/v1/collections", {"name": "bin", "modalities": ["image"]}))
    def records(prefix):
        out = b""
        for i in range(5):
            ident = ("%s%d" % (prefix, i)).encode()
            values = vec(IMAGE_DIM, 300 + i)
            if i == 2:
                values[1] = float("nan")
            out += struct.pack("<H", len(ident)) + ident
            out += struct.pack("<%df" % IMAGE_DIM, *values)
        return out

    body = records("r")
    res = ok(server.admin("POST", "/admin/v1/collections/bin/ingest?modality=image",
                          headers={"Content-Type": "application/octet-stream"}, raw=body))
    assert res["accepted"] == 4
    assert res["rejected"] == 1
    assert res["errors"][0]["record"] == 3

    # The same records in 7-byte chunks, cut mid-record, plus a truncated last record.
    body2 = records("s") + struct.pack("<H", 2) + b"zz" + b"\x00" * 5
    chunks = [body2[i:i + 7] for i in range(0, len(body2), 7)]
    res = ok(server.admin("POST", "/admin/v1/collections/bin/ingest?modality=image",
                          headers={"Content-Type": "application/octet-stream"}, chunks=chunks))
    assert res["accepted"] == 4
    assert [e["record"] for e in res["errors"]] == [3, 6]
    assert "truncated" in res["errors"][1]["reason"]
    assert ok(server.request("GET", "/v1/collections/bin"))["points"] == 8
    stored = ok(server.request("GET", "/v1/collections/bin/points/s4"))["embeddings"]["image"]
    assert [round(x, 4) for x in stored] == vec(IMAGE_DIM, 304)

    status, _, doc = server.admin("POST", "/admin/v1/collections/bin/ingest",
                                  headers={"Content-Type": "application/octet-stream"}, raw=body)
    assert status == 400
    assert "modality" in doc["error"]["message"]


def test_snapshot_and_reload(server, docs):
    before = state(server)
    res = ok(server.admin("POST", "/admin/v1/snapshot"))
    assert res["seq"] >= 1
    fp = ok(server.request("GET", "/v1/model"))["fingerprint"]
    res = ok(server.admin("POST", "/admin/v1/model/reload"))
    assert res["fingerprint"] == fp
    assert state(server) == before
    hits = ok(server.request("POST", "/v1/collections/docs/search",
                             {"modality": "image", "embedding": vec(IMAGE_DIM, 104),
                              "target": "image", "k": 1}))["hits"]
    assert hits[0]["id"] == "p4"


# ------------------------------------------------------------------------------------------
# Bad input: each case must get a 4xx JSON error that names the field, and change nothing.
# ------------------------------------------------------------------------------------------

SEARCH = "/v1/collections/docs/search"
POINTS = "/v1/collections/docs/points"
T = vec(TEXT_DIM, 0)

BAD = [
    # (id, method, path, body (dict or raw bytes), status, code, text in message)
    ("malformed_json", "POST", SEARCH, b'{"modality": "text",', 400, "malformed_json", "JSON"),
    ("not_object", "POST", SEARCH, b"[1, 2]", 400, "malformed_json", "object"),
    ("empty_body", "POST", SEARCH, b"", 400, "malformed_json", "empty"),
    ("unknown_field", "POST", SEARCH,
     {"modality": "text", "embedding": T, "target": "image", "colour": 1}, 400, "unknown_field",
     "colour"),
    ("wrong_type_k", "POST", SEARCH, {"modality": "text", "embedding": T, "target": "image",
                                      "k": "5"}, 400, "invalid_field", "'k'"),
    ("k_zero", "POST", SEARCH, {"modality": "text", "embedding": T, "target": "image", "k": 0},
     400, "k_out_of_range", "'k'"),
    ("k_over_limit", "POST", SEARCH, {"modality": "text", "embedding": T, "target": "image",
                                      "k": MAX_K + 1}, 400, "k_out_of_range", "'k'"),
    ("wrong_dimension", "POST", SEARCH, {"modality": "text", "embedding": T[:-1],
                                         "target": "image"}, 400, "wrong_dimension", "embedding"),
    ("empty_embedding", "POST", SEARCH, {"modality": "text", "embedding": [], "target": "image"},
     400, "wrong_dimension", "embedding"),
    ("infinite_value", "POST", SEARCH, b'{"modality":"text","target":"image","embedding":[1e999,'
     + b"0," * (TEXT_DIM - 2) + b"0]}", 400, "non_finite", "embedding[0]"),
    ("string_in_vector", "POST", SEARCH, {"modality": "text", "embedding": ["1"] * TEXT_DIM,
                                          "target": "image"}, 400, "invalid_field", "embedding[0]"),
    ("unknown_modality", "POST", SEARCH, {"modality": "audio", "embedding": T, "target": "image"},
     400, "unknown_modality", "modality"),
    ("unknown_target", "POST", SEARCH, {"modality": "text", "embedding": T, "target": "audio"},
     400, "unknown_target", "target"),
    ("missing_target", "POST", SEARCH, {"modality": "text", "embedding": T}, 400,
     "missing_field", "target"),
    ("both_forms", "POST", SEARCH, {"modality": "text", "embedding": T, "tokens": [T],
                                    "target": "image"}, 400, "invalid_field", "embedding"),
    ("unknown_collection", "POST", "/v1/collections/nope/search",
     {"modality": "text", "embedding": T, "target": "image"}, 404, "collection_not_found", "nope"),
    ("duplicate_ids", "PUT", POINTS, {"points": [
        {"id": "dup", "modality": "text", "embedding": T},
        {"id": "dup", "modality": "text", "embedding": T}]}, 400, "duplicate_id", "points[1].id"),
    ("bad_point_late_in_batch", "PUT", POINTS, {"points": [
        {"id": "ok1", "modality": "text", "embedding": T},
        {"id": "bad", "modality": "image", "embedding": T}]}, 400, "wrong_dimension",
     "points[1].embedding"),
    ("payload_not_object", "PUT", POINTS, {"points": [
        {"id": "x", "modality": "text", "embedding": T, "payload": [1]}]}, 400, "invalid_field",
     "points[0].payload"),
    ("empty_points", "PUT", POINTS, {"points": []}, 400, "invalid_field", "points"),
    ("missing_id", "PUT", POINTS, {"points": [{"modality": "text", "embedding": T}]}, 400,
     "missing_field", "points[0].id"),
    ("collection_bad_name", "POST", "/v1/collections", {"name": "a b"}, 400, "invalid_field",
     "name"),
    ("collection_bad_modality", "POST", "/v1/collections", {"name": "x", "modalities": ["audio"]},
     400, "unknown_modality", "modalities[0]"),
    ("project_no_target_for_space", "POST", "/v1/project",
     {"modality": "text", "embedding": T, "space": "predictive"}, 400, "missing_field", "target"),
    ("batch_queries_not_array", "POST", SEARCH + "/batch", {"queries": {}, "target": "image"}, 400,
     "invalid_field", "queries"),
    ("batch_bad_query", "POST", SEARCH + "/batch", {"queries": [
        {"modality": "text", "embedding": T}, {"modality": "text", "embedding": T[:3]}],
        "target": "image"}, 400, "wrong_dimension", "queries[1].embedding"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_rejected(server, docs, case):
    _, method, path, body, status, code, needle = case
    before = state(server)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, resp, doc = server.request(method, path, raw=raw,
                                    headers={"Content-Type": "application/json"})
    assert got == status, doc
    assert resp.getheader("Content-Type").startswith("application/json")
    assert doc["status"] == "error"
    assert doc["error"]["code"] == code, doc
    assert needle in doc["error"]["message"], doc
    assert state(server) == before


def test_wrong_content_type_is_415(server, docs):
    before = state(server)
    status, _, doc = server.request("POST", SEARCH, raw=b"{}",
                                    headers={"Content-Type": "text/plain"})
    assert status == 415
    assert doc["error"]["code"] == "unsupported_media_type"
    assert "Content-Type" in doc["error"]["message"]
    status, _, doc = server.request("POST", SEARCH, raw=b"{}")
    assert status == 415
    assert state(server) == before


def test_body_over_cap_is_413(server, docs):
    before = state(server)
    big = b'{"points": [' + b" " * MAX_BODY + b"]}"
    status, _, doc = server.request("PUT", POINTS, raw=big,
                                    headers={"Content-Type": "application/json"})
    assert status == 413
    assert doc["error"]["code"] == "body_too_large"
    assert "max_body" in doc["error"]["message"]
    # Chunked: no Content-Length, so the cap is enforced while the body streams in.
    chunks = [big[i:i + 8192] for i in range(0, len(big), 8192)]
    status, _, doc = server.request("PUT", POINTS, chunks=chunks,
                                    headers={"Content-Type": "application/json"})
    assert status == 413
    assert doc["error"]["code"] == "body_too_large"
    assert state(server) == before


def test_ingest_over_cap_keeps_committed_batches(server):
    ok(server.request("POST", "/v1/collections", {"name": "capped", "modalities": ["text"]}))
    line = json.dumps({"id": "c", "modality": "text", "embedding": vec(TEXT_DIM, 1)})
    lines = []
    i = 0
    while sum(len(x) + 1 for x in lines) <= MAX_BODY + 1000:
        lines.append(line.replace('"c"', '"c%d"' % i))
        i += 1
    body = ("\n".join(lines) + "\n").encode()
    chunks = [body[j:j + 4096] for j in range(0, len(body), 4096)]
    status, _, doc = server.admin("POST", "/admin/v1/collections/capped/ingest", chunks=chunks,
                                  headers={"Content-Type": "application/x-ndjson"})
    assert status == 413
    assert doc["error"]["code"] == "body_too_large"
    committed = int(doc["error"]["message"].split(";")[-1].split()[0])
    # Whole batches of 100 were committed before the limit; the partial batch was dropped.
    assert committed > 0
    assert committed % 100 == 0
    assert ok(server.request("GET", "/v1/collections/capped"))["points"] == committed


def test_client_disconnect_mid_upload(server, docs):
    before = state(server)
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"PUT /v1/collections/docs/points HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                     b'{"points": [{"id": "half"')
        sock.close()
    assert ok(server.request("GET", "/healthz")) == "alive"
    assert state(server) == before
    # Each abandoned request is completed (and its state freed) by the time the connection
    # timeout (2 s here) has passed; libmicrohttpd often notices the close sooner.
    deadline = time.time() + 10
    while time.time() < deadline:
        log = server.read_log()
        ends = [l for l in log.splitlines() if "route=points_upsert" in l and "bytes_in=" in l
                and ("end=client_abort" in l or "end=error" in l or "end=timeout" in l
                     or "end=read_error" in l)]
        if len(ends) >= 5:
            break
        time.sleep(0.2)
    assert len(ends) >= 5, log[-3000:]


def test_keep_alive_serves_many_requests(server, docs):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    for i in range(20):
        conn.request("GET", "/healthz", headers={"X-Request-Id": "ka-%d" % i})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("X-Request-Id") == "ka-%d" % i
        resp.read()
    sock_before = conn.sock
    conn.request("GET", "/v1/collections/docs")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert conn.sock is sock_before  # still the same TCP connection
    conn.close()


def test_connection_limit_and_request_timeout():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp, extra_args=("--threads", "1", "--max-connections", "2",
                                      "--request-timeout", "500"))
        try:
            # Two idle connections use up the limit, so a third waits in the listen backlog
            # until the idle ones are closed by the connection timeout (2 s here).
            held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
            time.sleep(0.2)
            t0 = time.time()
            assert ok(srv.request("GET", "/healthz")) == "alive"
            assert time.time() - t0 > 1.0
            for s in held:
                s.close()
            t0 = time.time()
            assert ok(srv.request("GET", "/healthz")) == "alive"
            assert time.time() - t0 < 1.0

            # A body still arriving after request_timeout (500 ms) gets 503 timeout.
            sock = socket.create_connection(("127.0.0.1", srv.port))
            body = json.dumps({"name": "slow"}).encode()
            sock.sendall(b"POST /v1/collections HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body[:4])
            time.sleep(0.8)
            sock.sendall(body[4:])
            reply = sock.recv(65536).decode()
            sock.close()
            assert reply.startswith("HTTP/1.1 503"), reply
            assert '"code":"timeout"' in reply
            assert "request_timeout" in reply
            status, _, _ = srv.request("GET", "/v1/collections/slow")
            assert status == 404
        finally:
            assert srv.stop() == 0


def test_unknown_route_and_method(server):
    status, _, doc = server.request("GET", "/v2/nothing")
    assert status == 404
    assert doc["error"]["code"] == "not_found"
    status, resp, doc = server.request("PATCH", "/v1/collections/docs")
    assert status == 405
    assert doc["error"]["code"] == "method_not_allowed"
    assert "DELETE" in resp.getheader("Allow")


# ------------------------------------------------------------------------------------------
# Shutdown and restart
# ------------------------------------------------------------------------------------------

def test_sigterm_drains_and_data_survives_restart():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp)
        create_docs(srv, "keep")
        before = state(srv, "keep")

        # A request in flight when SIGTERM arrives still completes.
        slow = {}

        def upload():
            body = json.dumps({"points": [{"id": "late", "modality": "text",
                                           "embedding": vec(TEXT_DIM, 5)}]}).encode()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
            conn.putrequest("PUT", "/v1/collections/keep/points")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            conn.send(body[:10])
            time.sleep(0.5)
            conn.send(body[10:])
            resp = conn.getresponse()
            slow["status"] = resp.status
            resp.read()
            conn.close()

        t = threading.Thread(target=upload)
        t.start()
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)
        t.join()
        assert srv.stop() == 0
        assert slow["status"] == 200
        with open(srv.log_path) as f:
            log = f.read()
        assert "event=stopping signal=SIGTERM" in log
        assert "event=stopped" in log

        again = Server(tmp)
        try:
            after = state(again, "keep")
            assert after[0] == before[0] + 1
            hits = ok(again.request("POST", "/v1/collections/keep/search",
                                    {"modality": "image", "embedding": vec(IMAGE_DIM, 102),
                                     "target": "image", "k": 1}))["hits"]
            assert hits[0]["id"] == "p2"
        finally:
            assert again.stop() == 0


def test_sigterm_answers_queued_searches():
    with tempfile.TemporaryDirectory() as tmp:
        # A 100 ms window keeps the searches queued in the batcher when SIGTERM arrives.
        srv = Server(tmp, extra_args=("--batch-window", "100000"))
        create_docs(srv, "q")
        results = {}

        def one(i):
            results[i] = srv.request("POST", "/v1/collections/q/search",
                                     {"modality": "image", "embedding": vec(IMAGE_DIM, 100 + i),
                                      "target": "image", "k": 1})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.03)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert srv.stop() == 0
        for i in range(6):
            assert ok(results[i])["hits"][0]["id"] == "p%d" % i


def test_serve_help_and_dump_config():
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--listen", "--port", "--batch-window", "--admin-token", "--max-body"):
        assert flag in out.stdout
    assert "microseconds" in out.stdout
    assert "bytes" in out.stdout
    out = subprocess.run([BIN, "serve", "--dump-config", "--admin-token", "hush", "--port", "9"],
                         capture_output=True, text=True, check=True)
    cfg = json.loads(out.stdout)
    assert cfg["port"] == 9
    assert cfg["admin_token"] == "<redacted>"
    assert "hush" not in out.stdout
    bad = subprocess.run([BIN, "serve", "--port", "0"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "port" in bad.stderr


def test_readyz_after_write_beside_hnsw(server):
    """A write to one collection must not leave another collection's HNSW index looking
    behind: /readyz returns to 200 once the builder has caught up."""
    ok(server.request("POST", "/v1/collections", {"name": "graph", "index": "HNSW32"}))
    ok(server.request("POST", "/v1/collections", {"name": "flat_next_to_graph"}))
    ok(server.request("PUT", "/v1/collections/flat_next_to_graph/points",
                      {"points": [{"id": "p", "modality": "text", "embedding": vec(TEXT_DIM, 5)}]}))
    deadline = time.time() + 10
    status = None
    while time.time() < deadline:
        status = server.request("GET", "/readyz")[0]
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200
    ok(server.request("DELETE", "/v1/collections/graph"))
    ok(server.request("DELETE", "/v1/collections/flat_next_to_graph"))


def test_ids_must_be_utf8_without_nul(server):
    ok(server.request("POST", "/v1/collections", {"name": "idcheck", "modalities": ["text"]}))
    point = {"modality": "text", "embedding": vec(TEXT_DIM, 9)}
    # \u0000 inside an id would cut it short and make two ids collide
    body = json.dumps({"points": [dict(point, id="k")]}).replace('"k"', '"k\\u0000a"').encode()
    status, _, doc = server.request("PUT", "/v1/collections/idcheck/points", raw=body,
                                    headers={"Content-Type": "application/json"})
    assert status == 400
    assert "\\u0000" in doc["error"]["message"]
    # raw bytes that are not UTF-8
    body = json.dumps({"points": [dict(point, id="k")]}).encode().replace(b'"k"', b'"\xff\xfe"')
    status, _, doc = server.request("PUT", "/v1/collections/idcheck/points", raw=body,
                                    headers={"Content-Type": "application/json"})
    assert status == 400
    assert doc["error"]["code"] == "malformed_json"
    assert "UTF-8" in doc["error"]["message"]
    assert ok(server.request("GET", "/v1/collections/idcheck"))["points"] == 0

    # the binary ingest form rejects such ids per record and goes on, an empty id included
    records = b""
    for ident in (b"good1", b"", b"bad\xff", b"nul\x00x", b"good2"):
        records += struct.pack("<H", len(ident)) + ident
        records += struct.pack("<%df" % TEXT_DIM, *vec(TEXT_DIM, 1))
    res = ok(server.admin("POST", "/admin/v1/collections/idcheck/ingest?modality=text",
                          headers={"Content-Type": "application/octet-stream"}, raw=records))
    assert res["accepted"] == 2
    assert [e["record"] for e in res["errors"]] == [2, 3, 4]
    assert "empty" in res["errors"][0]["reason"]
    assert "UTF-8" in res["errors"][1]["reason"]
    assert "NUL" in res["errors"][2]["reason"]
    ok(server.request("DELETE", "/v1/collections/idcheck"))


def test_batch_search_hit_cap():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp, extra_args=("--max-body", "4000000"))
        try:
            ok(srv.request("POST", "/v1/collections", {"name": "cap"}))
            queries = [{"modality": "text", "embedding": vec(TEXT_DIM, i)} for i in range(2001)]
            status, _, doc = srv.request("POST", "/v1/collections/cap/search/batch",
                                         {"queries": queries, "target": "image", "k": MAX_K})
            assert status == 400
            assert doc["error"]["code"] == "k_out_of_range"
            assert "100000" in doc["error"]["message"]
        finally:
            assert srv.stop() == 0


def test_longest_id_round_trips(server):
    ok(server.request("POST", "/v1/collections", {"name": "longids", "modalities": ["text"]}))
    ident = "\u4e2d" * 85   # 255 bytes of UTF-8, 765 bytes once percent-encoded
    ok(server.request("PUT", "/v1/collections/longids/points",
                      {"points": [{"id": ident, "modality": "text", "embedding": vec(TEXT_DIM, 3)}]}))
    path = "/v1/collections/longids/points/" + urllib.parse.quote(ident)
    assert ok(server.request("GET", path))["id"] == ident
    ok(server.request("DELETE", path))
    ok(server.request("DELETE", "/v1/collections/longids"))


def test_reload_missing_model_keeps_old():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp)
        try:
            ok(srv.request("POST", "/v1/collections", {"name": "keep", "modalities": ["image"]}))
            ok(srv.request("PUT", "/v1/collections/keep/points", {"points": [
                {"id": "a", "modality": "image", "embedding": vec(IMAGE_DIM, 1)}]}))
            os.rename(srv.model, srv.model + ".moved")
            status, _, doc = srv.admin("POST", "/admin/v1/model/reload")
            assert status == 500
            assert doc["error"]["code"] == "model_load_failed"
            assert "previous model stays" in doc["error"]["message"]
            hits = ok(srv.request("POST", "/v1/collections/keep/search", {
                "modality": "text", "embedding": vec(TEXT_DIM, 2), "target": "image", "k": 1}))["hits"]
            assert [h["id"] for h in hits] == ["a"]
        finally:
            assert srv.stop() == 0
