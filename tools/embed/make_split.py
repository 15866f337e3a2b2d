#!/usr/bin/python3
"""Writes a fixed, seeded train/validation/test split of an embedded sample.

Usage: make_split.py --items data/openclipart/items.jsonl --out data/openclipart/split.json
       [--test 1000] [--validation 500] [--seed 20261204]

split.json contains {"seed", "train", "validation", "test"}: sorted row indices into items.jsonl
(and so into image.npy and text.npy). The same items and seed give the same split.
"""

import argparse
import json
import random
import sys


def make_split(count, n_test, n_validation, seed):
    """Returns (train, validation, test) lists of sorted row indices."""
    if n_test + n_validation >= count:
        raise ValueError(f"{count} items cannot hold a test split of {n_test} and a validation "
                         f"split of {n_validation} with training items left; lower them")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    test = sorted(order[:n_test])
    validation = sorted(order[n_test:n_test + n_validation])
    train = sorted(order[n_test + n_validation:])
    return train, validation, test


def main():
    parser = argparse.ArgumentParser(description="Write a seeded train/validation/test split.")
    parser.add_argument("--items", required=True, help="items.jsonl of the sample")
    parser.add_argument("--out", required=True, help="split.json to write")
    parser.add_argument("--test", type=int, default=1000, help="items in the test split")
    parser.add_argument("--validation", type=int, default=500,
                        help="items in the validation split")
    parser.add_argument("--seed", type=int, default=20261204, help="shuffle seed")
    args = parser.parse_args()

    with open(args.items, encoding="utf-8") as f:
        count = sum(1 for line in f if line.strip())
    try:
        train, validation, test = make_split(count, args.test, args.validation, args.seed)
    except ValueError as e:
        sys.exit(f"make_split: {e}")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"seed": args.seed, "train": train, "validation": validation, "test": test}, f)
        f.write("\n")
    print(f"make_split: {len(train)} train, {len(validation)} validation, {len(test)} test "
          f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
