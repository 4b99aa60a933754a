#!/usr/bin/env bash
# Stop the control plane started by start.sh DIR: exactly the processes whose
# pids are recorded in DIR/pids (and whose command line mentions DIR).
# Idempotent. With COMPONENT names, stop only those (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler); the data, ports and certificates stay in DIR.
#
#   stop.sh DIR [COMPONENT...]
set -euo pipefail

main() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  # shellcheck source=lib.sh
  source "$here/lib.sh"
  [[ $# -ge 1 ]] || die "usage: stop.sh DIR [COMPONENT...]"
  if [[ ! -d "$1" ]]; then log "no $1: nothing to stop"; return 0; fi
  local dir; dir="$(abs_dir "$1")"; shift
  mkdir -p "$dir/pids"
  local c comps=()
  if [[ $# -eq 0 ]]; then
    comps=(kube-scheduler kube-controller-manager kube-apiserver etcd)   # reverse start order
  else
    for c in "$@"; do valid_component "$c" || die "unknown component $c (one of: ${COMPONENTS[*]})"; done
    comps=("$@")
  fi
  lock_dir "$dir"
  for c in "${comps[@]}"; do stop_component "$dir" "$c"; done
}

main "$@"
