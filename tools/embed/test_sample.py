"""Checks the shipped sample's shape and split, and the ridge baseline's recall arithmetic.

Run: /usr/bin/python3 -m pytest -q tools/embed/test_sample.py
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "..", "data", "openclipart")
sys.path.insert(0, HERE)
import make_split  # noqa: E402
import ridge_baseline  # noqa: E402


def load_items():
    with open(os.path.join(SAMPLE, "items.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sample_rows_align():
    items = load_items()
    image = np.load(os.path.join(SAMPLE, "image.npy"))
    text = np.load(os.path.join(SAMPLE, "text.npy"))
    assert image.dtype == np.float16
    assert text.dtype == np.float16
    assert image.shape == (len(items), 480)
    assert text.shape == (len(items), 100)
    assert np.isfinite(image).all()
    assert np.isfinite(text).all()


def test_sample_items_unique():
    items = load_items()
    assert len({item["id"] for item in items}) == len(items)
    assert len({item["caption"].lower() for item in items}) == len(items)
    assert all(item["caption"].strip() for item in items)


def test_sample_image_rows_distinct():
    image = np.load(os.path.join(SAMPLE, "image.npy"))
    assert len(np.unique(image, axis=0)) == image.shape[0]


def test_shipped_split_partitions_items():
    with open(os.path.join(SAMPLE, "split.json"), encoding="utf-8") as f:
        split = json.load(f)
    count = len(load_items())
    parts = [split["train"], split["validation"], split["test"]]
    assert sorted(i for part in parts for i in part) == list(range(count))
    assert len(split["test"]) == 1000
    assert len(split["validation"]) == 500


def test_shipped_split_is_reproducible():
    with open(os.path.join(SAMPLE, "split.json"), encoding="utf-8") as f:
        split = json.load(f)
    train, validation, test = make_split.make_split(len(load_items()), 1000, 500, split["seed"])
    assert (train, validation, test) == (split["train"], split["validation"], split["test"])


def test_make_split_rejects_too_few_items():
    try:
        make_split.make_split(100, 80, 20, 1)
    except ValueError as e:
        assert "100 items" in str(e)
    else:
        raise AssertionError("a split leaving no training item was accepted")


def test_recall_perfect_on_identity():
    recalls = ridge_baseline.recall_at(np.eye(20))
    assert recalls == {1: 100.0, 5: 100.0, 10: 100.0}


def test_recall_counts_rank_of_match():
    # Query 0's match (column 0) ranks third; query 1's match ranks first.
    similarity = np.array([[0.5, 0.9, 0.8, 0.1],
                           [0.0, 1.0, 0.2, 0.3],
                           [0.9, 0.8, 0.7, 0.6],
                           [0.1, 0.2, 0.3, 0.4]])
    recalls = ridge_baseline.recall_at(similarity, ks=(1, 3))
    assert recalls[1] == 50.0  # queries 1 and 3
    assert recalls[3] == 100.0  # query 2's match ranks third as well


def test_ridge_recovers_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 30))
    y = x @ rng.normal(size=(30, 10))
    split = {"train": list(range(500)), "test": list(range(500, 600))}
    results = ridge_baseline.evaluate(x, y, split, lam=0.1)
    assert results["image->text"][1] > 95.0
    assert results["text->image"][1] > 95.0
