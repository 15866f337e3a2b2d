"""deploy/backup.sh and deploy/restore.sh against a running `altmoe serve`.

A server gets points, an index snapshot and more points after it. Then, while a writer thread
keeps upserting, deploy/backup.sh copies the live data directory. deploy/restore.sh puts the
backup into a new directory and a second server starts on it. Every point acknowledged before
the backup began must be there with its payload and embeddings, and search must find it. The
restored writer points must be an unbroken prefix of what the writer sent, because the copy is
one consistent LMDB transaction.
"""
import os
import subprocess
import tempfile
import threading

import pytest

from deploy_server import IMAGE_DIM, REPO, TEXT_DIM, Server, vec

BACKUP = os.path.join(REPO, "deploy", "backup.sh")
RESTORE = os.path.join(REPO, "deploy", "restore.sh")


def run(*args):
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def point(i, modality):
    dim = TEXT_DIM if modality == "text" else IMAGE_DIM
    return {"id": "p%d" % i, "modality": modality,
            "embedding": vec(dim, i if modality == "text" else 1000 + i),
            "payload": {"n": i, "tag": "before-backup"}}


class Writer(threading.Thread):
    """Upserts w0, w1, ... one per request until stopped; remembers what was acknowledged."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv = srv
        self.stop_event = threading.Event()
        self.acked = 0
        self.errors = []

    def run(self):
        i = 0
        while not self.stop_event.is_set() and i < 100000:
            body = {"points": [{"id": "w%d" % i, "modality": "text",
                                "embedding": vec(TEXT_DIM, 5000 + i)}]}
            status, doc = self.srv.request("PUT", "/v1/collections/live/points", body)
            if status != 200:
                self.errors.append((status, doc))
                return
            i += 1
            self.acked = i


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as tmp:
        yield tmp


@pytest.fixture(scope="module")
def backed_up(workdir):
    """Runs the source server, backs it up hot, returns what the restore must contain."""
    srv = Server(workdir, os.path.join(workdir, "source"))
    try:
        srv.ok("POST", "/v1/collections", {"name": "docs", "modalities": ["text", "image"]})
        srv.ok("POST", "/v1/collections", {"name": "live", "modalities": ["text"]})
        srv.ok("PUT", "/v1/collections/docs/points",
               {"points": [point(i, m) for i in range(20) for m in ("text", "image")]})
        srv.admin("POST", "/admin/v1/snapshot")
        # Points after the snapshot: the restored server must replay them from LMDB.
        srv.ok("PUT", "/v1/collections/docs/points",
               {"points": [point(i, m) for i in range(20, 30) for m in ("text", "image")]})
        assert os.listdir(os.path.join(srv.data_dir, "snapshots")), "no snapshot written"

        writer = Writer(srv)
        writer.start()
        while writer.acked < 20 and writer.is_alive():
            writer.join(0.01)
        acked_before = writer.acked
        backup_dir = os.path.join(workdir, "backup")
        run(BACKUP, "--model", srv.model, srv.data_dir, backup_dir)
        while writer.acked < acked_before + 20 and writer.is_alive():
            writer.join(0.01)
        writer.stop_event.set()
        writer.join(30)
        assert not writer.errors, writer.errors
        docs = srv.ok("GET", "/v1/collections/docs")
    finally:
        assert srv.stop() == 0, srv.read_log()
    return {"backup": backup_dir, "docs": docs, "acked_before": acked_before,
            "acked_total": writer.acked}


def test_backup_layout(backed_up):
    files = sorted(os.listdir(backed_up["backup"]))
    assert files == ["MANIFEST", "SHA256SUMS", "connector.safetensors", "data.mdb", "snapshots"]
    assert os.listdir(os.path.join(backed_up["backup"], "snapshots"))
    assert "lock.mdb" not in files


def test_restore_rejects_non_empty_dir(backed_up, workdir):
    target = os.path.join(workdir, "occupied")
    os.makedirs(target)
    with open(os.path.join(target, "keep"), "w") as f:
        f.write("live data")
    result = subprocess.run([RESTORE, backed_up["backup"], target], capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert os.listdir(target) == ["keep"]


def test_restored_server_has_the_points(backed_up, workdir):
    restored = os.path.join(workdir, "restored")
    model = os.path.join(workdir, "restored-model.safetensors")
    run(RESTORE, "--model-to", model, backed_up["backup"], restored)
    srv = Server(workdir, restored, model=model)
    try:
        docs = srv.ok("GET", "/v1/collections/docs")
        assert docs["points"] == backed_up["docs"]["points"] == 30
        assert docs["modalities"] == backed_up["docs"]["modalities"]
        for i in (0, 7, 19, 20, 29):
            got = srv.ok("GET", "/v1/collections/docs/points/p%d" % i)
            assert got["payload"] == {"n": i, "tag": "before-backup"}
            assert [round(x, 4) for x in got["embeddings"]["text"]] == vec(TEXT_DIM, i)
            assert [round(x, 4) for x in got["embeddings"]["image"]] == vec(IMAGE_DIM, 1000 + i)
        # Each stored image finds itself first, before and after the snapshot's sequence.
        for i in (3, 25):
            hits = srv.ok("POST", "/v1/collections/docs/search",
                          {"modality": "image", "embedding": vec(IMAGE_DIM, 1000 + i),
                           "target": "image", "k": 1})["hits"]
            assert hits[0]["id"] == "p%d" % i
            assert abs(hits[0]["score"] - 1) < 1e-4

        # The copy is one transaction: the writer's points form an unbroken prefix that holds
        # at least what was acknowledged before the backup began.
        live = srv.ok("GET", "/v1/collections/live")["points"]
        assert backed_up["acked_before"] <= live <= backed_up["acked_total"]
        for i in sorted({0, live // 2, live - 1}):
            srv.ok("GET", "/v1/collections/live/points/w%d" % i)
        status, _ = srv.request("GET", "/v1/collections/live/points/w%d" % live)
        assert status == 404
    finally:
        assert srv.stop() == 0, srv.read_log()
