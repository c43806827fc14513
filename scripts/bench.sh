#!/usr/bin/env bash
# Load benchmark of the release broker (benches/load.rs): builds the release
# binary, then runs the benchmark against it on loopback and keeps a summary.
#
#   scripts/bench.sh                 # full run (~1-2 minutes on 2 cores)
#   BENCH_SCALE=0.2 scripts/bench.sh # quicker, fewer requests per scenario
#
# Output: the table on stdout, the same figures as JSON in
# <target>/bench-load.json, this run's summary in <target>/bench-load.txt, and
# the broker's own log in <target>/bench-load-broker.log. Numbers measured while
# other work uses the CPUs are not representative (the report prints the load
# average before and after). Exit status is non-zero when any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}

printf '== cargo build --release --locked\n'
cargo build --release --locked

printf '\n== cargo bench --bench load\n'
mkdir -p "$target_dir"
cargo bench --locked --bench load 2>&1 | tee "$target_dir/bench-load.txt"
