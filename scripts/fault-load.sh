#!/usr/bin/env bash
# Load and fault test: the release broker at a steady request rate while its
# JWKS and STS fail and recover on a schedule. Not part of the default test run.
#
#   scripts/fault-load.sh [--duration SECONDS] [--rate REQ_PER_S] [--phase SECONDS] [--margin-ms MS]
#
# Defaults: 180 s at 200 requests/s, 12 phases of 15 s, 3000 ms margin. Everything
# runs on loopback: the program starts its own issuer (JWKS) and STS stubs with
# fault switches (JWKS 500 / hang / garbage; STS Throttling / 500 / AccessDenied /
# hang) and the broker binary against them, then sends valid, replayed,
# wrong-audience, expired, tampered, foreign-key, unsigned, unknown-kid and
# policy-denied tokens to POST /issue, and one repository faster than its rate
# limit allows.
#
# It measures correctness under faults, not throughput (benches/ does that):
# requests sent, credentials issued, refusals by kind, status and error code,
# and every WRONG answer: credentials for a token that must be refused, the
# same token issued twice, an error for a valid token while the STS was healthy
# (no STS fault from the margin before sending until the answer), a refusal
# other than the documented one, or no answer within the broker's deadline.
# The exact rules are in the doc comment of tools/fault_load.rs. Exit status
# 1 on any wrong answer.
#
# Builds the release binary and the program once (LTO: several minutes the
# first time); both land in ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --features tools --bin attestation-broker --bin fault-load
exec "$target/release/fault-load" --bin "$target/release/attestation-broker" "$@"
