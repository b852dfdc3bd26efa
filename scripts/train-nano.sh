#!/usr/bin/env bash
# Reproduce checkpoints/loopcoder-nano from scratch on a CPU (2 cores):
#   1. data (~30 min, resumes where it stopped): record gold trajectories for 1600 generated training tasks
#      through the real agent and tools, train the tokenizer, render the rows as nano sees them;
#   2. phase 1 (~16 min): short copy drills and first turns: a copy head forms;
#   3. phase 2 (~6 min): long copy drills, first turns and plan openings: copies from far back;
#   4. phase 3 (~22 min): the recorded trajectories (names scrambled) with phase 2's rows;
#   5. evaluate on the 50 held-out tasks.
#   scripts/train-nano.sh [OUT_DIR]        (default build/nano; rerun to resume an interrupted step)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/nano}
bash scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

resume_flag() { [ -f "$1/checkpoint/trainer_state.json" ] && echo --resume || true; }

python -m nano data --out "$out/data" --count 1600 --jobs 2 --vocab 2048
phase() {  # phase NAME DATA STEPS BATCH_TOKENS LR WARMUP [--init DIR]
  [ -f "$out/$1/model.safetensors" ] || loopcoder model train --out "$out/$1" --data "$2" --preset nano --steps "$3" \
    --batch-tokens "$4" --lr "$5" --warmup "$6" --save-every 200 "${@:7}" $(resume_flag "$out/$1")
}
phase phase1 "$out/data/short" 2600 2048 3e-3 20
phase phase2 "$out/data/long" 1000 2048 2e-3 20 --init "$out/phase1"
phase phase3 "$out/data" 1800 4096 1.5e-3 30 --init "$out/phase2"
python benchmarks/nano_eval.py --model "$out/phase3" --count 50 --out "$out/eval.json"
echo "model: $out/phase3 (copy it to checkpoints/loopcoder-nano to ship it)"
