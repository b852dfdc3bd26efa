"""Chat follow-ups with nano: a held-out task, then a rename in the same chat; the same rename alone as control.

    .venv/bin/python benchmarks/nano_chat.py --count 40 [--model checkpoints/loopcoder-nano]

For each held-out seed, one chat session (one working copy, the KV cache
kept, as `loopcoder chat` runs it) gets the task's request, then
"Rename `OLD` to `NEW`." for another function of the same repository. A
fresh chat on a fresh copy gets the same rename as its first request. The
first request is judged by the task's hidden tests; a rename is solved when
OLD is gone from every .py file, NEW is there and the repository's tests pass.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopcoder.agent.session import make_backend, open_workspace, start_agent  # noqa: E402
from nano.evaluate import eval_config  # noqa: E402
from nano.record import check_patch, make_repo  # noqa: E402
from nano.tasks import generate_task, run_pytest  # noqa: E402


def rename_target(repo: Path, avoid: set[str]) -> tuple[str, str] | None:
    """A top-level function of the package that the task does not touch and that no other name extends."""
    names = [node.name for path in sorted(repo.rglob("*.py")) if "test" not in path.name
             and path.name not in ("conftest.py", "setup.py")
             for node in ast.parse(path.read_text()).body
             if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name not in avoid]
    plain = [n for n in names if not any(o != n and (o.startswith(n) or n.startswith(o)) for o in names)]
    if not plain:
        return None
    old = plain[-1]
    new = "fetch_" + old.split("_")[-1]
    return None if new in names else (old, new)


def renamed(workdir: str | Path, old: str, new: str) -> bool:
    text = "".join(p.read_text() for p in Path(workdir).rglob("*.py") if ".git" not in p.parts)
    return not re.search(rf"\b{old}\b", text) and re.search(rf"\b{new}\b", text) is not None and run_pytest(workdir).ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="held-out seeds seed..seed+count-1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "loopcoder-nano"))
    args = parser.parse_args()
    config = eval_config(args.model)
    backend = make_backend(config)
    counts = {"runs": 0, "first": 0, "follow-up": 0, "alone": 0, "follow-up after a solved first": 0}
    try:
        for seed in range(args.seed, args.seed + args.count):
            task = generate_task("heldout", seed)
            with tempfile.TemporaryDirectory(prefix="nano-chat-") as tmp:
                repo = make_repo(task.files, Path(tmp) / task.facts["package"])
                target = rename_target(repo, {task.facts.get(k, "") for k in ("old", "new", "function")})
                if target is None:
                    continue
                old, new = target
                second = f"Rename `{old}` to `{new}`."
                with open_workspace(repo, config) as ws:
                    agent = start_agent(backend, ws, config, None, {"kind": "chat"}, None, chat=True)
                    first_status = agent.run(task.text).status
                    first = check_patch(task, ws.env.diff(), Path(tmp) / "verify").ok
                    follow_status = agent.run(second).status
                    follow = renamed(ws.copy.path, old, new)
                with open_workspace(repo, config) as ws:
                    agent = start_agent(backend, ws, config, None, {"kind": "chat"}, None, chat=True)
                    alone_status = agent.run(second).status
                    alone = renamed(ws.copy.path, old, new)
            counts["runs"] += 1
            counts["first"] += first
            counts["follow-up"] += follow
            counts["alone"] += alone
            counts["follow-up after a solved first"] += first and follow
            print(f"{task.id} {task.kind:16s} first {first_status} ({'solved' if first else 'not solved'}); "
                  f"then rename {old}: {follow_status} ({'solved' if follow else 'not solved'}); "
                  f"alone: {alone_status} ({'solved' if alone else 'not solved'})", flush=True)
    finally:
        backend.close()
    n = counts["runs"]
    print(f"first requests solved {counts['first']}/{n}; follow-up renames {counts['follow-up']}/{n} "
          f"({counts['follow-up after a solved first']}/{counts['first']} after a solved first request); "
          f"the same renames as a chat's first request {counts['alone']}/{n}")


if __name__ == "__main__":
    main()
