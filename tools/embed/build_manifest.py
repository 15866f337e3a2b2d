#!/usr/bin/python3
"""Builds the openclipart manifest that embed.js reads.

Reads the Debian packages openclipart-svg (metadata) and openclipart-png (pixels) under
/usr/share/openclipart and writes JSON lines {id, caption, image, svg} sorted by path:
  id       the path inside the package without extension, e.g. "animals/bat_orlando_karam_"
  caption  title; short clean description; keywords (see make_caption)
  image    absolute path of the PNG that embed.js encodes
  svg      absolute path of the SVG the caption came from

Items are dropped, with a count per reason on stderr, when the caption has no usable word, when
an earlier item (in path order) has the same caption words (same tokens in any order, so the
same text vector), or when an
earlier item has byte-identical PNG or SVG data.

Usage: build_manifest.py [--root /usr/share/openclipart] --out manifest.jsonl
"""

import argparse
import collections
import hashlib
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from text_query import tokenize  # noqa: E402  (the tokeniser the embeddings use)

NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
}
MAX_DESCRIPTION = 80  # characters; longer descriptions are stories, credits or specifications

# Titles that name a collection, a theme or a batch conversion, not the picture.
NOISE_TITLES = [
    r"HASH\(0x[0-9a-f]+\)",
    r"part of the .* collection.*",
    r".* svg theme",
    r".*-theme",
    r".* icon ?set",
    r"etiquette icons",
    r"svg gradient collection.*",
    r"various cliparts",
    r"gramastar",
    r"aiga_symbol_signs",
    r"untitled.*",
    r"(new )?drawing ?\d*",
    r"image ?\d*",
]
# A title that is a file name ("foo_bar.svg") or a bare code ("R16", "0xa11effc", "12-3").
FILENAME = re.compile(r"^\S+\.(svg|png|jpe?g|gif|eps|ai|wmf|cdr|odg)$", re.I)
BARE_CODE = re.compile(r"^(0x[0-9a-f]+|[a-z]{0,2}[-_ ]?\d[\w-]*)$", re.I)
# The collection credit that prefixes some titles: "Clipart by Nicu Buculei - smiley111".
CREDIT_PREFIX = re.compile(r"^clipart by [^-]+ - ", re.I)

# Keywords that are tagging artefacts or theme names rather than content.
NOISE_KEYWORDS = {"hash", "unsorted", "magick", "lemon_theme_icon", "mapsym", "appicon",
                  "united_nations_member", "special", "examples"}
DIRTY_DESCRIPTION = re.compile(
    r"(https?://|www\.|@|HASH\(|created with|converted from|\.svg|\.png|\.eps|"
    r"part of|collection|licen[cs]e|public domain|inkscape|sodipodi|e-?mail|adress|address|"
    r"&\w+;)", re.I)


def clean_space(text):
    return " ".join((text or "").split())


def read_metadata(svg_path):
    """Returns (title, description, keywords, creator) from the SVG's RDF cc:Work."""
    try:
        root = ET.parse(svg_path).getroot()
    except ET.ParseError:
        return "", "", [], ""
    work = root.find(".//cc:Work", NS)
    if work is None:
        return "", "", [], ""
    title = clean_space(work.findtext("dc:title", default="", namespaces=NS))
    description = clean_space(work.findtext("dc:description", default="", namespaces=NS))
    keywords = [clean_space(li.text) for li in work.findall("dc:subject/rdf:Bag/rdf:li", NS)]
    creator = clean_space(work.findtext("dc:creator/cc:Agent/dc:title", default="", namespaces=NS))
    return title, description, keywords, creator


def clean_title(title):
    """Returns the title without credit prefix, or '' if it is noise."""
    title = CREDIT_PREFIX.sub("", title).strip()
    if not title or FILENAME.match(title) or BARE_CODE.match(title):
        return ""
    if any(re.fullmatch(p, title, re.I) for p in NOISE_TITLES):
        return ""
    return title


def clean_keywords(keywords, creator):
    """Returns the content keywords, underscores as spaces, first occurrence only."""
    out, seen = [], set()
    for k in keywords:
        key = k.lower()
        if not k or key in NOISE_KEYWORDS or key == creator.lower() or BARE_CODE.match(k):
            continue
        k = k.replace("_", " ")
        if k.lower() in seen:
            continue
        seen.add(k.lower())
        out.append(k)
    return out


def clean_description(description, known_words, creator):
    """Returns the description if it is short, clean and adds a word; else ''."""
    if not description or len(description) > MAX_DESCRIPTION:
        return ""
    if description.lower() == creator.lower():
        return ""
    if DIRTY_DESCRIPTION.search(description) or BARE_CODE.match(description):
        return ""
    if set(tokenize(description)) <= known_words:
        return ""
    return description


def make_caption(title, description, keywords, creator):
    """Joins title; description; keyword list with '; ' (empty parts left out)."""
    title = clean_title(title)
    keywords = clean_keywords(keywords, creator)
    known = set(tokenize(title + " " + " ".join(keywords)))
    description = clean_description(description, known, creator)
    parts = [title, description, ", ".join(keywords)]
    return "; ".join(p for p in parts if p)


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build(root):
    """Returns (manifest rows, Counter of dropped items by reason)."""
    svg_root = os.path.join(root, "svg")
    png_root = os.path.join(root, "png")
    rel_paths = []
    for folder, _, files in os.walk(svg_root):
        for name in files:
            if name.endswith(".svg"):
                rel_paths.append(os.path.relpath(os.path.join(folder, name), svg_root)[:-4])
    rel_paths.sort()

    rows, dropped = [], collections.Counter()
    seen_captions, seen_bytes = set(), set()
    for rel in rel_paths:
        svg_path = os.path.join(svg_root, rel + ".svg")
        png_path = os.path.join(png_root, rel + ".png")
        if not os.path.exists(png_path):
            dropped["no PNG beside the SVG"] += 1
            continue
        caption = make_caption(*read_metadata(svg_path))
        words = tokenize(caption)
        if not words:
            dropped["no usable caption word"] += 1
            continue
        caption_key = " ".join(sorted(words))
        if caption_key in seen_captions:
            dropped["same caption words as an earlier item"] += 1
            continue
        digests = {("png", file_digest(png_path)), ("svg", file_digest(svg_path))}
        if digests & seen_bytes:
            dropped["same image bytes as an earlier item"] += 1
            continue
        seen_captions.add(caption_key)
        seen_bytes |= digests
        rows.append({"id": rel, "caption": caption, "image": png_path, "svg": svg_path})
    return rows, dropped


def main():
    parser = argparse.ArgumentParser(description="Build the openclipart manifest for embed.js.")
    parser.add_argument("--root", default="/usr/share/openclipart",
                        help="folder holding the packages' svg/ and png/ trees")
    parser.add_argument("--out", required=True, help="manifest file to write (JSON lines)")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.root, "svg")):
        sys.exit(f"build_manifest: {args.root}/svg not found; install openclipart-svg and "
                 "openclipart-png (apt-get install openclipart-svg openclipart-png)")

    rows, dropped = build(args.root)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"build_manifest: {len(rows)} items written to {args.out}", file=sys.stderr)
    for reason, count in dropped.most_common():
        print(f"build_manifest: dropped {count}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
