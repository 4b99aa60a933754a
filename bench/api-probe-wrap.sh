#!/usr/bin/env bash
# PETREL_WRAP for the API load measurement: starts api_probe beside the agent
# (in the same namespace, in its own session, so the harness charges neither
# its CPU nor its memory to the DUT), then becomes the agent.
#   PETREL_WRAP="bench/api-probe-wrap.sh" with PETREL_PROBE_OUT (a directory)
#   and PETREL_PROBE_PREFIXES (one prefix per line).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
probe="${PETREL_PROBE_BIN:-$here/../target/release/examples/api_probe}"
socket=""
prev=""
for a in "$@"; do
  [ "$prev" = "--api-socket" ] && socket="$a"
  prev="$a"
done
[ -n "$socket" ] || { echo "api-probe-wrap: no --api-socket in: $*" >&2; exit 2; }
mkdir -p "$PETREL_PROBE_OUT"
setsid "$probe" "$socket" "$PETREL_PROBE_PREFIXES" \
  "$PETREL_PROBE_OUT/probe-$(date +%s%N).json" "${PETREL_PROBE_RATE:-20}" 600 \
  > "$PETREL_PROBE_OUT/probe.log" 2>&1 < /dev/null &
exec "$@"
