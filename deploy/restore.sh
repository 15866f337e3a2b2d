#!/bin/sh
# Restores a backup made by backup.sh into a new, empty data directory.
#
# usage: restore.sh [--owner USER] [--model-to FILE] BACKUP_DIR DATA_DIR
#
# Checks SHA256SUMS, then copies data.mdb and the index snapshots into DATA_DIR, which must
# not exist or be empty, so that restore never overwrites live data. To replace a server's data, stop
# the server, move its data directory aside, restore into the old path and start it again.
# The server recovers on start: it loads the snapshots and replays the later operations from
# LMDB. It rebuilds an index whose snapshot it cannot use in the background, and GET /readyz
# returns 200 once that is done.
#
#   --owner USER     chown the restored files to USER (e.g. altmoe; needs root)
#   --model-to FILE  also restore the backed-up connector.safetensors to FILE
#
# Exit status: 0 done, 1 failed, 2 usage error.
set -eu

usage() {
    echo "usage: restore.sh [--owner USER] [--model-to FILE] BACKUP_DIR DATA_DIR" >&2
    exit 2
}

owner=""
model_to=""
while [ $# -gt 0 ]; do
    case $1 in
        --owner) [ $# -ge 2 ] || usage; owner=$2; shift 2 ;;
        --model-to) [ $# -ge 2 ] || usage; model_to=$2; shift 2 ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || usage
backup=$1
data=$2

fail() { echo "restore: $*" >&2; exit 1; }
if [ ! -f "$backup/data.mdb" ] || [ ! -f "$backup/SHA256SUMS" ]; then
    fail "$backup is not a backup made by backup.sh (data.mdb or SHA256SUMS missing)"
fi
if [ -e "$data" ] && [ -n "$(ls -A "$data")" ]; then
    fail "$data is not empty; restore only into a new or empty directory"
fi
if [ -n "$model_to" ]; then
    [ -f "$backup/connector.safetensors" ] || fail "$backup holds no connector.safetensors"
    [ ! -e "$model_to" ] || fail "$model_to exists; give a new path"
fi

# 1. Integrity.
(cd "$backup" && sha256sum --quiet --strict -c SHA256SUMS) ||
    fail "checksum mismatch in $backup: the backup is damaged"

# 2. Copy into place: LMDB first, then the snapshots (any that fail to load are rebuilt).
created=""
[ -e "$data" ] || created=yes
mkdir -p "$data/snapshots"
trap 'echo "restore: failed; cleaning $data" >&2; rm -rf "$data/data.mdb" "$data/snapshots"
      [ -z "$created" ] || rmdir "$data" 2>/dev/null || true' EXIT
cp "$backup/data.mdb" "$data/data.mdb"
for f in "$backup"/snapshots/*.snap; do
    [ -e "$f" ] || continue
    cp "$f" "$data/snapshots/"
done
[ -z "$model_to" ] || cp "$backup/connector.safetensors" "$model_to"
sync

# 3. Ownership for the service user.
if [ -n "$owner" ]; then
    chown -R "$owner:" "$data" || fail "chown to $owner failed"
    [ -z "$model_to" ] || chown "$owner:" "$model_to" || fail "chown to $owner failed"
fi

trap - EXIT
echo "restore: $backup -> $data; start the server on it and wait for GET /readyz"
