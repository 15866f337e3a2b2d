"""A real `altmoe serve` process for the deployment tests (test_deploy_*.py).

The server runs on a free loopback port with a small random connector made by `altmoe init`
and a data directory the caller chooses, so a test can stop it and start another server on a
restored copy of the data. Only the standard library is used for HTTP.
"""
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import time

BIN = os.environ.get("ALTMOE_BIN", os.path.join(os.path.dirname(__file__), "../../build/altmoe"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
TOKEN = "deploy-e2e-token-51c2"
TEXT_DIM = 8
IMAGE_DIM = 6
CONNECTOR = {
    "modalities": [{"name": "text", "dim": TEXT_DIM}, {"name": "image", "dim": IMAGE_DIM}],
    "hidden": 16, "latent": 16, "experts": 4, "top_k": 2,
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vec(dim, seed):
    rng = random.Random(seed)
    return [round(rng.uniform(-1, 1), 4) for _ in range(dim)]


def make_model(workdir):
    """Writes a random connector to workdir/model.safetensors once and returns its path."""
    model = os.path.join(workdir, "model.safetensors")
    if not os.path.exists(model):
        cfg = os.path.join(workdir, "connector.json")
        with open(cfg, "w") as f:
            json.dump(CONNECTOR, f)
        subprocess.run([BIN, "init", "--config", cfg, "--out", model, "--seed", "11"],
                       check=True, capture_output=True)
    return model


class Server:
    """One `altmoe serve` on 127.0.0.1 over data_dir; waits until /readyz returns 200."""

    def __init__(self, workdir, data_dir, model=None, ready_timeout=60):
        self.workdir = workdir
        self.data_dir = data_dir
        self.model = model or make_model(workdir)
        self.port = free_port()
        self.log_path = os.path.join(workdir, "server-%d.log" % self.port)
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALTMOE_")}
        os.makedirs(data_dir, exist_ok=True)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
             "--data-dir", data_dir, "--model", self.model, "--admin-token", TOKEN,
             "--threads", "2", "--log-level", "info"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.read_log())

    def request(self, method, path, body=None, headers=None, raw=None):
        """Returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("Content-Type", "")
        finally:
            conn.close()
        doc = json.loads(payload) if ctype.startswith("application/json") else payload.decode()
        return resp.status, doc

    def ok(self, method, path, body=None, headers=None, raw=None):
        """Sends a request that must succeed and returns its result."""
        status, doc = self.request(method, path, body, headers, raw)
        assert status in (200, 201), (method, path, status, doc)
        return doc["result"]

    def admin(self, method, path, body=None, headers=None, raw=None):
        hdrs = dict(headers or {})
        hdrs["Authorization"] = "Bearer " + TOKEN
        return self.ok(method, path, body, hdrs, raw)

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM, then SIGKILL after 30 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
