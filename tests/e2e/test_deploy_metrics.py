"""The Grafana dashboard and the alerting rules use only metrics that `altmoe serve` exposes.

The test starts the real server and sends it traffic on every route family, so that counters
and histograms have series. Then it reads GET /metrics and checks every PromQL expression of
deploy/monitoring/grafana-dashboard.json and deploy/monitoring/alerts.yml. Each metric name an
expression selects must appear as a sample in the exposition, and each label it matches or
groups by must exist on those samples. Names from other exporters (Prometheus itself, node_exporter, the kubelet) are
listed in EXTERNAL and nowhere else.
"""
import json
import os
import re
import tempfile

import pytest
import yaml

from deploy_server import IMAGE_DIM, REPO, TEXT_DIM, Server, vec

MONITORING = os.path.join(REPO, "deploy", "monitoring")

# Metric names that come from elsewhere than altmoe's /metrics.
EXTERNAL = {
    "up": "Prometheus, per scrape target",
    "node_filesystem_avail_bytes": "node_exporter",
    "node_filesystem_size_bytes": "node_exporter",
    "kubelet_volume_stats_available_bytes": "kubelet",
    "kubelet_volume_stats_capacity_bytes": "kubelet",
}
# Labels Prometheus attaches at scrape time, and the bucket bound of histograms.
TARGET_LABELS = {"job", "instance", "shard", "namespace", "pod"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}


def parse_exposition(text):
    """Returns {sample name: set of label names} from Prometheus text format."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+\S+$', line)
        assert m, "malformed exposition line: %r" % line
        labels = set(re.findall(r'([a-zA-Z_]\w*)="', m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)
    return samples


def analyse(expr):
    """Returns ([(metric, matcher label names)], grouping label names) of a PromQL expr."""
    expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    grouping = set()
    for m in re.finditer(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)',
                         expr):
        grouping.update(x.strip() for x in m.group(1).split(",") if x.strip())
    expr = re.sub(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', " ", expr)
    selectors = []
    for m in re.finditer(r'(?<![\w.])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}', expr):
        keys = set(re.findall(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)', m.group(2)))
        selectors.append((m.group(1), keys))
    expr = re.sub(r'\{[^}]*\}', " ", expr)
    expr = re.sub(r'\[[^\]]*\]', " ", expr)
    braced = {name for name, _ in selectors}
    for m in re.finditer(r'(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()', expr):
        name = m.group(1)
        if name.lower() not in KEYWORDS and name not in braced:
            selectors.append((name, set()))
    return selectors, grouping


def dashboard_exprs():
    with open(os.path.join(MONITORING, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append(("dashboard panel %r" % panel["title"], target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            m = re.match(r'label_values\((.*),\s*\w+\)$', query["query"])
            out.append(("dashboard variable %r" % var["name"], m.group(1)))
    return out


def alert_exprs():
    with open(os.path.join(MONITORING, "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    return [("alert %s" % r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def problems(where, expr, samples):
    """Returns one message per metric or label that expr needs and the exposition lacks."""
    found = []
    selectors, grouping = analyse(expr)
    if not selectors:
        found.append("%s: no metric found in %r" % (where, expr))
    available = set(TARGET_LABELS)
    for name, keys in selectors:
        if name in EXTERNAL:
            available |= keys
            continue
        if name not in samples:
            found.append("%s: %s is not in GET /metrics" % (where, name))
            continue
        available |= samples[name]
        for key in sorted(keys - samples[name] - TARGET_LABELS):
            found.append("%s: %s has no label %r" % (where, name, key))
    for key in sorted(grouping - available):
        found.append("%s: groups by %r, which none of its metrics has" % (where, key))
    return found


def exercise(srv):
    """Sends traffic that gives every altmoe_* family at least one series."""
    srv.ok("POST", "/v1/collections", {"name": "docs", "modalities": ["text", "image"]})
    points = []
    for i in range(8):
        points.append({"id": "p%d" % i, "modality": "text", "embedding": vec(TEXT_DIM, i)})
        points.append({"id": "p%d" % i, "modality": "image", "embedding": vec(IMAGE_DIM, 50 + i)})
    srv.ok("PUT", "/v1/collections/docs/points", {"points": points})
    srv.ok("POST", "/v1/collections/docs/search",
           {"modality": "text", "embedding": vec(TEXT_DIM, 1), "target": "image", "k": 3})
    srv.ok("POST", "/v1/collections/docs/search/batch",
           {"queries": [{"modality": "text", "embedding": vec(TEXT_DIM, 2)}], "target": "image",
            "k": 2})
    srv.ok("POST", "/v1/project", {"modality": "text", "embedding": vec(TEXT_DIM, 3),
                                   "target": "image"})
    lines = [json.dumps({"id": "n1", "modality": "text", "embedding": vec(TEXT_DIM, 9)}),
             "{not json"]
    srv.admin("POST", "/admin/v1/collections/docs/ingest",
              headers={"Content-Type": "application/x-ndjson"},
              raw=("\n".join(lines) + "\n").encode())
    srv.admin("POST", "/admin/v1/snapshot")
    srv.admin("POST", "/admin/v1/model/reload")
    status, _ = srv.request("GET", "/v1/collections/missing")
    assert status == 404


def families(samples):
    """Returns the metric family names of the samples (histogram suffixes removed)."""
    out = set()
    for name in samples:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] + "_bucket" in samples:
                name = name[:-len(suffix)]
        out.add(name)
    return out


@pytest.fixture(scope="module")
def exposition():
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(tmp, os.path.join(tmp, "data"))
        try:
            exercise(srv)
            status, text = srv.request("GET", "/metrics")
            assert status == 200
        finally:
            assert srv.stop() == 0, srv.read_log()
    return parse_exposition(text)


def test_external_names_are_not_altmoe_names():
    assert not [n for n in EXTERNAL if n.startswith(("altmoe_", "process_"))]


def test_problems_flags_wrong_names_and_labels():
    samples = {"altmoe_x_total": {"route"}}
    assert problems("t", 'sum by (route) (rate(altmoe_x_total{route="a"}[5m]))', samples) == []
    assert problems("t", "rate(altmoe_y_total[5m])", samples) == [
        "t: altmoe_y_total is not in GET /metrics"]
    assert problems("t", 'altmoe_x_total{code="a"}', samples) == [
        "t: altmoe_x_total has no label 'code'"]
    assert problems("t", "sum by (code) (altmoe_x_total)", samples) == [
        "t: groups by 'code', which none of its metrics has"]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_is_exposed(exposition, source):
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert len(exprs) >= 5
    names = {n for _, e in exprs for n, _ in analyse(e)[0]}
    assert any(n.startswith("altmoe_") for n in names)
    found = [p for where, expr in exprs for p in problems(where, expr, exposition)]
    assert found == [], "\n".join(found)


def test_operations_guide_lists_every_family(exposition):
    with open(os.path.join(REPO, "docs", "operations.md")) as f:
        guide = f.read()
    missing = sorted(n for n in families(exposition) if "`%s`" % n not in guide)
    assert missing == [], "docs/operations.md does not list: " + ", ".join(missing)
