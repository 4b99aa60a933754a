#!/usr/bin/env bash
# Does an API client at 20 Hz slow routing down, and does routing slow the
# client down? Runs the harness' `table` scenario REPS times without and REPS
# times with bench/api-probe-wrap.sh (ListPeers + ExplainRoute at 20 Hz),
# alternating, and prints both medians and the probe's latencies.
# PETREL_PROBE_FLOOD=routes,adjrib,metrics adds floods of those reads beside
# the probe (see petrel/examples/api_probe.rs); PETREL_BIN runs another build.
#   bench/run-api-load.sh [N] [REPS]
# Needs root and: cargo build --release -p petrel --example api_probe
set -euo pipefail
n=${1:-1000000}
reps=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
[ -x "$here/../target/release/examples/api_probe" ] || {
  echo "build first: cargo build --release -p petrel --example api_probe" >&2; exit 1; }
work=${PETREL_BENCH_WORK:-/tmp/petrel-api-load}
rm -rf "$work"; mkdir -p "$work/probe"
# 200 prefixes spread over the table the feeder will send.
python3 - "$harness" "$n" > "$work/prefixes" <<'PY'
import ipaddress, sys
sys.path.insert(0, sys.argv[1])
from bgpwire import gen_prefixes
p = gen_prefixes(int(sys.argv[2]))
step = max(1, len(p) // 200)
for a, l in p[::step][:200]:
    print(f"{ipaddress.IPv4Address(a)}/{l}")
PY
for i in $(seq 1 "$reps"); do
  PETREL_BENCH_OUT="$work/plain.jsonl" "$here/run-table.sh" "$n" 1
  PETREL_WRAP="$here/api-probe-wrap.sh" PETREL_PROBE_OUT="$work/probe" \
    PETREL_PROBE_PREFIXES="$work/prefixes" PETREL_BENCH_OUT="$work/probe.jsonl" \
    "$here/run-table.sh" "$n" 1
done
python3 - "$work" <<'PY'
import glob, json, statistics, sys
w = sys.argv[1]
def rows(f):
    return [json.loads(l) for l in open(f) if l.strip() and '"announce"' in l]
def med(rs, phase, key):
    v = [r[phase][key] for r in rs if r.get(phase, {}).get(key) is not None]
    return statistics.median(v) if v else None
plain, probe = rows(f"{w}/plain.jsonl"), rows(f"{w}/probe.jsonl")
print(f"runs: {len(plain)} without the client, {len(probe)} with it")
for phase, key in [("announce", "rib_s"), ("announce", "prop_s"), ("announce", "fib_s"),
                   ("announce", "dut_cpu_s"), ("withdraw", "rib_s"), ("withdraw", "prop_s")]:
    a, b = med(plain, phase, key), med(probe, phase, key)
    ratio = f"{b / a:.3f}" if a and b else "-"
    print(f"{phase:9} {key:10} without {a}  with {b}  ratio {ratio}")
for f in sorted(glob.glob(f"{w}/probe/probe-*.json")):
    d = json.load(open(f))
    print(f"probe {f.rsplit('/', 1)[1]}: {d['seconds']:.0f}s at {d['rate_hz']} Hz; "
          f"ListPeers {d['list_peers']}; ExplainRoute {d['explain_route']}")
    fl = d.get("floods", {})
    if any(fl.get(k, {}).get("calls") or fl.get(k, {}).get("errors")
           for k in ("list_routes", "adj_rib_in", "metrics")):
        print(f"  floods: ListRoutes {fl['list_routes']} ({fl['list_routes_routes']} routes); "
              f"ListAdjRibIn {fl['adj_rib_in']} ({fl['adj_rib_in_routes']} routes); "
              f"/metrics {fl['metrics']}")
PY
