#!/usr/bin/env bash
# Native CPU time per issuance, by purpose, user and kernel, under perf.
#
#   scripts/profile-native.sh                  # closed-50 at the full count
#   BENCH_SCALE=0.5 scripts/profile-native.sh
#
# Runs the load benchmark (benches/load.rs, as scripts/bench.sh does) with
# BENCH_PERF_OUT set: `perf record` samples the broker at 999 Hz with DWARF
# call stacks during the timed phase of closed-50 (50 connections, closed
# loop, fresh tokens). scripts/bench/perf_buckets.py gives every sample one
# purpose by its stack and converts the shares into microseconds with the
# broker CPU per issuance that closed-50 measured. Unlike scripts/profile.sh
# (callgrind: user-space instructions, stable under load), this counts time
# as the CPU spends it: crypto with the CPU's SHA and ADX extensions, cache
# misses, and the kernel's share (loopback TCP, epoll, the audit line's
# write). The sampling itself costs the broker some CPU (each sample copies
# 16 KiB of stack), so that run's CPU per issuance is a little high; the
# shares are what to read.
#
# Needs perf (Debian: apt-get install linux-perf) and permission to attach
# to the broker (root, or kernel.perf_event_paranoid <= 1), and wrk as
# scripts/bench.sh does.
#
# Output: the table on stdout and in <target>/profile/native.md; the raw
# samples in <target>/profile/perf.data (`perf report -i FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v perf >/dev/null || { echo "error: perf not found (Debian: apt-get install linux-perf)" >&2; exit 2; }
command -v "${BENCH_WRK:-wrk}" >/dev/null || { echo "error: wrk not found (Debian: apt-get install wrk), or set BENCH_WRK" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
out="$target_dir/profile"
mkdir -p "$out"

printf '\n== cargo bench --bench load, perf attached during closed-50\n'
BENCH_PERF_OUT="$out/perf.data" cargo bench --locked --bench load

us=$(python3 -c 'import json,sys; print(next(s["broker_cpu_us_per_issuance"] for s in json.load(open(sys.argv[1]))["scenarios"] if s["name"] == "closed-50"))' "$target_dir/bench-load.json")
printf '\n== breakdown of closed-50 (%s µs of broker CPU per issuance)\n' "$us"
perf script -F tid,ip,sym,dso -i "$out/perf.data" 2>/dev/null >"$out/perf.txt"
python3 scripts/bench/perf_buckets.py "$out/perf.txt" "$us" | tee "$out/native.md"
