#!/usr/bin/python3
"""Embeds free text the way tools/embed/text.js embeds captions, without npm.

It reads the GloVe subset shipped in data/glove/ (unit-length word vectors, float16, and one word
per line) and repeats the Node tool's steps exactly:
  1. Unicode NFKD, then drop combining marks (U+0300..U+036F), so "cafe" and "café" agree;
  2. lower-case and split on anything that is not an ASCII letter a-z;
  3. drop one-letter tokens, the STOP_WORDS below and words not in the vocabulary;
  4. average the unit word vectors (repeats count each time) and scale to unit length.

The subset contains every caption word of the sample and the 20,000 most frequent GloVe words. A
query word outside both is skipped here, while the Node tool (with all 341,479 words) uses it.

Usage: text_query.py "red sports car" [more queries...]  prints the tokens used and the vector
(exit status 1 if some query has no known word).
As a module: GloveSubset(data_dir).embed(text) -> numpy float32 (100,) or None.
"""

import os
import re
import sys
import unicodedata

import numpy as np

# The same list as STOP_WORDS in text.js; test_text_query.py checks that they agree.
STOP_WORDS = frozenset("""
an the and or of in on at to for with by from as is are was were be been it its this that these
those into onto over under up down out off he she they we you his her their our your my me him
them us not no but so than then there here very some any all each has have had do does did can
will would should could may might
""".split())

_COMBINING = re.compile("[\u0300-\u036f]")
_NON_LETTERS = re.compile("[^a-z]+")
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "glove")


def tokenize(text):
    """Returns the tokens of text that are looked up (steps 1-3 without the vocabulary)."""
    folded = _COMBINING.sub("", unicodedata.normalize("NFKD", text)).lower()
    return [w for w in _NON_LETTERS.split(folded) if len(w) > 1 and w not in STOP_WORDS]


class GloveSubset:
    """The shipped GloVe subset: vectors.npy [V, 100] float16 unit rows, words.txt (V lines)."""

    def __init__(self, data_dir=DEFAULT_DIR):
        self.vectors = np.load(os.path.join(data_dir, "vectors.npy")).astype(np.float32)
        with open(os.path.join(data_dir, "words.txt"), encoding="utf-8") as f:
            words = f.read().split("\n")
        if words and words[-1] == "":
            words.pop()
        if len(words) != self.vectors.shape[0]:
            raise ValueError(f"{data_dir}: words.txt has {len(words)} words but vectors.npy has "
                             f"{self.vectors.shape[0]} rows; rebuild data/glove with make data")
        self.index = {w: i for i, w in enumerate(words)}

    def words_used(self, text):
        """Returns the tokens of text that have a vector, in order."""
        return [w for w in tokenize(text) if w in self.index]

    def embed(self, text):
        """Returns the unit-length float32 (100,) vector of text, or None if no word is known."""
        rows = [self.index[w] for w in self.words_used(text)]
        if not rows:
            return None
        total = self.vectors[rows].astype(np.float64).sum(axis=0)
        norm = np.linalg.norm(total)
        if norm == 0:
            return None
        return (total / norm).astype(np.float32)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    glove = GloveSubset()
    status = 0
    for text in argv[1:]:
        vector = glove.embed(text)
        if vector is None:
            print(f"{text!r}: no known word after stop words; no vector", file=sys.stderr)
            status = 1
            continue
        print(f"{text!r}: words {glove.words_used(text)}")
        print(" ".join(f"{x:.5f}" for x in vector))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
