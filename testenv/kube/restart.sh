#!/usr/bin/env bash
# Restart one component of the control plane in DIR (stop it, then start.sh
# DIR, which starts it again with the same data, ports and certificates and
# waits until the whole control plane is ready again).
#
#   restart.sh DIR COMPONENT      COMPONENT: etcd | kube-apiserver | kube-controller-manager | kube-scheduler
#
# Prints the admin kubeconfig path, like start.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -eq 2 ]] || { echo "usage: restart.sh DIR COMPONENT" >&2; exit 2; }
[[ -f "$1/ports.env" ]] || { echo "restart.sh: $1 was never started (no ports.env)" >&2; exit 1; }
"$here/stop.sh" "$1" "$2"
exec "$here/start.sh" "$1"
