"""End-to-end checks of `altmoe train` and `altmoe eval` on small synthetic aligned data."""
import json
import os
import subprocess

import numpy as np
import pytest

BIN = os.environ.get("ALTMOE_BIN", "build/altmoe")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")
CONFIG = {"modalities": [{"name": "text", "dim": 12}, {"name": "image", "dim": 20}],
          "hidden": 32, "latent": 32, "experts": 4, "top_k": 2, "dropout": 0.1}


def run(*args, check=True):
    res = subprocess.run([BIN, *args], capture_output=True, text=True, env=ENV)
    if check and res.returncode != 0:
        raise AssertionError(f"altmoe {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 6))
    text = z @ rng.normal(size=(6, 12)) + 0.05 * rng.normal(size=(400, 12))
    image = np.tanh(z @ rng.normal(size=(6, 20))) + 0.05 * rng.normal(size=(400, 20))
    paths = {"text": tmp_path / "text.npy", "image": tmp_path / "image.npy"}
    np.save(paths["text"], text.astype(np.float32))
    np.save(paths["image"], image.astype(np.float16))   # float16 input is accepted
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CONFIG))
    return tmp_path, cfg, paths


def data_args(paths):
    return ["--data", f"text={paths['text']}", "--data", f"image={paths['image']}"]


def test_train_then_eval(data):
    tmp, cfg, paths = data
    out = tmp / "m.safetensors"
    res = run("train", "--config", str(cfg), *data_args(paths), "--out", str(out),
              "--epochs", "15", "--batch", "32", "--tau", "0.1", "--log-every", "10",
              "--preprocess", "center_l2")
    assert "ETA" in res.stdout
    assert "samples/s" in res.stdout
    assert "image->text" in res.stdout
    assert "text->image" in res.stdout
    for name in ("m.safetensors", "m.last.safetensors", "m.state"):
        assert (tmp / name).exists()

    ev = json.loads(run("eval", "--model", str(out), *data_args(paths), "--json").stdout)
    dirs = ev["directions"]
    assert set(dirs) == {"text->image", "image->text"}
    for d in dirs.values():
        r1, r5, r10 = d["contrastive"]
        assert 0 <= r1 <= r5 <= r10 <= 1
        assert len(d["predictive"]) == 3
    # 400 pairs, chance R@10 = 2.5 %: the trained connector is far above it
    assert ev["mean_recall"] > 0.3

    # altmoe project applies the stored preprocessing as eval does: the same recall from its
    # query and item vectors
    q, g = tmp / "q.npy", tmp / "g.npy"
    run("project", "--model", str(out), "--from", "image", "--to", "text", "--in",
        str(paths["image"]), "--out", str(q))
    run("project", "--model", str(out), "--from", "text", "--space", "target", "--in",
        str(paths["text"]), "--out", str(g))
    s = np.load(q) @ np.load(g).T
    rank = (s > np.diag(s)[:, None]).sum(1)
    got = [float((rank < k).mean()) for k in (1, 5, 10)]
    assert got == pytest.approx(dirs["image->text"]["contrastive"], abs=0.006)

    info = run("model", "info", str(out)).stdout
    assert '"schedule":"alternating"' in info
    assert '"center_l2"' in info


def test_cli_resume_is_exact(data):
    tmp, cfg, paths = data
    common = ["--config", str(cfg), *data_args(paths), "--epochs", "3", "--batch", "32",
              "--log-every", "0"]
    run("train", *common, "--out", str(tmp / "a.safetensors"))
    run("train", *common, "--out", str(tmp / "b.safetensors"), "--max-steps", "13")
    res = run("train", "--resume", *data_args(paths), "--epochs", "3", "--batch", "32",
              "--log-every", "0", "--out", str(tmp / "b.safetensors"))
    assert "finished" in res.stdout
    assert (tmp / "a.last.safetensors").read_bytes() == (tmp / "b.last.safetensors").read_bytes()


def test_rejects_bad_rows_and_options(data):
    tmp, cfg, paths = data
    bad = np.load(paths["text"])
    bad[123, 4] = np.inf
    np.save(tmp / "bad.npy", bad)
    res = run("train", "--config", str(cfg), "--data", f"text={tmp / 'bad.npy'}", "--data",
              f"image={paths['image']}", "--out", str(tmp / "x.safetensors"), check=False)
    assert res.returncode == 1
    assert "row 123" in res.stderr

    res = run("train", "--config", str(cfg), "--data", f"text={paths['text']}",
              "--out", str(tmp / "x.safetensors"), check=False)
    assert res.returncode == 1
    assert "image" in res.stderr

    res = run("train", "--config", str(cfg), *data_args(paths), "--out",
              str(tmp / "x.safetensors"), "--schedule", "sideways", check=False)
    assert res.returncode == 2

    res = run("train", "--config", str(cfg), *data_args(paths), "--out",
              str(tmp / "x.safetensors"), "--schedule", "single", "--direction", "text->audio",
              check=False)
    assert res.returncode == 1
    assert "text->audio" in res.stderr


def test_single_and_joint_schedules(data):
    tmp, cfg, paths = data
    for schedule in ("single", "joint"):
        log = tmp / f"{schedule}.loss"
        run("train", "--config", str(cfg), *data_args(paths), "--out",
            str(tmp / f"{schedule}.safetensors"), "--epochs", "1", "--batch", "32",
            "--schedule", schedule, "--direction", "image->text", "--loss-log", str(log),
            "--log-every", "0")
        dirs = [int(line.split()[1]) for line in log.read_text().splitlines()]
        steps = 360 // 32
        if schedule == "single":
            assert dirs == [1] * steps
        else:
            assert dirs == [0, 1] * steps


def test_token_input_trains(data):
    tmp, cfg, paths = data
    text = np.load(paths["text"])
    rng = np.random.default_rng(1)
    # three tokens per caption around the pooled vector: [N, 3, 12]
    tokens = text[:, None, :] + 0.1 * rng.normal(size=(len(text), 3, 12))
    np.save(tmp / "tokens.npy", tokens.astype(np.float32))
    args = ["--data", f"text={tmp / 'tokens.npy'}", "--data", f"image={paths['image']}"]
    out = tmp / "tok.safetensors"
    run("train", "--config", str(cfg), *args, "--out", str(out), "--epochs", "15", "--batch",
        "32", "--tau", "0.1", "--log-every", "0")
    ev = json.loads(run("eval", "--model", str(out), *args, "--json").stdout)
    assert ev["mean_recall"] > 0.2
