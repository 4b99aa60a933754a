#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) on a copy of its seeds
# (fuzz/seeds/TARGET), and prints the executions each ran. Used by .ci/run;
# longer runs: `fuzz/run.sh 600`, or one target: `fuzz/run.sh 600 decode_message`.
#
# cargo-fuzz comes from crates.io (pinned), built once into ~/.cargo/bin.
# libFuzzer's build needs a nightly compiler: `cargo +nightly` when rustup has
# one, else the stable compiler with RUSTC_BOOTSTRAP=1 (what a nightly flag
# needs, nothing more). Targets are built without a sanitizer (`-s none`), with
# debug assertions: a panic, an overflow or a failed assertion is a crash.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decode_message mrt_reader netlink_route yaml_plan grpc_peer session_rib bfd_packet)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  echo "fuzz: no nightly toolchain; building with the stable compiler and RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp -r "seeds/$t/." "$work/$t/" 2>/dev/null || true
  "${fuzz[@]}" build -s none --debug-assertions "$t" >/dev/null
  log="$work/$t.log"
  if ! "${fuzz[@]}" run -s none --debug-assertions "$t" "$work/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t found a crash (its input is under fuzz/artifacts/$t)" >&2
    exit 1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
  echo "fuzz: $t: ${execs:-?} executions in ${secs} s, no crash"
done
