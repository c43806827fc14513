#!/usr/bin/env bash
# Instructions per issuance, by purpose, under callgrind (valgrind).
#
#   scripts/profile.sh                       # 200 and 1,200 issuances
#   PROFILE_ISSUANCES=3000 scripts/profile.sh
#
# `cargo bench` builds the release broker (line tables on: profile.release has
# debug = "line-tables-only") and runs benches/load.rs in profile mode twice:
# the broker under `valgrind --tool=callgrind`, given PROFILE_BASE (200) and
# then PROFILE_BASE + PROFILE_ISSUANCES (1,000) issuances from 4 connections,
# each with a fresh pre-minted token, then stopped with SIGTERM. The
# difference of the two profiles divided by PROFILE_ISSUANCES is one issuance
# in steady state: start-up, warm-up and shutdown cancel out.
# scripts/bench/callgrind_buckets.py splits it by purpose (HTTP, JSON, JWT
# verify, policy, replay, STS signing / (de)serialization / request, metrics,
# audit line), see its header for how.
#
# Instruction counts do not depend on the machine's load, unlike times. They
# are user-space instructions only: kernel work (loopback TCP, epoll, writes)
# is not counted; scripts/bench.sh's CPU time per issuance includes it.
#
# Output: the table on stdout and in <target>/profile/breakdown.md; the raw
# profiles in <target>/profile/callgrind.{small,large}.out, for
# `callgrind_annotate --inclusive=yes FILE` or kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "error: valgrind not found (Debian: apt-get install valgrind)" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
base=${PROFILE_BASE:-200}
more=${PROFILE_ISSUANCES:-1000}
out="$target_dir/profile"
mkdir -p "$out"

run() {
    local count=$1 file=$2
    printf '\n== %s issuances under callgrind\n' "$count"
    BENCH_CALLGRIND_OUT="$file" BENCH_ISSUANCES="$count" \
        cargo bench --locked --bench load
}
run "$base" "$out/callgrind.small.out"
run "$((base + more))" "$out/callgrind.large.out"

printf '\n== breakdown\n'
python3 scripts/bench/callgrind_buckets.py \
    "$out/callgrind.small.out" "$base" "$out/callgrind.large.out" "$((base + more))" |
    tee "$out/breakdown.md"
