#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need,
# then runs formatting, lints and every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s\n' "$*"; }

step "redis-server (replay-store tests run a real one)"
if ! command -v redis-server >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

step "Python tools (.venv: moto server, requests)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import moto, requests, dotenv' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export BROKER_TEST_VENV="$root/.venv"
# Tests skip (printing "skipped: …") when redis-server or the venv is missing;
# here a missing tool is a failure, so this run never skips silently.
export BROKER_TEST_REQUIRE_ALL=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --locked --all-targets --all-features -- -D warnings

if command -v cargo-deny >/dev/null 2>&1; then
  step "cargo deny check"
  cargo deny check
fi

step "shipping kit: scripts/check-deploy.sh (manifests, alerts, dashboard, Dockerfile)"
./scripts/check-deploy.sh

step "release kit: scripts/check-release.sh (workflows, composite action install logic)"
./scripts/check-release.sh

step "cargo test --locked"
# CLI output snapshots (tests/it/snapshots/): a differing or missing snapshot
# fails and nothing is written, here as in CI.
export INSTA_UPDATE=no
log=$(mktemp)
set +e
cargo test --locked --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one summary per test target).
totals=$(grep -E '^test result: ' "$log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' |
  awk '{p += $1; f += $2} END {printf "%d passed, %d failed", p, f}')
rm -f "$log"
printf '\ntests: %s\n' "$totals"
exit "$status"
