#!/usr/bin/env bash
# Load benchmark of the release broker (benches/load.rs): `cargo bench` builds
# the broker and the bench (release profile, LTO: several minutes the first
# time), then runs the scenarios against it on loopback and keeps a summary.
#
#   scripts/bench.sh                 # full run (a few minutes on 2 cores)
#   BENCH_SCALE=0.2 scripts/bench.sh # quicker, fewer requests per scenario
#
# Needs wrk (Debian: apt-get install wrk) for the closed-loop scenarios; the
# paced scenario is driven by benches/load.rs itself (latency clocked from each
# request's scheduled send, HdrHistogram). Every token is minted before the
# clock starts, and every answer is checked.
#
# Output: the table on stdout, the same figures as JSON in
# <target>/bench-load.json, this run's summary in <target>/bench-load.txt, and
# the broker's own log in <target>/bench-load-broker.log. Times measured while
# other work uses the CPUs are not representative (the report prints the load
# average before and after); instruction counts (scripts/profile.sh) are.
# Exit status is non-zero when any answer was wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v "${BENCH_WRK:-wrk}" >/dev/null || { echo "error: wrk not found (Debian: apt-get install wrk), or set BENCH_WRK" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}

printf '\n== cargo bench --bench load\n'
mkdir -p "$target_dir"
cargo bench --locked --bench load 2>&1 | tee "$target_dir/bench-load.txt"
