#!/bin/sh
# Hot backup of an altmoe data directory, safe while the server runs.
#
# usage: backup.sh [--compact] [--model FILE] DATA_DIR BACKUP_DIR
#
# Writes BACKUP_DIR (which must not exist yet) with:
#   data.mdb      a consistent copy of the LMDB environment, made by `mdb_copy` (lmdb-utils)
#                 inside one read transaction; --compact omits free pages (mdb_copy -c)
#   snapshots/    the FAISS index snapshot files (*.snap)
#   connector.safetensors   the model, with --model
#   MANIFEST      what was copied, from where, when; SHA256SUMS of every file
#
# Order matters: the snapshot files are copied BEFORE the LMDB copy, so every snapshot holds a
# sequence number the LMDB copy has reached. On start the server loads each snapshot and
# replays the later operations from LMDB; a snapshot it cannot use (for example because the
# operation log was pruned past it meanwhile) is rebuilt from LMDB, which is the source of
# truth. The snapshots only save rebuild time.
#
# Run it as a user that may write DATA_DIR/lock.mdb (the service user or root): LMDB readers
# register in the lock file. Exit status: 0 done, 1 failed, 2 usage error.
set -eu

usage() {
    echo "usage: backup.sh [--compact] [--model FILE] DATA_DIR BACKUP_DIR" >&2
    exit 2
}

compact=""
model=""
while [ $# -gt 0 ]; do
    case $1 in
        --compact) compact="-c"; shift ;;
        --model) [ $# -ge 2 ] || usage; model=$2; shift 2 ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || usage
data=$1
dest=$2

fail() { echo "backup: $*" >&2; exit 1; }
[ -f "$data/data.mdb" ] || fail "$data/data.mdb not found: not an altmoe data directory"
[ ! -e "$dest" ] || fail "$dest exists; give a new directory"
[ -z "$model" ] || [ -f "$model" ] || fail "model file $model not found"
command -v mdb_copy >/dev/null || fail "mdb_copy not found; install the Debian package lmdb-utils"

mkdir -p "$dest/snapshots.partial"
trap 'echo "backup: failed; removing the partial backup $dest" >&2; rm -rf "$dest"' EXIT

# 1. Index snapshots. The server replaces them by rename, so each copy is one whole file; a
#    file that vanishes meanwhile (its collection was dropped) is skipped.
if [ -d "$data/snapshots" ]; then
    for f in "$data"/snapshots/*.snap; do
        [ -e "$f" ] || continue
        cp -p "$f" "$dest/snapshots.partial/" 2>/dev/null || [ ! -e "$f" ] ||
            fail "cannot copy $f"
    done
fi
mv "$dest/snapshots.partial" "$dest/snapshots"

# 2. LMDB, in one read transaction.
# shellcheck disable=SC2086
mdb_copy $compact "$data" "$dest" || fail "mdb_copy $data failed"

# 3. The model, and the manifest with checksums.
[ -z "$model" ] || cp -p "$model" "$dest/connector.safetensors"
{
    echo "altmoe backup"
    echo "created: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname)"
    echo "source: $(cd "$data" && pwd)"
    if [ -n "$compact" ]; then echo "compacted: yes"; else echo "compacted: no"; fi
    echo "model: ${model:-not included}"
    echo "snapshots: $(find "$dest/snapshots" -name '*.snap' | wc -l)"
} >"$dest/MANIFEST"
(cd "$dest" && find . -type f ! -name 'SHA256SUMS*' | sort | xargs sha256sum >SHA256SUMS.new &&
    mv SHA256SUMS.new SHA256SUMS)

trap - EXIT
echo "backup: $data -> $dest ($(du -sh "$dest" | cut -f1))"
