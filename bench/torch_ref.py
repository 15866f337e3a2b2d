#!/usr/bin/python3
"""PyTorch reference of altmoe's connector training, for checking `altmoe train`.

Starts from the same initial model file (.safetensors written by `altmoe init`), reproduces the
trainer's data order (the xoshiro256** shuffle of core/rng.c), its preprocessing, schedules,
objective and AdamW, and prints the loss of every step as `step direction total reg cl`, the
format of `altmoe train --loss-log`. Run it with the options given to `altmoe train`, with
--val-fraction 0 and --no-dropout there (this reference does not reproduce the C dropout masks
or the validation split). Needs Debian's python3-torch and python3-numpy.

    bench/torch_ref.py --init init.safetensors --data text=t.npy --data image=i.npy \
        --steps 50 --batch 128 > torch.loss
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

MASK = (1 << 64) - 1


# ---------------------------------------------------------------- core/rng.c in Python

class Rng:
    def __init__(self, seed):
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK

    def next(self):
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def below(self, n):
        limit = MASK - (MASK % n)
        while True:
            r = self.next()
            if r < limit:
                return r % n


def shuffle(perm, rng):
    for i in range(len(perm) - 1, 0, -1):
        j = rng.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]


# ---------------------------------------------------------------- model file

def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        tensors[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"]).copy()
    return tensors, meta


class Connector(torch.nn.Module):
    """The connector of core/connector.h, parameter names as in the model file."""

    def __init__(self, cfg, tensors):
        super().__init__()
        self.cfg = cfg
        self.names = [m["name"] for m in cfg["modalities"]]
        self.k = cfg["top_k"]
        self.E = cfg["experts"]
        self.eps = cfg["ln_eps"]
        self.p = torch.nn.ParameterDict()
        for name, value in tensors.items():
            self.p[name.replace(".", "/")] = torch.nn.Parameter(torch.from_numpy(value))

    def w(self, name):
        return self.p[name.replace(".", "/")]

    def linear(self, x, name):
        return F.linear(x, self.w(name + ".weight"), self.w(name + ".bias"))

    def moe(self, u):
        probs = torch.softmax(self.linear(u, "gate"), dim=-1)
        top_p, top_i = probs.topk(self.k, dim=-1)        # not renormalised
        out = torch.zeros_like(u)
        for e in range(self.E):
            token, slot = (top_i == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            x = u[token]
            y = self.linear(F.gelu(self.linear(x, f"experts.{e}.fc1")), f"experts.{e}.fc2")
            out = out.index_add(0, token, top_p[token, slot].unsqueeze(1) * y)
        return out

    def branch(self, h, which):
        u = h + self.w(f"task_emb.{which}")
        ln = F.layer_norm(self.moe(u), (u.shape[-1],), self.w(f"ln_{which}.weight"),
                          self.w(f"ln_{which}.bias"), self.eps)
        return F.gelu(ln) + u

    def forward(self, x, src, tgt):
        d = f"directions.{src}.{tgt}"
        h = F.gelu(self.linear(x + self.w(d + ".dir_emb"), f"modalities.{src}.in_proj"))
        pred = self.linear(self.branch(h, "reg"), d + ".head_reg")
        cl = self.linear(self.branch(h, "cl"), d + ".head_cl")
        return pred, F.normalize(cl, dim=-1)

    def target(self, x, m):
        return F.normalize(self.linear(x, f"modalities.{m}.tgt_proj"), dim=-1)


# ---------------------------------------------------------------- training

def lr_at(a, step, warmup, total):
    if step < warmup:
        return a.lr_start + (a.lr - a.lr_start) * step / warmup
    span = total - warmup
    if span <= 0:
        return a.lr
    if step >= total:
        return a.lr_final
    progress = (step - warmup) / span
    return a.lr_final + (a.lr - a.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def wd_at(a, step, total):
    progress = min(step / total, 1.0) if total > 0 else 1.0
    return a.wd_end + (a.wd_start - a.wd_end) * 0.5 * (1 + math.cos(math.pi * progress))


def preprocess(x):
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    x = x - mean
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    return x / np.maximum(norm, 1e-12)[:, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--schedule", default="alternating", choices=["alternating", "joint"])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-start", type=float, default=1e-4)
    ap.add_argument("--lr-final", type=float, default=1e-5)
    ap.add_argument("--warmup-epochs", type=float, default=0.5)
    ap.add_argument("--wd-start", type=float, default=0.005)
    ap.add_argument("--wd-end", type=float, default=0.2)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preprocess", default="none", choices=["center_l2", "none"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    tensors, meta = load_safetensors(a.init)
    cfg = json.loads(meta["config"])
    model = Connector(cfg, tensors)
    names = model.names
    dirs = cfg.get("directions") or [[s, t] for s in names for t in names if s != t]

    data = {}
    for item in a.data:
        name, path = item.split("=", 1)
        x = np.load(path).astype(np.float32)
        data[name] = preprocess(x) if a.preprocess == "center_l2" else x
    rows = len(data[names[0]])
    batch = min(a.batch, rows)
    steps_per_epoch = rows // batch
    total = a.epochs * steps_per_epoch
    warmup = round(a.warmup_epochs * steps_per_epoch)

    decay = [p for n, p in model.p.items() if n.endswith("/weight") and not n.startswith("ln_")]
    other = [p for n, p in model.p.items()
             if not (n.endswith("/weight") and not n.startswith("ln_"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": other, "weight_decay": 0.0}], lr=a.lr)
    rng = Rng(a.seed)
    perm = list(range(rows))
    tensors_t = {n: torch.from_numpy(v) for n, v in data.items()}

    step = 0
    start = time.perf_counter()
    samples = 0
    while step < a.steps:
        shuffle(perm, rng)
        for es in range(steps_per_epoch):
            if step >= a.steps:
                break
            idx = torch.tensor(perm[es * batch:(es + 1) * batch])
            todo = range(len(dirs)) if a.schedule == "joint" else [step % len(dirs)]
            lr, wd = lr_at(a, step, warmup, total), wd_at(a, step, total)
            opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = lr
            opt.param_groups[0]["weight_decay"] = wd
            opt.zero_grad(set_to_none=True)
            loss_sum = 0
            for d in todo:
                s, t = dirs[d]
                xs, xt = tensors_t[s][idx], tensors_t[t][idx]
                pred, q = model(xs, s, t)
                k = model.target(xt, t)
                reg = F.smooth_l1_loss(pred, xt, beta=1.0)
                logits = q @ k.T / a.tau
                labels = torch.arange(len(idx))
                cl = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
                loss = a.alpha * reg + (1 - a.alpha) * cl
                loss_sum = loss_sum + loss
                print(f"{step} {d} {loss.item():.9g} {reg.item():.9g} {cl.item():.9g}")
            loss_sum.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            step += 1
            samples += len(idx) * len(todo)
    secs = time.perf_counter() - start
    print(f"torch: {step} steps in {secs:.2f} s, {samples / secs:.0f} samples/s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
