#!/usr/bin/env bash
# Installs the attestation-broker release binary for the composite action
# (action.yml runs this file) and prints its path as the step output `path`.
#
# The SHA-256 each binary must have is pinned in action.yml, next to the
# version; nothing downloaded decides what is trusted. The binary lands in the
# runner's tool cache, $RUNNER_TOOL_CACHE/attestation-broker/VERSION/ARCH/, and
# is verified again on every use, so a later job on the same runner reuses it
# and a cached file that changed is replaced.
#
# Environment (set by action.yml; scripts/test_action_install.py sets it too):
#   AB_VERSION           release tag pinned in action.yml (e.g. v0.2.0)
#   AB_SHA256_X86_64     SHA-256 of attestation-broker-x86_64-unknown-linux-musl
#   AB_SHA256_AARCH64    SHA-256 of attestation-broker-aarch64-unknown-linux-musl
#   AB_RELEASE_BASE_URL  where releases live; assets are fetched from
#                        BASE/VERSION/ASSET. https:// only (http:// only for
#                        127.0.0.1/localhost, which the tests use).
#   RUNNER_OS, RUNNER_ARCH, RUNNER_TOOL_CACHE, RUNNER_TEMP, GITHUB_OUTPUT
#                        provided by the Actions runner.
# Exit status: 0 installed (or reused), 1 anything else, with an ::error line.
set -euo pipefail

fail() {
  echo "::error title=attestation-broker install::$*"
  exit 1
}

os="${RUNNER_OS:-}"
arch="${RUNNER_ARCH:-}"
case "$os/$arch" in
  Linux/X64) triple=x86_64-unknown-linux-musl; pinned="${AB_SHA256_X86_64:-}"; dir_arch=x86_64 ;;
  Linux/ARM64) triple=aarch64-unknown-linux-musl; pinned="${AB_SHA256_AARCH64:-}"; dir_arch=aarch64 ;;
  *)
    fail "unsupported runner platform ${os:-unknown}/${arch:-unknown}: release binaries exist for Linux X64 and Linux ARM64 only. Install attestation-broker in an earlier step and set the action input install: path"
    ;;
esac

version="${AB_VERSION:-}"
if [ -z "$version" ] || [ -z "$pinned" ]; then
  fail "this revision of the action pins no release binary for Linux/$arch (run scripts/pin-action-checksums.sh after a release), or set the action input install: path"
fi
if ! [[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$ ]]; then
  fail "pinned version '$version' is not a release tag like v1.2.3"
fi
if ! [[ "$pinned" =~ ^[0-9a-f]{64}$ ]]; then
  fail "pinned SHA-256 for $triple is not 64 lowercase hex digits"
fi

base="${AB_RELEASE_BASE_URL:-}"
case "$base" in
  https://*) proto='=https' ;;
  http://127.0.0.1[:/]* | http://localhost[:/]*) proto='=http' ;;
  *) fail "release base URL must be https:// (got '${base}')" ;;
esac
base="${base%/}"

cache_root="${RUNNER_TOOL_CACHE:-}"
[ -n "$cache_root" ] || fail "RUNNER_TOOL_CACHE is not set (not running on an Actions runner?)"
cache_dir="$cache_root/attestation-broker/$version/$dir_arch"
binary="$cache_dir/attestation-broker"
marker="$cache_dir.complete"

digest_of() { sha256sum "$1" | cut -d' ' -f1; }

emit() {
  echo "attestation-broker $version ($triple): $1 $binary"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "path=$binary" >>"$GITHUB_OUTPUT"
  fi
  exit 0
}

if [ -f "$marker" ] && [ -x "$binary" ]; then
  if [ "$(digest_of "$binary")" = "$pinned" ]; then
    emit "using the tool cache"
  fi
  echo "::warning title=attestation-broker install::cached $binary does not match the pinned SHA-256; downloading again"
fi
rm -f "$marker"
rm -rf "$cache_dir"

asset="attestation-broker-$triple"
url="$base/$version/$asset"
work=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/attestation-broker.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "downloading $url"
if ! curl --fail --silent --show-error --location \
     --proto "$proto" --proto-redir '=https' \
     --retry 3 --retry-connrefused --connect-timeout 10 --max-time 300 \
     --max-filesize 268435456 \
     --output "$work/$asset" "$url"; then
  fail "could not download $url"
fi

actual=$(digest_of "$work/$asset")
if [ "$actual" != "$pinned" ]; then
  fail "checksum mismatch for $asset $version: expected $pinned (pinned in action.yml), got $actual. Nothing was installed"
fi

mkdir -p "$cache_dir"
install -m 0755 "$work/$asset" "$binary.partial"
mv -f "$binary.partial" "$binary"
touch "$marker"
emit "installed (SHA-256 verified)"
