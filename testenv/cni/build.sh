#!/usr/bin/env bash
# Build cnitool (libcni's runtime side: add, check, del, gc, status) and the
# ptp plugin from the pinned Go modules in this folder into a cache outside
# the checkout:
#   ${PETREL_CNI_CACHE:-$HOME/.cache/petrel/cni}/<stamp>/
# Skips the build when they are there already. Prints the directory on
# stdout (only that). Debian's containernetworking-plugins (1.1.1) speak
# CNI ≤ 1.0; these speak 1.1, whose GC and STATUS petrel-ipam implements.
#
# Env: GO  go binary (default: go in PATH, else /usr/local/go/bin/go)
set -euo pipefail

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
export GOTOOLCHAIN=local
have="$("$GO" env GOVERSION)"

cache_root="${PETREL_CNI_CACHE:-$HOME/.cache/petrel/cni}"
stamp="$( { cat "$here/go.mod" "$here/go.sum"; echo "$have"; } | sha256sum | cut -c1-16)"
out="$cache_root/$stamp"
mkdir -p "$cache_root"
exec 8>"$cache_root/.lock"
flock -w 1800 8 || die "could not lock $cache_root/.lock within 1800s"
if [[ -x "$out/cnitool" && -x "$out/ptp" ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
log "building cnitool and ptp with $have into $out"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
( cd "$here" && CGO_ENABLED=0 nice -n 10 "$GO" build -mod=readonly -trimpath -p 2 -ldflags "-s -w" -o "$tmp/" \
    github.com/containernetworking/cni/cnitool \
    github.com/containernetworking/plugins/plugins/main/ptp ) >&2 || die "go build failed"
mkdir -p "$out"
mv -f "$tmp/ptp" "$out/ptp"
mv -f "$tmp/cnitool" "$out/cnitool"   # last: marks the set complete
echo "$out"
}
main "$@"
