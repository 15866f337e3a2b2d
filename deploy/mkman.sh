#!/bin/sh
# Writes the altmoe(1) man page to stdout from the binary's own help texts, so the page always
# lists the options of the binary it ships with.
#
# usage: deploy/mkman.sh PATH_TO_ALTMOE
set -eu

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: deploy/mkman.sh PATH_TO_ALTMOE" >&2
    exit 2
fi
bin=$1

# Escapes help text for a no-fill roff block: backslashes, and a leading dot or quote.
roff_escape() {
    sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

commands=$("$bin" --help | roff_escape)
serve=$("$bin" serve --help | roff_escape)

cat <<EOF
.TH ALTMOE 1 "" "altmoe" "User Commands"
.SH NAME
altmoe \\- real-time cross-modal vector retrieval server
.SH SYNOPSIS
.B altmoe
.I COMMAND
.RI [ OPTIONS ]
.br
.B altmoe serve
.RB [ \\-\\-config
.IR FILE ]
.RB [ \\-\\-OPTION
.IR VALUE " ...]"
.RB [ \\-\\-dump\\-config ]
.SH DESCRIPTION
altmoe projects embeddings from unimodal encoders through a trained mixture-of-experts
connector into one shared space, stores them in FAISS indices persisted in LMDB and answers
cross-modal k-nearest-neighbour queries over a REST/JSON API.
.SH COMMANDS
.nf
$commands
.fi
.SH SERVE OPTIONS
Every option can be set as a key of the JSON config file, as an
.B ALTMOE_\\fIKEY\\fP
environment variable (upper case) or as a flag; flags win over the environment, which wins
over the file.
.PP
.nf
$serve
.fi
.SH SIGNALS
SIGTERM and SIGINT stop the server gracefully: it stops accepting connections, finishes the
requests in flight, writes index snapshots and closes LMDB.
.SH FILES
.TP
.I /etc/altmoe/altmoe.json
default configuration of the systemd service
.TP
.I /var/lib/altmoe
data directory: LMDB environment (data.mdb, lock.mdb) and index snapshots (snapshots/)
.SH SEE ALSO
The operations guide, operations.md, in the altmoe documentation directory.
EOF
