#!/usr/bin/env bash
# The 7B-shape decode/prefill benchmark (benchmarks/decode.py) on one GPU, bf16, random weights,
# then the 7B shape from a checkpoint on disk in bf16, int8 and int4 (benchmarks/big.py; the random
# 15 GB checkpoint is written to $BIG_DIR first, a few minutes). Fits in 10 minutes on one H200:
# two decode.py runs (2K and 8K tokens of prompt) of about a minute each, then big.py.
# Eager and compiled decode: the 2K decode.py run and big.py also decode through the compiled step
# (--compile: torch.compile with CUDA graphs, model/compiled.py), printing compiled / eager in the
# same process; each compile (about a minute or two per model, not yet measured on a GPU) is
# reported and not timed in. GPU_NO_COMPILE=1 leaves the compiled rows out; GPU_SKIP_BIG=1 skips big.py.
#
# The GPU machine has torch but no network, and maybe not our pinned transformers stack:
#   here, once (needs pip and the network):  benchmarks/gpu.sh fetch
#     -> wheels of transformers/tokenizers/huggingface_hub as pinned in constraints.txt, in .whl/
#        (git-ignored through .git/info/exclude), for Python 3.12 on x86-64 Linux
#   there (device tool, carry [".whl"]):     bash benchmarks/gpu.sh [extra decode.py options]
#   the Python part on a CPU:  PYTHON=.venv/bin/python benchmarks/gpu.sh --preset small --device cpu --dtype float32 --prompt 256 --steps 4
# (options after the script's own win: argparse keeps the last).
# Logs (tables, profiles and the JSON lines) go to $OUT (default /tmp/loopcoder-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: later steps cd elsewhere
WHEELS=(transformers tokenizers huggingface_hub)

if [[ "${1:-}" == "fetch" ]]; then
    mkdir -p .git/info .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for name in "${WHEELS[@]}"; do
        pin=$(grep -i "^${name}==" constraints.txt)
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$pin"
    done
    ls -l .whl
    exit 0
fi

OUT=${OUT:-/tmp/loopcoder-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then  # the pinned transformers stack, ahead of the machine's own
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! (cd /tmp && "$PY" -c 'import model' 2>/dev/null) &&
   ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip-install.log" 2>&1; then
    echo "pip install -e . failed (see $OUT/pip-install.log); importing the repository from $PWD instead"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__,
                                            "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,power.draw --format=csv 2>/dev/null || true

export PYTHONUNBUFFERED=1
run() {  # name, decode.py options...
    local name=$1; shift
    echo "=== decode.py --preset 7b-shape --device cuda --dtype bfloat16 --peak-bandwidth 4800 $* ==="
    timeout 330 "$PY" benchmarks/decode.py --preset 7b-shape --device cuda --dtype bfloat16 --peak-bandwidth 4800 "$@" \
        2>&1 | tee "$OUT/$name.log" || echo "=== $name failed (exit ${PIPESTATUS[0]}) ==="
}
COMPILE=(); [[ -z "${GPU_NO_COMPILE:-}" ]] && COMPILE=(--compile)
run decode-7b-2k --prompt 2048 --steps 64 "${COMPILE[@]}" "$@"
run decode-7b-8k --prompt 8192 --steps 32 --profile 3 "$@"
grep -h '^{"benchmark"' "$OUT"/decode-7b-*.log > "$OUT/decode-7b.jsonl" || true
if [[ -z "${GPU_SKIP_BIG:-}" ]]; then
    echo "=== big.py --device cuda: bf16, int8, int4 (eager${COMPILE:+ and compiled}) ==="
    timeout 420 "$PY" benchmarks/big.py --device cuda --prompt 2048 --tokens 64 --probe-mb 4096 "${COMPILE[@]}" \
        --dir "${BIG_DIR:-/tmp/loopcoder-big-7b}" 2>&1 | tee "$OUT/big-7b.log" || echo "=== big.py failed ==="
fi
