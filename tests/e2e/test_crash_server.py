"""SIGKILL `altmoe serve` under write load, restart it and check that every acknowledged write
survived exactly (tests/e2e/crash_server.py has the method; `make test-crash` runs 100 cycles).
"""
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import crash_server  # noqa: E402

CYCLES = int(os.environ.get("ALTMOE_CRASH_CYCLES", "20"))


def test_no_acknowledged_write_is_lost():
    with tempfile.TemporaryDirectory() as tmp:
        report = crash_server.run(CYCLES, seed=20261204, workdir=tmp, quiet=True)
    print(report)
    assert report["cycles"] == CYCLES
    assert report["lost"] == 0
    # The load really ran, kills landed mid-ingest, and some kills hit the admin calls.
    assert report["acknowledged"] > 1000
    assert report["in_flight"] > 0
    assert report["killed_in_snapshot"] + report["killed_in_reload"] > 0


def test_checker_reports_a_lost_write():
    """The verifier must count an acknowledged write the server does not have."""
    with tempfile.TemporaryDirectory() as tmp:
        report = crash_server.run(1, seed=5, workdir=tmp, quiet=True)
        assert report["lost"] == 0
        model = os.path.join(tmp, "model.safetensors")
        server = crash_server.Server(tmp, os.path.join(tmp, "data"), model)
        try:
            ids = ["w%d-%d" % (w, i) for w in range(crash_server.WRITERS)
                   for i in range(crash_server.IDS_PER_WRITER)]
            stats = {"in_flight": 0, "in_flight_applied": 0}
            # A ledger that accepts whatever is stored learns the true state ...
            ledger = crash_server.Ledger()
            conn = crash_server.http.client.HTTPConnection("127.0.0.1", server.port)
            for ident in ids:
                ledger.pending[ident] = [crash_server.read_state(server, conn, ident)]
            conn.close()
            assert crash_server.verify(server, ledger, ids, random.Random(1), stats) == 0
            # ... then one acknowledged write the server never saw must count as lost.
            ledger.acked["w0-0"] = {"payload": {"never": "written"}, "text": [0.5] * 8,
                                    "image": None}
            lost = crash_server.verify(server, ledger, ids, random.Random(1), stats)
        finally:
            server.stop()
    assert lost == 1
