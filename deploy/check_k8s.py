#!/usr/bin/python3
"""Checks the Kubernetes manifests of altmoe without a cluster.

usage: deploy/check_k8s.py [--bin build/altmoe] DIR

Every *.yaml file in DIR must parse, every document must carry apiVersion, kind and
metadata.name, and kustomization.yaml must list exactly the other files. Then the pieces must
fit together. The StatefulSet names a headless Service that selects its pods and claims a
volume per pod. It probes /healthz (liveness) and /readyz (readiness) on a declared port,
requests CPU and memory, and reads the admin token from a Secret. It runs as non-root, turns
service links off and mounts only volumes it declares. The PodDisruptionBudget selects the same
pods, and every ConfigMap and PersistentVolumeClaim the StatefulSet names is defined. With --bin, every ALTMOE_* variable
and every key of the config file in the ConfigMap must be an option of `altmoe serve`.
Prints one line per problem and exits 1 when there is any.
"""
import argparse
import json
import os
import subprocess
import sys

import yaml

REQUIRED_KINDS = ("StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget")


class Checker:
    def __init__(self):
        self.problems = []

    def need(self, ok, where, message):
        if not ok:
            self.problems.append(f"{where}: {message}")
        return ok


def load_documents(directory, chk):
    """Returns [(file, document)] of every manifest and the kustomization (or None)."""
    docs, kustomization = [], None
    for name in sorted(os.listdir(directory)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            chk.need(False, name, f"YAML syntax error: {e}")
            continue
        for doc in loaded:
            if doc.get("kind") == "Kustomization":
                kustomization = (name, doc)
                continue
            meta = doc.get("metadata") or {}
            chk.need(bool(doc.get("apiVersion")), name, "document without apiVersion")
            chk.need(bool(doc.get("kind")), name, "document without kind")
            chk.need(bool(meta.get("name")), name, f"{doc.get('kind')} without metadata.name")
            docs.append((name, doc))
    return docs, kustomization


def check_kustomization(directory, docs, kustomization, chk):
    if not chk.need(kustomization is not None, directory, "no kustomization.yaml"):
        return
    name, k = kustomization
    listed = set(k.get("resources") or [])
    files = {f for f, _ in docs}
    for f in sorted(listed - files):
        chk.need(False, name, f"lists {f}, which does not exist or holds no manifest")
    for f in sorted(files - listed):
        chk.need(False, name, f"does not list {f}")


def by_kind(docs, kind):
    return [(f, d) for f, d in docs if d.get("kind") == kind]


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def serve_options(binary):
    """Returns the option names of `altmoe serve`, from its --dump-config output."""
    out = subprocess.run([binary, "serve", "--dump-config"], check=True, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    return set(json.loads(out))


def check_probe(container, kind, path, where, chk):
    probe = container.get(kind)
    if not chk.need(probe is not None, where, f"container has no {kind}"):
        return
    get = probe.get("httpGet") or {}
    chk.need(get.get("path") == path, where, f"{kind} must GET {path}, not {get.get('path')}")
    ports = {p.get("name") for p in container.get("ports", [])}
    ports |= {p.get("containerPort") for p in container.get("ports", [])}
    chk.need(get.get("port") in ports, where, f"{kind} port {get.get('port')} is not declared")


def check_admin_token(container, pod, where, chk):
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    env = {e["name"]: e for e in container.get("env", [])}
    if "ALTMOE_ADMIN_TOKEN" in env:
        ref = (env["ALTMOE_ADMIN_TOKEN"].get("valueFrom") or {}).get("secretKeyRef")
        chk.need(ref is not None, where, "ALTMOE_ADMIN_TOKEN must come from a secretKeyRef")
        return
    token_file = (env.get("ALTMOE_ADMIN_TOKEN_FILE") or {}).get("value", "")
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] in secret_volumes]
    chk.need(any(token_file.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts),
             where, "the admin token must be read from a Secret (ALTMOE_ADMIN_TOKEN_FILE "
             "inside a secret volume mount, or ALTMOE_ADMIN_TOKEN from a secretKeyRef)")


def check_statefulset(f, sts, docs, options, chk):
    where = f"{f} StatefulSet/{sts['metadata']['name']}"
    spec = sts.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    chk.need(selects(spec.get("selector"), labels), where, "selector does not match the pod labels")

    # Headless service for stable per-shard DNS names.
    services = {d["metadata"]["name"]: d for _, d in by_kind(docs, "Service")}
    svc = services.get(spec.get("serviceName"))
    if chk.need(svc is not None, where, f"serviceName {spec.get('serviceName')} is not defined"):
        chk.need(svc["spec"].get("clusterIP") == "None", where, "its Service must be headless")
        chk.need(selects(svc["spec"].get("selector"), labels), where,
                 "its Service does not select the pods")

    # One claim per pod for LMDB and the snapshots.
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    chk.need(bool(claims), where, "no volumeClaimTemplates: each shard needs its own volume")
    chk.need(pod.get("enableServiceLinks") is False, where,
             "enableServiceLinks must be false (service variables clash with ALTMOE_*)")
    sec = pod.get("securityContext") or {}
    chk.need(sec.get("runAsNonRoot") is True, where, "pod must set runAsNonRoot: true")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    defined = {(k, d["metadata"]["name"]) for _, d in docs for k in [d.get("kind")]}
    for v in volumes.values():
        if "configMap" in v:
            chk.need(("ConfigMap", v["configMap"]["name"]) in defined, where,
                     f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not defined")
        if "persistentVolumeClaim" in v:
            name = v["persistentVolumeClaim"]["claimName"]
            chk.need(("PersistentVolumeClaim", name) in defined, where,
                     f"volume {v['name']}: PersistentVolumeClaim {name} is not defined")

    containers = pod.get("containers") or []
    chk.need(len(containers) > 0, where, "no containers")
    for c in containers:
        cwhere = f"{where} container {c.get('name')}"
        check_probe(c, "livenessProbe", "/healthz", cwhere, chk)
        check_probe(c, "readinessProbe", "/readyz", cwhere, chk)
        requests = (c.get("resources") or {}).get("requests") or {}
        chk.need("cpu" in requests and "memory" in requests, cwhere,
                 "resources.requests must state cpu and memory")
        for m in c.get("volumeMounts", []):
            chk.need(m["name"] in volumes or m["name"] in claims, cwhere,
                     f"mounts {m['name']}, which is neither a volume nor a claim")
        for claim in claims:
            chk.need(any(m["name"] == claim for m in c.get("volumeMounts", [])), cwhere,
                     f"does not mount its claim {claim}")
        check_admin_token(c, pod, cwhere, chk)
        if options is not None:
            for e in c.get("env", []):
                name = e["name"]
                if name.startswith("ALTMOE_") and name != "ALTMOE_CONFIG":
                    chk.need(name[7:].lower() in options, cwhere,
                             f"{name} names no option of `altmoe serve`")


def check_configmaps(docs, options, chk):
    for f, cm in by_kind(docs, "ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith(".json"):
                continue
            where = f"{f} ConfigMap/{cm['metadata']['name']} {key}"
            try:
                config = json.loads(text)
            except json.JSONDecodeError as e:
                chk.need(False, where, f"invalid JSON: {e}")
                continue
            if options is not None:
                for k in config:
                    chk.need(k in options, where, f"key {k} is not an option of `altmoe serve`")


def check_pdb(docs, chk):
    pods = [((d["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            for _, d in by_kind(docs, "StatefulSet")]
    for f, pdb in by_kind(docs, "PodDisruptionBudget"):
        where = f"{f} PodDisruptionBudget/{pdb['metadata']['name']}"
        spec = pdb.get("spec") or {}
        chk.need(("minAvailable" in spec) != ("maxUnavailable" in spec), where,
                 "set exactly one of minAvailable and maxUnavailable")
        chk.need(any(selects(spec.get("selector"), p) for p in pods), where,
                 "selects no StatefulSet pod")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="altmoe binary, to check option names")
    ap.add_argument("directory")
    args = ap.parse_args()
    chk = Checker()
    docs, kustomization = load_documents(args.directory, chk)
    check_kustomization(args.directory, docs, kustomization, chk)
    kinds = {d.get("kind") for _, d in docs}
    for kind in REQUIRED_KINDS:
        chk.need(kind in kinds, args.directory, f"no {kind} manifest")
    options = serve_options(args.bin) if args.bin else None
    for f, sts in by_kind(docs, "StatefulSet"):
        check_statefulset(f, sts, docs, options, chk)
    check_configmaps(docs, options, chk)
    check_pdb(docs, chk)
    for p in chk.problems:
        print(f"check_k8s: {p}")
    if chk.problems:
        return 1
    print(f"check_k8s: {len(docs)} manifests in {args.directory}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
