#!/usr/bin/env bash
# Runs the shared harness' `table` scenario with petrel as the DUT.
#   bench/run-table.sh N REPS [extra run.py options...]
# Needs root, a release build (cargo build --release -p petrel) and the
# harness in ../shared/bench beside the checkout; see common.sh for the
# environment variables.
set -euo pipefail
n=${1:-100000}
reps=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
. "$(dirname "$0")/common.sh"
cd "$harness"
exec python3 run.py table --dut custom --n "$n" --reps "$reps" "${petrel_opts[@]}" "$@"
