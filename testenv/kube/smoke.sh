#!/usr/bin/env bash
# End-to-end check of the test control plane: build (cached), start, readyz,
# node CIDR allocation by kube-controller-manager, RBAC via kubectl auth
# can-i, restart of etcd and of kube-apiserver with the data surviving,
# stop, and no process left behind.
#
#   smoke.sh [DIR]     (default: a fresh temporary directory, removed on success)
#
# Ends with a line "N passed, N failed"; exit code 0 only if all passed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
passed=0 failed=0
ok() { echo "ok   - $*"; passed=$((passed + 1)); }
bad() { echo "FAIL - $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION CMD...
  local d="$1"; shift
  if "$@"; then ok "$d"; else bad "$d"; fi
}
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit $?
}

owned_dir=0
if [[ $# -ge 1 ]]; then dir="$1"; mkdir -p "$dir"; else dir="$(mktemp -d /tmp/petrel-kube-smoke.XXXXXX)"; owned_dir=1; fi
dir="$(cd "$dir" && pwd -P)"
trap '"$here/stop.sh" "$dir" >/dev/null 2>&1 || true' EXIT

bin="$("$here/build.sh")" || { bad "build.sh"; finish; }
ok "build.sh -> $bin"
export PETREL_KUBE_BIN="$bin"

t0=$SECONDS
kc="$("$here/start.sh" "$dir")" || { bad "start.sh"; finish; }
ok "start.sh (cold start $((SECONDS - t0))s) -> $kc"
k() { "$bin/kubectl" --kubeconfig "$kc" --request-timeout=10s "$@"; }

check "/readyz is ok" bash -c '[[ "$("$0" --kubeconfig "$1" get --raw /readyz)" == ok ]]' "$bin/kubectl" "$kc"
check "kubectl version reports server v1.34" bash -c '"$0" --kubeconfig "$1" version -o json | grep -q "\"gitVersion\": \"v1.34"' "$bin/kubectl" "$kc"
check "admin may do anything (auth can-i)" bash -c '[[ "$("$0" --kubeconfig "$1" auth can-i "*" "*")" == yes ]]' "$bin/kubectl" "$kc"
check "anonymous-like user may not list secrets (auth can-i --as)" \
  bash -c '[[ "$("$0" --kubeconfig "$1" auth can-i list secrets --as=nobody 2>/dev/null)" == no ]]' "$bin/kubectl" "$kc"

# A Node without podCIDR: kube-controller-manager's node-ipam must assign one.
k apply -f - >/dev/null <<'EOF' && ok "create Node smoke-node (no podCIDR)" || bad "create Node smoke-node"
apiVersion: v1
kind: Node
metadata:
  name: smoke-node
  labels: {petrel.test/smoke: "true"}
EOF
cidr=""
for ((i = 0; i < 60; i++)); do
  cidr="$(k get node smoke-node -o 'jsonpath={.spec.podCIDR}' 2>/dev/null)"
  [[ -n "$cidr" ]] && break
  sleep 0.5
done
check "kube-controller-manager assigned podCIDR within 30s ($cidr)" bash -c '[[ "$0" == 10.244.*.0/24 ]]' "$cidr"

k create configmap smoke --from-literal=k=v1 >/dev/null && ok "create ConfigMap smoke" || bad "create ConfigMap smoke"
check "service account token controller works (default SA in default ns)" \
  bash -c 'for i in $(seq 60); do "$0" --kubeconfig "$1" get sa default >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1' "$bin/kubectl" "$kc"

pid_of() { cat "$dir/pids/$1.pid" 2>/dev/null; }
for comp in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  old="$(pid_of "$comp")"
  t0=$SECONDS
  if "$here/restart.sh" "$dir" "$comp" >/dev/null; then
    new="$(pid_of "$comp")"
    check "restart $comp ($((SECONDS - t0))s, pid $old -> $new)" test -n "$new" -a "$new" != "$old"
  else
    bad "restart $comp"
  fi
  # the apiserver may need a moment to re-establish its etcd connection
  got=""
  for ((i = 0; i < 60; i++)); do
    got="$(k get configmap smoke -o 'jsonpath={.data.k}' 2>/dev/null)" && [[ -n "$got" ]] && break
    sleep 0.5
  done
  check "data survived $comp restart (configmap=$got)" test "$got" = v1
  check "node podCIDR survived $comp restart" \
    bash -c '[[ "$("$0" --kubeconfig "$1" get node smoke-node -o "jsonpath={.spec.podCIDR}")" == "$2" ]]' "$bin/kubectl" "$kc" "$cidr"
done
check "/readyz ok after restarts" bash -c '[[ "$("$0" --kubeconfig "$1" get --raw /readyz)" == ok ]]' "$bin/kubectl" "$kc"

pids="$(cat "$dir"/pids/*.pid 2>/dev/null | tr '\n' ' ')"
check "stop.sh" "$here/stop.sh" "$dir"
check "stop.sh again (idempotent)" "$here/stop.sh" "$dir"
left=""
for p in $pids; do  # a zombie not yet reaped by init does not count
  st="$(ps -o stat= -p "$p" 2>/dev/null)" && [[ "$st" != Z* ]] && left+="$p "
done
check "no recorded process left (were: $pids)" test -z "$left"
if pgrep -f -- "$dir/(etcd|pki|kcm)" >/dev/null; then bad "a process still uses $dir: $(pgrep -af -- "$dir/(etcd|pki|kcm)")"; else ok "no process uses $dir"; fi

if [[ $failed -eq 0 && $owned_dir == 1 ]]; then rm -rf "$dir"; else echo "state kept in $dir"; fi
finish
