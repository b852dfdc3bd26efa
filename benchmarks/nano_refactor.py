"""Held-out generator tasks through `loopcoder refactor` (the task wrapped as refactor wraps it), solved count.

    .venv/bin/python benchmarks/nano_refactor.py --count 10 [--model checkpoints/loopcoder-nano]

Each task's repository is a fresh git repo; `loopcoder refactor --task <request>` runs on it in a
subprocess (the real CLI, prompts and sandbox), and the patch it saved is checked by the task's
hidden tests in a second copy (nano.record.check_patch, as nano_eval checks). Compare a checkpoint with and without its own
`loopcoder_task_refactor.jinja` by moving that file aside.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nano.record import check_patch, make_repo  # noqa: E402
from nano.tasks import generate_task  # noqa: E402

def solved(seed: int, model: str) -> tuple[str, bool, str]:
    task = generate_task("heldout", seed)
    with tempfile.TemporaryDirectory(prefix="nano-refactor-") as tmp:
        repo = make_repo(task.files, Path(tmp) / task.facts["package"])
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "loopcoder.cli", "refactor", "--task", task.text, str(repo), "--model", model,
                        "--output", str(out), "--set", "backend.device=cpu"], cwd=ROOT, capture_output=True, text=True)
        records = json.loads((out / "refactor.json").read_text()) if (out / "refactor.json").is_file() else []
        status = records[0]["status"] if records else "no result"
        patch_path = records[0].get("patch_path") if records else None
        patch = Path(patch_path).read_text() if patch_path else ""
        return task.kind, bool(patch.strip()) and check_patch(task, patch, Path(tmp) / "verify").ok, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="held-out seeds 0..count-1")
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "loopcoder-nano"))
    args = parser.parse_args()
    total = 0
    for seed in range(args.count):
        kind, ok, status = solved(seed, args.model)
        total += ok
        print(f"heldout-{seed} {kind}: {'solved' if ok else 'not solved'} ({status})", flush=True)
    print(f"solved {total}/{args.count} through `loopcoder refactor`")


if __name__ == "__main__":
    main()
