"""A reduced `make demo` on the shipped openclipart sample: train for a small budget, serve,
ingest the test split over HTTP and query it. Checks recall far above chance and near the
closed-form ridge map, and that fixed free-text and image queries find the expected items."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("ALTMOE_BIN", os.path.join(REPO, "build", "altmoe"))
sys.path.insert(0, os.path.join(REPO, "tools", "embed"))
sys.path.insert(0, os.path.join(REPO, "tools", "demo"))
import demo  # noqa: E402
import ridge_baseline  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    report = work / "report.json"
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo", "demo.py"),
                             "--work", str(work), "--bin", BIN, "--epochs", "80",
                             "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    items, split, features = demo.load_sample()
    captions = {item["id"]: item["caption"].lower() for item in items}
    return json.loads(report.read_text()), result.stdout, captions, split, features


def mean_recall(table):
    return sum(sum(values) for values in table.values()) / 6.0


def test_recall_far_above_chance(run):
    report = run[0]
    for direction in ("text->image", "image->text"):
        recall = report["recall"][direction]
        # chance on the 1,000-item gallery: R@1 0.1 %, R@10 1 %
        assert recall["1"] > 1.0, (direction, recall)
        assert recall["10"] > 10.0, (direction, recall)


def test_recall_near_ridge_map(run):
    report, _, _, split, features = run
    ridge = ridge_baseline.evaluate(features["image"], features["text"], split, 0.1)
    ridge_mean = mean_recall({d: list(t.values()) for d, t in ridge.items()})
    connector_mean = mean_recall({d: list(t.values()) for d, t in report["recall"].items()})
    # NOTE: with 1,058 training pairs the connector ties the ridge map rather than beating it
    # (docs/benchmarks.md), so this checks that it is not clearly worse.
    assert connector_mean > 0.9 * ridge_mean, (connector_mean, ridge_mean)


@pytest.mark.parametrize("query,word", [("birthday cake", "cake"), ("world map", "map")])
def test_free_text_query_finds_topic(run, query, word):
    report, _, captions, _, _ = run
    hits = report["free_text"][query]
    assert len(hits) == 5
    assert any(word in captions[hit] for hit in hits), [captions[hit] for hit in hits]


def test_image_queries_return_captions(run):
    report, stdout, captions, _, _ = run
    assert len(report["images"]) == demo.IMAGE_QUERIES
    for hits in report["images"].values():
        assert len(hits) == 5
        assert all(hit in captions for hit in hits)
    assert "The server stopped cleanly" in stdout


def test_data_directory_serves_again(run):
    report = run[0]
    work = os.path.dirname(report["model"])
    sys.path.insert(0, os.path.dirname(__file__))
    from test_api import Server
    os.makedirs(os.path.join(work, "again"), exist_ok=True)
    os.link(report["model"], os.path.join(work, "again", "model.safetensors"))
    srv = Server(os.path.join(work, "again"), data_dir=os.path.join(work, "data"))
    try:
        status, _, doc = srv.request("GET", f"/v1/collections/{demo.COLLECTION}")
        assert status == 200, doc
        assert doc["result"]["points"] == 1000
    finally:
        assert srv.stop() == 0
