#!/bin/sh
# Installs altmoe as a service; `make install` calls this with the variables below.
#
#   BIN         built binary (build/altmoe)
#   DESTDIR     staging root for packaging; empty for a real install
#   PREFIX      /usr/local; the binary goes to PREFIX/bin, the man page to PREFIX/share/man
#   SYSCONFDIR  /etc; the config goes to SYSCONFDIR/altmoe/altmoe.json
#   STATEDIR    /var/lib/altmoe; the data directory
#   SYSTEMDDIR  PREFIX/lib/systemd/system
#
# An existing config is never overwritten: the new default is written next to it as
# altmoe.json.default. The service user "altmoe" is created, and the data directory given to
# it, only on a real install as root (no DESTDIR); a package does that in its postinst.
set -eu

: "${BIN:?BIN must name the built binary}"
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
STATEDIR=${STATEDIR:-/var/lib/altmoe}
SYSTEMDDIR=${SYSTEMDDIR:-$PREFIX/lib/systemd/system}
BINDIR=$PREFIX/bin
LIBEXECDIR=$PREFIX/libexec/altmoe
MANDIR=$PREFIX/share/man
DOCDIR=$PREFIX/share/doc/altmoe
CONFDIR=$SYSCONFDIR/altmoe
here=$(dirname "$0")

# Rewrites the default paths baked into the repository's files to the install's paths.
localize() {
    sed -e "s|/usr/local/bin/altmoe|$BINDIR/altmoe|g" \
        -e "s|/usr/local/libexec/altmoe|$LIBEXECDIR|g" \
        -e "s|/usr/local/share/doc/altmoe|$DOCDIR|g" \
        -e "s|/etc/altmoe|$CONFDIR|g" \
        -e "s|/etc/default/altmoe|$SYSCONFDIR/default/altmoe|g" \
        -e "s|/var/lib/altmoe|$STATEDIR|g" "$1"
}

# 1. Binary, readiness helper, man page and docs.
install -d "$DESTDIR$BINDIR" "$DESTDIR$LIBEXECDIR" "$DESTDIR$MANDIR/man1" "$DESTDIR$DOCDIR"
install -m 0755 "$BIN" "$DESTDIR$BINDIR/altmoe"
localize "$here/altmoe-wait-ready" > "$DESTDIR$LIBEXECDIR/altmoe-wait-ready"
chmod 0755 "$DESTDIR$LIBEXECDIR/altmoe-wait-ready"
"$here/mkman.sh" "$BIN" > "$DESTDIR$MANDIR/man1/altmoe.1"
chmod 0644 "$DESTDIR$MANDIR/man1/altmoe.1"
"$BIN" serve --help > "$DESTDIR$DOCDIR/serve-options.txt"
for doc in "$here/../docs/operations.md" "$here/../docs/sharding.md"; do
    [ -f "$doc" ] && install -m 0644 "$doc" "$DESTDIR$DOCDIR/"
done
install -m 0755 "$here/backup.sh" "$DESTDIR$LIBEXECDIR/altmoe-backup"
install -m 0755 "$here/restore.sh" "$DESTDIR$LIBEXECDIR/altmoe-restore"

# 2. Default config, kept when one exists.
install -d -m 0755 "$DESTDIR$CONFDIR"
target="$DESTDIR$CONFDIR/altmoe.json"
[ -e "$target" ] && target="$target.default"
localize "$here/altmoe.json" > "$target"
chmod 0644 "$target"
echo "install: config $target"

# 3. systemd unit.
install -d "$DESTDIR$SYSTEMDDIR"
# StateDirectory= is relative to /var/lib; a data directory elsewhere relies on
# ReadWritePaths= alone and on step 4 below for its owner.
case $STATEDIR in
    /var/lib/?*) state="s|^StateDirectory=altmoe\$|StateDirectory=${STATEDIR#/var/lib/}|" ;;
    *) state="/^StateDirectory/d" ;;
esac
localize "$here/systemd/altmoe.service" | sed -e "$state" \
    > "$DESTDIR$SYSTEMDDIR/altmoe.service"
chmod 0644 "$DESTDIR$SYSTEMDDIR/altmoe.service"

# 4. Empty data directory, owned by the service user on a real root install.
install -d -m 0750 "$DESTDIR$STATEDIR"
if [ -n "$DESTDIR" ] || [ "$(id -u)" != 0 ]; then
    echo "install: skipping the service user and chown (DESTDIR set or not root)"
    exit 0
fi
if ! id -u altmoe >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATEDIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "altmoe server" altmoe
    echo "install: created the system user altmoe"
fi
chown altmoe:altmoe "$STATEDIR"
echo "install: done; put the connector model at $STATEDIR/connector.safetensors, then"
echo "         systemctl daemon-reload && systemctl enable --now altmoe"
