"""The system call filter, socket families and writable paths of the systemd unit admit
everything the server does.

The test runs `altmoe serve` under strace through start, traffic on every route family (the
same as test_deploy_metrics.py), a snapshot, a model reload and a SIGTERM shutdown. Every
system call in the trace must be in the unit's SystemCallFilter= set, as expanded by
`systemd-analyze syscall-filter`, and every socket family in RestrictAddressFamilies=. A
call outside the filter would fail with EPERM under systemd (SystemCallErrorNumber=EPERM).
Every file the server writes, creates, renames or removes must lie in the data directory,
the only path ProtectSystem=strict leaves writable.
Skipped without strace or systemd-analyze; `make deploy-check` installs both and runs it.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import deploy_server
from deploy_server import REPO, Server
from test_deploy_metrics import exercise

UNIT = os.path.join(REPO, "deploy", "systemd", "altmoe.service")

pytestmark = pytest.mark.skipif(
    not (shutil.which("strace") and shutil.which("systemd-analyze")),
    reason="needs strace and systemd-analyze (make deploy-check installs them)")


def unit_setting(key):
    with open(UNIT) as f:
        values = [line.split("=", 1)[1].split() for line in f if line.startswith(key + "=")]
    assert len(values) == 1, "%s must appear once in the unit" % key
    return values[0]


def expand_filter(groups):
    """Returns the system call names of the given @groups and names."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], check=True,
                          capture_output=True, text=True).stdout
    members, current = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            members[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            members[current].append(line.strip())

    def expand(name):
        if not name.startswith("@"):
            return {name}
        assert name in members, "unknown system call group " + name
        return set().union(*(expand(m) for m in members[name]))

    return set().union(*(expand(g) for g in groups))


@pytest.fixture(scope="module")
def run_dir():
    with tempfile.TemporaryDirectory() as tmp:
        yield tmp


@pytest.fixture(scope="module")
def trace(run_dir):
    """Returns the strace output of one server run from start to SIGTERM."""
    out = os.path.join(run_dir, "server.strace")
    wrapper = os.path.join(run_dir, "altmoe-strace")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = serve ]; then exec strace -f -qq -o %s %s "$@"; fi\n'
                'exec %s "$@"\n' % (out, deploy_server.BIN, deploy_server.BIN))
    os.chmod(wrapper, 0o755)
    real_bin, deploy_server.BIN = deploy_server.BIN, wrapper
    try:
        srv = Server(run_dir, os.path.join(run_dir, "data"))
    finally:
        deploy_server.BIN = real_bin
    try:
        exercise(srv)
        assert srv.request("GET", "/metrics")[0] == 200
    finally:
        # SIGTERM goes to the traced server itself, not to strace: the first trace line is
        # the server's execve, prefixed with its process id.
        with open(out) as f:
            server_pid = int(f.readline().split()[0])
        os.kill(server_pid, signal.SIGTERM)
        status = srv.proc.wait(timeout=60)
        srv.log.close()
    assert status == 0, srv.read_log()
    with open(out) as f:
        return f.read()


def test_trace_covers_start_traffic_and_stop(trace):
    assert "bind(" in trace
    assert "accept" in trace
    assert "rename(" in trace
    assert "exit_group(0)" in trace


def test_every_system_call_passes_the_filter(trace):
    used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace, re.M))
    allowed = expand_filter(unit_setting("SystemCallFilter"))
    assert len(used) > 20
    assert sorted(used - allowed) == []


def written_paths(trace):
    """Returns the paths the trace opens for writing, creates, renames or removes."""
    paths = set()
    for m in re.finditer(r'^\d+\s+open(?:at)?\((?:AT_FDCWD, )?"([^"]+)", ([A-Z_|]+)', trace, re.M):
        if re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", m.group(2)):
            paths.add(m.group(1))
    for m in re.finditer(r'^\d+\s+(?:mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir)'
                         r'\((?:AT_FDCWD, |\d+, )?"([^"]+)"(?:, (?:AT_FDCWD, |\d+, )?"([^"]+)")?',
                         trace, re.M):
        paths.update(p for p in m.groups() if p)
    return paths


def test_writes_stay_in_the_data_directory(trace, run_dir):
    # The unit makes every path read-only (ProtectSystem=strict) except ReadWritePaths=, the
    # data directory, and gives a private /dev with the pseudo devices only.
    data = os.path.join(run_dir, "data")
    paths = written_paths(trace)
    assert any(p.startswith(data + "/") for p in paths)
    outside = sorted(p for p in paths if not (p == data or p.startswith(data + "/"))
                     and p not in ("/dev/null", "/dev/zero", "/dev/urandom"))
    assert outside == []


def test_every_socket_family_is_allowed(trace):
    families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", trace))
    allowed = set(unit_setting("RestrictAddressFamilies"))
    assert families
    assert sorted(families - allowed) == []
