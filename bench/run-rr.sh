#!/usr/bin/env bash
# Runs the shared harness' `rr` scenario with petrel as the route reflector.
#   bench/run-rr.sh M K REPS [extra run.py options...]
# M iBGP clients announce K prefixes each; petrel reflects them to all.
# Same requirements and environment variables as run-table.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
harness="${PETREL_SHARED_DIR:-$top/../shared}/bench"
m=${1:-100}
k=${2:-4}
reps=${3:-1}
shift $(( $# > 3 ? 3 : $# ))
petrel="${PETREL_BIN:-$top/target/release/petrel}"
[ -x "$petrel" ] || { echo "build first: cargo build --release -p petrel" >&2; exit 1; }
count="$petrel peers -o json --socket \$wd/petrel.sock | python3 -c 'import json,sys; print(sum(p[\"prefixes\"].get(\"ipv4-unicast\",{}).get(\"accepted\",0) for p in json.load(sys.stdin)))'"
out="${PETREL_BENCH_OUT:-/tmp/petrel-bench/results.jsonl}"
mkdir -p "$(dirname "$out")"
cd "$harness"
exec python3 run.py rr --dut custom --m "$m" --k "$k" --reps "$reps" \
  --opt custom_name=petrel \
  --opt "custom_start=${PETREL_WRAP:-}${PETREL_WRAP:+ }$petrel agent --source files:\$wd --node dut --api-socket \$wd/petrel.sock --poll-ms 500" \
  --opt "custom_config=$here/petrel.yaml.tmpl" \
  --opt "custom_neighbor=$here/petrel-neighbor.yaml.tmpl" \
  --opt custom_config_name=petrel.yaml \
  --opt "custom_rib_cmd=$count" \
  --opt custom_fib_proto=201 \
  --out "$out" \
  "$@"
