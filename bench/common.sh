# Sourced by run-table.sh and run-rr.sh: where the harness and petrel are, and
# the harness' `custom` adapter options that run petrel as the DUT.
# PETREL_BIN runs another build (a profiling one, say); PETREL_WRAP prefixes
# the agent command (e.g. "perf record -o /tmp/petrel.perf");
# PETREL_SHARED_DIR points at the shared folder; PETREL_BENCH_OUT is where
# results go; BGPB_TOOL is the load generator.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
harness="${PETREL_SHARED_DIR:-$top/../shared}/bench"
petrel="${PETREL_BIN:-$top/target/release/petrel}"
[ -x "$petrel" ] || { echo "build first: cargo build --release -p petrel -p bgpload" >&2; exit 1; }
# The load generator: bgpload (bench/bgpload) when built, which the harness
# runs in place of its Python tool; BGPB_TOOL= (empty) picks the Python one.
# --originator-check: a reflector client does not count its own routes
# reflected back (FRR sends them, and so does petrel), so "every client has
# every route" means every other client's.
if [ -z "${BGPB_TOOL+set}" ] && [ -x "$top/target/release/bgpload" ]; then
  export BGPB_TOOL="$top/target/release/bgpload --originator-check"
fi
# The RIB count the harness polls: the speaker's counters, no walk and no
# per-peer listing (the harness takes the last number: the path count).
count="$petrel rib --summary --socket \$wd/petrel.sock"
out="${PETREL_BENCH_OUT:-/tmp/petrel-bench/results.jsonl}"
mkdir -p "$(dirname "$out")"
petrel_opts=(
  --opt custom_name=petrel
  --opt "custom_start=${PETREL_WRAP:-}${PETREL_WRAP:+ }$petrel agent --source files:\$wd --node dut --api-socket \$wd/petrel.sock --poll-ms 500"
  --opt "custom_config=$here/petrel.yaml.tmpl"
  --opt "custom_neighbor=$here/petrel-neighbor.yaml.tmpl"
  --opt custom_config_name=petrel.yaml
  --opt "custom_rib_cmd=$count"
  --opt custom_fib_proto=201
  --out "$out"
)
