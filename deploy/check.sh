#!/bin/sh
# Static checks of everything under deploy/; `make deploy-check` runs it from the repository
# root with BIN set to the built binary.
#
#   1. shell scripts: sh -n and shellcheck
#   2. install: `make install` layout in a staging DESTDIR, then `systemd-analyze verify` of
#      the installed unit, and a traced server run against its system call filter
#   3. Dockerfile lint: Debian bookworm bases, every apt package exists in bookworm
#      (apt-cache show), every COPY source exists, a .dockerignore exists, the runtime stage
#      installs a package for every shared library the binary links, and `make build/altmoe`
#      succeeds on the copied sources alone. No image is built: there is no Docker engine on
#      the build machine.
#   4. Kubernetes manifests: deploy/check_k8s.py
#   5. monitoring: promtool check config / check rules, dashboard JSON parses
#
# Exits non-zero at the first failed check and prints its name.
set -eu

BIN=${BIN:-build/altmoe}
PYTHON=/usr/bin/python3
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "deploy-check: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

[ -x "$BIN" ] || fail "no binary at $BIN; run make first"

step "shell scripts"
scripts="deploy/check.sh deploy/install.sh deploy/mkman.sh deploy/backup.sh deploy/restore.sh
         deploy/altmoe-wait-ready"
for s in $scripts; do
    sh -n "$s" || fail "$s: syntax error"
done
# shellcheck disable=SC2086
shellcheck -s sh $scripts || fail "shellcheck reported the findings above"

step "make install into a staging root, then systemd-analyze verify"
make --no-print-directory install DESTDIR="$tmp/root" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; fail "make install DESTDIR=$tmp/root"; }
for f in usr/local/bin/altmoe usr/local/libexec/altmoe/altmoe-wait-ready \
         usr/local/share/man/man1/altmoe.1 usr/local/share/doc/altmoe/serve-options.txt \
         etc/altmoe/altmoe.json usr/local/lib/systemd/system/altmoe.service var/lib/altmoe; do
    [ -e "$tmp/root/$f" ] || fail "make install did not create /$f"
done
[ -z "$(ls -A "$tmp/root/var/lib/altmoe")" ] || fail "the installed data directory is not empty"
$PYTHON -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp/root/etc/altmoe/altmoe.json" ||
    fail "installed altmoe.json is not valid JSON"
# The installed config must be one the binary accepts (the model file need not exist yet).
"$tmp/root/usr/local/bin/altmoe" serve --config "$tmp/root/etc/altmoe/altmoe.json" \
    --dump-config >/dev/null || fail "altmoe serve rejects the installed config"
man -l "$tmp/root/usr/local/share/man/man1/altmoe.1" >/dev/null 2>"$tmp/man.err" ||
    fail "man page does not render"
[ ! -s "$tmp/man.err" ] || { cat "$tmp/man.err"; fail "man page renders with warnings"; }
if ! systemd-analyze --version >/dev/null 2>&1; then
    fail "systemd-analyze is not installed (Debian package systemd)"
fi
# Verify the installed unit with its paths pointed into the staging root, so that
# systemd-analyze finds the executables it names. The man page is checked above (--man=no:
# it is not installed on this host).
mkdir "$tmp/unit"
sed -e "s|=/usr/local/|=$tmp/root/usr/local/|" -e "s|=-/etc/|=-$tmp/root/etc/|" \
    "$tmp/root/usr/local/lib/systemd/system/altmoe.service" >"$tmp/unit/altmoe.service"
systemd-analyze verify --man=no "$tmp/unit/altmoe.service" >"$tmp/verify.log" 2>&1 || {
    cat "$tmp/verify.log"; fail "systemd-analyze verify altmoe.service"; }
# verify exits 0 on some warnings; treat any output about our unit as a failure.
if grep -i "altmoe" "$tmp/verify.log"; then
    fail "systemd-analyze verify printed the findings above"
fi
echo "systemd-analyze verify: clean"
systemd-analyze security --offline=yes "$tmp/unit/altmoe.service" 2>/dev/null |
    tail -n 1 || true
# The unit's system call filter and socket families, against a traced server run.
command -v strace >/dev/null || fail "strace is not installed (Debian package strace)"
ALTMOE_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN") \
    $PYTHON -m pytest -q -p no:cacheprovider tests/e2e/test_deploy_syscalls.py ||
    fail "the server makes a system call or opens a socket the unit does not allow"

step "docs/operations.md lists every option"
for option in $("$BIN" serve --dump-config | sed -n 's/^[[:space:]]*"\([a-z_]*\)":.*/\1/p'); do
    grep -q "| \`$option\` |" docs/operations.md ||
        fail "docs/operations.md has no table row for the option $option"
done

step "Dockerfile lint (no Docker engine here: the image is not built)"
df=deploy/Dockerfile
[ -f .dockerignore ] || fail ".dockerignore missing at the repository root (the build context)"
grep -E '^FROM ' "$df" | grep -vqE '^FROM debian:bookworm(-slim)?( AS [a-z]+)?$' &&
    fail "$df: every FROM must be debian:bookworm or debian:bookworm-slim"
grep -q '^HEALTHCHECK ' "$df" || fail "$df: no HEALTHCHECK"
grep -q '^VOLUME ' "$df" || fail "$df: no VOLUME"
grep -Eq '^USER [a-z]' "$df" || fail "$df: the runtime stage must switch to a non-root USER"
# shellcheck source=/dev/null
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] ||
    fail "apt-cache here is not Debian bookworm; cannot check the package names"
# Joins continuation lines, then lists the packages of each `apt-get install`, per stage.
sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$df" | awk '
    /^FROM / { stage = $NF }
    /apt-get install/ {
        line = $0; sub(/.*apt-get install/, "", line); sub(/&&.*/, "", line)
        n = split(line, w, /[ \t]+/)
        for (i = 1; i <= n; i++) if (w[i] != "" && w[i] !~ /^-/) print stage, w[i]
    }' >"$tmp/apt.txt"
[ -s "$tmp/apt.txt" ] || fail "$df: found no apt-get install lines"
while read -r stage pkg; do
    apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 ||
        fail "$df: stage $stage installs '$pkg', which is not a Debian bookworm package"
done <"$tmp/apt.txt"
echo "apt packages: $(wc -l <"$tmp/apt.txt") names, all in bookworm"
sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$df" | awk '/^COPY / && !/--from=/ {
    for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' >"$tmp/copy.txt"
while read -r src; do
    [ -e "$root/$src" ] || fail "$df: COPY source '$src' does not exist in the repository"
    git -C "$root" ls-files --error-unmatch "$src" >/dev/null 2>&1 ||
        fail "$df: COPY source '$src' is not tracked by git"
done <"$tmp/copy.txt"
echo "COPY sources: $(wc -l <"$tmp/copy.txt"), all present"
# The build stage's steps on the COPY set alone: a source the build needs but the Dockerfile
# does not copy fails here.
mkdir "$tmp/context"
while read -r src; do cp -r "$root/$src" "$tmp/context/"; done <"$tmp/copy.txt"
(cd "$tmp/context" && make -j2 build/altmoe >"$tmp/context.log" 2>&1) || {
    tail -n 20 "$tmp/context.log"; fail "$df: make build/altmoe fails on the copied sources"; }
"$tmp/context/build/altmoe" serve --help >/dev/null || fail "$df: the stage's binary does not run"
echo "build stage: make build/altmoe succeeds on the copied sources alone"
# Every shared library of the binary must come from a package of the runtime stage or one of
# their dependencies.
awk '$1 == "runtime" { print $2 }' "$tmp/apt.txt" >"$tmp/runtime.txt"
# shellcheck disable=SC2046
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $(cat "$tmp/runtime.txt") 2>/dev/null |
    grep -v '^ ' | sed 's/:.*//' | sort -u >"$tmp/closure.txt"
ldd "$BIN" | awk '/=>/ { print $3 }' | while read -r lib; do
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true)
    pkg=${pkg%%:*}
    [ -n "$pkg" ] || fail "no Debian package owns $lib"
    grep -qx "$pkg" "$tmp/closure.txt" ||
        fail "$df: runtime stage lacks $pkg (for $lib)"
    echo "  $lib <- $pkg"
done

step "Kubernetes manifests"
$PYTHON deploy/check_k8s.py --bin "$BIN" deploy/k8s || fail "deploy/check_k8s.py"

step "monitoring"
command -v promtool >/dev/null || fail "promtool is not installed (Debian package prometheus)"
promtool check config deploy/monitoring/prometheus.yml || fail "promtool check config"
promtool check rules deploy/monitoring/alerts.yml || fail "promtool check rules"
# Every panel query must parse as PromQL: write them as recording rules for promtool, with
# Grafana's variables replaced by values.
$PYTHON - deploy/monitoring/grafana-dashboard.json "$tmp/dashboard-rules.yml" <<'EOF' ||
import json, sys
dash = json.load(open(sys.argv[1]))
assert dash["panels"], "no panels"
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, panel in enumerate(dash["panels"]):
        assert panel.get("targets"), "panel %r has no query" % panel.get("title")
        for j, t in enumerate(panel["targets"]):
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
            out.write("      - record: dashboard:panel%d_%d\n        expr: %s\n"
                      % (i, j, json.dumps(expr)))
EOF
    fail "grafana-dashboard.json"
promtool check rules "$tmp/dashboard-rules.yml" || fail "a dashboard query is not valid PromQL"

echo "deploy-check: all checks passed"
