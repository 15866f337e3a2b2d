"""`make install` into a staging root, the readiness helper of the systemd unit, and the
Kubernetes manifest check, so that `make test` covers them. `make deploy-check` runs the checks
that need extra tools (systemd-analyze, shellcheck, promtool).
"""
import json
import os
import subprocess
import tempfile

import pytest

from deploy_server import BIN, REPO, Server, free_port

WAIT_READY = os.path.join(REPO, "deploy", "altmoe-wait-ready")


def run(args, env=None, **kw):
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, **kw)


def make_install(destdir, *extra):
    result = run(["make", "--no-print-directory", "install", "BIN=" + BIN, "DESTDIR=" + destdir,
                  *extra])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def staged():
    with tempfile.TemporaryDirectory() as root:
        output = make_install(root)
        yield root, output


def test_install_layout(staged):
    root, _ = staged
    for path in ("usr/local/bin/altmoe", "usr/local/libexec/altmoe/altmoe-wait-ready",
                 "usr/local/libexec/altmoe/altmoe-backup",
                 "usr/local/libexec/altmoe/altmoe-restore",
                 "usr/local/share/man/man1/altmoe.1",
                 "usr/local/share/doc/altmoe/serve-options.txt",
                 "usr/local/share/doc/altmoe/operations.md",
                 "usr/local/lib/systemd/system/altmoe.service", "etc/altmoe/altmoe.json"):
        assert os.path.isfile(os.path.join(root, path)), path
    assert os.access(os.path.join(root, "usr/local/bin/altmoe"), os.X_OK)
    assert os.listdir(os.path.join(root, "var/lib/altmoe")) == []


def test_install_skips_user_with_destdir(staged):
    _, output = staged
    assert "skipping the service user and chown" in output


def test_installed_config_is_accepted(staged):
    root, _ = staged
    config = os.path.join(root, "etc/altmoe/altmoe.json")
    result = run([os.path.join(root, "usr/local/bin/altmoe"), "serve", "--config", config,
                  "--dump-config"], env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["data_dir"] == "/var/lib/altmoe"
    assert effective["model"] == "/var/lib/altmoe/connector.safetensors"


def test_installed_help_matches_binary(staged):
    root, _ = staged
    with open(os.path.join(root, "usr/local/share/doc/altmoe/serve-options.txt")) as f:
        assert f.read() == run([BIN, "serve", "--help"]).stdout
    page = run(["man", "-l", os.path.join(root, "usr/local/share/man/man1/altmoe.1")],
               env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100"})
    assert page.returncode == 0
    assert page.stderr == ""
    assert "--snapshot-interval" in page.stdout


def test_reinstall_keeps_the_config(staged):
    root, _ = staged
    config = os.path.join(root, "etc/altmoe/altmoe.json")
    with open(config, "w") as f:
        f.write('{"port": 7801}\n')
    make_install(root)
    with open(config) as f:
        assert f.read() == '{"port": 7801}\n'
    assert os.path.isfile(config + ".default")


def test_install_paths_follow_variables():
    with tempfile.TemporaryDirectory() as root:
        make_install(root, "PREFIX=/opt/altmoe", "STATEDIR=/srv/altmoe")
        unit = open(os.path.join(root, "opt/altmoe/lib/systemd/system/altmoe.service")).read()
        assert "ExecStart=/opt/altmoe/bin/altmoe serve" in unit
        assert "ExecStartPost=/opt/altmoe/libexec/altmoe/altmoe-wait-ready 600" in unit
        assert "ReadWritePaths=/srv/altmoe" in unit
        assert "StateDirectory" not in unit
        config = json.load(open(os.path.join(root, "etc/altmoe/altmoe.json")))
        assert config["data_dir"] == "/srv/altmoe"
        helper = open(os.path.join(root, "opt/altmoe/libexec/altmoe/altmoe-wait-ready")).read()
        assert "/opt/altmoe/bin/altmoe" in helper


def wait_ready(timeout, *args, port):
    env = {"PATH": "/usr/bin:/bin", "ALTMOE_BIN": BIN, "ALTMOE_PORT": str(port),
           "ALTMOE_LISTEN": "0.0.0.0"}
    return run([WAIT_READY, str(timeout), *args], env=env, timeout=timeout + 30)


def test_wait_ready_on_a_ready_server():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp, os.path.join(tmp, "data"))
        try:
            result = wait_ready(10, port=srv.port)
        finally:
            srv.stop()
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:%d/readyz returned 200" % srv.port in result.stdout


def test_wait_ready_times_out_without_server():
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        result = wait_ready(2, "--data-dir", tmp, port=port)
    assert result.returncode == 1
    assert "not ready after 2s" in result.stderr


def test_wait_ready_rejects_bad_arguments():
    bad_option = wait_ready(5, "--no-such-option", "1", port=7700)
    assert bad_option.returncode == 2
    assert "--dump-config' failed" in bad_option.stderr
    assert run([WAIT_READY, "soon"]).returncode == 2


def test_kubernetes_manifests_check():
    result = run(["/usr/bin/python3", "deploy/check_k8s.py", "--bin", BIN, "deploy/k8s"])
    assert result.returncode == 0, result.stdout + result.stderr
