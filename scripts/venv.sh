#!/usr/bin/env bash
# Create a virtual environment (once) and install the project, its test and ray extras, with the pinned constraints.
#   scripts/venv.sh                      # .venv with constraints.txt
#   scripts/venv.sh DIR OVERRIDES        # DIR with constraints.txt, OVERRIDES' pins replacing its lines
# Re-running is cheap: pip only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=${1:-.venv}
overrides=${2:-}
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
constraints=constraints.txt
if [ -n "$overrides" ]; then
  constraints=$venv/constraints.txt
  names=$(grep -v '^#' "$overrides" | sed -n 's/==.*//p' | paste -sd'|')
  { grep -v '^#' "$overrides"; grep -v '^#' constraints.txt | grep -Ev "^($names)=="; } > "$constraints"
fi
stamp=$venv/.installed-$(cat pyproject.toml "$constraints" | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c "$constraints" -e ".[test,ray]"  # ray: the executor's tests
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
