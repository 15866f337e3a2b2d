"""`altmoe init` + `altmoe project` against the independent NumPy forward pass in tests/ref."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ref"))
import connector_ref  # noqa: E402

ALTMOE = os.environ.get("ALTMOE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "altmoe"))
REPO = os.path.join(os.path.dirname(__file__), "..", "..")

CONFIGS = {
    "paper_shape": {"modalities": [{"name": "text", "dim": 100}, {"name": "image", "dim": 480}],
                    "hidden": 256, "latent": 128, "experts": 12, "top_k": 4},
    "mlp": {"modalities": [{"name": "text", "dim": 33}, {"name": "image", "dim": 17}],
            "hidden": 64, "latent": 32, "experts": 1, "top_k": 1},
    "three_modalities": {"modalities": [{"name": "text", "dim": 20}, {"name": "image", "dim": 30},
                                        {"name": "audio", "dim": 12}],
                         "hidden": 48, "latent": 24, "experts": 5, "top_k": 5},
}


def run(*args):
    result = subprocess.run([ALTMOE, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    config = folder / "connector.json"
    config.write_text(json.dumps(CONFIGS[request.param]))
    path = folder / "model.safetensors"
    run("init", "--config", str(config), "--out", str(path), "--seed", "42")
    return path, CONFIGS[request.param]


def relative_error(got, want):
    return np.linalg.norm(got - want, axis=-1) / np.maximum(np.linalg.norm(want, axis=-1), 1e-12)


def check_projection(model_path, source, target, space, x, tmp_path):
    inp, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(inp, x)
    run("project", "--model", str(model_path), "--from", source, "--to", target,
        "--space", space, "--in", str(inp), "--out", str(out), "--batch", "7")
    got = np.load(out)
    want = connector_ref.project(str(model_path), source, target, space, x)
    assert got.shape == want.shape
    assert relative_error(got, want).max() < 1e-5


@pytest.mark.parametrize("space", ["contrastive", "predictive", "target"])
@pytest.mark.parametrize("seq", [1, 4])
def test_every_direction_matches_numpy(model, space, seq, tmp_path):
    path, config = model
    names = [m["name"] for m in config["modalities"]]
    dims = {m["name"]: m["dim"] for m in config["modalities"]}
    rng = np.random.default_rng(seq)
    for source in names:
        for target in names:
            if source == target:
                continue
            shape = (19, dims[source]) if seq == 1 else (19, seq, dims[source])
            x = rng.standard_normal(shape).astype(np.float32)
            check_projection(path, source, target, space, x, tmp_path)


def test_real_sample_matches_numpy(tmp_path):
    path = tmp_path / "model.safetensors"
    config = tmp_path / "connector.json"
    config.write_text(json.dumps(CONFIGS["paper_shape"]))
    run("init", "--config", str(config), "--out", str(path), "--seed", "3")
    for source, target, name in (("text", "image", "text"), ("image", "text", "image")):
        x = np.load(os.path.join(REPO, "data", "openclipart", f"{name}.npy"))[:200].astype(np.float32)
        check_projection(path, source, target, "contrastive", x, tmp_path)
        check_projection(path, source, target, "predictive", x, tmp_path)


def test_project_reports_bad_input(model, tmp_path):
    path, config = model
    source = config["modalities"][0]["name"]
    target = config["modalities"][1]["name"]
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, config["modalities"][0]["dim"] + 1), dtype=np.float32))
    result = subprocess.run([ALTMOE, "project", "--model", str(path), "--from", source, "--to", target,
                             "--in", str(wrong), "--out", str(tmp_path / "y.npy")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "last dimension" in result.stderr
    result = subprocess.run([ALTMOE, "project", "--model", str(path), "--from", "smell", "--to", target,
                             "--in", str(wrong), "--out", str(tmp_path / "y.npy")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "'smell' is not in the model" in result.stderr


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_model_with_non_finite_weight_rejected(tmp_path, bad):
    config = tmp_path / "connector.json"
    config.write_text(json.dumps(CONFIGS["mlp"]))
    path = tmp_path / "model.safetensors"
    run("init", "--config", str(config), "--out", str(path), "--seed", "1")
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    begin = header["gate.weight"]["data_offsets"][0] + 8 + header_len
    raw[begin + 4:begin + 8] = np.float32(bad).tobytes()
    path.write_bytes(bytes(raw))
    for args in (("model", "info", str(path)),
                 ("project", "--model", str(path), "--from", "text", "--to", "image",
                  "--in", str(path), "--out", str(tmp_path / "y.npy"))):
        result = subprocess.run([ALTMOE, *args], capture_output=True, text=True)
        assert result.returncode == 1
        assert "tensor gate.weight has a non-finite value" in result.stderr
        assert "at element 1" in result.stderr
