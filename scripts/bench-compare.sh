#!/usr/bin/env bash
# Two broker binaries under the same load, runs alternated: A, B, A, B, …
#
#   scripts/bench-compare.sh BIN_A BIN_B            # three pairs
#   PAIRS=5 BENCH_SCALE=0.5 scripts/bench-compare.sh BIN_A BIN_B
#
# Each run is one `cargo bench --bench load` (as scripts/bench.sh) with
# BENCH_BROKER_BIN set to that binary; alternating spreads the machine's
# drift (other tenants of the host, thermal state) over both. Build each
# binary first with `cargo build --release` in its own checkout (the bench
# harness itself comes from this checkout). Every answer of every run is
# checked, and a run with a wrong answer stops the comparison.
#
# Output: one row per run (issued/s, broker CPU per issuance, the paced p99
# and the load generator's own lateness, RSS, launch to ready) on stdout and
# in <target>/bench-compare.md; each run's JSON as
# <target>/bench-compare/{a,b}-N.json.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -eq 2 ] || { echo "usage: $0 BIN_A BIN_B" >&2; exit 2; }
for bin in "$1" "$2"; do
    [ -x "$bin" ] || { echo "error: $bin is not an executable broker binary" >&2; exit 2; }
done
command -v "${BENCH_WRK:-wrk}" >/dev/null || { echo "error: wrk not found (Debian: apt-get install wrk), or set BENCH_WRK" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
out="$target_dir/bench-compare"
rm -rf "$out"
mkdir -p "$out"

for pair in $(seq 1 "${PAIRS:-3}"); do
    for side in a b; do
        bin=$1
        [ "$side" = b ] && bin=$2
        printf '\n== run %s of %s: %s\n' "$pair" "$side" "$bin"
        BENCH_BROKER_BIN="$bin" cargo bench --locked --bench load
        cp "$target_dir/bench-load.json" "$out/$side-$pair.json"
    done
done

printf '\n== A: %s\n== B: %s\n' "$1" "$2"
python3 scripts/bench/compare_table.py "$out" | tee "$target_dir/bench-compare.md"
