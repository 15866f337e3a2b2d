#!/usr/bin/python3
"""A clip-back-style peer for bench/peers.sh: Flask + faiss IndexFlatIP on loopback.

clip-back (the `clip back` part of github.com/rom1504/clip-retrieval, see its README) serves
precomputed CLIP embeddings from a brute-force faiss index behind a Flask service. Each request
encodes the query with the CLIP model, normalises it and searches the index. This peer does the
same with altmoe's connector in the place of CLIP:

- stored vectors: the rows of STORED.npy, which bench/peers.sh writes with
  `altmoe project --space target` (the same unit vectors altmoe's Flat index holds), added to a
  faiss IndexFlatIP;
- per request: parse the JSON body {"modality", "embedding", "target", "k"}, project the
  embedding through the connector's direction modality -> target with the NumPy reference
  (tests/ref/connector_ref.py, float64; tensors loaded once at start), search, and answer
  {"status": "ok", "result": {"hits": [{"id", "score"}, ...]}} like altmoe.

Usage: bench/peer_flask_faiss.py MODEL STORED.npy IDS.txt PORT
Binds 127.0.0.1 only. Served by Flask's own threaded server (Werkzeug), as clip-back does.
"""
import json
import os
import sys

import faiss
import numpy as np
from flask import Flask, jsonify, request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import connector_ref as ref  # noqa: E402


class Connector:
    """Contrastive query projection of a connector whose tensors are read once at start."""

    def __init__(self, model_path):
        self.tensors, metadata = ref.load_safetensors(model_path)
        self.config = json.loads(metadata["config"])

    def query(self, source, target, x):
        """Project one pooled embedding x [d] of modality source and return float32 [1, D]."""
        t = self.tensors
        prefix = f"directions.{source}.{target}"
        tokens = np.asarray(x, dtype=np.float64)[None, :] + t[prefix + ".dir_emb"]
        h = ref.gelu(ref.linear(tokens, t, f"modalities.{source}.in_proj"))
        o = ref.branch(h, t, self.config, "cl")
        return ref.normalise(ref.linear(o, t, f"{prefix}.head_cl")).astype(np.float32)


def make_app(connector, index, ids):
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "result": {}})

    @app.post("/v1/collections/<name>/search")
    def search(name):
        body = request.get_json(force=True)
        q = connector.query(body["modality"], body["target"], body["embedding"])
        scores, rows = index.search(q, int(body.get("k", 10)))
        hits = [{"id": ids[r], "score": float(s)} for s, r in zip(scores[0], rows[0]) if r >= 0]
        return jsonify({"status": "ok", "result": {"hits": hits}})

    return app


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    model, stored, ids_path, port = argv[1], argv[2], argv[3], int(argv[4])
    vectors = np.ascontiguousarray(np.load(stored), dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with open(ids_path, encoding="utf-8") as f:
        ids = [line.rstrip("\n") for line in f]
    app = make_app(Connector(model), index, ids)
    app.run(host="127.0.0.1", port=port, threaded=True, debug=False)


if __name__ == "__main__":
    main(sys.argv)
