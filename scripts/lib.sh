# shellcheck shell=bash
# Shared by the check scripts (sourced, not run, from the repository root):
# `say` and the pinned .venv.

# say MESSAGE...: prints MESSAGE after the running script's name.
say() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*"; }

# venv_install REQUIREMENTS TOOL...: creates .venv if needed, installs
# REQUIREMENTS (pinned, one per line) when any pin is missing, and checks that
# each TOOL is then in .venv/bin. Sets `venv`.
venv_install() {
  local requirements=$1 installed requirement missing=0 tool
  shift
  # shellcheck disable=SC2034 # read by the sourcing script
  venv="$(pwd)/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  installed=$("$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-')
  while read -r requirement; do
    case "$requirement" in ''|'#'*) continue ;; esac
    printf '%s\n' "$installed" | grep -qxF "$(printf '%s' "$requirement" | tr 'A-Z_' 'a-z-')" || missing=1
  done <"$requirements"
  if [ "$missing" -eq 1 ]; then
    say "installing $requirements into .venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  fi
  for tool in "$@"; do
    [ -x "$venv/bin/$tool" ] || { say "$tool missing from .venv after install"; exit 1; }
  done
}
