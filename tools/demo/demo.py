#!/usr/bin/python3
"""altmoe's main job on the openclipart sample shipped in data/: train, serve, ingest, query.

1. Writes the train, validation and test splits of data/openclipart as .npy files.
2. Trains a connector with the alternating schedule (`altmoe train`).
3. Starts `altmoe serve` on a free loopback port with a new data directory.
4. Creates a collection and bulk-ingests the test split's images and captions (one point per
   item, with both embeddings and the caption as payload) through the admin NDJSON endpoint.
5. Runs free-text queries (embedded with the shipped GloVe subset) against the images, image
   queries against the captions, and measures recall@1/5/10 of the test split in both
   directions through the HTTP API.
6. Stops the server with SIGTERM and prints how to serve the data directory again.

Usage: tools/demo/demo.py [--work DIR] [--epochs N] [--quick] [--json FILE]
"""

import argparse
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "embed"))
from text_query import GloveSubset  # noqa: E402

SAMPLE = os.path.join(REPO, "data", "openclipart")
FREE_TEXT_QUERIES = ["a red sports car", "birthday cake", "cat", "christmas tree", "world map"]
IMAGE_QUERIES = 4
KS = (1, 5, 10)
DEFAULT_EPOCHS = 80
COLLECTION = "openclipart"

CONNECTOR = {
    "modalities": [{"name": "text", "dim": 100}, {"name": "image", "dim": 480}],
    "hidden": 256, "latent": 256, "experts": 12, "top_k": 4, "dropout": 0.1,
}


def log(message):
    print(message, flush=True)


# ------------------------------------------------------------------ data and training

def load_sample():
    with open(os.path.join(SAMPLE, "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(SAMPLE, "split.json"), encoding="utf-8") as f:
        split = json.load(f)
    features = {m: np.load(os.path.join(SAMPLE, f"{m}.npy")).astype(np.float32) for m in ("text", "image")}
    return items, split, features


def write_splits(work, split, features):
    paths = {}
    for part in ("train", "validation", "test"):
        rows = np.asarray(split[part])
        for modality, x in features.items():
            path = os.path.join(work, f"{part}_{modality}.npy")
            np.save(path, x[rows])
            paths[part, modality] = path
    return paths


def train(binary, work, paths, epochs):
    config = os.path.join(work, "connector.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump(CONNECTOR, f)
    model = os.path.join(work, "model.safetensors")
    command = [binary, "train", "--config", config, "--out", model, "--schedule", "alternating",
               "--epochs", str(epochs), "--seed", "1", "--log-every", "100",
               # InfoNCE temperature 0.07: on this sample's validation split it beat the 0.03 default
               "--tau", "0.07"]
    for modality in ("text", "image"):
        command += ["--data", f"{modality}={paths['train', modality]}",
                    "--val-data", f"{modality}={paths['validation', modality]}"]
    log(f"$ {' '.join(command)}")
    subprocess.run(command, check=True)
    return model


# ------------------------------------------------------------------ server

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A keep-alive JSON client for one altmoe server on loopback."""

    def __init__(self, port, token):
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method, path, body=None, admin=False, content_type="application/json"):
        headers = {}
        if body is not None:
            headers["Content-Type"] = content_type
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
        if admin:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = json.loads(response.read())
        if data.get("status") != "ok":
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data.get('error')}")
        return data["result"]


def start_server(binary, work, model, token_file):
    port = free_port()
    data_dir = os.path.join(work, "data")
    command = [binary, "serve", "--model", model, "--data-dir", data_dir, "--port", str(port),
               "--admin-token-file", token_file, "--log-level", "warn"]
    log(f"$ {' '.join(command)}")
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"altmoe serve exited with status {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return process, port, data_dir
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("altmoe serve did not become ready within 60 s")


def stop_server(process):
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError("altmoe serve did not stop within 60 s of SIGTERM")
    if status != 0:
        raise RuntimeError(f"altmoe serve exited with status {status} after SIGTERM")


# ------------------------------------------------------------------ ingest and queries

def ingest(client, items, split, features):
    client.request("POST", "/v1/collections",
                   {"name": COLLECTION, "modalities": ["text", "image"], "index": "Flat"})
    lines = []
    for row in split["test"]:
        item = items[row]
        payload = {"caption": item["caption"], "image": os.path.basename(item["image"])}
        for modality in ("image", "text"):
            point = {"id": item["id"], "modality": modality,
                     "embedding": [round(float(v), 6) for v in features[modality][row]]}
            if modality == "image":
                point["payload"] = payload
            lines.append(json.dumps(point))
    started = time.monotonic()
    result = client.request("POST", f"/admin/v1/collections/{COLLECTION}/ingest",
                            "\n".join(lines) + "\n", admin=True, content_type="application/x-ndjson")
    seconds = time.monotonic() - started
    log(f"ingested {result['accepted']} embeddings of {len(split['test'])} items in {seconds:.2f} s "
        f"({result['rejected']} rejected)")
    if result["rejected"]:
        raise RuntimeError(f"ingest rejected records: {result['errors'][:3]}")


def search(client, modality, vector, target, k=5):
    body = {"modality": modality, "embedding": [float(v) for v in vector], "target": target,
            "k": k, "with_payload": True}
    return client.request("POST", f"/v1/collections/{COLLECTION}/search", body)["hits"]


def shorten(text, width=70):
    return text if len(text) <= width else text[: width - 3] + "..."


def free_text_queries(client):
    glove = GloveSubset()
    shown = {}
    for query in FREE_TEXT_QUERIES:
        vector = glove.embed(query)
        if vector is None:
            log(f'\ntext "{query}": no word of it is in the GloVe subset')
            continue
        hits = search(client, "text", vector, "image")
        log(f'\ntext "{query}" -> images')
        for rank, hit in enumerate(hits, 1):
            log(f"  {rank}. {hit['score']:.3f}  {hit['payload']['image']:<40}  "
                f"{shorten(hit['payload']['caption'], 50)}")
        shown[query] = [hit["id"] for hit in hits]
    return shown


def image_queries(client, items, split, features):
    captions = {items[row]["id"]: items[row]["caption"] for row in split["test"]}
    shown = {}
    for row in split["test"][:: max(1, len(split["test"]) // IMAGE_QUERIES)][:IMAGE_QUERIES]:
        item = items[row]
        hits = search(client, "image", features["image"][row], "text")
        log(f"\nimage {os.path.basename(item['image'])} (its caption: {shorten(item['caption'], 50)}) -> captions")
        for rank, hit in enumerate(hits, 1):
            mark = "*" if hit["id"] == item["id"] else " "
            log(f"  {rank}.{mark}{hit['score']:.3f}  {shorten(captions[hit['id']])}")
        shown[item["id"]] = [hit["id"] for hit in hits]
    return shown


def recall_through_api(client, items, split, features, source, target):
    """Recall@K of the test split: query i must find item i among the top K of the gallery."""
    found = {k: 0 for k in KS}
    rows = split["test"]
    for start in range(0, len(rows), 100):
        chunk = rows[start:start + 100]
        body = {"queries": [{"modality": source, "embedding": [float(v) for v in features[source][row]]}
                            for row in chunk],
                "target": target, "k": max(KS)}
        results = client.request("POST", f"/v1/collections/{COLLECTION}/search/batch", body)["results"]
        for row, result in zip(chunk, results):
            ids = [hit["id"] for hit in result["hits"]]
            for k in KS:
                found[k] += items[row]["id"] in ids[:k]
    return {k: 100.0 * found[k] / len(rows) for k in KS}


# ------------------------------------------------------------------ main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "build", "demo"),
                        help="folder for the splits, the model and the server's data directory")
    parser.add_argument("--bin", default=os.path.join(REPO, "build", "altmoe"), help="altmoe binary")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="maximum training epochs")
    parser.add_argument("--json", help="also write the figures and query results to this file")
    args = parser.parse_args()

    os.makedirs(args.work, exist_ok=True)
    data_dir = os.path.join(args.work, "data")
    if os.path.exists(data_dir):
        subprocess.run(["rm", "-rf", data_dir], check=True)
    items, split, features = load_sample()
    log(f"sample: {len(items)} openclipart items; train {len(split['train'])}, "
        f"validation {len(split['validation'])}, test {len(split['test'])}")

    paths = write_splits(args.work, split, features)
    model = train(args.bin, args.work, paths, args.epochs)

    token_file = os.path.join(args.work, "admin-token")
    with open(token_file, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(16) + "\n")
    os.chmod(token_file, 0o600)
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()

    process, port, data_dir = start_server(args.bin, args.work, model, token_file)
    try:
        client = Client(port, token)
        ingest(client, items, split, features)
        texts = free_text_queries(client)
        images = image_queries(client, items, split, features)
        recall = {"text->image": recall_through_api(client, items, split, features, "text", "image"),
                  "image->text": recall_through_api(client, items, split, features, "image", "text")}
    finally:
        stop_server(process)

    log(f"\nrecall on the test split ({len(split['test'])} items), measured through the HTTP API:")
    log(f"  {'direction':<12} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
    for direction, values in recall.items():
        log(f"  {direction:<12} " + " ".join(f"{values[k]:6.1f}" for k in KS))
    log(f"\nThe server stopped cleanly. Serve the same data again with:\n"
        f"  {args.bin} serve --model {model} --data-dir {data_dir} --admin-token-file {token_file}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"recall": {d: {str(k): v for k, v in r.items()} for d, r in recall.items()}, "free_text": texts, "images": images, "model": model}, f, indent=1)


if __name__ == "__main__":
    main()
