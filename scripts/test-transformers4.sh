#!/usr/bin/env bash
# The model and chat tests on transformers 4.57.x (the suite's .venv runs 5.x): sets up
# .venv-transformers4 with constraints-transformers4.txt's pins, then runs pytest there.
#   scripts/test-transformers4.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh .venv-transformers4 constraints-transformers4.txt
exec .venv-transformers4/bin/python -m pytest tests/model tests/runtime "$@"
