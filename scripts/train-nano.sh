#!/usr/bin/env bash
# Reproduce checkpoints/loopcoder-nano from scratch on a CPU (2 cores):
#   1. data (~30 min, resumes where it stopped): record gold trajectories for 1600 generated training tasks
#      through the real agent and tools, train the tokenizer, render the rows as nano sees them;
#   2. phase 1 (~23 min): copy drills and first turns (short rows);
#   3. phase 2 (~37 min): from phase 1's weights, the recorded trajectories (names scrambled) with drills and first turns;
#   4. evaluate on the 50 held-out tasks.
#   scripts/train-nano.sh [OUT_DIR]        (default build/nano; rerun to resume an interrupted step)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/nano}
bash scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

resume_flag() { [ -f "$1/checkpoint/trainer_state.json" ] && echo --resume || true; }

python -m agent.nano data --out "$out/data" --count 1600 --jobs 2 --vocab 2048
[ -f "$out/phase1/model.safetensors" ] || loopcoder model train --data "$out/data/short" --out "$out/phase1" \
  --preset nano --steps 4000 --batch-tokens 2048 --lr 3e-3 --warmup 20 --save-every 200 $(resume_flag "$out/phase1")
[ -f "$out/phase2/model.safetensors" ] || loopcoder model train --data "$out/data" --out "$out/phase2" \
  --init "$out/phase1" --preset nano --steps 2100 --batch-tokens 4096 --lr 1.5e-3 --warmup 30 --save-every 200 \
  $(resume_flag "$out/phase2")
python benchmarks/nano_eval.py --model "$out/phase2" --count 50 --out "$out/eval.json"
echo "model: $out/phase2 (copy it to checkpoints/loopcoder-nano to ship it)"
