#!/usr/bin/python3
"""Closed-form ridge baseline on an embedded sample: the floor a trained connector must beat.

Usage: ridge_baseline.py [--data data/openclipart] [--lam 0.1]

Both feature sets are mean-centred (with the training mean) and L2-normalised per row. A linear
map W from image space to text space is fitted on the training split in closed form,
W = (X'X + lam I)^-1 X'Y, and the test split is the gallery (one caption per image). Image ->
text ranks every test caption by the cosine between it and the mapped image; text -> image ranks
every test image the same way for each caption (the same similarity matrix read by columns).
Prints R@1/5/10 in percent for both directions.
"""

import argparse
import json
import os
import sys

import numpy as np

KS = (1, 5, 10)


def normalise_rows(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def prepare(features, train):
    """Centres on the training mean and L2-normalises each row (float64)."""
    features = features.astype(np.float64)
    return normalise_rows(features - features[train].mean(axis=0))


def fit_ridge(x, y, lam):
    """Returns W (d_x, d_y) minimising |XW - Y|^2 + lam |W|^2."""
    gram = x.T @ x + lam * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y)


def recall_at(similarity, ks=KS):
    """similarity[i, j] scores query i against gallery item j; item i is query i's match.
    Returns {k: percent of queries whose match ranks within the top k}."""
    own = np.diag(similarity)[:, None]
    rank = (similarity > own).sum(axis=1)  # gallery items scored strictly higher than the match
    return {k: 100.0 * float(np.mean(rank < k)) for k in ks}


def evaluate(image, text, split, lam):
    """Returns {"image->text": {k: R@k}, "text->image": {k: R@k}} on the test split."""
    train = np.asarray(split["train"])
    test = np.asarray(split["test"])
    x = prepare(image, train)
    y = prepare(text, train)
    w = fit_ridge(x[train], y[train], lam)
    predicted = normalise_rows(x[test] @ w)
    similarity = predicted @ y[test].T  # [test images, test captions]
    return {"image->text": recall_at(similarity), "text->image": recall_at(similarity.T)}


def main():
    default_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "data", "openclipart")
    parser = argparse.ArgumentParser(description="Ridge baseline R@1/5/10 on the test split.")
    parser.add_argument("--data", default=default_data,
                        help="folder with image.npy, text.npy and split.json")
    parser.add_argument("--lam", type=float, default=0.1, help="ridge penalty lambda")
    args = parser.parse_args()

    image = np.load(os.path.join(args.data, "image.npy"))
    text = np.load(os.path.join(args.data, "text.npy"))
    with open(os.path.join(args.data, "split.json"), encoding="utf-8") as f:
        split = json.load(f)
    if image.shape[0] != text.shape[0]:
        sys.exit(f"ridge_baseline: image.npy has {image.shape[0]} rows but text.npy has "
                 f"{text.shape[0]}; rebuild the sample")

    results = evaluate(image, text, split, args.lam)
    print(f"N = {image.shape[0]} (train {len(split['train'])}, validation "
          f"{len(split['validation'])}, test gallery {len(split['test'])}), lambda {args.lam}")
    for direction, recalls in results.items():
        cells = " / ".join(f"{recalls[k]:.1f}" for k in KS)
        print(f"{direction}: R@1/5/10 = {cells} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
