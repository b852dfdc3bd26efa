#!/usr/bin/env bash
# The test command: set up .venv and the sandbox engines, then run the suite.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
bash scripts/sandbox-deps.sh || echo "warning: sandbox engines could not all be set up; the tests that need them say why they skip" >&2
exec .venv/bin/python -m pytest "$@"
