#!/usr/bin/env bash
# Start a loopback-only Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) with its state in DIR, and print
# the path of the admin kubeconfig on stdout.
#
#   start.sh DIR
#
# The first start generates certificates and picks free ports; both are kept
# in DIR, so running start.sh DIR again (after stop.sh DIR, or after one
# component was stopped or died) starts whatever is not running with the
# same data, ports and certificates. See restart.sh for one component.
#
# Env:
#   PETREL_KUBE_BIN      directory with the binaries (default: from build.sh)
#   PETREL_KUBE_READY_TIMEOUT  seconds to wait for each component (default 120)
#   PETREL_KUBE_ETCD_FSYNC=1   let etcd fsync (default off: faster; the data
#                        still survives process restarts, not machine crashes)
#   PETREL_KUBE_V        log verbosity of the kube components (default 1)
#   PETREL_KUBE_KEEP_ON_FAIL=1  on failure, keep running what this run started
#                        (default: stop it; logs are kept either way)
set -euo pipefail

main() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  # shellcheck source=lib.sh
  source "$here/lib.sh"

  [[ $# -eq 1 ]] || die "usage: start.sh DIR"
  local dir
  dir="$(abs_dir "$1" create)"
  mkdir -p "$dir/pids" "$dir/logs" "$dir/pki" "$dir/etcd" "$dir/kcm" "$dir/scheduler"
  chmod 700 "$dir/pki" "$dir/etcd"
  lock_dir "$dir"
  # If anything fails, stop what this run started (the logs stay), so a
  # failed start leaves no process behind. PETREL_KUBE_KEEP_ON_FAIL=1 keeps them.
  STARTED=()
  trap 'rc=$?; if ((rc != 0)) && [[ "${PETREL_KUBE_KEEP_ON_FAIL:-0}" != 1 ]]; then
          for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_component "'"$dir"'" "${STARTED[i]}" || true; done
        fi' EXIT

  local bin="${PETREL_KUBE_BIN:-}"
  if [[ -z "$bin" ]]; then bin="$("$here/build.sh")" || die "build.sh failed"; fi
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    [[ -x "$bin/$b" ]] || die "missing binary $bin/$b"
  done

  local timeout="${PETREL_KUBE_READY_TIMEOUT:-120}"
  local verbosity="${PETREL_KUBE_V:-1}"
  local service_cidr=10.96.0.0/16 service_ip=10.96.0.1 cluster_cidr=10.244.0.0/16

  # ---- ports (chosen once, kept) ----
  if [[ ! -f "$dir/ports.env" ]]; then
    local taken=" " names=(ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT) n p
    {
      for n in "${names[@]}"; do
        p="$(free_port "$taken")"
        taken+="$p "
        echo "$n=$p"
      done
    } > "$dir/ports.env.tmp"
    mv "$dir/ports.env.tmp" "$dir/ports.env"
  fi
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  local server="https://127.0.0.1:$APISERVER_PORT"

  # ---- PKI (generated once, kept) ----
  gen_pki "$dir/pki" "$service_ip"
  gen_front_proxy "$dir/pki"
  local pki="$dir/pki"

  # ---- kubeconfigs + env ----
  write_kubeconfig "$dir/kubeconfig" "$server" "$pki/ca.crt" "$pki/admin.crt" "$pki/admin.key" petrel-admin
  write_kubeconfig "$dir/kcm.kubeconfig" "$server" "$pki/ca.crt" "$pki/kcm.crt" "$pki/kcm.key" kube-controller-manager
  write_kubeconfig "$dir/scheduler.kubeconfig" "$server" "$pki/ca.crt" "$pki/scheduler.crt" "$pki/scheduler.key" kube-scheduler
  cat > "$dir/env" <<EOF
# source this file: the test control plane in $dir
KUBECONFIG=$dir/kubeconfig
PETREL_KUBE_DIR=$dir
PETREL_KUBE_SERVER=$server
PETREL_KUBE_BIN=$bin
PETREL_KUBE_CA=$pki/ca.crt
PETREL_KUBE_ADMIN_CERT=$pki/admin.crt
PETREL_KUBE_ADMIN_KEY=$pki/admin.key
PETREL_KUBE_ETCD=http://127.0.0.1:$ETCD_CLIENT_PORT
EOF

  # ---- audit policy ----
  # Metadata-level audit events (verb, resource, subresource, name, user,
  # response code) for the kinds the tests count writes of; one JSON object
  # a line in DIR/audit.log (kept across restarts; blocking mode: an event
  # is in the file once its request was answered).
  cat > "$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: [nodes, nodes/status, services, services/status]
      - group: petrel.dev
        resources: ["*", "*/status"]
  - level: None
EOF

  # ---- etcd ----
  if ! running_pid "$dir" etcd >/dev/null; then
    check_port_free "$ETCD_CLIENT_PORT" etcd; check_port_free "$ETCD_PEER_PORT" etcd
    local nofsync=true
    [[ "${PETREL_KUBE_ETCD_FSYNC:-0}" == 1 ]] && nofsync=false
    launch "$dir" etcd "$bin/etcd" \
      --data-dir="$dir/etcd" --name=petrel \
      --listen-client-url="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-url="http://127.0.0.1:$ETCD_PEER_PORT" \
      --unsafe-no-fsync="$nofsync"
  fi
  wait_until "$dir" etcd "$timeout" \
    curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  # ---- kube-apiserver ----
  if ! running_pid "$dir" kube-apiserver >/dev/null; then
    check_port_free "$APISERVER_PORT" kube-apiserver
    # --endpoint-reconciler-type=none: the `kubernetes` Service's endpoints
    # would be 127.0.0.1, which Endpoints validation rejects (log spam).
    launch "$dir" kube-apiserver "$bin/kube-apiserver" \
      --advertise-address=127.0.0.1 \
      --endpoint-reconciler-type=none \
      --bind-address=127.0.0.1 \
      --secure-port="$APISERVER_PORT" \
      --cert-dir="$pki" \
      --tls-cert-file="$pki/apiserver.crt" \
      --tls-private-key-file="$pki/apiserver.key" \
      --client-ca-file="$pki/ca.crt" \
      --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
      --requestheader-allowed-names=front-proxy-client \
      --requestheader-username-headers=X-Remote-User \
      --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- \
      --proxy-client-cert-file="$pki/front-proxy-client.crt" \
      --proxy-client-key-file="$pki/front-proxy-client.key" \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --authorization-mode=Node,RBAC \
      --enable-admission-plugins=NodeRestriction \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$pki/sa.pub" \
      --service-account-signing-key-file="$pki/sa.key" \
      --service-cluster-ip-range="$service_cidr" \
      --allow-privileged=true \
      --audit-policy-file="$dir/audit-policy.yaml" \
      --audit-log-path="$dir/audit.log" \
      --audit-log-format=json \
      --audit-log-mode=blocking \
      --audit-log-maxsize=0 \
      --profiling=false \
      --v="$verbosity"
  fi
  wait_until "$dir" kube-apiserver "$timeout" \
    curl -fsS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz"

  # ---- kube-controller-manager ----
  # Every controller runs. No kubelet runs, so no Node ever heartbeats: the
  # grace periods are a day, or the node lifecycle controller would call
  # every Node lost after a minute and mark its Pods not ready (and their
  # endpoints with them) in the middle of a test.
  if ! running_pid "$dir" kube-controller-manager >/dev/null; then
    check_port_free "$KCM_PORT" kube-controller-manager
    launch "$dir" kube-controller-manager "$bin/kube-controller-manager" \
      --kubeconfig="$dir/kcm.kubeconfig" \
      --authentication-kubeconfig="$dir/kcm.kubeconfig" \
      --authorization-kubeconfig="$dir/kcm.kubeconfig" \
      --bind-address=127.0.0.1 \
      --secure-port="$KCM_PORT" \
      --cert-dir="$dir/kcm" \
      --controllers='*' \
      --allocate-node-cidrs=true \
      --cluster-cidr="$cluster_cidr" \
      --node-cidr-mask-size=24 \
      --service-cluster-ip-range="$service_cidr" \
      --use-service-account-credentials=true \
      --service-account-private-key-file="$pki/sa.key" \
      --root-ca-file="$pki/ca.crt" \
      --cluster-signing-cert-file="$pki/ca.crt" \
      --cluster-signing-key-file="$pki/ca.key" \
      --leader-elect=false \
      --node-monitor-grace-period=24h \
      --node-startup-grace-period=24h \
      --profiling=false \
      --v="$verbosity"
  fi
  wait_until "$dir" kube-controller-manager "$timeout" \
    curl -fsSk --max-time 5 "https://127.0.0.1:$KCM_PORT/healthz"

  # ---- kube-scheduler ----
  # Places Pods without a nodeName: the DaemonSet controller's (which name
  # their node by affinity, not by nodeName) and the Deployments'.
  if ! running_pid "$dir" kube-scheduler >/dev/null; then
    [[ -n "${SCHEDULER_PORT:-}" ]] || die "$dir/ports.env has no SCHEDULER_PORT (made by an older start.sh: remove DIR)"
    check_port_free "$SCHEDULER_PORT" kube-scheduler
    launch "$dir" kube-scheduler "$bin/kube-scheduler" \
      --kubeconfig="$dir/scheduler.kubeconfig" \
      --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
      --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
      --bind-address=127.0.0.1 \
      --secure-port="$SCHEDULER_PORT" \
      --cert-dir="$dir/scheduler" \
      --leader-elect=false \
      --profiling=false \
      --v="$verbosity"
  fi
  wait_until "$dir" kube-scheduler "$timeout" \
    curl -fsSk --max-time 5 "https://127.0.0.1:$SCHEDULER_PORT/healthz"

  log "control plane up: $server (kubeconfig $dir/kubeconfig, logs $dir/logs)"
  echo "$dir/kubeconfig"
}

# A TCP port on 127.0.0.1 nobody listens on, outside the ephemeral range.
free_port() { # free_port " taken ports "
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ "$1" == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

check_port_free() { # check_port_free PORT WHO
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port 127.0.0.1:$1 (kept for $2 in ports.env) is in use by another process"
  fi
}

# Start a detached process (own session), log appended, pid recorded.
launch() { # launch DIR NAME BIN ARGS...
  local dir="$1" name="$2"; shift 2
  log "starting $name"
  echo "---- $(date -u +%FT%TZ) start.sh: starting $name" >> "$dir/logs/$name.log"
  # 9>&-: do not pass the DIR lock on to the long-lived process
  setsid "$@" >> "$dir/logs/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$dir/pids/$name.pid"
  STARTED+=("$name")
}

# Poll CMD every 0.5s until it succeeds; bounded; fail fast if NAME died.
wait_until() { # wait_until DIR NAME TIMEOUT CMD...
  local dir="$1" name="$2" timeout="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  while true; do
    if "$@" >/dev/null 2>&1; then log "$name ready"; return 0; fi
    if ! running_pid "$dir" "$name" >/dev/null; then
      log "$name exited; last log lines ($dir/logs/$name.log):"
      tail -n 40 "$dir/logs/$name.log" >&2 || true
      die "$name failed to start"
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${timeout}s; last log lines ($dir/logs/$name.log):"
      tail -n 40 "$dir/logs/$name.log" >&2 || true
      die "$name not ready after ${timeout}s"
    fi
    sleep 0.5
  done
}

# openssl x509 -req signing helper.
sign() { # sign PKI NAME SUBJ EXTFILE-CONTENT
  local pki="$1" name="$2" subj="$3" ext="$4"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

gen_pki() { # gen_pki PKI SERVICE_IP
  local pki="$1" svc_ip="$2"
  [[ -f "$pki/.complete" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed"
  log "generating certificates in $pki"
  rm -f "$pki"/*.crt "$pki"/*.key "$pki"/*.pub "$pki"/*.srl
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -days 3650 -sha256 -subj "/CN=petrel-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  sign "$pki" apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$svc_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign "$pki" admin "/O=system:masters/CN=petrel-admin" "$client"
  sign "$pki" kcm "/CN=system:kube-controller-manager" "$client"
  sign "$pki" scheduler "/CN=system:kube-scheduler" "$client"
  # service-account token signing key pair
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
  touch "$pki/.complete"
}

# Front-proxy (aggregation layer) CA and client, as kubeadm sets up: without
# --requestheader-client-ca-file kube-controller-manager logs errors forever.
gen_front_proxy() { # gen_front_proxy PKI
  local pki="$1"
  [[ -f "$pki/.complete-front-proxy" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" \
    -days 3650 -sha256 -subj "/CN=petrel-test-front-proxy-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genrsa -out "$pki/front-proxy-client.key" 2048 2>/dev/null
  openssl req -new -key "$pki/front-proxy-client.key" -subj "/CN=front-proxy-client" -out "$pki/fp.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth" > "$pki/fp.ext"
  openssl x509 -req -in "$pki/fp.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$pki/fp.ext" -out "$pki/front-proxy-client.crt" 2>/dev/null
  rm -f "$pki/fp.csr" "$pki/fp.ext"
  chmod 600 "$pki"/*.key
  touch "$pki/.complete-front-proxy"
}

write_kubeconfig() { # write_kubeconfig FILE SERVER CA CERT KEY USER
  local f="$1"
  cat > "$f.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: petrel-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 < "$3")
users:
- name: $6
  user:
    client-certificate-data: $(base64 -w0 < "$4")
    client-key-data: $(base64 -w0 < "$5")
contexts:
- name: $6@petrel-test
  context:
    cluster: petrel-test
    user: $6
current-context: $6@petrel-test
EOF
  chmod 600 "$f.tmp"
  mv "$f.tmp" "$f"
}

main "$@"
