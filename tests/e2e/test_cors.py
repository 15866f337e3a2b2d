"""CORS of `altmoe serve`: off by default, and with cors_origins set, preflights and responses
carry the headers a browser needs for the listed origins only."""
import tempfile

import pytest

from test_api import Server

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def cors_server():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp, extra_args=("--cors-origins", f"{APP}, http://localhost:3000"))
        yield srv
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def plain_server():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp)
        yield srv
        assert srv.stop() == 0


def preflight(srv, origin, method="POST"):
    return srv.request("OPTIONS", "/v1/collections/c/search",
                       headers={"Origin": origin, "Access-Control-Request-Method": method,
                                "Access-Control-Request-Headers": "content-type"})


def test_preflight_listed_origin(cors_server):
    status, resp, _ = preflight(cors_server, APP)
    assert status == 204
    assert resp.getheader("Access-Control-Allow-Origin") == APP
    assert "POST" in resp.getheader("Access-Control-Allow-Methods")
    assert "Content-Type" in resp.getheader("Access-Control-Allow-Headers")
    assert "Authorization" in resp.getheader("Access-Control-Allow-Headers")
    assert resp.getheader("Vary") == "Origin"


def test_preflight_second_listed_origin(cors_server):
    status, resp, _ = preflight(cors_server, "http://localhost:3000", "PUT")
    assert status == 204
    assert resp.getheader("Access-Control-Allow-Origin") == "http://localhost:3000"


def test_preflight_other_origin_rejected(cors_server):
    status, resp, doc = preflight(cors_server, "https://evil.example.com")
    assert status == 403
    assert doc["error"]["code"] == "origin_not_allowed"
    assert resp.getheader("Access-Control-Allow-Origin") is None


def test_response_echoes_listed_origin(cors_server):
    status, resp, _ = cors_server.request("GET", "/healthz", headers={"Origin": APP})
    assert status == 200
    assert resp.getheader("Access-Control-Allow-Origin") == APP
    assert resp.getheader("Access-Control-Expose-Headers") == "X-Request-Id"


def test_response_other_origin_no_header(cors_server):
    status, resp, _ = cors_server.request("GET", "/healthz", headers={"Origin": "https://x.example"})
    assert status == 200
    assert resp.getheader("Access-Control-Allow-Origin") is None


def test_error_response_carries_cors(cors_server):
    status, resp, _ = cors_server.request("GET", "/v1/collections/missing", headers={"Origin": APP})
    assert status == 404
    assert resp.getheader("Access-Control-Allow-Origin") == APP


def test_cors_off_by_default(plain_server):
    status, resp, _ = plain_server.request("GET", "/healthz", headers={"Origin": APP})
    assert status == 200
    assert resp.getheader("Access-Control-Allow-Origin") is None
    status, resp, _ = preflight(plain_server, APP)
    assert status == 405
    assert resp.getheader("Access-Control-Allow-Origin") is None
