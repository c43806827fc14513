#!/usr/bin/env bash
# Pins a release in action.yml: rewrites AB_VERSION and AB_SHA256_X86_64 /
# AB_SHA256_AARCH64 from the release's SHA256SUMS (the checksum file the
# release workflow publishes next to the binaries), so that the action
# installs that release and accepts no other bytes.
#
#   scripts/pin-action-checksums.sh v0.2.0 SHA256SUMS [action.yml]
#
# Get SHA256SUMS from the release page (`gh release download v0.2.0 -p SHA256SUMS`);
# the release workflow also prints the exact command and values in its summary.
# Review the diff, commit it, and point users at that commit.
set -euo pipefail

usage() { echo "usage: $0 VERSION SHA256SUMS [ACTION_YML]" >&2; exit 64; }
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
version=$1
sums=$2
action=${3:-"$(cd "$(dirname "$0")/.." && pwd)/action.yml"}

[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$ ]] ||
  { echo "$0: VERSION must be a release tag like v1.2.3, not '$version'" >&2; exit 64; }
[ -f "$sums" ] || { echo "$0: $sums: no such file" >&2; exit 66; }
[ -f "$action" ] || { echo "$0: $action: no such file" >&2; exit 66; }

# One "<64 hex>  <asset>" line per asset (sha256sum's format; '*' marks binary mode).
digest_for() {
  local asset=$1 found
  found=$(awk -v asset="$asset" '
    { name = $2; sub(/^\*/, "", name) }
    name == asset && $1 ~ /^[0-9a-f]+$/ && length($1) == 64 { print $1; n++ }
    END { if (n != 1) exit 1 }' "$sums") ||
    { echo "$0: $sums must list $asset exactly once with a SHA-256" >&2; exit 65; }
  printf '%s' "$found"
}
x86_64=$(digest_for attestation-broker-x86_64-unknown-linux-musl)
aarch64=$(digest_for attestation-broker-aarch64-unknown-linux-musl)

for key in AB_VERSION AB_SHA256_X86_64 AB_SHA256_AARCH64; do
  count=$(grep -cE "^        $key: " "$action" || true)
  [ "$count" -eq 1 ] || { echo "$0: $action must have exactly one '        $key: ' line (found $count)" >&2; exit 65; }
done

tmp=$(mktemp "$action.XXXXXX")
trap 'rm -f "$tmp"' EXIT
sed -E \
  -e "s/^(        AB_VERSION: ).*/\\1\"$version\"/" \
  -e "s/^(        AB_SHA256_X86_64: ).*/\\1\"$x86_64\"/" \
  -e "s/^(        AB_SHA256_AARCH64: ).*/\\1\"$aarch64\"/" \
  "$action" >"$tmp"
chmod --reference="$action" "$tmp"
mv -f "$tmp" "$action"
trap - EXIT
echo "pinned $version in $action:"
echo "  x86_64  $x86_64"
echo "  aarch64 $aarch64"
