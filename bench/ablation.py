#!/usr/bin/python3
"""Ablation of the connector on the real openclipart sample: R@1/5/10 per direction on the
test gallery for alternating MoE, joint MoE (the same number of direction updates), an MLP
connector (E = 1, k = 1, alternating) and a closed-form ridge map.

Trains with build/altmoe on the sample's train split (validation split for early stopping and
the best checkpoint) and evaluates with `altmoe eval` on the test split. Needs numpy.

    bench/ablation.py [--data-dir data/openclipart] [--epochs 120] [--hidden 256] [--seeds 3]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_splits(data_dir, out_dir):
    split = json.load(open(os.path.join(data_dir, "split.json")))
    paths = {}
    for modality in ("text", "image"):
        x = np.load(os.path.join(data_dir, modality + ".npy")).astype(np.float32)
        for part in ("train", "validation", "test"):
            path = os.path.join(out_dir, f"{modality}_{part}.npy")
            np.save(path, x[np.array(split[part])])
            paths[(modality, part)] = path
    return paths, {p: len(split[p]) for p in ("train", "validation", "test")}


def data_args(paths, part, flag="--data"):
    return [f"{flag}", f"text={paths[('text', part)]}", f"{flag}",
            f"image={paths[('image', part)]}"]


def train_and_eval(binary, name, cfg, paths, extra, out_dir, log):
    cfg_path = os.path.join(out_dir, name + ".json")
    json.dump(cfg, open(cfg_path, "w"))
    model = os.path.join(out_dir, name + ".safetensors")
    cmd = [binary, "train", "--config", cfg_path, "--out", model, "--log-every", "0",
           *data_args(paths, "train"), *data_args(paths, "validation", "--val-data"), *extra]
    start = time.time()
    run = subprocess.run(cmd, capture_output=True, text=True)
    log.write(" ".join(cmd) + "\n" + run.stdout + run.stderr)
    if run.returncode != 0:
        sys.exit(f"{name}: training failed:\n{run.stderr}")
    secs = time.time() - start
    ev = subprocess.run([binary, "eval", "--model", model, "--json", *data_args(paths, "test")],
                        capture_output=True, text=True, check=True)
    table = json.loads(ev.stdout)["directions"]
    return {d: v["contrastive"] for d, v in table.items()}, secs


def ridge(paths, lam=0.1):
    """Closed-form ridge map image -> text on centred, L2-normalised features."""
    def prep(x, mean):
        x = x - mean
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    ti, tt = np.load(paths[("image", "train")]), np.load(paths[("text", "train")])
    si, st = np.load(paths[("image", "test")]), np.load(paths[("text", "test")])
    mi, mt = ti.mean(0), tt.mean(0)
    ti, tt, si, st = prep(ti, mi), prep(tt, mt), prep(si, mi), prep(st, mt)
    w = np.linalg.solve(ti.T @ ti + lam * np.eye(ti.shape[1]), ti.T @ tt)
    pred = si @ w
    pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)

    def recall(q, g):
        s = q @ g.T
        rank = (s > np.diag(s)[:, None]).sum(1)
        return [float((rank < k).mean()) for k in (1, 5, 10)]

    return {"image->text": recall(pred, st), "text->image": recall(st, pred)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data/openclipart")
    ap.add_argument("--bin", default="build/altmoe")
    ap.add_argument("--epochs", type=int, default=120, help="epochs of the alternating runs")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--experts", type=int, default=12)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--extra", default="", help="more altmoe train options, space separated")
    ap.add_argument("--only", default="", help="comma-separated subset of variants to run")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train each connector with seeds 0..N-1 and print the mean")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths, sizes = write_splits(a.data_dir, tmp)
        dims = {"text": np.load(paths[("text", "test")]).shape[1],
                "image": np.load(paths[("image", "test")]).shape[1]}

        def cfg(experts, top_k):
            return {"modalities": [{"name": "image", "dim": dims["image"]},
                                   {"name": "text", "dim": dims["text"]}],
                    "hidden": a.hidden, "latent": a.hidden, "experts": experts,
                    "top_k": top_k, "dropout": 0.1}

        # center_l2 as the ridge map uses it, so both see the same features
        common = ["--batch", str(a.batch), "--patience", str(a.patience), "--preprocess",
                  "center_l2", *a.extra.split()]
        half = max(1, a.epochs // 2)
        variants = [
            ("moe-alternating", cfg(a.experts, a.top_k),
             ["--epochs", str(a.epochs), "--schedule", "alternating"]),
            ("moe-joint", cfg(a.experts, a.top_k), ["--epochs", str(half), "--schedule", "joint"]),
            ("mlp-alternating", cfg(1, 1),
             ["--epochs", str(a.epochs), "--schedule", "alternating"]),
        ]
        only = set(filter(None, a.only.split(",")))
        print(f"openclipart sample: train {sizes['train']}, validation {sizes['validation']}, "
              f"test gallery {sizes['test']}; H = D = {a.hidden}, E = {a.experts}, "
              f"k = {a.top_k}, batch {a.batch}")
        print(f"{'connector':<18} {'epochs':>6} {'image->text R@1/5/10':>22} "
              f"{'text->image R@1/5/10':>22} {'train s':>8}")

        def row(name, epochs, rec, secs):
            f = lambda r: "/".join(f"{100 * v:.1f}" for v in r)
            print(f"{name:<18} {epochs:>6} {f(rec['image->text']):>22} "
                  f"{f(rec['text->image']):>22} {secs:>8.0f}", flush=True)

        with open(os.path.join(tmp, "log.txt"), "w") as log:
            if not only or "ridge" in only:
                row("ridge (closed)", "-", ridge(paths), 0)
            for name, c, extra in variants:
                if only and name not in only:
                    continue
                runs = [train_and_eval(a.bin, name, c, paths,
                                       common + extra + ["--seed", str(seed)], tmp, log)
                        for seed in range(a.seeds)]
                mean = {d: np.mean([r[d] for r, _ in runs], axis=0) for d in runs[0][0]}
                row(name, extra[1], mean, np.mean([s for _, s in runs]))
                if a.seeds > 1:
                    spread = {d: np.std([r[d] for r, _ in runs], axis=0) for d in runs[0][0]}
                    row("  (std over seeds)", "", spread, 0)


if __name__ == "__main__":
    main()
