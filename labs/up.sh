#!/usr/bin/env bash
# The README's first command: a petrel lab on this machine.
#
#   sudo labs/up.sh [TOPOLOGY] [--name NAME] [--router frr|bird|petrel]
#
# On a fresh Debian machine, as root: installs what the lab runs (FRR, BIRD 2,
# iproute2, ping, the CNI plugins) when missing, builds petrel and its CNI
# plugin (release) when needed, and runs
# `petrel lab up` with the arguments given (default: labs/tor.yaml, an FRR ToR
# and three nodes). `petrel lab status` and `petrel lab down` follow.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "labs/up.sh needs root (it creates network namespaces): sudo labs/up.sh $*" >&2
  exit 1
fi

# Packages, only those missing (apt-get update only if one is).
packages=(frr bird2 iproute2 iputils-ping procps util-linux containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Build as the user who ran sudo when there is one: their toolchain (rustup
# installs per user) and no root-owned files in target/. CARGO overrides the
# command (e.g. CARGO="flock /tmp/cargo.lock cargo").
bin="$repo/target/release/petrel"
build=(build --release -p petrel)
if [ -n "${CARGO:-}" ]; then
  $CARGO "${build[@]}"
elif [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  sudo -u "$SUDO_USER" -H bash -lc \
    'PATH="$HOME/.cargo/bin:$PATH"; cd "$1" && cargo build --release -p petrel' _ "$repo"
elif command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ]; then
  PATH="$HOME/.cargo/bin:$PATH" cargo "${build[@]}"
elif [ -x "$bin" ]; then
  echo "no cargo found; using the petrel built before ($bin)" >&2
else
  echo "no cargo found and no $bin: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

exec "$bin" lab up "$@"
