#!/usr/bin/env bash
# Chart checks: renders charts/petrel with Helm's own engine (the
# helm-python-sdk package: Helm's Go SDK as a library, no cluster, no
# network) and checks the objects, RBAC, and that the chart's CRDs are
# `petrel crds`. See charts/test.py for the list.
#
# Needs: python3 -m pip install helm-python-sdk==0.2.2
# PETREL=path/to/petrel uses that binary instead of `cargo run -p petrel`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 charts/test.py "$@"
