#!/usr/bin/env python3
"""Renders the petrel chart with Helm's own engine (helm-python-sdk: Helm's
Go SDK as a library; offline) and prints its objects as one JSON array, in
the order Helm would install them (by kind), for tools that apply them.

Usage: charts/render.py [--name RELEASE] [--namespace NS] [--values JSON]

`--values` is a JSON object merged over values.yaml, as `helm template -f`
would. charts/test.py checks what the chart makes; the Kubernetes-facing
tests (testkit's `KubeEnv::install_chart`) apply it to a real API server.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "petrel")
INSTALL = "python3 -m pip install helm-python-sdk==0.2.2"

try:
    import helm_python as helm
except ImportError:
    print(f"charts/render.py needs Helm's library: {INSTALL}", file=sys.stderr)
    sys.exit(2)

# Helm's install order (pkg/release/util/kind_sorter.go), for the kinds
# this chart makes: accounts and roles before what runs under them.
ORDER = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "PodDisruptionBudget",
]


def documents(text):
    """The YAML documents of a stream, parsed by Go's YAML (through Helm)."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    out = []
    for d in docs:
        if not any(l.strip() and not l.lstrip().startswith("#") for l in d.splitlines()):
            continue
        out.append(helm.values_from_yaml(d))
    return out


def render(values, name="petrel", namespace="kube-system"):
    """Every object the chart renders, each with `__file`: its template."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in documents(text):
            doc["__file"] = path
            objects.append(doc)
    return objects


def install_order(obj):
    kind = obj.get("kind")
    return ORDER.index(kind) if kind in ORDER else len(ORDER)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="petrel", help="release name")
    p.add_argument("--namespace", default="kube-system", help="release namespace")
    p.add_argument("--values", default="{}", help="values as a JSON object")
    args = p.parse_args()
    try:
        values = json.loads(args.values)
    except json.JSONDecodeError as e:
        p.error(f"--values is not JSON: {e}")
    if not isinstance(values, dict):
        p.error("--values must be a JSON object")
    objects = render(values, name=args.name, namespace=args.namespace)
    for o in objects:
        del o["__file"]
    objects.sort(key=install_order)
    json.dump(objects, sys.stdout)
    print()


if __name__ == "__main__":
    main()
