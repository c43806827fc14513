#!/usr/bin/env bash
# Fuzzing: runs every cargo-fuzz target in fuzz/ for a while, one after the
# other. Not part of the default test run (scripts/test.sh).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s each, all targets
#
# Targets (fuzz/fuzz_targets/*.rs, each file's doc says what it checks):
#   verify_token     raw tokens through the server's verification path and
#                    `token inspect`; fuzzed claims and headers behind a valid
#                    ES256 signature
#   issue_request    POST /issue decoding: query, Content-Type, Authorization, body
#   policy_compile   Policy::compile on arbitrary text, then evaluation
#   policy_evaluate  a fixed policy against arbitrary claim sets and role requests
#
# Any panic, timeout (-timeout, 10 s per input) or memory blow-up (-rss_limit_mb)
# stops a target and leaves the input in fuzz/artifacts/TARGET/; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-…
# (from fuzz/). The growing corpus stays in fuzz/corpus/TARGET (gitignored); the
# committed seeds are fuzz/seeds/TARGET. The last line libFuzzer prints per
# target (stat::number_of_executed_units) is the number of executions.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes
# nightly-only flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 lets it.
# Built without a sanitizer (`-s none`: the broker forbids unsafe code, and this
# doubles the speed) but with debug assertions (`-a`), so integer overflow panics.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(verify_token issue_request policy_compile policy_evaluate)
fi
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
}
export RUSTC_BOOTSTRAP=1

failed=()
for target in "${targets[@]}"; do
  printf '\n== %s (%s s)\n' "$target" "$seconds"
  mkdir -p "corpus/$target"
  if ! cargo fuzz run -s none -a "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1; then
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "all targets ran ${seconds} s without a finding"
