# Shared helpers for start.sh / stop.sh / restart.sh. Sourced, not run.
# Layout of a control-plane DIR:
#   DIR/ports.env        chosen ports (kept, so a restart reuses them)
#   DIR/env              KUBECONFIG, server URL, binary dir (for tests to source)
#   DIR/pki/             CA, serving/client certs, service-account key pair
#   DIR/etcd/            etcd data
#   DIR/logs/NAME.log    process logs (appended across restarts)
#   DIR/pids/NAME.pid    pid of each running process
#   DIR/kubeconfig       admin (O=system:masters) kubeconfig
#   DIR/kcm.kubeconfig   kube-controller-manager's kubeconfig
#   DIR/scheduler.kubeconfig  kube-scheduler's kubeconfig
#   DIR/audit.log        the API server's audit log (JSON lines; policy in
#                        DIR/audit-policy.yaml, written by start.sh)
# Everything binds to 127.0.0.1 only.

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)   # start order

log() { echo "${0##*/}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Resolve DIR to an absolute path (creating it if asked).
abs_dir() { # abs_dir DIR [create]
  [[ -n "${1:-}" ]] || die "usage: ${0##*/} DIR ..."
  if [[ "${2:-}" == create ]]; then mkdir -p "$1"; fi
  [[ -d "$1" ]] || die "no such directory: $1"
  (cd "$1" && pwd -P)
}

valid_component() {
  local c
  for c in "${COMPONENTS[@]}"; do [[ "$c" == "$1" ]] && return 0; done
  return 1
}

# pid of COMPONENT if it is running AND is ours (its command line mentions
# DIR), else nothing. Guards against acting on a recycled pid.
running_pid() { # running_pid DIR COMPONENT
  local f="$1/pids/$2.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  # zombie / exiting processes do not count
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$1/" || return 1
  echo "$pid"
}

# Stop one component: SIGTERM, wait up to $PETREL_KUBE_STOP_GRACE seconds
# (default 10), then SIGKILL. Idempotent. (kube-apiserver can take up to its
# 60s request timeout to exit after etcd was restarted under it, waiting for
# watch connections; a SIGKILL loses nothing, the state is in etcd.)
stop_component() { # stop_component DIR COMPONENT
  local dir="$1" c="$2" pid i grace="${PETREL_KUBE_STOP_GRACE:-10}"
  if pid="$(running_pid "$dir" "$c")"; then
    log "stopping $c (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      running_pid "$dir" "$c" >/dev/null || break
      sleep 0.1
    done
    if running_pid "$dir" "$c" >/dev/null; then
      log "$c (pid $pid) still alive after ${grace}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        running_pid "$dir" "$c" >/dev/null || break
        sleep 0.1
      done
      running_pid "$dir" "$c" >/dev/null && die "$c (pid $pid) did not die"
    fi
  fi
  rm -f "$dir/pids/$c.pid"
}

# Serialise start/stop/restart on one DIR.
lock_dir() { # lock_dir DIR
  exec 9>"$1/.lock"
  flock -w 300 9 || die "could not lock $1/.lock within 300s"
}
