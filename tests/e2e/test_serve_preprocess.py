"""A model trained with center_l2 preprocessing serves raw embeddings: the server, `altmoe
project` and `altmoe eval` all apply the stored preprocessing, so they agree."""
import json
import os
import subprocess
import tempfile

import numpy as np
import pytest

from test_api import Server

BIN = os.environ.get("ALTMOE_BIN", "build/altmoe")
CONFIG = {"modalities": [{"name": "text", "dim": 8}, {"name": "image", "dim": 6}],
          "hidden": 16, "latent": 16, "experts": 4, "top_k": 2}


@pytest.fixture(scope="module")
def trained():
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(1)
        z = rng.normal(size=(300, 4))
        # offsets far from zero make centring matter
        text = (z @ rng.normal(size=(4, 8)) + 3.0).astype(np.float32)
        image = (np.tanh(z @ rng.normal(size=(4, 6))) - 2.0).astype(np.float32)
        np.save(os.path.join(tmp, "text.npy"), text)
        np.save(os.path.join(tmp, "image.npy"), image)
        with open(os.path.join(tmp, "connector.json"), "w") as f:
            json.dump(CONFIG, f)
        model = os.path.join(tmp, "model.safetensors")
        subprocess.run([BIN, "train", "--config", os.path.join(tmp, "connector.json"),
                        "--data", f"text={tmp}/text.npy", "--data", f"image={tmp}/image.npy",
                        "--out", model, "--epochs", "3", "--batch", "32", "--log-every", "0",
                        "--preprocess", "center_l2"], check=True, capture_output=True)
        yield tmp, model, text


def test_server_projection_matches_cli(trained):
    tmp, model, text = trained
    np.save(os.path.join(tmp, "query.npy"), text[:5])
    subprocess.run([BIN, "project", "--model", model, "--from", "text", "--to", "image",
                    "--in", os.path.join(tmp, "query.npy"), "--out", os.path.join(tmp, "cli.npy")],
                   check=True, capture_output=True)
    cli = np.load(os.path.join(tmp, "cli.npy"))

    # Server() builds its own random model unless model.safetensors exists in its folder.
    workdir = os.path.join(tmp, "serve")
    os.makedirs(workdir)
    os.link(model, os.path.join(workdir, "model.safetensors"))
    srv = Server(workdir)
    try:
        status, _, doc = srv.request("POST", "/v1/project", {
            "modality": "text", "target": "image", "space": "contrastive",
            "embeddings": [[float(v) for v in row] for row in text[:5]]})
        assert status == 200, doc
        served = np.asarray(doc["result"]["vectors"], dtype=np.float32)
    finally:
        assert srv.stop() == 0
    assert served.shape == cli.shape
    assert np.abs(served - cli).max() < 1e-4


def test_centring_changes_projection(trained):
    tmp, model, text = trained
    # Without its preprocessing the same weights give other vectors: the check above is not vacuous.
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ref"))
    import connector_ref
    raw = connector_ref.project(model, "text", "image", "contrastive", text[:5])
    np.save(os.path.join(tmp, "query.npy"), text[:5])
    subprocess.run([BIN, "project", "--model", model, "--from", "text", "--to", "image",
                    "--in", os.path.join(tmp, "query.npy"), "--out", os.path.join(tmp, "cli.npy")],
                   check=True, capture_output=True)
    assert np.abs(np.load(os.path.join(tmp, "cli.npy")) - raw).max() > 1e-2
