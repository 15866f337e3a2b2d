#!/usr/bin/python3
"""Test-split recall of the connector trained by `make demo`, beside the closed-form ridge map,
then the ablation table of bench/ablation.py. Run by `make eval-real`.

Trains the demo's model first when build/demo/model.safetensors does not exist.

Usage: tools/demo/eval_real.py [--work build/demo] [--skip-ablation]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "embed"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo  # noqa: E402
import ridge_baseline  # noqa: E402


def ridge_recall(features, split):
    """R@1/5/10 in % of the ridge map fitted on the train split (tools/embed/ridge_baseline.py)."""
    table = ridge_baseline.evaluate(features["image"], features["text"], split, 0.1)
    return {direction: [table[direction][k] for k in ridge_baseline.KS] for direction in table}


def connector_recall(binary, model, paths):
    command = [binary, "eval", "--model", model, "--json",
               "--data", f"text={paths['test', 'text']}", "--data", f"image={paths['test', 'image']}"]
    table = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {direction: [100.0 * v for v in values["contrastive"]]
            for direction, values in table["directions"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "build", "demo"))
    parser.add_argument("--bin", default=os.path.join(REPO, "build", "altmoe"))
    parser.add_argument("--skip-ablation", action="store_true", help="print only the first table")
    args = parser.parse_args()

    os.makedirs(args.work, exist_ok=True)
    items, split, features = demo.load_sample()
    paths = demo.write_splits(args.work, split, features)
    model = os.path.join(args.work, "model.safetensors")
    if not os.path.exists(model):
        model = demo.train(args.bin, args.work, paths, demo.DEFAULT_EPOCHS)

    ridge = ridge_recall(features, split)
    trained = connector_recall(args.bin, model, paths)
    print(f"\ntest split: {len(split['test'])} items (chance R@1/5/10 = 0.1/0.5/1.0 %), "
          f"trained on {len(split['train'])} pairs")
    print(f"{'connector':<34} {'image->text R@1/5/10':>22} {'text->image R@1/5/10':>22}")
    for name, table in (("ridge map (closed form)", ridge), ("altmoe connector (make demo)", trained)):
        cells = ["/".join(f"{v:.1f}" for v in table[d]) for d in ("image->text", "text->image")]
        print(f"{name[:34]:<34} {cells[0]:>22} {cells[1]:>22}")
    if not args.skip_ablation:
        print("\nablation (bench/ablation.py, about 4 minutes on 2 cores):", flush=True)
        subprocess.run([sys.executable, os.path.join(REPO, "bench", "ablation.py"),
                        "--data-dir", os.path.join(REPO, "data", "openclipart"), "--bin", args.bin],
                       check=True)


if __name__ == "__main__":
    main()
