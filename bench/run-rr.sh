#!/usr/bin/env bash
# Runs the shared harness' `rr` scenario with petrel as the route reflector.
#   bench/run-rr.sh M K REPS [extra run.py options...]
# M iBGP clients announce K prefixes each; petrel reflects them to all.
# Same requirements as run-table.sh; see common.sh for the environment.
set -euo pipefail
m=${1:-100}
k=${2:-4}
reps=${3:-1}
shift $(( $# > 3 ? 3 : $# ))
. "$(dirname "$0")/common.sh"
cd "$harness"
exec python3 run.py rr --dut custom --m "$m" --k "$k" --reps "$reps" "${petrel_opts[@]}" "$@"
