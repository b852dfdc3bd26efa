#!/usr/bin/env bash
# The main job, for real on any machine: loopcoder-nano (a 1.3M-parameter PLT
# trained by this project, checkpoints/loopcoder-nano) runs in process on the CPU and
# drives the real tools in a sandbox on a fresh git copy of the bundled example
# repository (examples/nano/), then the patch is applied and shown.
#   scripts/demo.sh [--model DIR] [extra `loopcoder run` options...]
set -euo pipefail
started=$EPOCHREALTIME
cd "$(dirname "$0")/.."
root=$PWD
model=checkpoints/loopcoder-nano
if [ "${1:-}" = "--model" ]; then model=$2; shift 2; fi

if [ ! -f "$model/config.json" ] || [ ! -f "$model/model.safetensors" -a ! -f "$model/model.safetensors.index.json" ]; then
  echo "error: no checkpoint at $model (config.json and safetensors weights expected)." >&2
  echo "       the repository ships checkpoints/loopcoder-nano: restore it with 'git checkout -- checkpoints'," >&2
  echo "       or run the same job with another PLT checkpoint: scripts/demo.sh --model /path/to/LoopCoder-V2" >&2
  exit 2
fi

bash scripts/venv.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/loopcoder-demo-XXXXXX")
trap 'rm -rf "$work"' EXIT
repo=$work/example
cp -r examples/nano/repo "$repo"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@localhost commit -q -m "example repository"

# run_tests calls `python`: make it the project's, which has pytest (without the test
# extras' plugins, which only slow the example's tiny suite down).
export PATH="$root/.venv/bin:$PATH" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
task=$(cat examples/nano/task.txt)
echo "task: $task"
set +e
loopcoder run "$task" --repo "$repo" --model "$model" --backend plt --yes \
  --set sampling.max_new_tokens=512 --max-steps 12 "$@"
status=$?
set -e
echo
echo "== the change, applied to $repo:"
git -C "$repo" --no-pager diff --stat
git -C "$repo" --no-pager diff
echo "== the example's tests after the run:"
(cd "$repo" && python -m pytest -q -p no:cacheprovider) || true
awk -v s="$started" -v e="$EPOCHREALTIME" -v load="$(cut -d' ' -f1 /proc/loadavg)" -v cores="$(nproc)" \
  'BEGIN { printf "== demo: %.1f s (load average %s on %s cores)\n", e - s, load, cores }' 
exit $status
