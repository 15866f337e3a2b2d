#!/bin/sh
# Trains the same initial connector for a few steps with `altmoe train` and with the PyTorch
# reference (bench/torch_ref.py) and compares the per-step losses; also prints both trainers'
# samples/s on THREADS threads (default 1), with PREPROCESS (default center_l2) features. Usage:
#   bench/compare_torch.sh CONFIG.json TEXT.npy IMAGE.npy [STEPS] [BATCH] [SCHEDULE]
# The modalities of CONFIG.json must be called text and image. Exits 1 when a loss differs by
# more than 1e-3 relative. The regression term is small (about 0.01) once training starts, so
# its own relative difference is printed but not gated. It can jump above 1e-3 in one step while
# the total stays near 1e-6, most likely where a token's top-k choice flips on a rounding
# difference: early in training the gate's probabilities are close to uniform, so near-ties are
# common.
set -eu
cfg=$1 text=$2 image=$3 steps=${4:-50} batch=${5:-128} schedule=${6:-alternating}
bin=${ALTMOE_BIN:-build/altmoe}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
threads=${THREADS:-1} preprocess=${PREPROCESS:-center_l2}
export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads

"$bin" init --config "$cfg" --out "$dir/init.safetensors" --seed 1 >/dev/null
"$bin" train --init "$dir/init.safetensors" --data text="$text" --data image="$image" \
    --out "$dir/c.safetensors" --val-fraction 0 --no-dropout --max-steps "$steps" \
    --preprocess "$preprocess" \
    --batch "$batch" --schedule "$schedule" --loss-log "$dir/c.loss" --log-every 0 |
    grep trained
/usr/bin/python3 bench/torch_ref.py --init "$dir/init.safetensors" --data text="$text" \
    --data image="$image" --steps "$steps" --batch "$batch" --schedule "$schedule" \
    --threads "$threads" --preprocess "$preprocess" > "$dir/torch.loss"
/usr/bin/python3 - "$dir/c.loss" "$dir/torch.loss" <<'PY'
import sys
c = [l.split() for l in open(sys.argv[1])]
t = [l.split() for l in open(sys.argv[2])]
assert len(c) == len(t), (len(c), len(t))
worst = [0.0, 0.0, 0.0]        # total, reg, cl
for a, b in zip(c, t):
    assert a[:2] == b[:2], (a, b)
    for i, (x, y) in enumerate(zip(a[2:], b[2:])):
        worst[i] = max(worst[i], abs(float(x) - float(y)) / max(abs(float(y)), 1e-12))
print(f"{len(c)} losses; first C {float(c[0][2]):.6f} torch {float(t[0][2]):.6f}; "
      f"last C {float(c[-1][2]):.6f} torch {float(t[-1][2]):.6f}")
print(f"worst relative difference: total loss {worst[0]:.2e}, regression term {worst[1]:.2e}, "
      f"contrastive term {worst[2]:.2e}")
sys.exit(0 if worst[0] <= 1e-3 else 1)
PY
