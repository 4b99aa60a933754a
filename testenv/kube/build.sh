#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
# etcd from the
# pinned Go modules in this folder into a cache outside the checkout:
#   ${PETREL_KUBE_CACHE:-$HOME/.cache/petrel/kube}/<k8s version>/
# Skips the build when the binaries there were built from the same
# go.mod/go.sum/cmd sources. Prints the directory on stdout (only that).
#
# Env: PETREL_KUBE_CACHE  cache root
#      GO                 go binary (default: go in PATH, else /usr/local/go/bin/go)
#      PETREL_KUBE_BUILD_P  go build -p (default 2)
#      PETREL_KUBE_FORCE=1  rebuild even if cached
set -euo pipefail

# Whole body in a function: bash parses it completely before running, so
# editing this file during a long build cannot derail the running copy.
main() {

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO=go
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no Go toolchain found (put go in PATH or set GO=/path/to/go)"; fi
fi

# Go version check: the module's `go` line is the minimum. Never let the go
# command try to download a newer toolchain (no network for that here).
export GOTOOLCHAIN=local
need="$(awk '$1=="go"{print $2; exit}' "$here/go.mod")"
have="$("$GO" env GOVERSION 2>/dev/null || true)"
have="${have#go}"; have="${have%%[-+ ]*}"
[[ -n "$have" ]] || die "could not run '$GO env GOVERSION'"
ver_ge() { # ver_ge A B: A >= B, dotted numeric (rc/beta suffixes ignored)
  local IFS=.; local -a a=(${1%%[a-z]*}) b=(${2%%[a-z]*}); local i
  for i in 0 1 2; do
    local x=${a[i]:-0} y=${b[i]:-0}
    ((10#$x > 10#$y)) && return 0; ((10#$x < 10#$y)) && return 1
  done; return 0
}
ver_ge "$have" "$need" || die "Go $have is too old: testenv/kube/go.mod needs go >= $need ($GO)"

modver() { awk -v m="$1" '$1=="replace"||$1=="=>"{next} {for(i=1;i<NF;i++) if($i==m && $(i+1) ~ /^v/){print $(i+1); exit}}' "$here/go.mod"; }
kver="$(modver k8s.io/kubernetes)"
[[ -n "$kver" ]] || die "k8s.io/kubernetes version not found in go.mod"
etcdver="$(modver go.etcd.io/etcd/server/v3)"

cache_root="${PETREL_KUBE_CACHE:-$HOME/.cache/petrel/kube}"
out="$cache_root/$kver"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

# Stamp: what the binaries were built from (sources + toolchain).
stamp="$( { cat "$here/go.mod" "$here/go.sum"; find "$here/cmd" -type f -name '*.go' | LC_ALL=C sort | xargs cat; echo "$have"; } | sha256sum | cut -c1-16)"

# One build at a time per cache (parallel test jobs may all call build.sh);
# the others wait, bounded, and then find the binaries cached.
mkdir -p "$cache_root"
exec 8>"$cache_root/.lock"
flock -w 3600 8 || die "could not lock $cache_root/.lock within 3600s"

have_all=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || have_all=0; done
if [[ "${PETREL_KUBE_FORCE:-0}" != 1 && $have_all == 1 && "$(cat "$out/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

log "building k8s.io/kubernetes $kver + etcd $etcdver with go $have into $out (this takes a while the first time)"
mkdir -p "$cache_root"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

maj="${kver#v}"; maj="${maj%%.*}"; min="${kver#v*.}"; min="${min%%.*}"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$kver -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcdver"

start=$(date +%s)
( cd "$here" && CGO_ENABLED=0 nice -n "${PETREL_KUBE_NICE:-10}" "$GO" build -mod=readonly -trimpath \
    -p "${PETREL_KUBE_BUILD_P:-2}" -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    ./cmd/etcd ) >&2 || die "go build failed"
for b in "${bins[@]}"; do [[ -x "$tmp/$b" ]] || die "go build did not produce $b"; done
echo "$stamp" > "$tmp/.stamp"
echo "k8s.io/kubernetes $kver; go.etcd.io/etcd/server/v3 $etcdver; go $have" > "$tmp/VERSIONS"

mkdir -p "$out"
for b in "${bins[@]}"; do mv -f "$tmp/$b" "$out/$b"; done
mv -f "$tmp/VERSIONS" "$out/VERSIONS"
mv -f "$tmp/.stamp" "$out/.stamp"   # last: marks the set complete
log "built in $(( $(date +%s) - start ))s: $out"
echo "$out"
}
main "$@"
