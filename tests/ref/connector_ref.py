"""An independent NumPy implementation of the altmoe connector's forward pass.

It reads a model .safetensors file with the standard library and NumPy only (no altmoe code),
computes in float64, and serves as the reference the C forward pass is checked against.
Run as a script to project a .npy file the way `altmoe project` does:

    /usr/bin/python3 tests/ref/connector_ref.py MODEL FROM TO SPACE IN.npy OUT.npy
"""
import json
import struct
import sys
from math import sqrt

import numpy as np

try:
    from scipy.special import erf as _erf
except ImportError:  # SciPy is optional: fall back to math.erf elementwise.
    from math import erf as _scalar_erf

    _erf = np.vectorize(_scalar_erf, otypes=[np.float64])

DTYPES = {"F32": np.float32, "F16": np.float16}


def load_safetensors(path):
    """Return (tensors as float64 arrays by name, metadata dict) of a .safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    data = raw[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(data[begin:end], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        tensors[name] = array.astype(np.float64).reshape(info["shape"])
    return tensors, metadata


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, t, prefix):
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]


def moe(u, t, config):
    """Top-k mixture without renormalising the selected gate probabilities; ties keep the
    lower expert index first."""
    logits = linear(u, t, "gate")
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    order = np.argsort(-probs, axis=-1, kind="stable")[:, : config["top_k"]]
    out = np.zeros_like(u)
    for e in range(config["experts"]):
        rows = np.nonzero((order == e).any(axis=-1))[0]
        if rows.size == 0:
            continue
        hidden = gelu(linear(u[rows], t, f"experts.{e}.fc1"))
        out[rows] += probs[rows, e : e + 1] * linear(hidden, t, f"experts.{e}.fc2")
    return out


def branch(h, t, config, name):
    u = h + t[f"task_emb.{name}"]
    normed = layer_norm(moe(u, t, config), t[f"ln_{name}.weight"], t[f"ln_{name}.bias"], config["ln_eps"])
    return gelu(normed) + u


def normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def project(model_path, source, target, space, x):
    """Project x ([N, d] or [N, S, d]) like `altmoe project`; returns float64 [N, out]."""
    t, metadata = load_safetensors(model_path)
    config = json.loads(metadata["config"])
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    n, seq, d = x.shape
    if space == "target":
        return normalise(linear(x.mean(axis=1), t, f"modalities.{source}.tgt_proj"))
    prefix = f"directions.{source}.{target}"
    tokens = x.reshape(n * seq, d) + t[prefix + ".dir_emb"]
    h = gelu(linear(tokens, t, f"modalities.{source}.in_proj"))
    name, head = ("reg", "head_reg") if space == "predictive" else ("cl", "head_cl")
    o = branch(h, t, config, name).reshape(n, seq, -1).mean(axis=1)
    out = linear(o, t, f"{prefix}.{head}")
    return out if space == "predictive" else normalise(out)


def main(argv):
    if len(argv) != 7:
        sys.exit(__doc__)
    _, model, source, target, space, inp, out = argv
    np.save(out, project(model, source, target, space, np.load(inp)).astype(np.float32))


if __name__ == "__main__":
    main(sys.argv)
